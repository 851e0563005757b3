"""The loader: turns a sampler's index batches into `{"image", "label"}` NumPy batches, prefetched on a host thread.

`Loader(split, sampler).batch(step)` is a pure function of the step (the sampler's indices, an augmentation whose
random numbers are keyed by (seed, step)), so `iterate(start_step, num_steps)` resumes a run exactly where it
stopped. `iterate` prepares the next `prefetch` batches in a background thread while the device computes; an error
in that thread is raised in the consumer, and closing the iterator (or leaving its `for` loop) stops the thread.

File-backed splits (`ImageFiles`, the photo benchmarks) are decoded here, on the split's pool of threads: with a
`transform` (the data set's `train_transform`), image i of the global batch draws its crop and flip from
(seed, step, i), so the batch does not depend on the number of threads or hosts; without one, the split's test
transform applies.

`eval_batches(split, batch_size)` walks a split in order with fixed-size batches (the last one padded, with a
`mask`), so a jitted embedding function compiles once; file-backed splits are decoded a batch ahead in a thread.

Multi-host (DESIGN §7): with `process_index` / `process_count`, both yield this host's contiguous share of each
global batch, so every host reads and decodes only its rows.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from metriclearn.data.splits import Split
from metriclearn.data.transforms import Transform

Batch = dict[str, np.ndarray]
# augment(images f32[B, H, W, C], rng) -> f32[B, H', W', C]: random transformations of a batch, drawing only from rng.
Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]

_STREAM_AUGMENT = 3  # SeedSequence stream id of the augmentation (the samplers use 0-2)
_STREAM_TRANSFORM = 4  # ... and of the per-image transform of file-backed splits


def to_float(
    images: np.ndarray, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> np.ndarray:
  """`f32[..., C]`: uint8 images scaled to [0, 1] (float32 ones taken as already scaled), then `(x − mean) / std`."""
  if not isinstance(images, np.ndarray):
    raise TypeError(
        f"to_float needs an array in memory, got {type(images).__name__}: a file-backed split (split.in_memory is "
        "False) is decoded by indexing, split.images[indices]"
    )
  x = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32, copy=False)
  if mean is not None:
    x = x - np.asarray(mean, dtype=np.float32)
  if std is not None:
    x = x / np.asarray(std, dtype=np.float32)
  return x


class Loader:
  """Batches of one split drawn by a sampler.

  Args:
    split: the data.
    sampler: any object with `batch_indices(step) -> i32[batch_size]` (see `samplers.py`).
    augment: optional `augment(images, rng)`, applied after scaling to [0, 1] and before normalising.
    transform: for a file-backed split, the random per-image transform (`Dataset.train_transform`, e.g.
      `transforms.RandomResizedCrop`); None decodes with the split's test transform. If the sampler has
      `test_time_preprocessing_mask(step) -> bool[batch_size]`, the rows where it is True get the test transform
      (APFS's representatives, `apfs_sampler.py`).
    mean, std: optional per-channel normalisation (e.g. the ImageNet statistics).
    seed: seed of the augmentation's random numbers (folded with the step).
    prefetch: how many batches `iterate` prepares ahead.
    process_index, process_count: in a multi-host run, this host loads rows
      `[process_index · B/process_count, (process_index + 1) · B/process_count)` of each global batch of size B.
  """

  def __init__(
      self,
      split: Split,
      sampler,
      *,
      augment: Augment | None = None,
      transform: Transform | None = None,
      mean: Sequence[float] | None = None,
      std: Sequence[float] | None = None,
      seed: int = 0,
      prefetch: int = 2,
      process_index: int = 0,
      process_count: int = 1,
  ):
    if prefetch < 1:
      raise ValueError(f"prefetch must be at least 1 batch, got {prefetch}")
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index must lie in 0..{process_count - 1}, got {process_index}")
    if transform is not None and split.in_memory:
      raise ValueError("transform applies to file-backed splits (the photo benchmarks); in-memory splits take augment")
    self.split, self.sampler, self.augment, self.transform = split, sampler, augment, transform
    self.mean, self.std, self.seed, self.prefetch = mean, std, seed, prefetch
    self.process_index, self.process_count = process_index, process_count

  def batch(self, step: int) -> Batch:
    """`{"image": f32[b, H, W, C], "label": i32[b]}` for `step`, with `b` = this host's share of the batch."""
    indices = np.asarray(self.sampler.batch_indices(step))
    if len(indices) % self.process_count:
      raise ValueError(
          f"the global batch of {len(indices)} cannot be split evenly over {self.process_count} processes: "
          f"choose a batch_size that is a multiple of {self.process_count}"
      )
    share = len(indices) // self.process_count
    rows = np.arange(self.process_index * share, (self.process_index + 1) * share)  # rows of the global batch
    indices = indices[rows]
    if not self.split.in_memory and self.augment is None:
      # Decoded, scaled and normalised in the decoding threads.
      images = self._decode(indices, rows, step, floats=True)
      return {"image": images, "label": self.split.labels[indices].astype(np.int32)}
    if self.split.in_memory:
      images = to_float(self.split.images[indices])
    else:
      images = to_float(self._decode(indices, rows, step, floats=False))
    if self.augment is not None:
      rng = np.random.default_rng(np.random.SeedSequence([self.seed, _STREAM_AUGMENT, step, self.process_index]))
      images = np.asarray(self.augment(images, rng), dtype=np.float32)
    images = to_float(images, self.mean, self.std)
    return {"image": images, "label": self.split.labels[indices].astype(np.int32)}

  def _decode(self, indices: np.ndarray, rows: np.ndarray, step: int, *, floats: bool) -> np.ndarray:
    """File-backed images `indices` (at `rows` of the global batch) under the transform: `u8[b, S, S, 3]`, or with
    `floats` normalised `f32[b, S, S, 3]`."""
    rngs = None
    if self.transform is not None:
      plain = np.zeros(rows[-1] + 1, dtype=bool)
      if hasattr(self.sampler, "test_time_preprocessing_mask"):  # APFS: representatives are not augmented
        plain = np.asarray(self.sampler.test_time_preprocessing_mask(step), dtype=bool)
      rngs = [
          None if plain[row] else
          np.random.default_rng(np.random.SeedSequence([self.seed, _STREAM_TRANSFORM, step, int(row)]))
          for row in rows
      ]  # fmt: skip
    if not floats:
      return self.split.images.transformed(indices, self.transform, rngs)
    return self.split.images.transformed(indices, self.transform, rngs, floats=True, mean=self.mean, std=self.std)

  def iterate(self, start_step: int = 0, num_steps: int | None = None) -> Iterator[Batch]:
    """Batches `start_step, start_step + 1, ...` (`num_steps` of them, or without end), prefetched in a thread."""
    steps = itertools.count(start_step) if num_steps is None else range(start_step, start_step + num_steps)
    return prefetch(map(self.batch, steps), self.prefetch)


def prefetch(items: Iterable, buffer_size: int = 2) -> Iterator:
  """Yields `items`, computed up to `buffer_size` ahead in a background thread.

  An exception raised while computing an item is re-raised here when the consumer reaches it. Closing the returned
  generator (`close()`, leaving a `for` loop over it, or dropping it) stops and joins the thread.
  """
  buffer: queue.Queue = queue.Queue(maxsize=buffer_size)
  stop = threading.Event()

  def put(message) -> bool:
    # A timed put, so a producer blocked on a full buffer notices that the consumer has gone.
    while not stop.is_set():
      try:
        buffer.put(message, timeout=0.05)
        return True
      except queue.Full:
        continue
    return False

  def produce():
    try:
      for item in items:
        if not put(("item", item)):
          return
      put(("end", None))
    except BaseException as error:  # pylint: disable=broad-exception-caught  (handed to the consumer)
      put(("error", error))

  def consume():
    thread = threading.Thread(target=produce, name="metriclearn-prefetch", daemon=True)
    thread.start()
    try:
      while True:
        kind, value = buffer.get()
        if kind == "end":
          return
        if kind == "error":
          raise value
        yield value
    finally:
      stop.set()
      thread.join()

  return consume()


def eval_batches(
    split: Split,
    batch_size: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[Batch]:
  """The whole split in order, as batches of exactly `batch_size` (static shapes for jit).

  A file-backed split is decoded with its test transform, one batch ahead in a background thread. In a multi-host
  run, this host gets rows `[process_index · b, (process_index + 1) · b)` of each batch, `b = batch_size /
  process_count`; the hosts' shares, concatenated in process order, are the single-process batch.

  Yields:
    `{"image": f32[b, H, W, C], "label": i32[b], "mask": bool[b]}`; in the last batch the rows past the end of the
    split are zero images with label −1 and `mask` False. Keep the rows where `mask` is True to get one row per
    example, in split order.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index must lie in 0..{process_count - 1}, got {process_index}")
  if batch_size % process_count:
    raise ValueError(f"the evaluation batch of {batch_size} cannot be split evenly over {process_count} processes: "
                     f"choose a batch size that is a multiple of {process_count}")
  share = batch_size // process_count
  batches = _eval_batches(split, batch_size, share, process_index * share, mean, std, preprocess)
  return batches if split.in_memory else prefetch(batches, 1)


def _eval_batches(split, batch_size, share, offset, mean, std, preprocess) -> Iterator[Batch]:
  """Rows `[offset, offset + share)` of each batch of `batch_size`."""
  for batch_start in range(0, len(split), batch_size):
    start = min(batch_start + offset, len(split))
    stop = min(start + share, len(split))
    if not split.in_memory and preprocess is None:  # normalised in the decoding threads
      images = split.images.transformed(np.arange(start, stop), floats=True, mean=mean, std=std)
    else:
      images = to_float(split.images[start:stop])
      if preprocess is not None:
        images = np.asarray(preprocess(images), dtype=np.float32)
      images = to_float(images, mean, std)
    labels = split.labels[start:stop]
    padding = share - (stop - start)
    yield {
        "image": np.pad(images, [(0, padding)] + [(0, 0)] * (images.ndim - 1)),
        "label": np.pad(labels, (0, padding), constant_values=-1).astype(np.int32),
        "mask": np.arange(share) < stop - start,
    }
