"""Samplers: index batches from labels alone, with static shapes, as a pure function of (seed, step).

`sampler.batch_indices(step)` returns `i32[batch_size]` indices into the split and depends on nothing but the
sampler's arguments and `step`: a run resumed at step k sees exactly the batches an uninterrupted run sees from step
k on, with no sampler state to checkpoint (DESIGN §5, §9). Randomness comes from `np.random.SeedSequence` keyed by
(seed, stream, epoch or step), so different seeds, streams and epochs draw independent numbers.

Registry: `SAMPLERS = {"random": RandomSampler, "m_per_class": MPerClassSampler, "triplets": TripletSampler}`; build
one with `make_sampler(name, labels, batch_size, seed, **kwargs)`.

Tuple batches (DAML, `papers/daml.md` (h)) are laid out tuple by tuple: `triplets` gives (anchor, positive, negative)
at positions (3t, 3t+1, 3t+2) with all 2T classes of a batch distinct; N-pair batches (one anchor–positive pair per
class, C distinct classes, anchor at 2c and positive at 2c+1) are exactly `m_per_class` with `m=2`.

Small classes (real SOP has thousands of 2- and 3-image classes, In-Shop too) are not an error: a class with fewer
examples than a batch needs of it is drawn with replacement (`draw_from_class`), and the sampler logs one warning
with the counts when it is built. Classes with enough examples are drawn without replacement, exactly as before
(same random numbers, so runs on such data reproduce bit-for-bit). What each sampler does with a 1-image class:
* `m_per_class`: its M slots all hold that image, as in PML's `MPerClassSampler`. Its positive pairs are the image
  with itself (distance 0: an easy pair, finite under the losses' safe square root), and its image is a real negative
  for the other P−1 classes. With `m=2` (DAML's N-pair batches) the anchor is its own positive: an easy
  tuple, whose positive is still a real negative for every other anchor. None of the four benchmarks has such a
  class (SOP and In-Shop train classes have ≥ 2 images, CUB ≥ 41, Cars ≥ 24); a folder data set may.
* `triplets`: a 1-image class cannot be an anchor class, so it takes a negative slot of its batch; only when a batch
  draws more 1-image classes than its T negative slots does one become an anchor whose positive is the same image.
"""

from __future__ import annotations

import numpy as np
from absl import logging

from metriclearn.registry import check_kwargs, lookup

# Stream ids inside the SeedSequence key, so two uses of the same (seed, counter) never share random numbers.
_STREAM_EPOCH_PERMUTATION = 0
_STREAM_CLASS_PERMUTATION = 1
_STREAM_SAMPLES_IN_CLASS = 2
_STREAM_TRIPLET_CLASSES = 3
_STREAM_TRIPLET_SAMPLES = 4


def _rng(seed: int, stream: int, counter: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([seed, stream, counter]))


def draw_from_class(rng: np.random.Generator, members: np.ndarray, size: int) -> np.ndarray:
  """`size` examples of one class: without replacement when the class has at least `size` (`rng.choice(...,
  replace=False)`, the draw every sampler used before small classes were allowed); otherwise every example once, in
  random order, then `size − n` more drawn with replacement.

  Departure from PML's `MPerClassSampler` (i.i.d. draws with replacement for a small class): every image of the class
  is in the batch before any repeats, so a batch holds all the n(n−1)/2 distinct positive pairs the class has.
  """
  if len(members) >= size:
    return rng.choice(members, size=size, replace=False)
  return np.concatenate([rng.permutation(members), rng.choice(members, size=size - len(members))])


def warn_small_classes(counts: np.ndarray, needed: int, sampler: str, consequence: str) -> None:
  """Logs one warning when some classes have fewer than `needed` examples: how many classes, how many images they
  hold, how many have a single image, and `consequence` (what the sampler does with them)."""
  small = counts < needed
  if small.any():
    logging.warning("%s sampler: %d of %d classes (%d of %d images) have fewer than %d examples, %d of them a single "
                    "one: %s", sampler, small.sum(), len(counts), counts[small].sum(), counts.sum(), needed,
                    (counts == 1).sum(), consequence)


