"""Evaluation metrics for learned embeddings: retrieval (Recall@K, MAP@R; full MAP and MRR on request), clustering
(NMI, F1; AMI on request) and utilization.

Retrieval follows Musgrave et al. 2020, "A Metric Learning Reality Check" (the definitions of
pytorch-metric-learning's `AccuracyCalculator`), and is exact: every query is compared with every gallery item in
float32, on a CPU by NumPy's BLAS and a threaded selection (`metriclearn.knn`), on an accelerator by jitted matmuls
and `jax.lax.top_k` per chunk of queries; memory stays bounded (tiles or chunks, never N×N), so the SOP test set
(60,502 × 512, self-retrieval) runs on a CPU without faiss. Clustering is `metriclearn.kmeans` (blocked GEMM Lloyd
iterations) scored by scikit-learn's metrics.

All functions take embeddings as NumPy or JAX arrays `f[N, D]` (float32 or bf16) and integer (or any NumPy-sortable)
labels `[N]`, and return Python floats.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from concurrent import futures

import jax
import jax.numpy as jnp
import numpy as np
from sklearn import metrics as sk_metrics

from metriclearn import distances
from metriclearn import kmeans
from metriclearn import knn

RETRIEVAL_METRICS = ("cosine", "euclidean")
# "auto": NumPy's BLAS and a threaded selection (`metriclearn.knn`) when JAX runs on the CPU, else jitted XLA.
RETRIEVAL_BACKENDS = ("auto", "xla", "numpy")
# Retrieval metrics computed on request (`extra_metrics`): they rank the whole gallery unless `k` is given.
EXTRA_RETRIEVAL_METRICS = ("map", "mrr")
EXTRA_CLUSTERING_METRICS = ("ami",)
# Queries per chunk: a [1024, 60,502] float32 score block is 248 MB. On a 2-core CPU, chunks of 256 to 4,096 queries
# ran equally fast within noise (SOP-sized gallery), so the default keeps memory well under 1 GiB.
DEFAULT_CHUNK_SIZE = 1024
# Chunks scored at once, from as many host threads. XLA's CPU top_k runs on one thread, so a second chunk's matmul
# fills the other core meanwhile: N = 60,502 on 2 cores took 18.8 s instead of 22.6 s, for one more score block of
# memory (benchmarks/RESULTS.md). On an accelerator the two calls queue on the device.
_CHUNKS_IN_FLIGHT = 2


def _as_embeddings(x, name: str) -> np.ndarray | jax.Array:
  if not hasattr(x, "ndim"):
    x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"{name} must be a 2-D array [N, D] of embeddings, got shape {x.shape}")
  if x.shape[0] == 0 or x.shape[1] == 0:
    raise ValueError(f"{name} is empty (shape {x.shape}); pass at least one embedding of dimension >= 1")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name} must be floating point (float32 or bfloat16), got {x.dtype}")
  finite = np.isfinite(x).all() if isinstance(x, np.ndarray) else jnp.isfinite(x).all()
  if not bool(finite):
    raise ValueError(f"{name} contains NaN or Inf; check the model that produced the embeddings")
  return x


def _as_labels(labels, n: int, name: str) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1 or labels.shape[0] != n:
    raise ValueError(f"{name} must be a 1-D array with one label per embedding ({n}), got shape {labels.shape}")
  return labels


def _chunks(num_rows: int, chunk_size: int) -> list[tuple[int, slice]]:
  """`(start, slice)` of equal-sized chunks covering `range(num_rows)`.

  The last chunk ends at `num_rows` and overlaps the one before it instead of being padded, so every chunk has one
  static shape (one compilation) and no padded copy of the embeddings is made; overlapping rows are simply computed
  twice.
  """
  if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
    raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
  chunk_size = min(int(chunk_size), num_rows)
  starts = list(range(0, num_rows - chunk_size, chunk_size)) + [num_rows - chunk_size]
  return [(start, slice(start, start + chunk_size)) for start in starts]


@functools.partial(jax.jit, static_argnames=("k", "ks", "exclude_self", "extra"))
def _retrieval_chunk(query, query_codes, query_r, available, offset, gallery, gallery_half_sq_norm, gallery_codes, *,
                     k, ks, exclude_self, self_index=None, extra=()):
  """The XLA backend: `_metric_columns` of one chunk of queries, from their k nearest by one matmul and `top_k`.

  Scores are "larger is nearer": ⟨q, g⟩ for cosine (rows pre-normalised) and ⟨q, g⟩ − ½‖g‖² for Euclidean, which
  orders the gallery exactly as −½‖q − g‖² does (‖q‖² is the same for every gallery item of a query).
  `self_index` (`i32[C]`, −1 for none): the gallery row excluded for each query; None with `exclude_self` means
  `offset + i` (self-retrieval).
  """
  scores = jnp.matmul(query, gallery.T, preferred_element_type=jnp.float32)
  if gallery_half_sq_norm is not None:
    scores = scores - gallery_half_sq_norm[None, :]
  # Equal scores: lower gallery index first.
  depth = min(k + 1, gallery.shape[0]) if exclude_self else k
  _, neighbours = jax.lax.top_k(scores, depth)
  if exclude_self:
    # Exclusion by index, not by distance, so an exact duplicate of the query stays retrievable: drop the query's
    # own index from its k + 1 nearest, or the (k + 1)-th if the query is not among them. This is exactly the top k
    # of the row without the query, and cheaper than masking the whole [C, G] score block before top_k.
    if self_index is None:
      self_index = offset + jnp.arange(query.shape[0])
    is_self = neighbours == self_index[:, None]
    skip = jnp.cumsum(is_self, axis=1)[:, :k]  # 1 from the query's own position on
    position = jnp.arange(k)[None, :] + skip
    if depth == k:  # k = G (whole gallery): a query in the gallery has one item fewer; do not index past the end
      position = jnp.minimum(position, depth - 1)  # (the slot this repeats is past `available`)
    neighbours = jnp.take_along_axis(neighbours, position, axis=1)
  return _metric_columns(neighbours, query_codes, query_r, available, gallery_codes, ks=ks, extra=extra)


def _metric_columns(neighbours, query_codes, query_r, available, gallery_codes, *, ks, extra):
  """Per-query `f32[C, len(ks) + 3 + len(extra)]` from the k nearest gallery rows `i32[C, k]` (nearest first):
  recall@ks, precision@1, R·r_precision (hits within R) and R·ap@r, then for each of `extra`: R·ap over the k nearest
  ("map") and the reciprocal rank of the first relevant item among them, or 0 ("mrr"). Both backends call this.

  `available` (`i32[C]`): the items a query can retrieve; slots past it (k = G, the query's own row excluded) are
  empty, whatever index they hold.
  """
  k = neighbours.shape[1]
  rank = jnp.arange(1, k + 1)[None, :]
  relevant = (gallery_codes[neighbours] == query_codes[:, None]) & (rank <= available[:, None])  # [C, k]
  hits_in_r = relevant & (rank <= query_r[:, None])
  precision_at_rank = jnp.cumsum(relevant, axis=1).astype(jnp.float32) / rank
  # The division by R happens on the host, in float64.
  columns = [jnp.any(relevant[:, :kk], axis=1) for kk in ks] + [
      relevant[:, 0], jnp.sum(hits_in_r, axis=1), jnp.sum(jnp.where(hits_in_r, precision_at_rank, 0.0), axis=1)]
  for name in extra:
    if name == "map":
      columns.append(jnp.sum(jnp.where(relevant, precision_at_rank, 0.0), axis=1))
    else:  # "mrr"
      first = jnp.argmax(relevant, axis=1)
      columns.append(jnp.where(jnp.any(relevant, axis=1), 1.0 / (first + 1.0), 0.0))
  return jnp.stack([c.astype(jnp.float32) for c in columns], axis=1)


_neighbour_metrics = jax.jit(_metric_columns, static_argnames=("ks", "extra"))
# Rows per `_neighbour_metrics` call on the NumPy backend (one compilation per block shape).
_METRIC_ROWS = 8192


def _resolve_backend(backend: str) -> str:
  if backend not in RETRIEVAL_BACKENDS:
    raise ValueError(f"unknown backend {backend!r}; valid backends: {list(RETRIEVAL_BACKENDS)}")
  if backend == "auto":
    return "numpy" if jax.default_backend() == "cpu" else "xla"
  return backend


def retrieval_metrics(query_emb, query_labels, gallery_emb=None, gallery_labels=None, *,
                      ks: Sequence[int] = (1, 2, 4, 8), metric: str = "cosine",
                      chunk_size: int | None = None, extra_metrics: Sequence[str] = (), k: int | None = None,
                      avg_of_avgs: bool = False, return_per_class: bool = False, query_ids=None,
                      gallery_ids=None, backend: str = "auto") -> dict:
  """Exact retrieval metrics: Recall@K, precision@1, R-precision and MAP@R (Musgrave et al. 2020).

  For a query q with label y, let R be the number of gallery items labelled y and rel(i) = 1 if the i-th nearest
  gallery item is labelled y. Then, averaged over queries:

    recall@K    = 1 if rel(i) = 1 for some i ≤ K, else 0
    precision@1 = rel(1)
    r_precision = (1/R) Σ_{i≤R} rel(i)
    map@r       = (1/R) Σ_{i≤R} P(i)·rel(i),   P(i) = (1/i) Σ_{j≤i} rel(j)

  and, on request (`extra_metrics`), over the whole ranked gallery of N items (pytorch-metric-learning's
  `AccuracyCalculator` names in brackets):

    map = (1/R) Σ_{i≤N} P(i)·rel(i)    (full mean average precision, "mean_average_precision" with k=None)
    mrr = 1 / min{i : rel(i) = 1}      ("mean_reciprocal_rank")

  Self-retrieval (no gallery): the query set is its own gallery and each query's own row is excluded **by index**,
  so an exact duplicate of the query (another row) stays in the gallery and counts like any other item; R excludes
  the query itself. With a gallery (e.g. In-Shop query/gallery) nothing is excluded, unless `query_ids` and
  `gallery_ids` say which gallery row is the query itself (queries a strict subset of the gallery, PML's
  `ref_includes_query=True`): that row is excluded by id, as in self-retrieval.

  Queries with R = 0 (no gallery item shares their label) are left out of every average, as pytorch-metric-learning's
  `AccuracyCalculator` does for its "lone" query labels; if every query has R = 0 all metrics are NaN (with a
  warning), as there.

  Exact, not approximate: every query is scored against the whole gallery in float32, and the max(max(ks), max R)
  nearest are kept (R counted on the host, so the depth is static); with `extra_metrics` the whole gallery (a full
  sort per query: slower). Two backends find them, and one function turns them into metrics:
  "xla" scores each chunk of queries by one jitted matmul and `jax.lax.top_k` (accelerators); "numpy"
  (`metriclearn.knn`) by NumPy's BLAS in square tiles, only those on and above the diagonal for self-retrieval, with
  a threaded bound-and-merge selection (CPUs, where XLA's GEMM and single-threaded top_k are slower). Ties: scores
  are compared in float32; among gallery items with equal scores the lower gallery index ranks first
  (`jax.lax.top_k`'s rule, with −0.0 below +0.0), as a stable argsort of the distances would rank them, on both
  backends; they give the same neighbours wherever they compute the same float32 scores.

  Args:
    query_emb: `f[Q, D]` query embeddings (float32 or bf16; products accumulate in float32).
    query_labels: `[Q]` labels (integers, or anything `np.unique` sorts).
    gallery_emb: `f[G, D]` gallery embeddings, or None for self-retrieval.
    gallery_labels: `[G]` labels; given exactly when `gallery_emb` is.
    ks: the K of Recall@K; each at most the number of gallery items a query can retrieve.
    metric: "cosine" (rank by cosine similarity) or "euclidean" (rank by Euclidean distance on the vectors as given).
    chunk_size: "xla": queries per chunk (default `DEFAULT_CHUNK_SIZE`); memory grows as `2 × chunk_size × G × 4`
      bytes (two chunks in flight). "numpy": the side of a score tile (default from `knn.DEFAULT_MEMORY_BUDGET`,
      ~1 GiB of working arrays). Results do not depend on it (beyond float32 rounding, which can reorder items
      whose scores differ by ~1e-7).
    extra_metrics: any of `EXTRA_RETRIEVAL_METRICS` ("map", "mrr"), added to the result.
    k: PML's `k`: rank only the k nearest items. Every metric then reads the top k alone: `map` and `mrr` become
      MAP@k (still divided by R) and the reciprocal rank within k (0 beyond), and where a query has R > k the
      R-based metrics are **inexact** (truncated, as PML's): r_precision = hits in the top k / k and
      map@r = (1/R) Σ_{i≤k} P(i)·rel(i) (a warning says how many queries). None: deep enough to be exact.
    avg_of_avgs: average each metric per class (over its queries) first, then over classes (PML `avg_of_avgs`).
    return_per_class: return `{name: {label: value}}`, each class's average (PML `return_per_class`); exclusive
      with `avg_of_avgs`. Classes whose queries all have R = 0 are absent.
    query_ids, gallery_ids: `[Q]` and `[G]` ids (any `np.unique`-sortable values, unique within the gallery),
      given together with a gallery: a gallery item with the query's id is the query itself, excluded from its
      ranking and from its R (and it must carry the query's label).
    backend: "auto" ("numpy" when `jax.default_backend()` is "cpu", else "xla"), "xla" or "numpy".

  Returns:
    `{"recall@K": ... for K in ks, "precision@1", "r_precision", "map@r"}` plus `extra_metrics`, as Python floats
    (with `return_per_class`, a `{label: float}` dict per name).

  Example:
    >>> retrieval_metrics(emb, labels, ks=(1, 10, 100))["map@r"]
    >>> retrieval_metrics(emb, labels, extra_metrics=("map", "mrr"), avg_of_avgs=True)
  """
  if metric not in RETRIEVAL_METRICS:
    raise ValueError(f"unknown metric {metric!r}; valid metrics: {list(RETRIEVAL_METRICS)}")
  ks = tuple(ks)
  if not ks or any(not isinstance(kk, (int, np.integer)) or kk < 1 for kk in ks):
    raise ValueError(f"ks must be a non-empty sequence of positive integers, got {ks!r}")
  ks = tuple(int(kk) for kk in ks)
  extra = tuple(name for name in EXTRA_RETRIEVAL_METRICS if name in tuple(extra_metrics))
  if set(extra_metrics) - set(extra):
    raise ValueError(f"unknown extra_metrics {sorted(set(extra_metrics) - set(extra))}; valid: "
                     f"{list(EXTRA_RETRIEVAL_METRICS)}")
  if avg_of_avgs and return_per_class:
    raise ValueError("avg_of_avgs and return_per_class are mutually exclusive (as in PML); pass one of them")
  if chunk_size is not None and (not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1):
    raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
  if k is not None and (not isinstance(k, (int, np.integer)) or k < 1):
    raise ValueError(f"k must be a positive integer or None, got {k!r}")
  query_emb = _as_embeddings(query_emb, "query_emb")
  query_labels = _as_labels(query_labels, query_emb.shape[0], "query_labels")
  exclude_self = gallery_emb is None
  self_index = None
  if exclude_self:
    if gallery_labels is not None:
      raise ValueError("gallery_labels given without gallery_emb; pass both, or neither for self-retrieval")
    if query_ids is not None or gallery_ids is not None:
      raise ValueError("query_ids and gallery_ids need a gallery; self-retrieval already excludes each query's row")
    gallery_emb, gallery_labels = query_emb, query_labels
  else:
    if gallery_labels is None:
      raise ValueError("gallery_emb given without gallery_labels; pass both, or neither for self-retrieval")
    gallery_emb = _as_embeddings(gallery_emb, "gallery_emb")
    gallery_labels = _as_labels(gallery_labels, gallery_emb.shape[0], "gallery_labels")
    if gallery_emb.shape[1] != query_emb.shape[1]:
      raise ValueError(f"query_emb and gallery_emb differ in dimension: {query_emb.shape[1]} vs "
                       f"{gallery_emb.shape[1]}")
    if (query_ids is None) != (gallery_ids is None):
      raise ValueError("pass query_ids and gallery_ids together, or neither")
    if query_ids is not None:
      self_index = _self_index(query_ids, gallery_ids, query_labels, gallery_labels)
      exclude_self = bool((self_index >= 0).any())
  num_queries, num_gallery = query_emb.shape[0], gallery_emb.shape[0]
  retrievable = num_gallery - int(exclude_self)
  if max(ks) > retrievable:
    raise ValueError(f"max(ks) = {max(ks)} exceeds the {retrievable} gallery items each query can retrieve"
                     + (" (self-retrieval excludes the query itself)" if exclude_self else "")
                     + "; use smaller ks or a larger gallery")
  if k is not None and not max(ks) <= k <= retrievable:
    raise ValueError(f"k = {k} must lie between max(ks) = {max(ks)} and the {retrievable} gallery items each "
                     "query can retrieve")

  # Labels of any kind become integer codes shared by queries and gallery; R is counted on the host so that the
  # depth of top_k is static: deep enough for every K and for every query's R.
  uniques, codes = np.unique(np.concatenate([query_labels, gallery_labels]), return_inverse=True)
  query_codes, gallery_codes = codes[:num_queries].astype(np.int32), codes[num_queries:].astype(np.int32)
  gallery_counts = np.bincount(gallery_codes, minlength=codes.max() + 1)
  in_gallery = np.ones(num_queries, bool) if self_index is None else self_index >= 0
  query_r = (gallery_counts[query_codes] - (in_gallery & exclude_self)).astype(np.int32)
  if k is not None:
    depth = int(k)
  elif extra:
    depth = num_gallery if self_index is not None and not in_gallery.all() else retrievable
  else:
    depth = max(max(ks), int(query_r.max()))
  names = [f"recall@{kk}" for kk in ks] + ["precision@1", "r_precision", "map@r"] + list(extra)
  counted = query_r > 0
  if not counted.any():
    warnings.warn("no query has a relevant gallery item (R = 0 for all); retrieval metrics are NaN")
    return {name: ({} if return_per_class else float("nan")) for name in names}
  truncated = int(np.sum(counted & (query_r > depth)))
  if truncated:
    warnings.warn(f"k = {depth} is less than R for {truncated} queries: their r_precision and map@r are truncated "
                  "to the top k (inexact, as PML's with k < max bin count)")

  # The items each query can retrieve: slots past it (k = G with the query's own row excluded) are empty.
  available = (num_gallery - (in_gallery & exclude_self)).astype(np.int32)
  per_query = np.zeros((num_queries, len(names)), np.float64)
  if _resolve_backend(backend) == "numpy":
    _numpy_retrieval(per_query, query_emb, query_codes, query_r, available, None if gallery_emb is query_emb else
                     gallery_emb, gallery_codes, self_index if exclude_self else None, metric=metric, depth=depth,
                     ks=ks, extra=extra, block_size=chunk_size)
  else:
    _xla_retrieval(per_query, query_emb, query_codes, query_r, available, gallery_emb, gallery_codes,
                   self_index if exclude_self else None, metric=metric, depth=depth, ks=ks, extra=extra,
                   exclude_self=exclude_self, chunk_size=DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size)
  r_column = len(ks) + 1
  per_query[:, r_column] /= np.maximum(np.minimum(query_r, depth), 1)  # hits within min(R, k)
  per_query[:, r_column + 1] /= np.maximum(query_r, 1)
  if "map" in extra:
    per_query[:, r_column + 2] /= np.maximum(query_r, 1)
  per_query, classes = per_query[counted], query_codes[counted]
  if not (avg_of_avgs or return_per_class):
    means = per_query.mean(axis=0)
    return {name: float(value) for name, value in zip(names, means)}
  present, class_index = np.unique(classes, return_inverse=True)
  per_class = np.zeros((len(present), len(names)))
  np.add.at(per_class, class_index, per_query)
  per_class /= np.bincount(class_index)[:, None]
  if avg_of_avgs:
    return {name: float(value) for name, value in zip(names, per_class.mean(axis=0))}
  labels = [uniques[code].item() if hasattr(uniques[code], "item") else uniques[code] for code in present]
  return {name: dict(zip(labels, per_class[:, column].tolist())) for column, name in enumerate(names)}


def _xla_retrieval(per_query, query_emb, query_codes, query_r, available, gallery_emb, gallery_codes, self_index, *,
                   metric, depth, ks, extra, exclude_self, chunk_size):
  """Fills `per_query` with `_metric_columns` by the jitted XLA path, `_CHUNKS_IN_FLIGHT` chunks at a time."""
  chunks = _chunks(query_codes.shape[0], chunk_size)
  if metric == "cosine":
    query = distances.l2_normalize(jnp.asarray(query_emb))
    gallery = query if gallery_emb is query_emb else distances.l2_normalize(jnp.asarray(gallery_emb))
    gallery_half_sq_norm = None
  else:
    query = jnp.asarray(query_emb)
    gallery = query if gallery_emb is query_emb else jnp.asarray(gallery_emb)
    gallery_half_sq_norm = 0.5 * jnp.sum(jnp.square(gallery.astype(jnp.float32)), axis=1)
  gallery_codes_dev = jnp.asarray(gallery_codes)

  def score_chunk(start_and_chunk):
    start, chunk = start_and_chunk
    chunk_self = None if self_index is None else jnp.asarray(self_index[chunk])
    rows = _retrieval_chunk(query[chunk], jnp.asarray(query_codes[chunk]), jnp.asarray(query_r[chunk]),
                            jnp.asarray(available[chunk]), jnp.int32(start), gallery, gallery_half_sq_norm,
                            gallery_codes_dev, k=depth, ks=ks, exclude_self=exclude_self, self_index=chunk_self,
                            extra=extra)
    return chunk, np.asarray(rows)

  with futures.ThreadPoolExecutor(_CHUNKS_IN_FLIGHT) as pool:
    for chunk, rows in pool.map(score_chunk, chunks):
      per_query[chunk] = rows


def _numpy_retrieval(per_query, query_emb, query_codes, query_r, available, gallery_emb, gallery_codes, self_index,
                     *, metric, depth, ks, extra, block_size):
  """Fills `per_query` with `_metric_columns` of `knn.neighbour_blocks` (gallery None: self-retrieval)."""
  as_float32 = lambda x: np.asarray(x if isinstance(x, np.ndarray) else jnp.asarray(x, jnp.float32), np.float32)
  blocks = knn.neighbour_blocks(as_float32(query_emb), None if gallery_emb is None else as_float32(gallery_emb),
                                depth, metric=metric, self_index=self_index, block_size=block_size)
  for start, neighbours in blocks:
    for _, rows in _chunks(neighbours.shape[0], _METRIC_ROWS):
      chunk = slice(start + rows.start, start + rows.stop)
      per_query[chunk] = np.asarray(_neighbour_metrics(neighbours[rows], query_codes[chunk], query_r[chunk],
                                                       available[chunk], gallery_codes, ks=ks, extra=extra))


def _self_index(query_ids, gallery_ids, query_labels, gallery_labels) -> np.ndarray:
  """`i32[Q]`: the gallery row whose id is each query's, or −1."""
  query_ids, gallery_ids = np.asarray(query_ids), np.asarray(gallery_ids)
  if query_ids.shape != query_labels.shape or gallery_ids.shape != gallery_labels.shape:
    raise ValueError(f"query_ids and gallery_ids must have one id per query ({query_labels.shape[0]}) and per "
                     f"gallery item ({gallery_labels.shape[0]}), got shapes {query_ids.shape} and {gallery_ids.shape}")
  order = np.argsort(gallery_ids, kind="stable")
  sorted_ids = gallery_ids[order]
  if np.any(sorted_ids[1:] == sorted_ids[:-1]):
    raise ValueError("gallery_ids must be unique (each names one gallery item)")
  position = np.minimum(np.searchsorted(sorted_ids, query_ids), len(sorted_ids) - 1)
  found = sorted_ids[position] == query_ids
  self_index = np.where(found, order[position], -1).astype(np.int32)
  mismatched = found & (gallery_labels[np.maximum(self_index, 0)] != query_labels)
  if mismatched.any():
    raise ValueError(f"{int(mismatched.sum())} queries have a gallery item with their id but another label; the "
                     "gallery row with a query's id must be that query")
  return self_index


def cluster_scores(labels, assignments, *, extra_metrics: Sequence[str] = ()) -> dict[str, float]:
  """NMI and pairwise F1 of a clustering against the class labels (and AMI on request).

  `nmi` is scikit-learn's `normalized_mutual_info_score` (arithmetic-mean normalisation, its default).
  `f1` is the pairwise F1 of Song et al. 2016 over unordered pairs: precision = same-cluster pairs that are
  same-class / same-cluster pairs, recall = same-class pairs that are same-cluster / same-class pairs, from the
  contingency table's n-choose-2 sums (scikit-learn's `pair_confusion_matrix`), never an N² loop. Edge cases:
  with no same-cluster pair precision is 1 (nothing wrongly merged), with no same-class pair recall is 1, and
  F1 = 0 when precision + recall = 0; so a perfect clustering always scores nmi = f1 = 1.
  `extra_metrics=("ami",)` adds scikit-learn's `adjusted_mutual_info_score` (PML's "AMI"); its expected-mutual-
  information term costs about N·max(K, C) per cluster pair, so it is off by default (slow for SOP's 11,316 classes).

  Args:
    labels: `[N]` class labels.
    assignments: `[N]` cluster ids.
    extra_metrics: any of `EXTRA_CLUSTERING_METRICS`.

  Returns:
    `{"nmi": float, "f1": float}`, plus `"ami"` on request.
  """
  if set(extra_metrics) - set(EXTRA_CLUSTERING_METRICS):
    raise ValueError(f"unknown extra_metrics {sorted(set(extra_metrics) - set(EXTRA_CLUSTERING_METRICS))}; "
                     f"valid: {list(EXTRA_CLUSTERING_METRICS)}")
  labels = np.asarray(labels)
  if labels.ndim != 1 or labels.shape[0] == 0:
    raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
  assignments = _as_labels(assignments, labels.shape[0], "assignments")
  nmi = sk_metrics.normalized_mutual_info_score(labels, assignments)
  # Ordered-pair counts (each unordered pair twice; the factor cancels): [[diff/diff, diff-class/same-cluster],
  # [same-class/diff-cluster, same/same]].
  pairs = sk_metrics.cluster.pair_confusion_matrix(labels, assignments).astype(np.float64)
  true_positive = pairs[1, 1]
  same_cluster = pairs[1, 1] + pairs[0, 1]
  same_class = pairs[1, 1] + pairs[1, 0]
  precision = true_positive / same_cluster if same_cluster > 0 else 1.0
  recall = true_positive / same_class if same_class > 0 else 1.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
  scores = {"nmi": float(nmi), "f1": float(f1)}
  if "ami" in extra_metrics:
    scores["ami"] = float(sk_metrics.adjusted_mutual_info_score(labels, assignments))
  return scores


def clustering_metrics(emb, labels, *, n_clusters: int | None = None, seed: int = 0,
                       extra_metrics: Sequence[str] = (), iterations: int = kmeans.DEFAULT_ITERATIONS,
                       init: str = "k-means++", backend: str = "auto") -> dict[str, float]:
  """k-means on the embeddings, scored by `cluster_scores` (NMI and pairwise F1).

  k-means runs on the embeddings **as given** (no extra L2 normalisation), as pytorch-metric-learning's
  `AccuracyCalculator` (faiss k-means) and the DML papers' code do; the models in this library already end in an L2
  normalisation. It is `metriclearn.kmeans`: Lloyd iterations by blocked float32 GEMMs (NumPy's BLAS on a CPU,
  XLA on an accelerator) in bounded memory, from scikit-learn's greedy k-means++ initialisation by default (its NMI
  matches scikit-learn's `KMeans`) or faiss's random one (`init="random"`: PML's protocol, and seconds instead of
  minutes of initialisation at SOP's K = 11,316).

  Args:
    emb: `f[N, D]` embeddings.
    labels: `[N]` class labels.
    n_clusters: number of clusters K; default the number of distinct labels.
    seed: k-means seed.
    extra_metrics: `("ami",)` adds AMI (see `cluster_scores`).
    iterations: Lloyd iterations (fewer if the assignments stop changing).
    init: "k-means++" or "random" (see `kmeans.kmeans`).
    backend: "auto", "numpy" or "xla" (see `kmeans.kmeans`).

  Returns:
    `{"nmi": float, "f1": float}`, plus `"ami"` on request.
  """
  emb = _as_embeddings(emb, "emb")
  labels = _as_labels(labels, emb.shape[0], "labels")
  if n_clusters is None:
    n_clusters = len(np.unique(labels))
  _, assignments = kmeans.kmeans(emb, n_clusters, iterations=iterations, init=init, seed=seed, backend=backend)
  return cluster_scores(labels, assignments, extra_metrics=extra_metrics)


@jax.jit
def _nearest_squared_distance_chunk(query, train, train_half_sq_norm):
  """`f32[C]`: squared distance from each query to its nearest training embedding."""
  scores = jnp.matmul(query, train.T, preferred_element_type=jnp.float32) - train_half_sq_norm[None, :]
  nearest = train[jnp.argmax(scores, axis=1)]
  # The Gram form only picks the neighbour; the distance itself is summed from explicit differences, so that it is
  # exactly 0 for a duplicate instead of ~1e-7 of rounding.
  difference = query.astype(jnp.float32) - nearest.astype(jnp.float32)
  return jnp.sum(difference * difference, axis=1)


def utilization(query_emb, train_emb, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> float:
  """Utilization (Metrix, Venkataramanan et al. 2022, c.8): mean squared distance to the nearest training embedding.

    u(Q, X) = (1/|Q|) Σ_{q∈Q} min_{x∈X} ‖q − x‖²

  Exact nearest neighbour over the whole training set, chunked over queries, on the embeddings as given (the paper
  uses L2-normalised embeddings, which the models here output). Lower means test embeddings lie closer to training
  embeddings.

  Args:
    query_emb: `f[Q, D]` test (query) embeddings.
    train_emb: `f[N, D]` training embeddings.
    chunk_size: queries per chunk; memory grows as `chunk_size × N × 4` bytes.

  Returns:
    The utilization as a Python float.
  """
  query = jnp.asarray(_as_embeddings(query_emb, "query_emb"))
  train = jnp.asarray(_as_embeddings(train_emb, "train_emb"))
  if query.shape[1] != train.shape[1]:
    raise ValueError(f"query_emb and train_emb differ in dimension: {query.shape[1]} vs {train.shape[1]}")
  chunks = _chunks(query.shape[0], chunk_size)
  train_half_sq_norm = 0.5 * jnp.sum(jnp.square(train.astype(jnp.float32)), axis=1)
  nearest = np.zeros(query.shape[0], np.float64)
  for _, chunk in chunks:
    nearest[chunk] = np.asarray(_nearest_squared_distance_chunk(query[chunk], train, train_half_sq_norm))
  return float(nearest.mean())
