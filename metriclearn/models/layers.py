"""PyTorch-layout building blocks for the ImageNet backbones: convolution, BatchNorm and pooling as torch computes them.

The backbones in `resnet.py`, `googlenet.py` and `bninception.py` import torchvision / Cadene weights, so their layers
must compute what the torch layers compute, not flax's defaults:

* convolution padding is symmetric and explicit (flax's "SAME" pads stride-2 convolutions asymmetrically);
* BatchNorm momentum is flax's (`0.9` = torch's `momentum=0.1`), the epsilon is the reference's;
* max-pooling can round its output size up (torch's `ceil_mode=True`, used by both Inception nets).

Module names are the torch module names, so a flax parameter path joined by "." is the torch state-dict key
(`metriclearn.models.weights` relies on it).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# Kaiming-normal with fan_out (untruncated), as torchvision initialises ResNet convolutions; only the starting point
# of a network trained from scratch, every pretrained run overwrites it.
CONV_KERNEL_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

# The per-channel statistics of ImageNet-normalised inputs (as `metriclearn.data.transforms`; repeated here so that
# the models do not import the data package).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def conv(features: int, kernel: int, *, stride: int = 1, padding: int = 0, use_bias: bool = False,
         dtype: Any = jnp.float32, name: str) -> nn.Conv:
  """A square `torch.nn.Conv2d(…, kernel, stride, padding, bias=use_bias)` as a flax `Conv` (HWIO kernel)."""
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((padding, padding), (padding, padding)),
                 use_bias=use_bias, kernel_init=CONV_KERNEL_INIT, dtype=dtype, name=name)


def batch_norm(*, train: bool, freeze_bn: bool, momentum: float = 0.9, epsilon: float = 1e-5,
               dtype: Any = jnp.float32, name: str) -> nn.BatchNorm:
  """`torch.nn.BatchNorm2d`: batch statistics in training unless frozen; frozen or in evaluation, running ones.

  Departure: flax updates the running variance with the biased batch variance, torch with the unbiased one; they
  differ by n / (n − 1), n = B·h·w values per channel (< 0.1 % for a batch of 32 at 7×7 or larger maps).

  Args:
    train: training mode.
    freeze_bn: use the running statistics in training too; they are then never updated (flax only writes
      `batch_stats` when it normalises with batch statistics).
    momentum: flax's momentum, the weight of the old running value (= 1 − torch's `momentum`).
    epsilon: added to the variance.
    dtype: computation dtype (scale, bias and statistics stay float32).
    name: module name (the torch name, e.g. `bn1`).
  """
  return nn.BatchNorm(use_running_average=not train or freeze_bn, momentum=momentum, epsilon=epsilon, dtype=dtype,
                      name=name)


def _pool_padding(size: int, window: int, stride: int, padding: int, ceil_mode: bool) -> tuple[int, int]:
  """(low, high) padding that makes a VALID pooling produce torch's output size along one axis."""
  if not ceil_mode:
    return padding, padding
  out = math.ceil((size + 2 * padding - window) / stride) + 1
  # torch drops a last window that would start in the right padding.
  if (out - 1) * stride >= size + padding:
    out -= 1
  return padding, max(padding, (out - 1) * stride + window - size - padding)


def max_pool(x: jax.Array, window: int, stride: int, *, padding: int = 0, ceil_mode: bool = False) -> jax.Array:
  """`torch.nn.MaxPool2d(window, stride, padding, ceil_mode=ceil_mode)` on `[B, H, W, C]`.

  Padding (and the extra right/bottom border that `ceil_mode` adds) never wins the max: flax pads with −∞.
  """
  pads = tuple(_pool_padding(size, window, stride, padding, ceil_mode) for size in x.shape[1:3])
  return nn.max_pool(x, (window, window), strides=(stride, stride), padding=pads)


def avg_pool_same(x: jax.Array) -> jax.Array:
  """`torch.nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True)`: the Inception pool branch (divides by 9 at
  the border too). `ceil_mode` changes nothing at stride 1."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=True)


def imagenet_to_unit_range(x: jax.Array) -> jax.Array:
  """ImageNet-normalised RGB `[B, H, W, 3]` back to RGB in [0, 1] (what the data pipeline's normalisation undid)."""
  mean = jnp.asarray(IMAGENET_MEAN, x.dtype)
  std = jnp.asarray(IMAGENET_STD, x.dtype)
  return x * std + mean


def check_images(x: jax.Array, name: str, min_size: int) -> None:
  """A ValueError unless `x` is a channels-last RGB batch `[B, H, W, 3]` with H, W ≥ `min_size`."""
  if x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f"{name} expects RGB images [B, H, W, 3] (channels last), got shape {x.shape}")
  if min(x.shape[1:3]) < min_size:
    raise ValueError(f"{name} needs images of at least {min_size}×{min_size} pixels, got {x.shape[1]}×{x.shape[2]}")
