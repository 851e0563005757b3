"""The data set interface: `Split` (a random-access source of images and labels) and `Dataset` (its splits).

Every data set, embedded or on disk, reduces to arrays held in host memory or behind a random-access reader: the
sampler sees only `labels`, the loader indexes `images` with the sampler's index batches. The embedded sets hold a
`u8`/`f32[N, H, W, C]` array; the photo benchmarks hold an `ImageFiles` (`images.py`), which indexes like a `u8[N,
S, S, 3]` array but decodes on access (`split.in_memory` tells them apart). Labels are contiguous `0 .. C-1`
*within* a split, and `class_names[label]` names the class, so the zero-shot train and test splits each look like a
complete classification problem to the code that consumes them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

import numpy as np

from metriclearn.data.images import ImageFiles
from metriclearn.data.transforms import Transform


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """One split of a data set.

  Attributes:
    images: `u8[N, H, W, C]` (0..255), `f32[N, H, W, C]` already scaled to [0, 1], or an `ImageFiles` (photos
      decoded on access; `images[indices]` gives `u8[n, S, S, 3]` after the test transform).
    labels: `i32[N]`, contiguous class ids `0 .. len(class_names) - 1`.
    class_names: the name of each class id.
  """

  images: np.ndarray | ImageFiles
  labels: np.ndarray
  class_names: list[str]

  def __post_init__(self):
    if self.images.ndim != 4:
      raise ValueError(f"images must be [N, H, W, C], got shape {self.images.shape}")
    if self.images.dtype not in (np.uint8, np.float32):
      raise ValueError(f"images must be uint8 or float32, got {self.images.dtype}")
    if self.labels.shape != (self.images.shape[0],):
      raise ValueError(f"labels must be [N] = [{self.images.shape[0]}], got shape {self.labels.shape}")
    if self.labels.dtype != np.int32:
      raise ValueError(f"labels must be int32, got {self.labels.dtype}")
    if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
      raise ValueError(
          f"labels must lie in 0..{len(self.class_names) - 1} (one per class name), "
          f"got range {self.labels.min()}..{self.labels.max()}"
      )

  def __len__(self) -> int:
    return int(self.labels.shape[0])

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def in_memory(self) -> bool:
    """True when `images` is an array in host memory; False for an `ImageFiles` (decode with `images[indices]`)."""
    return isinstance(self.images, np.ndarray)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """`(H, W, C)` of one image."""
    return tuple(self.images.shape[1:])


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """The splits of one data set; `dataset["train"]` and `dataset.train` are the same split.

  Attributes:
    name: the registered name.
    train: the training classes (under the fair protocol, without the validation fold's classes).
    test: the test classes. For In-Shop, the query images followed by the gallery images (labels shared).
    val: the fair protocol's validation classes (carved from the training classes), or None.
    query, gallery: In-Shop's retrieval protocol: every query is ranked against the gallery, never against the other
      queries; None for data sets whose test split is its own gallery.
    mean, std: per-channel normalisation of images in [0, 1] that the recipe's backbone expects (ImageNet's for the
      photo benchmarks), or None to feed [0, 1] pixels.
    train_transform: the random training transform of file-backed splits (`transforms.py`), or None.
    train_augment: the random training augmentation of in-memory splits, `augment(f32[B, H, W, C] in [0, 1], rng)`
      (`loader.Augment`; e.g. `glyphs.random_shift`), or None.
  """

  name: str
  train: Split
  test: Split
  val: Split | None = None
  query: Split | None = None
  gallery: Split | None = None
  mean: tuple[float, ...] | None = None
  std: tuple[float, ...] | None = None
  train_transform: Transform | None = None
  train_augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None

  @property
  def splits(self) -> dict[str, Split]:
    names = ("train", "val", "test", "query", "gallery")
    return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

  def __getitem__(self, split: str) -> Split:
    splits = self.splits
    if split not in splits:
      raise ValueError(f"data set {self.name!r} has no split {split!r}; it has: {', '.join(splits)}")
    return splits[split]


def split_by_class(
    images: np.ndarray | ImageFiles,
    labels: np.ndarray,
    class_names: Sequence[str],
    classes: Sequence[int],
) -> Split:
  """The `Split` holding the examples of `classes` (ids into `class_names`), relabelled `0 .. len(classes) - 1`.

  The new label of a class is its position in `sorted(classes)`, so the order of `classes` does not matter.
  """
  classes = np.sort(np.asarray(classes, dtype=np.int64))
  new_label = np.full(len(class_names), -1, dtype=np.int32)
  new_label[classes] = np.arange(len(classes), dtype=np.int32)
  keep = new_label[labels] >= 0
  return Split(
      images=images[keep] if isinstance(images, np.ndarray) else images.take(keep),
      labels=new_label[labels[keep]],
      class_names=[class_names[c] for c in classes],
  )


def zero_shot_classes(num_classes: int, num_train_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Disjoint (train, test) class ids: a seeded permutation of `0 .. num_classes - 1`, cut after `num_train_classes`."""
  if not 0 < num_train_classes < num_classes:
    raise ValueError(f"num_train_classes must be between 1 and {num_classes - 1}, got {num_train_classes}")
  # A dedicated stream (the 1 after the seed) so the split does not share random numbers with generation.
  order = np.random.default_rng(np.random.SeedSequence([seed, 1])).permutation(num_classes)
  return np.sort(order[:num_train_classes]), np.sort(order[num_train_classes:])


def default_cache_dir() -> str:
  """Where generated data sets are cached: `$XDG_CACHE_HOME/metriclearn`, else `~/.cache/metriclearn`."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "metriclearn")
