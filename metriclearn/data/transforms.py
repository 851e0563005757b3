"""Image preprocessing for the photo benchmarks: train crops with flips, the test centre crop, ImageNet statistics.

A transform is geometry only: `transform.plan(width, height, rng)` says which box of the original image becomes the
`size × size` output and whether it is mirrored. `render(image, plan, size)` then does the pixel work in one
resampling pass (Pillow's `resize(box=...)`, antialiased bilinear like torchvision's Pillow path), after asking the
JPEG decoder for the smallest DCT-scaled version of the image that still has at least `size` pixels across the box
(`Image.draft`), which decodes large photos several times faster and changes nothing the resize would not average away.

* `RandomResizedCrop(size=224)` + flip: the common DML recipe (Metrix, proxy-anchor, the "reality check").
* `ResizeRandomCrop(resize=256, size=224)` + flip: DAML's recipe, the image squashed to 256×256 then a random
  224×224 crop (done as one crop box of the original image: the same pixels as resize-then-crop, one resampling).
* `ResizeCenterCrop(resize=256, size=224)`: the test transform; the shorter side to 256 (or `square=True`: 256×256,
  the DAML code's test-time squash), then the central 224×224.

`Preprocessing` bundles a recipe's choices (as a data set's keyword arguments) and builds the two transforms.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import numpy as np
from PIL import Image

# ImageNet statistics of images scaled to [0, 1] (torchvision's, used by every ResNet / BN-Inception port).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Plan(NamedTuple):
  """Where the output comes from: `box = (left, top, right, bottom)` in original pixels, and a horizontal mirror."""

  box: tuple[float, float, float, float]
  flip: bool


class Transform(Protocol):
  size: int

  def plan(self, width: int, height: int, rng: np.random.Generator | None) -> Plan: ...


def _flip(rng: np.random.Generator | None, enabled: bool) -> bool:
  return bool(enabled and rng is not None and rng.random() < 0.5)


@dataclasses.dataclass(frozen=True)
class RandomResizedCrop:
  """A crop of random area fraction (`scale`) and aspect ratio (`ratio`, log-uniform), resized to `size × size`.

  The sampling is torchvision's `RandomResizedCrop.get_params`: ten tries at a box that fits, then the whole image
  cropped centrally to the nearest allowed aspect ratio. With `rng=None` (no randomness) it is that fallback crop.
  """

  size: int = 224
  scale: tuple[float, float] = (0.08, 1.0)
  ratio: tuple[float, float] = (3 / 4, 4 / 3)
  flip: bool = True

  def plan(self, width: int, height: int, rng: np.random.Generator | None) -> Plan:
    area = width * height
    log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
    for _ in range(10 if rng is not None else 0):
      target_area = area * rng.uniform(*self.scale)
      aspect = math.exp(rng.uniform(*log_ratio))
      w = round(math.sqrt(target_area * aspect))
      h = round(math.sqrt(target_area / aspect))
      if 0 < w <= width and 0 < h <= height:
        top = int(rng.integers(0, height - h + 1))
        left = int(rng.integers(0, width - w + 1))
        return Plan((left, top, left + w, top + h), _flip(rng, self.flip))
    in_ratio = width / height
    if in_ratio < self.ratio[0]:
      w, h = width, round(width / self.ratio[0])
    elif in_ratio > self.ratio[1]:
      w, h = round(height * self.ratio[1]), height
    else:
      w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return Plan((left, top, left + w, top + h), _flip(rng, self.flip))


@dataclasses.dataclass(frozen=True)
class ResizeRandomCrop:
  """DAML: the image resized to `resize × resize` (aspect not kept), a random `size × size` crop of it, a flip."""

  resize: int = 256
  size: int = 224
  flip: bool = True

  def plan(self, width: int, height: int, rng: np.random.Generator | None) -> Plan:
    if self.size > self.resize:
      raise ValueError(f"crop size {self.size} is larger than the resized image ({self.resize})")
    slack = self.resize - self.size
    if rng is None:
      top = left = slack // 2
    else:
      top, left = int(rng.integers(0, slack + 1)), int(rng.integers(0, slack + 1))
    sx, sy = width / self.resize, height / self.resize
    return Plan((left * sx, top * sy, (left + self.size) * sx, (top + self.size) * sy), _flip(rng, self.flip))


@dataclasses.dataclass(frozen=True)
class ResizeCenterCrop:
  """The shorter side resized to `resize` (or the image to `resize × resize` with `square`), the central crop."""

  resize: int = 256
  size: int = 224
  square: bool = False

  def plan(self, width: int, height: int, rng: np.random.Generator | None = None) -> Plan:
    del rng
    if self.size > self.resize:
      raise ValueError(f"crop size {self.size} is larger than the resized image ({self.resize})")
    if self.square:
      sx, sy = width / self.resize, height / self.resize
    else:
      sx = sy = min(width, height) / self.resize
    # The centre of the resized image maps to the centre of the original; no rounding to whole resized pixels
    # (torchvision rounds the crop offset, a sub-pixel difference).
    half_w, half_h = self.size * sx / 2, self.size * sy / 2
    return Plan((width / 2 - half_w, height / 2 - half_h, width / 2 + half_w, height / 2 + half_h), False)


def render(image: Image.Image, plan: Plan, size: int, *, mode: str = "RGB") -> np.ndarray:
  """`u8[size, size, C]`: the plan's box of `image` resized to `size × size` (bilinear), mirrored if planned.

  Args:
    image: a Pillow image, ideally opened lazily (not yet loaded), so a JPEG can be decoded at a reduced scale.
    plan: from a transform's `plan(image.width, image.height, rng)`.
    size: output side.
    mode: "RGB" (C = 3) or "L" (C = 1); other modes are converted.
  """
  width, height = image.size
  left, top, right, bottom = plan.box
  if getattr(image, "draft", None) is not None and image.format == "JPEG":
    # Ask for at least `size` decoded pixels across the box on each axis; draft picks the largest reduction (1/2,
    # 1/4, 1/8) that keeps the image at least this large.
    need = (math.ceil(width * size / max(right - left, 1e-6)), math.ceil(height * size / max(bottom - top, 1e-6)))
    image.draft(mode, need)
    if image.size != (width, height):
      sx, sy = image.size[0] / width, image.size[1] / height
      left, top, right, bottom = left * sx, top * sy, right * sx, bottom * sy
  if image.mode != mode:
    image = image.convert(mode)
  out = image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, right, bottom))
  pixels = np.asarray(out, dtype=np.uint8)
  if pixels.ndim == 2:
    pixels = pixels[:, :, None]
  return pixels[:, ::-1] if plan.flip else pixels


_AUGMENTS = ("random_resized_crop", "resize_random_crop", "none")


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """A recipe's preprocessing, as given in `config.dataset.kwargs`.

  Attributes:
    image_size: side of the network input (224).
    resize_size: the side (or shorter side) before the test centre crop and DAML's random crop (256).
    augment: "random_resized_crop" (+ flip), "resize_random_crop" (DAML: 256² then a random 224 crop, + flip), or
      "none" (train images get the test transform).
    eval_resize: "shorter_side" (keep the aspect) or "square" (squash to `resize_size²`) before the centre crop.
    mean, std: per-channel statistics of images in [0, 1]; the default is ImageNet's. Caffe-style weights that
      subtract a mean in 0..255 take `mean=(123/255, 117/255, 104/255)`, `std=(1/255,) * 3`.
  """

  image_size: int = 224
  resize_size: int = 256
  augment: str = "random_resized_crop"
  eval_resize: str = "shorter_side"
  mean: Sequence[float] = IMAGENET_MEAN
  std: Sequence[float] = IMAGENET_STD

  def __post_init__(self):
    if self.augment not in _AUGMENTS:
      raise ValueError(f"unknown augment {self.augment!r}; valid: {', '.join(map(repr, _AUGMENTS))}")
    if self.eval_resize not in ("shorter_side", "square"):
      raise ValueError(f"eval_resize must be 'shorter_side' or 'square', got {self.eval_resize!r}")
    if not 0 < self.image_size <= self.resize_size:
      raise ValueError(f"need 0 < image_size <= resize_size, got {self.image_size} and {self.resize_size}")
    if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
      raise ValueError(f"mean and std need 3 channels and std > 0, got mean={self.mean}, std={self.std}")

  def train_transform(self) -> Transform | None:
    """The training transform, or None for `augment="none"` (the split's own test transform applies)."""
    if self.augment == "random_resized_crop":
      return RandomResizedCrop(size=self.image_size)
    if self.augment == "resize_random_crop":
      return ResizeRandomCrop(resize=self.resize_size, size=self.image_size)
    return None

  def eval_transform(self) -> ResizeCenterCrop:
    return ResizeCenterCrop(resize=self.resize_size, size=self.image_size, square=self.eval_resize == "square")
