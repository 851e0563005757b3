"""`ImageFiles`: photos on disk (or in a tfds file) behind the interface of a `u8[N, S, S, 3]` array.

The photo benchmarks do not fit in memory once decoded (SOP: 120,053 photos), so their splits hold an `ImageFiles`
instead of an array: a list of records (file paths, encoded bytes or decoded arrays, read on demand by `read(row)`)
plus the test transform. Indexing it like an array, `images[indices]`, decodes those images and applies the test
transform (resize, centre crop) on a pool of threads, so `eval_batches` and every consumer of `split.images` work
unchanged; `images.transformed(positions, transform, rngs)` applies a random training transform instead. Selecting
examples without decoding them is `images.take(positions)` (a view, as `split_by_class` needs).

Why threads: Pillow releases the GIL while it decodes and resamples, which is nearly all the work, so threads use
every core with no inter-process copies of the decoded batch; on the project's 2-core machine two threads decode
about twice as fast as one (`benchmarks/input.py`, `benchmarks/RESULTS.md`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import os
import threading
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from metriclearn.data.transforms import ResizeCenterCrop, Transform, render

# A record is what `read(row)` returns: a path, encoded bytes (JPEG, PNG ...) or a decoded u8[H, W(, C)] array.
Record = str | os.PathLike | bytes | np.ndarray

_POOLS: dict[int, concurrent.futures.ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(num_workers: int) -> concurrent.futures.ThreadPoolExecutor:
  """One shared pool per size: loaders and evaluation reuse threads instead of starting new ones per batch."""
  with _POOLS_LOCK:
    if num_workers not in _POOLS:
      _POOLS[num_workers] = concurrent.futures.ThreadPoolExecutor(num_workers, thread_name_prefix="metriclearn-decode")
    return _POOLS[num_workers]


def default_num_workers() -> int:
  """One decoding thread per core, at most 32 (beyond that the Python parts of each image contend for the GIL)."""
  return min(os.cpu_count() or 1, 32)


def open_image(record: Record) -> Image.Image:
  """A Pillow image of a record, opened lazily where possible (so JPEGs can be decoded at a reduced scale)."""
  if isinstance(record, (str, os.PathLike)):
    return Image.open(record)
  if isinstance(record, (bytes, bytearray, memoryview)):
    return Image.open(io.BytesIO(record))
  array = np.asarray(record)
  if array.dtype != np.uint8:
    raise ValueError(f"decoded images must be uint8, got {array.dtype}")
  return Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array)


@dataclasses.dataclass(frozen=True, eq=False)
class ImageFiles:
  """Random-access images decoded on demand; indexes like `u8[len(rows), S, S, 3]` with `S = transform.size`.

  Attributes:
    read: `read(row) -> Record` for a row of the underlying source (thread-safe).
    rows: `i64[N]` the source rows in this view, in order.
    transform: the test transform applied by `images[...]` (default: shorter side 256, centre crop 224).
    num_workers: decoding threads (1: decode in the calling thread).
    origin: where the records come from, for error messages (a directory, "tfds cars196 test" ...).
  """

  read: Callable[[int], Record]
  rows: np.ndarray
  transform: Transform = ResizeCenterCrop()
  num_workers: int = dataclasses.field(default_factory=default_num_workers)
  origin: str = ""

  def __post_init__(self):
    object.__setattr__(self, "rows", np.asarray(self.rows, dtype=np.int64))
    if self.rows.ndim != 1:
      raise ValueError(f"rows must be 1-D, got shape {self.rows.shape}")
    if self.num_workers < 1:
      raise ValueError(f"num_workers must be at least 1, got {self.num_workers}")

  @classmethod
  def from_paths(cls, paths: Sequence[str], **kwargs) -> ImageFiles:
    """Images stored as files, one path per row."""
    paths = np.asarray(paths, dtype=object)
    return cls(read=paths.__getitem__, rows=np.arange(len(paths)), **kwargs)

  # The array interface that `Split` and the loaders rely on.
  def __len__(self) -> int:
    return len(self.rows)

  @property
  def shape(self) -> tuple[int, int, int, int]:
    return (len(self.rows), self.transform.size, self.transform.size, 3)

  ndim = 4
  dtype = np.dtype(np.uint8)

  def __getitem__(self, key) -> np.ndarray:
    """`u8[n, S, S, 3]` (or `u8[S, S, 3]` for an integer key): the images decoded with the test transform."""
    if isinstance(key, (int, np.integer)):
      return self._decode(self.rows[[key]], [self.transform], [None])[0]
    rows = self.rows[key]
    return self._decode(rows, [self.transform] * len(rows), [None] * len(rows))

  def __array__(self, dtype=None, copy=None):
    raise TypeError(
        "ImageFiles decodes on indexing and is never converted whole (it may not fit in memory): use "
        "images[indices] for decoded batches, or check split.in_memory before treating split.images as an array"
    )

  def take(self, positions) -> ImageFiles:
    """The view of `positions` (int indices or a boolean mask), without decoding anything."""
    return dataclasses.replace(self, rows=self.rows[positions])

  def transformed(
      self,
      positions,
      transform: Transform | None = None,
      rngs: Sequence[np.random.Generator | None] | None = None,
      *,
      floats: bool = False,
      mean: Sequence[float] | None = None,
      std: Sequence[float] | None = None,
  ) -> np.ndarray:
    """Images `positions` under `transform`, image i drawing its random numbers from `rngs[i]`.

    A row whose rng is None (or every row when `transform` or `rngs` is None) gets the test transform instead.

    Returns:
      `u8[n, S, S, 3]`, or with `floats` `f32[n, S, S, 3]` = `(pixels / 255 − mean) / std` (mean 0, std 1 when
      not given), computed in the decoding threads: one pass per image on every core, instead of three passes over
      the batch in the consumer's thread (about 1 ms per 224² image).
    """
    rows = self.rows[np.asarray(positions)]
    rngs = [None] * len(rows) if rngs is None else list(rngs)
    if len(rngs) != len(rows):
      raise ValueError(f"need one rng per image: {len(rows)} images, {len(rngs)} rngs")
    if transform is not None and transform.size != self.transform.size:
      raise ValueError(f"the transform's size {transform.size} differs from the test size {self.transform.size}")
    chosen = [self.transform if transform is None or rng is None else transform for rng in rngs]
    affine = None
    if floats:
      std = np.asarray(std if std is not None else (1.0,) * 3, np.float32)
      mean = np.asarray(mean if mean is not None else (0.0,) * 3, np.float32)
      affine = (np.float32(1 / 255) / std, mean / std)  # x · scale − offset
    return self._decode(rows, chosen, rngs, affine)

  def _decode(self, rows: np.ndarray, transforms: Sequence[Transform], rngs: Sequence, affine=None) -> np.ndarray:
    size = self.transform.size
    out = np.empty((len(rows), size, size, 3), dtype=np.uint8 if affine is None else np.float32)

    def decode(i: int) -> None:
      pixels = self._decode_one(int(rows[i]), transforms[i], rngs[i])
      if affine is None:
        out[i] = pixels
      else:
        np.multiply(pixels, affine[0], out=out[i])
        out[i] -= affine[1]

    if self.num_workers == 1 or len(rows) <= 1:
      for i in range(len(rows)):
        decode(i)
    else:
      # list() re-raises the first error of any image in the calling thread.
      list(_pool(self.num_workers).map(decode, range(len(rows))))
    return out

  def _decode_one(self, row: int, transform: Transform, rng) -> np.ndarray:
    record = self.read(row)
    where = str(record) if isinstance(record, (str, os.PathLike)) else f"row {row} of {self.origin or 'the source'}"
    try:
      with open_image(record) as image:
        return render(image, transform.plan(image.width, image.height, rng), transform.size, mode="RGB")
    except FileNotFoundError as error:
      raise FileNotFoundError(f"image {where} is missing ({error}); is the data set directory complete?") from error
    except (OSError, ValueError, SyntaxError) as error:  # Pillow raises these for truncated or unknown files
      raise OSError(f"could not decode image {where}: {error}") from error


def concatenate(parts: Sequence[ImageFiles]) -> ImageFiles:
  """The views `parts` one after the other (they must share their source and transform)."""
  first = parts[0]
  if any(p.read is not first.read or p.transform != first.transform for p in parts[1:]):
    raise ValueError("can only concatenate views of the same image source with the same transform")
  return dataclasses.replace(first, rows=np.concatenate([p.rows for p in parts]))