def _check_labels_and_batch(labels: np.ndarray, batch_size: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be a 1-D integer array, got shape {labels.shape} and dtype {labels.dtype}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  return labels


class RandomSampler:
  """Epoch-wise shuffling without replacement; the last `N mod batch_size` indices of each epoch are dropped.

  Epoch e is the permutation drawn from (seed, e); step s takes the slice `s mod steps_per_epoch` of epoch
  `s // steps_per_epoch`. Every index appears at most once per epoch, and exactly once when `batch_size` divides N.
  """

  def __init__(self, labels: np.ndarray, batch_size: int, seed: int = 0):
    labels = _check_labels_and_batch(labels, batch_size)
    if batch_size > len(labels):
      raise ValueError(
          f"batch_size {batch_size} is larger than the split ({len(labels)} examples): choose at most {len(labels)}"
      )
    self.num_examples = len(labels)
    self.batch_size = batch_size
    self.seed = seed
    self.steps_per_epoch = self.num_examples // batch_size

  def batch_indices(self, step: int) -> np.ndarray:
    """`i32[batch_size]`: the indices of batch `step` (a pure function of seed and step)."""
    epoch, position = divmod(step, self.steps_per_epoch)
    order = _rng(self.seed, _STREAM_EPOCH_PERMUTATION, epoch).permutation(self.num_examples)
    return order[position * self.batch_size : (position + 1) * self.batch_size].astype(np.int32)


class MPerClassSampler:
  """P classes × M samples per batch, always exactly `batch_size = P·M` indices.

  Classes are drawn without replacement within an *epoch of classes* (a permutation of the classes drawn from
  (seed, class epoch), cut into groups of P, the remainder dropped); the M samples of a class are drawn without
  replacement from (seed, step), or, for a class with fewer than M examples, with replacement (`draw_from_class`;
  one warning with counts at construction). Batches list the P classes in turn, each as M consecutive indices.

  Args:
    labels: `int[N]` class labels of the split.
    batch_size: P·M; must be a multiple of `m`.
    seed: random seed.
    m: samples per class (M).

  Raises:
    ValueError: `batch_size` not a multiple of `m`, or fewer than P classes.
  """

  def __init__(self, labels: np.ndarray, batch_size: int, seed: int = 0, *, m: int = 4):
    labels = _check_labels_and_batch(labels, batch_size)
    if m < 1:
      raise ValueError(f"m (samples per class) must be positive, got {m}")
    if batch_size % m:
      raise ValueError(
          f"batch_size {batch_size} cannot hold P classes × M={m} samples: choose a multiple of {m}"
      )
    self.classes, counts = np.unique(labels, return_counts=True)
    self.classes_per_batch = batch_size // m
    if len(self.classes) < self.classes_per_batch:
      raise ValueError(
          f"batch_size {batch_size} with M={m} needs P={self.classes_per_batch} distinct classes per batch, but the "
          f"labels have only {len(self.classes)} classes: lower batch_size or raise m"
      )
    warn_small_classes(counts, m, "m_per_class", f"their M={m} slots are filled with replacement, every image of "
                       "the class once before any repeats")
    order = np.argsort(labels, kind="stable")
    self.members = np.split(order.astype(np.int32), np.cumsum(counts)[:-1])  # members[c]: indices of class c
    self.batch_size = batch_size
    self.m = m
    self.seed = seed
    self.steps_per_epoch = len(self.classes) // self.classes_per_batch  # an epoch of classes, not of examples

  def batch_indices(self, step: int) -> np.ndarray:
    """`i32[batch_size]`: M indices of each of P classes (a pure function of seed and step)."""
    epoch, position = divmod(step, self.steps_per_epoch)
    class_order = _rng(self.seed, _STREAM_CLASS_PERMUTATION, epoch).permutation(len(self.classes))
    chosen = class_order[position * self.classes_per_batch : (position + 1) * self.classes_per_batch]
    rng = _rng(self.seed, _STREAM_SAMPLES_IN_CLASS, step)
    return np.concatenate([draw_from_class(rng, self.members[c], self.m) for c in chosen])


class TripletSampler:
  """T = batch_size / 3 triplets (anchor, positive, negative) per batch, all 2T classes of a batch distinct.

  The tuple input of DAML's released code (`papers/daml.md` (d), (h)): anchor and positive are two different
  examples of one class, the negative one example of another class, and no class appears in two triplets of a batch.
  Classes are drawn without replacement within an *epoch of classes* (a permutation of the classes drawn from
  (seed, class epoch), cut into groups of 2T, the remainder dropped): the first T of a group are the anchor classes,
  the other T the negative classes. The examples are drawn from (seed, step). Triplet t occupies positions
  3t (anchor), 3t + 1 (positive) and 3t + 2 (negative).

  A class with a single example cannot give an anchor and a different positive: within its group it moves to the
  negative slots (a stable reordering of the group that puts classes with ≥ 2 examples first, so groups without such
  classes keep their order); if a group holds more than T of them, the excess are anchors whose positive is the same
  image. One warning with counts at construction.

  Args:
    labels: `int[N]` class labels of the split.
    batch_size: 3T; must be a multiple of 3.
    seed: random seed.

  Raises:
    ValueError: `batch_size` not a multiple of 3, or fewer than 2T classes.
  """

  def __init__(self, labels: np.ndarray, batch_size: int, seed: int = 0):
    labels = _check_labels_and_batch(labels, batch_size)
    if batch_size % 3:
      raise ValueError(f"batch_size {batch_size} cannot hold (anchor, positive, negative) triplets: choose a "
                       "multiple of 3")
    self.classes, counts = np.unique(labels, return_counts=True)
    self.triplets_per_batch = batch_size // 3
    classes_per_batch = 2 * self.triplets_per_batch
    if len(self.classes) < classes_per_batch:
      raise ValueError(
          f"batch_size {batch_size} holds {self.triplets_per_batch} triplets, which need {classes_per_batch} distinct "
          f"classes per batch, but the labels have only {len(self.classes)} classes: choose batch_size <= "
          f"{3 * (len(self.classes) // 2)}"
      )
    warn_small_classes(counts, 2, "triplets", "they take negative slots; only where a batch draws more than "
                       f"T={self.triplets_per_batch} of them is one an anchor, its own positive")
    self.can_anchor = counts >= 2
    order = np.argsort(labels, kind="stable")
    self.members = np.split(order.astype(np.int32), np.cumsum(counts)[:-1])  # members[c]: indices of class c
    self.batch_size = batch_size
    self.seed = seed
    self.steps_per_epoch = len(self.classes) // classes_per_batch  # an epoch of classes, not of examples

  def batch_indices(self, step: int) -> np.ndarray:
    """`i32[batch_size]`: (anchor, positive, negative) index triples (a pure function of seed and step)."""
    epoch, position = divmod(step, self.steps_per_epoch)
    class_order = _rng(self.seed, _STREAM_TRIPLET_CLASSES, epoch).permutation(len(self.classes))
    num = self.triplets_per_batch
    chosen = class_order[position * 2 * num : (position + 1) * 2 * num]
    chosen = np.concatenate([chosen[self.can_anchor[chosen]], chosen[~self.can_anchor[chosen]]])  # 1-image: negatives
    rng = _rng(self.seed, _STREAM_TRIPLET_SAMPLES, step)
    triplets = [np.concatenate([draw_from_class(rng, self.members[a], 2),
                                rng.choice(self.members[n], size=1)])
                for a, n in zip(chosen[:num], chosen[num:])]
    return np.concatenate(triplets).astype(np.int32)


SAMPLERS = {
    "random": RandomSampler,
    "m_per_class": MPerClassSampler,
    "triplets": TripletSampler,
}


def make_sampler(name: str, labels: np.ndarray, batch_size: int, seed: int = 0, **kwargs):
  """Builds the sampler registered as `name` (unknown names and keywords raise a ValueError listing the valid ones)."""
  sampler_class = lookup(SAMPLERS, name, "sampler")
  check_kwargs(sampler_class.__init__, kwargs, f"sampler {name!r}")
  return sampler_class(labels, batch_size, seed, **kwargs)
