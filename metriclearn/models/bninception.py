"""BN-Inception (Ioffe & Szegedy 2015) in the layout of Cadene's `pretrainedmodels.bninception`.

This is the backbone of the Reality-Check, Multi-Similarity and Proxy-Anchor code, all of which load Cadene's
Caffe-converted ImageNet weights. The layout follows that module exactly: flat, Caffe-style names
(`conv1_7x7_s2`, `conv1_7x7_s2_bn`, `inception_3a_double_3x3_reduce` …), convolutions *with* biases, a BatchNorm and
an (in-place) ReLU after every convolution, average-pool branches that count the padding, max-pool branches in the
stride-2 blocks 3c and 4e and in 5b, and `ceil_mode=True` max-pooling. The flax parameter names are the torch ones,
so `metriclearn.models.weights` maps the state dict one to one (`last_linear` is skipped).

`(x, train)` → the `inception_5b` feature maps `[B, h, w, 1024]` (7×7 at 224²); the `Embedder` pools them into the
1024-d features.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from metriclearn.models import layers

# Cadene's weights expect BGR pixels in 0..255 minus this per-channel (B, G, R) mean, with std 1.
CAFFE_BGR_MEAN = (104.0, 117.0, 128.0)


class _Block(NamedTuple):
  """Widths of one Inception block of the BN-Inception paper (Figure 5 / Table 1); None: the branch is absent."""

  ch1x1: int | None  # the 1×1 branch (absent in the stride-2 blocks)
  ch3x3red: int
  ch3x3: int
  double_red: int
  double: int
  pool: str  # "avg" (stride 1), "max" (stride 1), "max_s2" (the stride-2 blocks: no projection)
  pool_proj: int | None


_BLOCKS = {
    "3a": _Block(64, 64, 64, 64, 96, "avg", 32),
    "3b": _Block(64, 64, 96, 64, 96, "avg", 64),
    "3c": _Block(None, 128, 160, 64, 96, "max_s2", None),
    "4a": _Block(224, 64, 96, 96, 128, "avg", 128),
    "4b": _Block(192, 96, 128, 96, 128, "avg", 128),
    "4c": _Block(160, 128, 160, 128, 160, "avg", 128),
    "4d": _Block(96, 128, 192, 160, 192, "avg", 128),
    "4e": _Block(None, 128, 192, 192, 256, "max_s2", None),
    "5a": _Block(352, 192, 320, 160, 224, "avg", 128),
    "5b": _Block(352, 192, 320, 192, 224, "max", 128),
}


def _transform_input(x: jax.Array) -> jax.Array:
  """ImageNet-normalised RGB → Caffe BGR in 0..255 minus `CAFFE_BGR_MEAN` (Cadene's `input_space`/`input_range`)."""
  bgr = layers.imagenet_to_unit_range(x)[..., ::-1] * 255.0
  return bgr - jnp.asarray(CAFFE_BGR_MEAN, x.dtype)


class BNInception(nn.Module):
  """Cadene's `BNInception` without `global_pool` and `last_linear`: images → `inception_5b` feature maps.

  Attributes:
    transform_input: inputs are ImageNet-normalised RGB (as the data pipeline makes them for every backbone) and are
      mapped to Cadene's Caffe convention (BGR, 0..255, mean subtracted). Turn it off when the pipeline already
      produces that convention.
    bn_momentum: flax BatchNorm momentum. Cadene's layers set torch `momentum=0.9` (a Caffe-port artifact: the
      running statistics move 90 % of the way to each batch's), which is flax's 0.1; kept so that training with
      unfrozen BatchNorm behaves as the reference code. The papers freeze BatchNorm (`freeze_bn`) anyway.
    freeze_bn: BatchNorm uses running statistics in training and never updates them.
    dtype: computation dtype (parameters stay float32).
  """

  transform_input: bool = True
  bn_momentum: float = 0.1
  freeze_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """`[B, H, W, 3]` ImageNet-normalised RGB → `[B, ⌈H/32⌉, ⌈W/32⌉, 1024]`."""
    layers.check_images(x, "bninception", min_size=32)
    x = x.astype(self.dtype)
    if self.transform_input:
      x = _transform_input(x)
    conv_bn = functools.partial(self._conv_bn, train=train)
    x = conv_bn(x, "conv1_7x7_s2", 64, 7, stride=2, padding=3)
    x = layers.max_pool(x, 3, 2, ceil_mode=True)
    x = conv_bn(x, "conv2_3x3_reduce", 64, 1)
    x = conv_bn(x, "conv2_3x3", 192, 3, padding=1)
    x = layers.max_pool(x, 3, 2, ceil_mode=True)
    for name, block in _BLOCKS.items():
      x = self._inception(x, f"inception_{name}", block, train)
    return x

  def _conv_bn(self, x: jax.Array, name: str, features: int, kernel: int, *, train: bool, stride: int = 1,
               padding: int = 0) -> jax.Array:
    """`name` (a biased convolution) → `name_bn` → ReLU, as every Cadene layer."""
    x = layers.conv(features, kernel, stride=stride, padding=padding, use_bias=True, dtype=self.dtype, name=name)(x)
    x = layers.batch_norm(train=train, freeze_bn=self.freeze_bn, momentum=self.bn_momentum, epsilon=1e-5,
                          dtype=self.dtype, name=f"{name}_bn")(x)
    return nn.relu(x)

  def _inception(self, x: jax.Array, prefix: str, block: _Block, train: bool) -> jax.Array:
    """One Inception block: 1×1, 3×3, double 3×3 and pool branches concatenated along the channels."""
    conv_bn = functools.partial(self._conv_bn, train=train)
    stride = 2 if block.pool == "max_s2" else 1
    branches = []
    if block.ch1x1 is not None:
      branches.append(conv_bn(x, f"{prefix}_1x1", block.ch1x1, 1))
    y = conv_bn(x, f"{prefix}_3x3_reduce", block.ch3x3red, 1)
    branches.append(conv_bn(y, f"{prefix}_3x3", block.ch3x3, 3, stride=stride, padding=1))
    y = conv_bn(x, f"{prefix}_double_3x3_reduce", block.double_red, 1)
    y = conv_bn(y, f"{prefix}_double_3x3_1", block.double, 3, padding=1)
    branches.append(conv_bn(y, f"{prefix}_double_3x3_2", block.double, 3, stride=stride, padding=1))
    if block.pool == "avg":
      y = layers.avg_pool_same(x)
    else:
      y = layers.max_pool(x, 3, stride, padding=1 if stride == 1 else 0, ceil_mode=True)
    branches.append(conv_bn(y, f"{prefix}_pool_proj", block.pool_proj, 1) if block.pool_proj else y)
    sizes = {branch.shape[1:3] for branch in branches}
    if len(sizes) > 1:
      # The strided convolutions round down and the ceil-mode pool rounds up: they agree only on even sizes.
      raise ValueError(f"bninception: {prefix} needs an even input size, got {x.shape[1]}×{x.shape[2]}; use images "
                       "whose sides survive the stride-2 stages evenly (e.g. 224, 227, 256)")
    return jnp.concatenate(branches, axis=-1)
