"""Channel-wise local attention block (CLAB) of MRACNN's entropy model.

TCM's SWAtten with its Swin block replaced by ELSA (architecture.md §3, §4.4). For a support
tensor S ``[B, h, w, C_in]`` and an inner width D (128):

    U   = conv1x1(S, C_in -> D)                     squeeze
    T   = RU(RU(RU(U)))                             CompressAI residual units (ReLU)
    Mk  = sigmoid(conv1x1(RU(RU(RU(U + ELSA(U))))))
    out = conv1x1(U + T * Mk, D -> C_in)            un-squeeze

Parameters: 257 * C_in + 475,104 at D = 128 with ELSA(128, heads 8, k 7).
"""

from __future__ import annotations

import flax.linen as nn

from mracnn_jax.layers.conv import Conv2d
from mracnn_jax.layers.elam import attend
from mracnn_jax.layers.residual import gated_residual


class CLAB(nn.Module):
    """Squeeze to ``dim``, attention-gated residual, un-squeeze back to the input width."""

    elsa: object  # ELSA options, as for ELAM
    dim: int = 128
    activation: str = "relu"

    @nn.compact
    def __call__(self, s):
        u = Conv2d(self.dim, 1, name="squeeze")(s)
        gated = gated_residual(u, attend(self.elsa, u, "elsa"), self.activation)
        return Conv2d(s.shape[-1], 1, name="unsqueeze")(gated)
