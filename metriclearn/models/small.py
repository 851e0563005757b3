"""Small backbones for the embedded data sets: a CNN for 32×32 glyph images and an MLP for flat vectors.

Both follow the backbone contract of `metriclearn.models.embedder.Embedder`: `(x, train) -> [B, h, w, c]` feature maps,
BatchNorm running statistics in the `batch_stats` collection, and `freeze_bn=True` for frozen statistics (the
running averages are used in training too and never updated, as the reference code's `bn_freeze`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# PyTorch's BatchNorm defaults (momentum 0.1 on the new value = 0.9 on the running one, eps 1e-5), so that recipes
# ported from the papers' code behave alike.
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


class SmallCNN(nn.Module):
  """Conv–BN–ReLU blocks with 2×2 max-pooling between them, for small grey-scale or colour images.

  With the defaults a `[B, 32, 32, 1]` batch gives `[B, 4, 4, 128]` feature maps (a stride-2 stem and two poolings;
  the last block is not pooled, the embedder's global pooling follows).

  Attributes:
    widths: output channels of each block.
    convs_per_block: 3×3 convolutions in each block.
    stem_stride: stride of the first convolution. 2 (default) makes a training step at batch 128 about 5× faster
      on a CPU than stride 1 (the later blocks run at a quarter of the pixels), which is what lets the glyphs recipe
      train in about a minute; use 1 for more spatial detail.
    freeze_bn: BatchNorm uses running statistics in training and never updates them.
    dtype: computation dtype (parameters stay float32).
  """

  widths: Sequence[int] = (32, 64, 128)
  convs_per_block: int = 1
  stem_stride: int = 2
  freeze_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """`[B, H, W, C]` images → `[B, H / (s·2^(n−1)), W / (s·2^(n−1)), widths[-1]]` feature maps.

    (s = `stem_stride`, n = number of blocks; sizes round down.)
    """
    if x.ndim != 4:
      raise ValueError(f"small_cnn expects images [B, H, W, C] (channels last), got shape {x.shape}; "
                       "add a channel axis to grey-scale images")
    x = x.astype(self.dtype)
    for block, width in enumerate(self.widths):
      if block > 0:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for conv in range(self.convs_per_block):
        # No conv bias: the BatchNorm that follows has its own shift.
        stride = self.stem_stride if block == 0 and conv == 0 else 1
        x = nn.Conv(width, (3, 3), strides=stride, use_bias=False, dtype=self.dtype, name=f"conv{block}_{conv}")(x)
        x = nn.BatchNorm(use_running_average=not train or self.freeze_bn, momentum=_BN_MOMENTUM,
                         epsilon=_BN_EPSILON, dtype=self.dtype, name=f"bn{block}_{conv}")(x)
        x = nn.relu(x)
    return x


class MLP(nn.Module):
  """Dense (–BN) –ReLU layers on flattened inputs; the feature "maps" are `[B, 1, 1, c]`.

  With `hidden_dims=()` the backbone is the identity on the flattened input, so the embedder is a linear map
  (plus normalisation): the setting of linear metric learning.

  Attributes:
    hidden_dims: widths of the hidden layers; the last one is the feature width `c`.
    batchnorm: BatchNorm after each Dense (without it the model has no `batch_stats` collection).
    freeze_bn: BatchNorm uses running statistics in training and never updates them.
    dtype: computation dtype (parameters stay float32).
  """

  hidden_dims: Sequence[int] = (256,)
  batchnorm: bool = True
  freeze_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """`[B, ...]` inputs (flattened after the batch axis) → `[B, 1, 1, c]`."""
    x = x.reshape(x.shape[0], -1).astype(self.dtype)
    for i, width in enumerate(self.hidden_dims):
      x = nn.Dense(width, use_bias=not self.batchnorm, dtype=self.dtype, name=f"dense{i}")(x)
      if self.batchnorm:
        x = nn.BatchNorm(use_running_average=not train or self.freeze_bn, momentum=_BN_MOMENTUM,
                         epsilon=_BN_EPSILON, dtype=self.dtype, name=f"bn{i}")(x)
      x = nn.relu(x)
    return x[:, None, None, :]
