"""Exact k-nearest-neighbour search on the CPU through NumPy's BLAS: `retrieval_metrics(backend="numpy")`.

Scores are "larger is nearer": ⟨q, g⟩ for cosine (rows L2-normalised here) and ⟨q, g⟩ − ½‖g‖² for Euclidean, as in
`evaluate._retrieval_chunk`. For self-retrieval the Euclidean score is the symmetric −½‖x_i‖² + ⟨x_i, x_j⟩ − ½‖x_j‖²
(one augmented product, so one score tile serves both its rows and its columns; ranking a row by it is ranking by
distance). Neighbours are ranked by (score, then lower gallery index), with floats in the IEEE total order (−0.0 below
+0.0) — `jax.lax.top_k`'s rule — so the lists equal the XLA path's wherever both compute the same float32 scores.

The search, per score tile `[rows, cols]` from one float32 GEMM:

1. Each row keeps its k best so far as int64 *keys* (the score's order-preserving bit pattern in the high 32 bits, the
   complemented gallery index in the low 32), so that every comparison, ties included, is one integer comparison.
2. A tile entry can enter a row's k best only if its score is ≥ the row's current k-th score (a lower bound on the
   final k-th score). One vectorised comparison per entry and one `np.flatnonzero` find these candidates, and only
   they become keys. A row's first tile sets its bound by a float `np.partition` (its k-th largest entry); a row with
   more than `4k` candidates (adversarial data, e.g. all scores equal) takes all its tile entries as keys instead.
3. The row's keys and its candidates' keys are merged by `np.partition` and the k largest kept.

Self-retrieval computes only the tiles on and above the diagonal (half the GEMM flops): tile (I, J) updates row block
I with its rows and row block J with its columns. Diagonal tiles come first, so every row starts from a tight bound.
Each tile's selection runs on a thread pool (NumPy releases the GIL) while the next tile's GEMM runs. Memory: two score
tiles and their masks, ≤ `threads` key blocks, and `int64[Q, k]` state; the tile side follows `memory_budget`.
Exact: every gallery item is scored; nothing is approximated or dropped early.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent import futures

import numpy as np

_EMPTY = np.iinfo(np.int64).min  # the key of an empty slot: below every score's key
_LOW32 = np.int64(0xFFFFFFFF)
# Candidate rows beyond this many per row take the dense path (all tile entries as keys): `_HEAVY × k`.
_HEAVY = 4
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of working arrays (score tiles, masks, keys), beyond the inputs and output


def _keys(scores: np.ndarray, index: np.ndarray) -> np.ndarray:
  """int64 keys ordered as (score in IEEE total order, then lower index): larger key = nearer."""
  bits = np.array(scores, np.float32, order="C").view(np.int32)
  bits ^= (bits >> 31) & np.int32(0x7FFFFFFF)  # negative floats: larger magnitude, smaller key
  keys = bits.astype(np.int64)
  keys <<= 32
  keys |= _LOW32 - index
  return keys


def _key_scores(keys: np.ndarray) -> np.ndarray:
  """The float32 scores of keys (−inf for empty slots)."""
  bits = (keys >> 32).astype(np.int32)
  scores = np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits).view(np.float32)
  return np.where(keys == _EMPTY, np.float32(-np.inf), scores)


def _key_index(keys: np.ndarray) -> np.ndarray:
  return (_LOW32 - (keys & _LOW32)).astype(np.int32)


def _top(keys: np.ndarray, k: int) -> np.ndarray:
  """The k largest keys of each row (unordered)."""
  if keys.shape[1] == k:
    return keys
  return np.partition(keys, keys.shape[1] - k, axis=1)[:, keys.shape[1] - k:]


class _State:
  """Each row's k best keys so far and, from them, the score a candidate must reach (≥)."""

  def __init__(self, num_rows: int, k: int):
    self.k = k
    self.keys = np.full((num_rows, k), _EMPTY, np.int64)
    self.bound = np.full(num_rows, -np.inf, np.float32)

  def merge(self, rows: np.ndarray, candidate_keys: np.ndarray):
    current = self.keys[rows]
    if candidate_keys.shape[1] >= self.k and current[:, -1].max() == _EMPTY and (current == _EMPTY).all():
      merged = _top(candidate_keys, self.k)  # nothing kept yet (a first tile): no concatenation
    else:
      merged = _top(np.concatenate([current, candidate_keys], axis=1), self.k)
    self.keys[rows] = merged
    self.bound[rows] = _key_scores(merged.min(axis=1))

  def update(self, scores: np.ndarray, row0: int, col0: int, transposed: bool):
    """Offer `scores` to rows `row0 + i` (entries `scores[i, j]`, gallery index `col0 + j`), or with `transposed`
    to rows `row0 + j` (entries `scores[i, j]`, gallery index `col0 + i`)."""
    num_i, num_j = scores.shape
    bound = self.bound[row0:row0 + (num_j if transposed else num_i)]
    width = num_i if transposed else num_j
    fresh = not np.any(bound > -np.inf)  # rows without a bound yet (their first tile)
    if fresh and 2 * self.k >= width:  # they keep most of the tile: every entry becomes a key
      dense = scores.T if transposed else scores
      self.merge(row0 + np.arange(dense.shape[0]), _top(_keys(dense, col0 + np.arange(width)), min(self.k, width)))
      return
    if fresh:
      # Their k-th largest tile score (a float partition is cheaper than keys): candidates are the k best and ties.
      bound = np.partition(scores, width - self.k, axis=0 if transposed else 1)
      bound = bound[width - self.k] if transposed else bound[:, width - self.k]
    flat = np.flatnonzero(scores >= (bound[None, :] if transposed else bound[:, None]))
    i, j = np.divmod(flat, num_j)
    rows, gallery = (j, i) if transposed else (i, j)
    counts = np.bincount(rows, minlength=bound.size)
    heavy = counts > _HEAVY * self.k
    if heavy.any():
      dense = scores[:, heavy].T if transposed else scores[heavy]
      keys = _keys(dense, col0 + np.arange(dense.shape[1]))
      self.merge(row0 + np.flatnonzero(heavy), _top(keys, min(self.k, dense.shape[1])))
      light = ~heavy[rows]
      rows, gallery, counts = rows[light], gallery[light], np.where(heavy, 0, counts)
    if not rows.size:
      return
    if transposed:  # group the candidates by row (a radix sort for 16-bit rows)
      order = np.argsort(rows.astype(np.uint16) if bound.size <= 1 << 16 else rows, kind="stable")
      rows, gallery = rows[order], gallery[order]
    slot = np.arange(rows.size) - (np.cumsum(counts) - counts)[rows]
    compact = np.cumsum(counts > 0) - 1
    padded = np.full((compact[-1] + 1, counts.max()), _EMPTY, np.int64)
    values = scores[gallery, rows] if transposed else scores[rows, gallery]
    padded[compact[rows], slot] = _keys(values, col0 + gallery)
    self.merge(row0 + np.flatnonzero(counts), padded)

  def neighbours(self) -> np.ndarray:
    """`int32[rows, k]` gallery indices, nearest first."""
    return _key_index(np.sort(self.keys, axis=1)[:, ::-1])


