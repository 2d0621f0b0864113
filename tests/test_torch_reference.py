"""Checks of the PyTorch WACNN reference (tests/reference/torch_wacnn.py).

The reference is written from the public STF code's structure, independently of our Flax model
and of its PyTorch twin (mracnn_jax.torch_models), which tests/test_torch_models.py checks
against it. ``tests/reference`` is a package: pytest puts ``tests/`` on ``sys.path`` (it holds
no ``__init__.py``), so the reference is imported as ``reference.torch_wacnn``.

Needs torch (requirements/torch-cpu.txt, which `make test` installs into .venv); skipped, with
the reason, where it is absent.
Parameter counts are those measured on the public WACNN (docs/architecture.md section 1.5).
"""

import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch not installed: the WACNN reference needs requirements/torch-cpu.txt"
)

# after the skip: the reference imports torch
from reference import torch_wacnn as ref

EXPECTED = {
    "g_a": 6_928_528,
    "g_s": 6_928_211,
    "h_a": 3_319_040,
    "h_mean_s": 5_882_624,
    "h_scale_s": 5_882_624,
    "cc_mean_transforms": 15_212_640,
    "cc_scale_transforms": 15_212_640,
    "lrp_transforms": 15_857_760,
    "entropy_bottleneck": 11_712,
    "gaussian_conditional": 0,
    "total": 75_235_779,
}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ref.WACNN(N=192, M=320)


def test_parameter_counts(model):
    counts = ref.count_parameters(model)
    assert dict(counts) == EXPECTED
    # WAM break-down (architecture.md 1.5)
    wam192, wam320 = model.g_a[4], model.g_a[8]
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(wam192) == 908_232 and n(wam320) == 2_514_632
    assert n(wam192.conv_a) == 360_576 and n(wam192.conv_b[0]) == 150_024
    assert n(wam320.conv_b[0]) == 411_272
    assert n(model.g_a[1]) == 37_056


def test_state_dict_keys_follow_public_stf(model):
    keys = set(model.state_dict())
    for k in (
        "g_a.0.weight",
        "g_a.0.bias",
        "g_a.1.beta",
        "g_a.1.gamma",
        "g_a.1.beta_reparam.pedestal",
        "g_a.1.gamma_reparam.lower_bound.bound",
        "g_a.4.conv_a.0.conv.0.weight",
        "g_a.4.conv_a.2.conv.4.bias",
        "g_a.4.conv_b.0.attn.relative_position_bias_table",
        "g_a.4.conv_b.0.attn.relative_position_index",
        "g_a.4.conv_b.0.attn.qkv.weight",
        "g_a.4.conv_b.0.attn.proj.bias",
        "g_a.4.conv_b.4.weight",
        "g_a.8.conv_b.3.conv.2.weight",
        "g_s.0.conv_a.0.conv.0.weight",
        "g_s.1.weight",
        "g_s.2.beta",
        "g_s.8.weight",
        "h_a.0.weight",
        "h_a.8.bias",
        "h_mean_s.2.0.weight",
        "h_scale_s.6.0.bias",
        "h_scale_s.8.weight",
        "cc_mean_transforms.0.0.weight",
        "cc_mean_transforms.9.8.bias",
        "cc_scale_transforms.5.4.weight",
        "lrp_transforms.9.0.weight",
        "entropy_bottleneck._matrix0",
        "entropy_bottleneck._bias4",
        "entropy_bottleneck._factor3",
        "entropy_bottleneck.quantiles",
        "entropy_bottleneck.target",
        "entropy_bottleneck._quantized_cdf",
        "gaussian_conditional.scale_table",
        "gaussian_conditional.scale_bound",
        "gaussian_conditional.lower_bound_scale.bound",
    ):
        assert k in keys, k
    assert "entropy_bottleneck._factor4" not in keys
    assert len(keys) == 585
    sd = model.state_dict()
    assert tuple(sd["g_s.1.weight"].shape) == (320, 192, 5, 5)  # ConvTranspose: (in, out, k, k)
    assert tuple(sd["cc_mean_transforms.5.0.weight"].shape) == (224, 480, 3, 3)
    assert tuple(sd["lrp_transforms.9.0.weight"].shape) == (224, 512, 3, 3)
    assert tuple(sd["h_mean_s.2.0.weight"].shape) == (896, 192, 3, 3)
    assert tuple(sd["g_a.4.conv_b.0.attn.relative_position_bias_table"].shape) == (225, 8)
    assert tuple(sd["entropy_bottleneck.quantiles"].shape) == (192, 1, 3)


def test_forward_shapes_train_and_eval(model):
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    model.train()
    out = model(x)
    assert out["x_hat"].shape == (2, 3, 64, 64)
    assert out["likelihoods"]["y"].shape == (2, 320, 4, 4)
    assert out["likelihoods"]["z"].shape == (2, 192, 1, 1)
    for lik in out["likelihoods"].values():
        assert torch.all(lik >= 1e-9) and torch.all(lik <= 1.0)
    loss = ref.rate_distortion_loss(out, x, lmbda=0.013)["loss"]
    loss.backward()
    # Straight-through rounding lets the gradient reach the analysis transform.
    assert model.g_a[0].weight.grad is not None
    assert torch.isfinite(model.g_a[0].weight.grad).all()
    model.zero_grad(set_to_none=True)

    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a["x_hat"], b["x_hat"])  # eval mode rounds: deterministic
    assert torch.equal(a["likelihoods"]["y"], b["likelihoods"]["y"])
    model.train()


def test_load_stf_state_dict_roundtrip(model):
    sd = model.state_dict()
    renamed = {}
    for k, v in sd.items():  # current-CompressAI names and a DataParallel prefix
        k = k.replace("entropy_bottleneck._matrix", "entropy_bottleneck.matrices.")
        renamed["module." + k] = v.clone()
    renamed["module.entropy_bottleneck._quantized_cdf"] = torch.ones(192, 7, dtype=torch.int32)
    result = ref.load_stf_state_dict(model, {"state_dict": renamed})
    assert not result.missing_keys and not result.unexpected_keys
    assert model.entropy_bottleneck._quantized_cdf.shape == (192, 7)
    assert torch.equal(model.entropy_bottleneck._matrix2, sd["entropy_bottleneck._matrix2"])


def test_gdn_and_window_mask():
    gdn = ref.GDN(4)
    assert torch.allclose(gdn.gamma_reparam(gdn.gamma), 0.1 * torch.eye(4), atol=1e-7)
    assert torch.allclose(gdn.beta_reparam(gdn.beta), torch.ones(4), atol=1e-7)
    x = torch.randn(1, 4, 3, 3)
    y = gdn(x)
    assert torch.allclose(y, x / torch.sqrt(1.0 + 0.1 * x * x), atol=1e-6)
    igdn = ref.GDN(4, inverse=True)
    assert torch.allclose(igdn(x), x * torch.sqrt(1.0 + 0.1 * x * x), atol=1e-6)
    mask = ref.shifted_window_mask(8, 8, 4, 2)
    assert mask.shape == (4, 16, 16)
    assert torch.all(mask[0] == 0)  # top-left window lies in one region
    assert set(mask[3].unique().tolist()) == {-100.0, 0.0}
