"""DAML's two small networks: the generator G and the released code's metric head (`papers/daml.md` (c), (h)).

`Generator` synthesises hard negatives x̃⁻ = G(θ_g; x⁻, x, x⁺) in the generator space (eq. 6); its parameters live
under `params["generator"]`. `MetricHead` is the released code's extra metric ("Discriminator") on the L2-normalised
embedding (`params["metric_head"]`, the "code" preset only).

The generator's first layer is evaluated per source and then gathered: x⁻W_n + xW_a + x⁺W_p + b are the same numbers
as a Dense on the concatenation [x⁻, x, x⁺], but N-pair input's C·(C−1) tuples then cost C projections, not C·(C−1).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _identity_init(key, shape, dtype=jnp.float32):
  del key
  return jnp.eye(shape[0], shape[1], dtype=dtype)


class Generator(nn.Module):
  """G(θ_g; x⁻, x, x⁺): an MLP on the concatenation [x⁻, x, x⁺] of generator-space vectors (eq. 6).

  The first layer's kernel is `input_kernel` `[3c, h]` (rows: x⁻, then x, then x⁺ — the paper's order), the layout of
  a Dense on the concatenation; it is applied per source so that many tuples can share their sources.

  Attributes:
    output_dim: c, the width of the generator space (inputs and output).
    hidden_dims: hidden widths (ReLU after each).
    output_relu: ReLU on the output.
    init_stddev: None for LeCun normal (fan-in 3c), else N(0, init_stddev²) kernels.
  """

  output_dim: int
  hidden_dims: Sequence[int]
  output_relu: bool = False
  init_stddev: float | None = None

  def setup(self):
    kernel_init = (nn.initializers.lecun_normal() if self.init_stddev is None
                   else nn.initializers.normal(self.init_stddev))
    widths = (*self.hidden_dims, self.output_dim)
    self.input_kernel = self.param("input_kernel", kernel_init, (3 * self.output_dim, widths[0]))
    self.input_bias = self.param("input_bias", nn.initializers.zeros, (widths[0],))
    self.layers = [nn.Dense(width, kernel_init=kernel_init) for width in widths[1:]]

  def project(self, x: jax.Array, slot: int) -> jax.Array:
    """`[..., c] -> [..., h]`: the first layer's contribution of slot 0 (x⁻), 1 (x) or 2 (x⁺), without bias."""
    c = self.output_dim
    return jnp.matmul(x, self.input_kernel[slot * c:(slot + 1) * c])

  def __call__(self, negative_source: jax.Array, negative_index: jax.Array, anchor: jax.Array,
               positive: jax.Array) -> jax.Array:
    """Synthetic negatives x̃_{a,k} = G(negative_source[negative_index[a, k]], anchor[a], positive[a]).

    Args:
      negative_source: `[S, c]` observed negatives; negative_index: `i32[A, K]` rows of it;
      anchor, positive: `[A, c]`.

    Returns:
      `[A, K, c]`.
    """
    tuple_part = self.project(anchor, 1) + self.project(positive, 2) + self.input_bias
    hidden = self.project(negative_source, 0)[negative_index] + tuple_part[:, None, :]
    for layer in self.layers:
      hidden = layer(nn.relu(hidden))
    return nn.relu(hidden) if self.output_relu else hidden


class MetricHead(nn.Module):
  """The released code's metric ("Discriminator"): Dense–ReLU–…–Dense, width-preserving, identity-initialised."""

  num_layers: int = 2

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    for i in range(self.num_layers):
      if i:
        x = nn.relu(x)
      x = nn.Dense(width, kernel_init=_identity_init, name=f"dense_{i}")(x)
    return x
