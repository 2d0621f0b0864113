"""Parameter initialisers that draw their random numbers on the host.

XLA's CPU compiler spends about 0.3 s on every random-number kernel (measured with jaxlib 0.4.34:
45 ``jax.random.uniform`` calls of distinct shapes take 13 s to compile, with threefry or rbg
keys alike), and a model's ``init`` has hundreds of them. These initialisers instead hand the
key's raw bits to a ``jax.pure_callback`` that seeds numpy's PCG64 and samples there: the same
key gives the same values, under ``jit``, eagerly and across machines, and ``eval_shape`` still
works (the callback is not run). The 45-call case compiles in 1.2 s. With a concrete key (eagerly,
or under ``jax.ensure_compile_time_eval``, as ``models.init_params`` runs) the sampler is called
directly: an eager callback would compile once per parameter (about 900 for the small preset).

Distributions (all float32):
* ``torch_uniform(fan_in)``: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for conv and
  linear weights and biases (kaiming_uniform with a = sqrt(5) reduces to this bound);
  ``torch_conv_kernel_init`` draws a kernel with its fan-in.
* ``uniform(lo, hi)``, ``normal(std)``, ``truncated_normal(std, bound)``: N(0, std^2) resampled
  outside [-bound, bound]; ``bound=None`` means 2 std (the interval of
  ``flax.linen.initializers.truncated_normal``, without its rescaling of the std), ``bound=2.0``
  is timm's ``trunc_normal_`` default of absolute bounds +-2.

``fold_keys`` derives sub-keys for initialisation (``models.init_params``, ELSA's ghost head).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def fold_keys(key, n: int = 2) -> tuple[jax.Array, ...]:
    """``n`` independent keys from ``key``: fold_in(key, 0), ..., fold_in(key, n - 1).

    Used instead of ``jax.random.split``, whose bits changed with ``jax_threefry_partitionable``
    (the default from jax 0.5); fold_in's did not, so a seed initialises the same on every JAX
    version."""
    return tuple(jax.random.fold_in(key, i) for i in range(n))


def _host_sample(key, shape, dtype, sampler):
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)

    def callback(bits):
        rng = np.random.default_rng(np.asarray(bits, np.uint32).ravel().tolist())
        return np.asarray(sampler(rng, tuple(shape)), dtype=dtype)

    if not isinstance(key, jax.core.Tracer):
        return jax.device_put(callback(key))
    return jax.pure_callback(callback, jax.ShapeDtypeStruct(tuple(shape), dtype), key)


def uniform(lo: float, hi: float):
    """U(lo, hi)."""

    def init(key, shape, dtype=jnp.float32):
        return _host_sample(key, shape, dtype, lambda rng, s: rng.uniform(lo, hi, s))

    return init


def torch_uniform(fan_in: int):
    """PyTorch's default: U(+-1/sqrt(fan_in))."""
    bound = 1.0 / np.sqrt(fan_in)
    return uniform(-bound, bound)


def torch_conv_kernel_init(key, shape, dtype=jnp.float32):
    """``torch_uniform`` with fan_in = prod(shape[:-1]): PyTorch's default conv/linear weight, for
    an HWIO kernel (or ``[in, out]`` for a dense layer)."""
    return torch_uniform(int(np.prod(shape[:-1])))(key, shape, dtype)


def normal(std: float = 1.0):
    """N(0, std^2)."""

    def init(key, shape, dtype=jnp.float32):
        return _host_sample(key, shape, dtype, lambda rng, s: rng.normal(0.0, std, s))

    return init


def truncated_normal(std: float = 0.02, bound: float | None = None):
    """N(0, std^2) resampled until within [-bound, bound] (default 2 std)."""
    limit = 2 * std if bound is None else bound

    def sample(rng, shape):
        out = rng.normal(0.0, std, shape)
        bad = np.abs(out) > limit
        while bad.any():
            out[bad] = rng.normal(0.0, std, int(bad.sum()))
            bad = np.abs(out) > limit
        return out

    def init(key, shape, dtype=jnp.float32):
        return _host_sample(key, shape, dtype, sample)

    return init
