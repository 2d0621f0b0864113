"""Parameter initialisation: the host-sampling initialisers (``layers/init.py``) and
``models.init_params``, which traces the forward pass and computes the parameters concretely.

Both shortcuts must give exactly the values of the slow paths they replace: the initialisers'
``pure_callback`` under ``jit``, and Flax's eager ``init``.
"""

from __future__ import annotations

import hashlib
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from other_stack import needs_other_stack, run_in_other_stack  # sibling helper modules
from tiny_training import assert_trees_equal

from mracnn_jax.entropy.quantize import add_noise
from mracnn_jax.layers import init
from mracnn_jax.model_file.params import params_digest
from mracnn_jax.models import build_model, init_keys, init_params, presets
from mracnn_jax.models.compressor import DOWNSAMPLING
from mracnn_jax.training.steps import root_keys

SHAPE = (3, 3, 4, 5)
INITIALISERS = {
    "uniform": (init.uniform(-1.0, 2.0), 2.0),
    "torch_uniform": (init.torch_uniform(27), 1 / np.sqrt(27)),
    "torch_conv_kernel": (init.torch_conv_kernel_init, 1 / np.sqrt(36)),
    "normal": (init.normal(0.5), None),
    "truncated_normal": (init.truncated_normal(0.02), 0.04),
    "truncated_normal_timm": (init.truncated_normal(1.0, bound=2.0), 2.0),
}


@pytest.mark.parametrize("name", sorted(INITIALISERS))
def test_a_concrete_key_samples_what_the_callback_samples_under_jit(name):
    initialiser, bound = INITIALISERS[name]
    key = jax.random.PRNGKey(11)
    eager = initialiser(key, SHAPE)
    jitted = jax.jit(lambda k: initialiser(k, SHAPE))(key)
    assert eager.dtype == jitted.dtype == jnp.float32 and eager.shape == SHAPE
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(jitted))
    assert not np.array_equal(np.asarray(initialiser(jax.random.PRNGKey(12), SHAPE)), eager)
    if bound is not None:
        assert float(jnp.max(jnp.abs(eager))) <= bound


def test_init_params_equals_flaxs_eager_init():
    """The grayscale small preset: every parameter, bit for bit, and the same tree."""
    cfg = presets.small()
    cfg.channels = 1
    model = build_model(cfg)
    key = jax.random.PRNGKey(5)
    fast = init_params(model, key)
    p_rng, n_rng = init_keys(key)
    x = jnp.zeros((1, DOWNSAMPLING, DOWNSAMPLING, 1))
    eager = model.init({"params": p_rng, "noise": n_rng}, x, train=True)["params"]
    assert_trees_equal(fast, eager)
    # under an outer trace it is the traced init: same shapes
    shapes = jax.eval_shape(lambda k: init_params(model, k), key)
    assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(jnp.shape, fast)


class _ImageDependentInit(nn.Module):
    """A test double whose parameter would depend on the image: ``init_params`` must refuse."""

    cfg: types.SimpleNamespace

    @nn.compact
    def __call__(self, x, train):
        return x * self.param("w", lambda rng: jnp.mean(x))


def test_an_initialiser_that_reads_the_image_is_refused():
    model = _ImageDependentInit(types.SimpleNamespace(channels=3))
    with pytest.raises(TypeError, match="depends on the input image"):
        init_params(model, jax.random.PRNGKey(0))


def random_digests(seed: int = 5) -> str:
    """params_digest of the grayscale small preset initialised with ``seed``, and the first bytes
    of the training noise ``add_noise`` draws with that seed's noise key at step 3."""
    cfg = presets.small()
    cfg.channels = 1
    init_key, noise_key = root_keys(seed)
    noise = add_noise(jnp.zeros((2, 16, 16, 8)), jax.random.fold_in(noise_key, 3))
    return " ".join(
        (
            params_digest(init_params(build_model(cfg), init_key)),
            hashlib.sha256(np.asarray(noise, "<f4").tobytes()).hexdigest(),
        )
    )


@needs_other_stack
def test_a_seed_gives_the_same_parameters_and_noise_in_the_other_stack():
    """jax.random.split's and jax.random.uniform's bits differ between jax 0.4.34 and >= 0.5
    (jax_threefry_partitionable); initialisation derives its keys with fold_in only and the noise
    is drawn in the partitionable form, so neither does (ELSA's ghost head included)."""
    out = run_in_other_stack(
        "import jax, test_init; print(jax.__version__, test_init.random_digests())"
    )
    version, *digests = out.split()[-3:]
    assert version != jax.__version__, "the other environment runs the same jax"
    assert " ".join(digests) == random_digests()
