"""The APFS batch sampler: class representatives held for T steps in the first P slots of every batch.

APFS (Can, Gürbüz & Alatan, ICIP 2021; `papers/apfs.md`) builds each batch of P classes × M slots from the current
*representative set* R_k (one sample per training class) and M−1 ordinary samples per class. The layout follows the
authors' `MPerClass(representative_lifetime=T)` sampler [L]:

    [r_c1, …, r_cP,  s_c1,1, s_c2,1, …, s_cP,1,  s_c1,2, …, s_cP,M−1]

* Stage k covers steps [kT, (k+1)T). Its representatives are drawn for **all** C classes at once: class c's
  representative in stage k is element k of c's queue, the concatenation of independent shuffles of c's examples
  (refilled and reshuffled when exhausted), so successive representatives run through a class without replacement.
* The representative is drawn independently of the class's M−1 ordinary samples (as [L]): the same image can occupy
  two slots of a batch; the losses' safe square root keeps that finite.
* Small classes (real SOP and In-Shop have thousands of 2- and 3-image classes): a class with fewer than M−1 examples
  fills its ordinary slots with replacement, every image once before any repeats (`samplers.draw_from_class`, one
  warning with counts at construction); larger classes are drawn without replacement exactly as before. A 1-image
  class is its own representative and every ordinary sample: its restricted positive pairs (sample, representative)
  are at distance 0 (easy pairs, finite under the safe square root), and its representative still enters the other
  classes' negative pairs, so the class stays usable. The per-class representative queues need no change: they run through whatever
  examples a class has.
* `class_selection="random"`: the batch's P classes come from the m-per-class stream (a permutation of the classes per
  pass, cut into groups of P), as [L]. `"hard"` (our design [I], `papers/apfs.md` (h)): from stage 1 on, a batch is a
  *seed class* (each class once per pass of C steps) followed by its P−1 nearest classes by representative embedding,
  read from the stage's *class plan* `i32[C, P−1]` that the method mines and hands over with `set_class_plan`.
  Stage 0 always uses random classes (its representatives would be embedded by the untrained network, and the
  training program draws batch 0 before any host-side hook runs).

Everything is a pure function of (seed, step) and of the class plans: a resumed run sees exactly the batches of an
uninterrupted one once the method hands the restored plan back (the plan lives in `TrainState.method_state`, so the
checkpoint holds it).

Test-time preprocessing of representatives [L] (`preprocess_representative=False` there):
`test_time_preprocessing_mask(step)` is `bool[B]`, True on the representative slots unless
`augment_representatives`. `data.Loader` honours it for file-backed splits with a `transform` (the photo
benchmarks): the rows where it is True are decoded with the test transform (resize + centre crop) instead of the random
crop and flip. The in-memory glyphs have no train augmentation, so there it changes nothing (a batch-level `augment`
of an in-memory split does not read the mask).

Hand-over of a plan between threads: the loader computes batches in a prefetch thread, ahead of the training loop.
`batch_indices(step)` for a hard stage waits (bounded by `plan_wait_timeout_s`) until the plan of its stage has been
set from the training loop's thread; `close()` releases waiters.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from sklearn.neighbors import NearestNeighbors

from metriclearn.data.samplers import draw_from_class, warn_small_classes

CLASS_SELECTIONS = ("random", "hard")

# SeedSequence stream ids, disjoint from `samplers.py` (0–2) and the loader's augmentation (3), so no two uses of
# the same (seed, counter) share random numbers.
_STREAM_CLASS_PERMUTATION = 10
_STREAM_SAMPLES_IN_CLASS = 11
_STREAM_REPRESENTATIVE_QUEUE = 12
_STREAM_SEED_CLASSES = 13


def _rng(seed: int, *key: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([seed, *key]))


def mine_class_neighbors(representative_embeddings: np.ndarray, num_neighbors: int) -> np.ndarray:
  """The class plan of hard class mining: each class's `num_neighbors` nearest other classes.

  Our design [I] (`papers/apfs.md` (c), (h)): classes whose representatives are close are the ones most likely to
  violate the inter-class constraints d ≥ β_out, so a batch of a seed class and its nearest classes is a batch of
  hard negative classes.

  Args:
    representative_embeddings: `f32[C, D]` embeddings of the C representatives, row c = class c (L2-normalised
      embeddings, so the Euclidean ranking is the cosine ranking).
    num_neighbors: K = P − 1.

  Returns:
    `i32[C, K]`: row c lists the K classes nearest to c (nearest first), never c itself.
  """
  num_classes = representative_embeddings.shape[0]
  if not 0 <= num_neighbors < num_classes:
    raise ValueError(f"num_neighbors must lie in 0..{num_classes - 1} (C − 1), got {num_neighbors}")
  search = NearestNeighbors(n_neighbors=num_neighbors + 1).fit(representative_embeddings)
  nearest = search.kneighbors(representative_embeddings, return_distance=False)
  # Drop the class itself; with duplicated embeddings it may not come first, so move it last and cut.
  is_self = nearest == np.arange(num_classes)[:, None]
  order = np.argsort(is_self, axis=1, kind="stable")
  return np.take_along_axis(nearest, order, axis=1)[:, :num_neighbors].astype(np.int32)


class APFSSampler:
  """P classes × M slots per batch: P representatives, then M−1 ordinary samples per class (`papers/apfs.md` (c)).

  Args:
    labels: `int[N]` class labels of the training split, contiguous `0..C−1`.
    batch_size: P·M.
    seed: random seed.
    m: slots per class M ≥ 2 (the representative takes one).
    representative_lifetime: T, the steps one representative set is kept.
    class_selection: "random" or "hard" (see the module docstring).
    augment_representatives: representatives get the train augmentation like ordinary samples (False: test-time
      preprocessing, as [L]).
    plan_wait_timeout_s: how long `batch_indices` of a hard stage waits for its class plan before raising.

  Raises:
    ValueError: M < 2, `batch_size` not a multiple of M, fewer than P classes, T < 1, an unknown class selection.
  """

  def __init__(self, labels: np.ndarray, batch_size: int, seed: int = 0, *, m: int = 4,
               representative_lifetime: int = 1, class_selection: str = "random",
               augment_representatives: bool = False, plan_wait_timeout_s: float = 1800.0):
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(f"labels must be a 1-D integer array, got shape {labels.shape} and dtype {labels.dtype}")
    if m < 2:
      raise ValueError(f"APFS needs M ≥ 2 slots per class (one holds the representative), got m={m}")
    if batch_size < m or batch_size % m:
      raise ValueError(f"batch_size {batch_size} cannot hold P classes × M={m} slots: choose a multiple of {m}")
    if representative_lifetime < 1:
      raise ValueError(f"representative_lifetime T must be a positive number of steps, got {representative_lifetime}")
    if class_selection not in CLASS_SELECTIONS:
      raise ValueError(f"unknown class_selection {class_selection!r}; valid: {list(CLASS_SELECTIONS)}")
    classes, counts = np.unique(labels, return_counts=True)
    if not np.array_equal(classes, np.arange(len(classes))):
      raise ValueError("labels must be contiguous class ids 0..C−1 (as every `Split` has them)")
    self.num_classes = len(classes)
    self.classes_per_batch = batch_size // m
    if self.num_classes < self.classes_per_batch:
      raise ValueError(f"batch_size {batch_size} with M={m} needs P={self.classes_per_batch} distinct classes per "
                       f"batch, but the labels have only {self.num_classes} classes: lower batch_size or raise m")
    warn_small_classes(counts, m - 1, "APFS", f"their M−1={m - 1} ordinary slots are filled with replacement, every "
                       "image of the class once before any repeats")
    order = np.argsort(labels, kind="stable")
    self.members = np.split(order.astype(np.int32), np.cumsum(counts)[:-1])  # members[c]: indices of class c
    self.batch_size, self.m, self.seed = batch_size, m, seed
    self.representative_lifetime = int(representative_lifetime)
    self.class_selection = class_selection
    self.augment_representatives = augment_representatives
    self.plan_wait_timeout_s = plan_wait_timeout_s
    self.steps_per_class_pass = self.num_classes // self.classes_per_batch
    self._representatives: dict[int, np.ndarray] = {}
    self._plans: dict[int, np.ndarray] = {}
    self._condition = threading.Condition()
    self._closed = False

  # -- stages and representatives ---------------------------------------------------------------------------------

  def stage(self, step: int) -> int:
    """The stage k = ⌊step / T⌋ of a step."""
    return step // self.representative_lifetime

  def uses_class_plan(self, stage: int) -> bool:
    """Whether the batches of `stage` are built from a mined class plan (hard selection, stage ≥ 1)."""
    return self.class_selection == "hard" and stage >= 1

  def representatives(self, stage: int) -> np.ndarray:
    """`i32[C]`: the representative set R_stage, entry c = the index of class c's representative."""
    with self._condition:
      cached = self._representatives.get(stage)
    if cached is not None:
      return cached
    chosen = np.empty(self.num_classes, np.int32)
    for c, members in enumerate(self.members):
      cycle, position = divmod(stage, len(members))
      chosen[c] = members[_rng(self.seed, _STREAM_REPRESENTATIVE_QUEUE, c, cycle).permutation(len(members))[position]]
    with self._condition:
      self._representatives[stage] = chosen
      for old in [s for s in self._representatives if s < stage - 1]:  # the loader and the method need ≤ 2 stages
        del self._representatives[old]
    return chosen

  # -- class plans (hard selection) -------------------------------------------------------------------------------

  def set_class_plan(self, stage: int, neighbors: np.ndarray) -> None:
    """Hands over the class plan `i32[C, P−1]` of `stage` (from `mine_class_neighbors`); wakes a waiting loader."""
    neighbors = np.asarray(neighbors, np.int32)
    expected = (self.num_classes, self.classes_per_batch - 1)
    if neighbors.shape != expected:
      raise ValueError(f"a class plan must be [C, P−1] = {list(expected)}, got shape {list(neighbors.shape)}")
    with self._condition:
      self._plans[stage] = neighbors
      for old in [s for s in self._plans if s < stage - 1]:
        del self._plans[old]
      self._condition.notify_all()

  def has_class_plan(self, stage: int) -> bool:
    with self._condition:
      return stage in self._plans

  def close(self) -> None:
    """Releases any `batch_indices` call waiting for a plan (it raises); call when training stops early."""
    with self._condition:
      self._closed = True
      self._condition.notify_all()

  def _class_plan(self, stage: int, step: int) -> np.ndarray:
    deadline = time.monotonic() + self.plan_wait_timeout_s
    with self._condition:
      while stage not in self._plans:
        if self._closed:
          raise RuntimeError(f"the APFS sampler was closed while the batch of step {step} waited for its class plan")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
          raise TimeoutError(
              f"the batch of step {step} (stage {stage}, hard class mining) needs the class plan that APFS mines in "
              f"host_update at the last step of stage {stage - 1} (or, after a restore, hands back in host_update of "
              f"the first step), and none arrived within {self.plan_wait_timeout_s:.0f} s. The training loop must "
              "call method.host_update(step, ...) before it takes the batch of `step` from the loader; or use "
              "class_selection='random'.")
        self._condition.wait(min(remaining, 1.0))
      return self._plans[stage]

  # -- batches ----------------------------------------------------------------------------------------------------

  def batch_classes(self, step: int) -> np.ndarray:
    """`i32[P]`: the distinct classes of batch `step`, in slot order."""
    stage = self.stage(step)
    if self.uses_class_plan(stage):
      plan = self._class_plan(stage, step)
      class_pass, position = divmod(step, self.num_classes)
      seed_class = _rng(self.seed, _STREAM_SEED_CLASSES, class_pass).permutation(self.num_classes)[position]
      return np.concatenate([[seed_class], plan[seed_class]]).astype(np.int32)
    class_pass, position = divmod(step, self.steps_per_class_pass)
    order = _rng(self.seed, _STREAM_CLASS_PERMUTATION, class_pass).permutation(self.num_classes)
    p = self.classes_per_batch
    return order[position * p:(position + 1) * p].astype(np.int32)

  def batch_indices(self, step: int) -> np.ndarray:
    """`i32[P·M]`: P representatives, then the M−1 ordinary samples of each class interleaved by slot."""
    classes = self.batch_classes(step)
    representatives = self.representatives(self.stage(step))[classes]
    rng = _rng(self.seed, _STREAM_SAMPLES_IN_CLASS, step)
    samples = np.stack([draw_from_class(rng, self.members[c], self.m - 1) for c in classes])  # [P, M−1]
    return np.concatenate([representatives, samples.T.reshape(-1)]).astype(np.int32)

  def representative_mask(self) -> np.ndarray:
    """`bool[P·M]`: True on the representative slots (the first P), the same for every step."""
    return np.arange(self.batch_size) < self.classes_per_batch

  def test_time_preprocessing_mask(self, step: int) -> np.ndarray:
    """`bool[P·M]`: rows a loader should give test-time preprocessing instead of augmentation (see the module
    docstring); all False when `augment_representatives`."""
    del step  # the layout is fixed
    return self.representative_mask() & (not self.augment_representatives)


__all__ = ["APFSSampler", "CLASS_SELECTIONS", "mine_class_neighbors"]
