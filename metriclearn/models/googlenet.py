"""GoogLeNet (Inception v1) in the torchvision layout, without the auxiliary heads: DAML's backbone.

The layout is torchvision's `GoogLeNet` (BatchNorm after every convolution, eps 1e-3; the "5×5" branch is a 3×3
convolution, as torchvision keeps it for its ported weights; max-pooling rounds up, `ceil_mode=True`). Names are
torchvision's (`conv1/conv`, `conv1/bn`, `inception3a/branch2/1/conv` …), so `metriclearn.models.weights` maps its
state dict one to one; the auxiliary classifiers (`aux1`, `aux2`) and `fc` of a weight file are skipped.

`(x, train)` → the `inception5b` feature maps `[B, h, w, 1024]` (7×7 at 224²); the `Embedder` pools them into the
1024-d features.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from metriclearn.models import layers

# torchvision's BasicConv2d: BatchNorm2d(eps=0.001), torch's default momentum.
_BN_EPSILON = 1e-3


class BasicConv(nn.Module):
  """torchvision's `BasicConv2d`: convolution (no bias) → BatchNorm (children `conv`, `bn`) → ReLU."""

  features: int
  kernel: int
  padding: int = 0
  stride: int = 1
  freeze_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = layers.conv(self.features, self.kernel, stride=self.stride, padding=self.padding, dtype=self.dtype,
                    name="conv")(x)
    x = layers.batch_norm(train=train, freeze_bn=self.freeze_bn, epsilon=_BN_EPSILON, dtype=self.dtype, name="bn")(x)
    return nn.relu(x)


class _Branch(nn.Module):
  """An `nn.Sequential` branch: (an optional 3×3 max-pool at index 0, then) `BasicConv`s named by their index."""

  convs: Sequence[tuple[int, int]]  # (features, kernel); 3×3 convolutions pad by 1
  pool_first: bool = False
  freeze_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.pool_first:
      x = layers.max_pool(x, 3, 1, padding=1, ceil_mode=True)
    for i, (features, kernel) in enumerate(self.convs):
      x = BasicConv(features, kernel, padding=kernel // 2, freeze_bn=self.freeze_bn, dtype=self.dtype,
                    name=str(i + int(self.pool_first)))(x, train)
    return x


class Inception(nn.Module):
  """torchvision's `Inception` block: four branches concatenated along the channels."""

  ch1x1: int
  ch3x3red: int
  ch3x3: int
  ch5x5red: int
  ch5x5: int
  pool_proj: int
  freeze_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    branch = functools.partial(_Branch, freeze_bn=self.freeze_bn, dtype=self.dtype)
    return jnp.concatenate([
        BasicConv(self.ch1x1, 1, freeze_bn=self.freeze_bn, dtype=self.dtype, name="branch1")(x, train),
        branch(((self.ch3x3red, 1), (self.ch3x3, 3)), name="branch2")(x, train),
        # torchvision's "5×5" branch convolves 3×3 (kept for its ported weights, pytorch/vision#906).
        branch(((self.ch5x5red, 1), (self.ch5x5, 3)), name="branch3")(x, train),
        branch(((self.pool_proj, 1),), pool_first=True, name="branch4")(x, train),
    ], axis=-1)


# (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj) of each block, as torchvision (= Table 1 of Szegedy et al.).
_BLOCKS = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


def _transform_input(x: jax.Array) -> jax.Array:
  """torchvision's `transform_input`: ImageNet-normalised RGB → (x − 0.5) / 0.5, the range of its ported weights."""
  return (layers.imagenet_to_unit_range(x) - 0.5) / 0.5


class GoogLeNet(nn.Module):
  """torchvision's `GoogLeNet(aux_logits=False)` without `avgpool`, `dropout` and `fc`.

  Attributes:
    transform_input: inputs are ImageNet-normalised RGB and are mapped to the [−1, 1] range of torchvision's ported
      weights (torchvision turns this on whenever it loads its `IMAGENET1K_V1` weights). Turn it off for weights
      trained on ImageNet-normalised inputs.
    freeze_bn: BatchNorm uses running statistics in training and never updates them.
    dtype: computation dtype (parameters stay float32).
  """

  transform_input: bool = True
  freeze_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """`[B, H, W, 3]` ImageNet-normalised RGB → `[B, ⌈H/32⌉, ⌈W/32⌉, 1024]`."""
    layers.check_images(x, "googlenet", min_size=32)
    x = x.astype(self.dtype)
    if self.transform_input:
      x = _transform_input(x)
    conv = functools.partial(BasicConv, freeze_bn=self.freeze_bn, dtype=self.dtype)
    x = conv(64, 7, stride=2, padding=3, name="conv1")(x, train)
    x = layers.max_pool(x, 3, 2, ceil_mode=True)
    x = conv(64, 1, name="conv2")(x, train)
    x = conv(192, 3, padding=1, name="conv3")(x, train)
    x = layers.max_pool(x, 3, 2, ceil_mode=True)
    for name, channels in _BLOCKS.items():
      if name == "inception4a":
        x = layers.max_pool(x, 3, 2, ceil_mode=True)
      elif name == "inception5a":
        x = layers.max_pool(x, 2, 2, ceil_mode=True)
      x = Inception(*channels, freeze_bn=self.freeze_bn, dtype=self.dtype, name=name)(x, train)
    return x
