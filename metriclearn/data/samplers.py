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
"""

from __future__ import annotations

import numpy as np

from metriclearn.registry import check_kwargs, lookup

# Stream ids inside the SeedSequence key, so two uses of the same (seed, counter) never share random numbers.
_STREAM_EPOCH_PERMUTATION = 0
_STREAM_CLASS_PERMUTATION = 1
_STREAM_SAMPLES_IN_CLASS = 2
_STREAM_TRIPLET_CLASSES = 3
_STREAM_TRIPLET_SAMPLES = 4


def _rng(seed: int, stream: int, counter: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([seed, stream, counter]))


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
  replacement from (seed, step). Batches list the P classes in turn, each as M consecutive indices.

  Args:
    labels: `int[N]` class labels of the split.
    batch_size: P·M; must be a multiple of `m`.
    seed: random seed.
    m: samples per class (M).

  Raises:
    ValueError: `batch_size` not a multiple of `m`, fewer than P classes, or a class with fewer than M examples.
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
    small = counts < m
    if small.any():
      cls, count = self.classes[small][0], counts[small][0]
      raise ValueError(
          f"class {cls} has {count} examples, fewer than M={m} samples per class ({small.sum()} classes are that "
          f"small): choose m <= {counts.min()} or remove the classes with fewer than {m} examples"
      )
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
    return np.concatenate([rng.choice(self.members[c], size=self.m, replace=False) for c in chosen])


class TripletSampler:
  """T = batch_size / 3 triplets (anchor, positive, negative) per batch, all 2T classes of a batch distinct.

  The tuple input of DAML's released code (`papers/daml.md` (d), (h)): anchor and positive are two different
  examples of one class, the negative one example of another class, and no class appears in two triplets of a batch.
  Classes are drawn without replacement within an *epoch of classes* (a permutation of the classes drawn from
  (seed, class epoch), cut into groups of 2T, the remainder dropped): the first T of a group are the anchor classes,
  the other T the negative classes. The examples are drawn from (seed, step). Triplet t occupies positions
  3t (anchor), 3t + 1 (positive) and 3t + 2 (negative).

  Args:
    labels: `int[N]` class labels of the split.
    batch_size: 3T; must be a multiple of 3.
    seed: random seed.

  Raises:
    ValueError: `batch_size` not a multiple of 3, fewer than 2T classes, or a class with fewer than 2 examples.
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
    small = counts < 2
    if small.any():
      raise ValueError(
          f"class {self.classes[small][0]} has {counts[small][0]} example(s); every class must have at least 2 "
          f"(an anchor and a different positive; {small.sum()} classes are smaller): remove those classes"
      )
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
    rng = _rng(self.seed, _STREAM_TRIPLET_SAMPLES, step)
    triplets = [np.concatenate([rng.choice(self.members[a], size=2, replace=False),
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
