"""ResNet-18/34/50 in the torchvision layout, as feature-map backbones for the embedder.

torchvision's ResNet-50 is "v1.5": a bottleneck block strides on its 3×3 convolution, not on the first 1×1 (the
original paper's v1). The module and parameter names are torchvision's (`conv1`, `bn1`, `layer1/0/conv1`,
`layer2/0/downsample/0` …), so `metriclearn.models.weights` maps a torchvision or timm state dict onto them one to
one.

The network stops before the global pooling: `(x, train)` → the last stage's feature maps `[B, H/32, W/32, c]`
(c = 512 for ResNet-18/34, 2048 for ResNet-50); the `Embedder` pools them. Inputs are ImageNet-normalised RGB, as
torchvision's weights expect.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from metriclearn.models import layers


class _Downsample(nn.Module):
  """The shortcut projection `nn.Sequential(conv1x1(stride), BatchNorm2d)`; children "0" and "1" as in torch."""

  features: int
  stride: int
  freeze_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = layers.conv(self.features, 1, stride=self.stride, dtype=self.dtype, name="0")(x)
    return layers.batch_norm(train=train, freeze_bn=self.freeze_bn, dtype=self.dtype, name="1")(x)


class BasicBlock(nn.Module):
  """3×3 → 3×3 residual block of ResNet-18/34 (`expansion` 1)."""

  width: int
  stride: int = 1
  freeze_bn: bool = False
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    bn = functools.partial(layers.batch_norm, train=train, freeze_bn=self.freeze_bn, dtype=self.dtype)
    y = layers.conv(self.width, 3, stride=self.stride, padding=1, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(bn(name="bn1")(y))
    y = layers.conv(self.width, 3, padding=1, dtype=self.dtype, name="conv2")(y)
    y = bn(name="bn2")(y)
    return nn.relu(_shortcut(self, x, train) + y)


class Bottleneck(nn.Module):
  """1×1 → 3×3 (strided, v1.5) → 1×1 residual block of ResNet-50 (`expansion` 4)."""

  width: int
  stride: int = 1
  freeze_bn: bool = False
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    bn = functools.partial(layers.batch_norm, train=train, freeze_bn=self.freeze_bn, dtype=self.dtype)
    y = layers.conv(self.width, 1, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(bn(name="bn1")(y))
    y = layers.conv(self.width, 3, stride=self.stride, padding=1, dtype=self.dtype, name="conv2")(y)
    y = nn.relu(bn(name="bn2")(y))
    y = layers.conv(self.width * self.expansion, 1, dtype=self.dtype, name="conv3")(y)
    y = bn(name="bn3")(y)
    return nn.relu(_shortcut(self, x, train) + y)


def _shortcut(block: BasicBlock | Bottleneck, x: jax.Array, train: bool) -> jax.Array:
  """The identity, or torchvision's projection when the block changes the resolution or the width."""
  out_features = block.width * block.expansion
  if block.stride == 1 and x.shape[-1] == out_features:
    return x
  return _Downsample(out_features, block.stride, freeze_bn=block.freeze_bn, dtype=block.dtype,
                     name="downsample")(x, train)


class _Stage(nn.Module):
  """`layerN`: `num_blocks` blocks named "0", "1", …; the first one strides."""

  block: str
  width: int
  num_blocks: int
  stride: int
  freeze_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    block_cls = BLOCKS[self.block]
    for i in range(self.num_blocks):
      x = block_cls(self.width, stride=self.stride if i == 0 else 1, freeze_bn=self.freeze_bn, dtype=self.dtype,
                    name=str(i))(x, train)
    return x


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
  """torchvision's ResNet without `avgpool` and `fc`: images → last-stage feature maps.

  Attributes:
    stage_sizes: blocks in `layer1` … `layer4`.
    block: "basic" (ResNet-18/34) or "bottleneck" (ResNet-50).
    freeze_bn: BatchNorm uses running statistics in training and never updates them.
    dtype: computation dtype (parameters stay float32).
  """

  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = "bottleneck"
  freeze_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """`[B, H, W, 3]` ImageNet-normalised RGB → `[B, ⌈H/32⌉, ⌈W/32⌉, 512 or 2048]`."""
    layers.check_images(x, type(self).__name__, min_size=32)
    if self.block not in BLOCKS:
      raise ValueError(f"unknown ResNet block {self.block!r}; valid: {', '.join(BLOCKS)}")
    x = x.astype(self.dtype)
    x = layers.conv(64, 7, stride=2, padding=3, dtype=self.dtype, name="conv1")(x)
    x = layers.batch_norm(train=train, freeze_bn=self.freeze_bn, dtype=self.dtype, name="bn1")(x)
    x = layers.max_pool(nn.relu(x), 3, 2, padding=1)
    for i, num_blocks in enumerate(self.stage_sizes):
      x = _Stage(self.block, 64 * 2**i, num_blocks, stride=1 if i == 0 else 2, freeze_bn=self.freeze_bn,
                 dtype=self.dtype, name=f"layer{i + 1}")(x, train)
    return x


class ResNet18(ResNet):
  """torchvision `resnet18`: basic blocks (2, 2, 2, 2); 512-channel feature maps."""

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = "basic"


class ResNet34(ResNet):
  """torchvision `resnet34`: basic blocks (3, 4, 6, 3); 512-channel feature maps."""

  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = "basic"


class ResNet50(ResNet):
  """torchvision `resnet50` (v1.5): bottleneck blocks (3, 4, 6, 3); 2048-channel feature maps."""

  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = "bottleneck"
