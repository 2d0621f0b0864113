"""PyTorch twins of our models: MRACNN, WACNN and the ablations as ``torch.nn.Module``s.

Needs torch (``pip install "mracnn-jax[torch]"``); ``import mracnn_jax`` never imports it. Each
layer mirrors its Flax counterpart, so a twin holding our parameters computes what the Flax model
computes (to float32 rounding), with CompressAI's interface, in NCHW::

    from mracnn_jax.torch_models import load_model_file
    net, metadata = load_model_file("mracnn_jax/assets/models/mracnn-bundled-q2.mracnn")
    out = net(x)                      # x [B, 3, H, W] in [0, 1], H and W multiples of 64
    out["x_hat"], out["likelihoods"]["y"], out["likelihoods"]["z"]
    net.aux_loss()                    # the entropy bottleneck's quantile loss, for training

Modules: ``gdn`` (GDN and its bounds), ``blocks`` (convolutions, residual units, MRACD/MRACU),
``elsa`` (ELSA and its block), ``attention`` (WAM, ELAM, CLAB), ``entropy`` (factorized prior,
Gaussian conditional), ``transforms`` (g_a, g_s, h_a, h_s), ``compressor`` (the model) and
``weights`` (our parameters in, counts out). Entropy *coding* stays with the Flax model and its
coders (``mracnn compress``); the twins estimate rates and reconstruct, as in training.
"""

try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "mracnn_jax.torch_models needs PyTorch: pip install 'mracnn-jax[torch]' "
        "(or torch's CPU build from https://download.pytorch.org/whl/cpu)"
    ) from e

from mracnn_jax.torch_models.compressor import ImageCompressor, model_config_of
from mracnn_jax.torch_models.weights import (
    from_flax,
    load_flax_params,
    load_model_file,
    parameter_counts,
    state_dict_from_flax,
)

__all__ = [
    "ImageCompressor",
    "build_model",
    "from_flax",
    "load_flax_params",
    "load_model_file",
    "model_config_of",
    "parameter_counts",
    "state_dict_from_flax",
]


def build_model(config) -> ImageCompressor:
    """A randomly initialised twin for ``config`` (a preset's config, ``mracnn_jax/configs``, or a
    model block)."""
    return ImageCompressor(config)