def _prepare(x: np.ndarray, metric: str) -> np.ndarray:
  x = np.asarray(x, np.float32)
  if metric == "cosine":
    return x / np.maximum(np.sqrt(np.einsum("ij,ij->i", x, x))[:, None], np.float32(1e-12))
  return x


def _augment(x: np.ndarray, *columns: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.concatenate([x] + [c[:, None] for c in columns], axis=1), np.float32)


def _tile_side(memory_budget: int) -> int:
  # Per tile entry: 2 score tiles (double buffering) and a mask, 4·2 + 1 bytes; keys of heavy rows and their
  # temporaries, ~24 bytes. A multiple of 256 rows keeps the GEMM blocks whole.
  side = int(np.sqrt(memory_budget / 33)) // 256 * 256
  return max(side, 256)


def neighbour_blocks(query, gallery=None, k: int = 1, *, metric: str = "cosine", self_index=None,
                     block_size: int | None = None, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                     threads: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
  """Yields `(start, int32[C, k])`: the k nearest gallery rows of queries `start ... start + C − 1`, nearest first.

  Blocks have one size (the last one overlaps its predecessor), so downstream jitted code compiles once.

  Args:
    query: `f[Q, D]` queries.
    gallery: `f[G, D]` gallery, or None for self-retrieval (each query's own row excluded).
    k: neighbours per query, 1 ≤ k ≤ G. An excluded row ranks last (below every score), so with k = G it fills the
      last slot of its query (the caller masks it).
    metric: "cosine" or "euclidean".
    self_index: `int[Q]`, the gallery row excluded for each query (−1: none); only with a gallery.
    block_size: tile side (rows and columns per GEMM); default from `memory_budget`.
    memory_budget: bytes for working arrays, which sets the default tile side.
    threads: selection threads; default the CPUs this process may use.
  """
  if metric not in ("cosine", "euclidean"):
    raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
  symmetric = gallery is None
  if symmetric and self_index is not None:
    raise ValueError("self_index needs a gallery; self-retrieval already excludes each query's own row")
  query = _prepare(query, metric)
  gallery = query if symmetric else _prepare(gallery, metric)
  num_query, num_gallery = query.shape[0], gallery.shape[0]
  if not 1 <= k <= num_gallery:
    raise ValueError(f"k must be in [1, {num_gallery}] (the gallery size), got {k}")
  if metric == "euclidean":
    half_sq_norm = -0.5 * np.einsum("ij,ij->i", gallery, gallery)
    ones = np.ones(num_gallery, np.float32)
    if symmetric:  # −½‖x_i‖² + ⟨x_i, x_j⟩ − ½‖x_j‖², one symmetric product
      query, gallery = _augment(query, ones, half_sq_norm), _augment(gallery, half_sq_norm, ones)
    else:
      query = _augment(query, np.ones(num_query, np.float32))
      gallery = _augment(gallery, half_sq_norm)
  if self_index is None:
    self_index = np.arange(num_query) if symmetric else np.full(num_query, -1)
  self_index = np.asarray(self_index, np.int64)
  side = block_size or _tile_side(memory_budget)
  threads = threads or len(os.sched_getaffinity(0))
  with futures.ThreadPoolExecutor(threads) as pool:
    if _HEAVY * k * 2 <= side < max(num_query, num_gallery):
      yield 0, _tiled(query, gallery, k, symmetric, self_index, side, pool, threads)
    else:  # k large next to a tile, or one tile covers everything: row blocks against the whole gallery
      rows = max(1, min(num_query, side * side // num_gallery))
      starts = list(range(0, num_query - rows, rows)) + [num_query - rows]
      for start in starts:
        state = _State(rows, k)
        tiles = iter([(start, rows, 0, num_gallery, False)])
        _run(tiles, query, gallery, state, self_index, pool, threads, row_base=start)
        yield start, state.neighbours()


def top_k_neighbours(query, gallery=None, k: int = 1, **kwargs) -> np.ndarray:
  """`int32[Q, k]`: every query's k nearest gallery rows, nearest first (see `neighbour_blocks`)."""
  query = np.asarray(query)
  out = np.empty((query.shape[0], k), np.int32)
  for start, block in neighbour_blocks(query, gallery, k, **kwargs):
    out[start:start + block.shape[0]] = block
  return out


def _tiled(query, gallery, k, symmetric, self_index, side, pool, threads) -> np.ndarray:
  row_starts = range(0, query.shape[0], side)
  col_starts = range(0, gallery.shape[0], side)
  if symmetric:  # diagonal tiles first (tight bounds early), then each tile above the diagonal for both blocks
    tiles = [(i, side, i, side, False) for i in row_starts]
    tiles += [(i, side, j, side, True) for i in row_starts for j in col_starts if j > i]
  else:
    tiles = [(i, side, j, side, False) for i in row_starts for j in col_starts]
  state = _State(query.shape[0], k)
  _run(iter(tiles), query, gallery, state, self_index, pool, threads, row_base=0)
  return state.neighbours()


def _run(tiles, query, gallery, state, self_index, pool, threads, row_base):
  """Scores each tile `(row0, rows, col0, cols, both)` by one GEMM and offers it to its rows (and, with `both`, to the
  rows of its columns), selecting on `pool` while the next tile's GEMM runs. State rows are `row − row_base`."""
  buffers = [np.empty(0, np.float32), np.empty(0, np.float32)]
  pending: list[futures.Future] = []
  for number, (row0, rows, col0, cols, both) in enumerate(tiles):
    rows, cols = min(rows, query.shape[0] - row0), min(cols, gallery.shape[0] - col0)
    buffer = buffers[number % 2]
    if buffer.size < rows * cols:
      buffer = buffers[number % 2] = np.empty(rows * cols, np.float32)
    scores = buffer[:rows * cols].reshape(rows, cols)
    np.matmul(query[row0:row0 + rows], gallery[col0:col0 + cols].T, out=scores)
    own = self_index[row0:row0 + rows] - col0
    inside = np.flatnonzero((own >= 0) & (own < cols))
    scores[inside, own[inside]] = -np.inf
    for future in pending:  # the previous tile's selection: done before this tile's touches the same rows
      future.result()
    pending = []
    for a, b in _split(rows, threads):
      pending.append(pool.submit(state.update, scores[a:b], row0 + a - row_base, col0, False))
    if both:
      for a, b in _split(cols, threads):
        pending.append(pool.submit(state.update, scores[:, a:b], col0 + a - row_base, row0, True))
  for future in pending:
    future.result()


def _split(n: int, parts: int) -> list[tuple[int, int]]:
  edges = np.linspace(0, n, min(parts, n) + 1).astype(int)
  return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]
