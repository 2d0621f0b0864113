"""Model construction: ``build_model(config.model)`` returns the Flax codec module."""

from mracnn_jax.models.registry import build_model, forward_any_size, init_keys, init_params

__all__ = ["build_model", "forward_any_size", "init_keys", "init_params"]
