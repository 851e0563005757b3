"""Deep metric learning losses as pure, jit-able functions of arrays.

Every loss exists in two forms (DESIGN §2–§3):

* `<loss>(embeddings f[B, D], labels i[B], *, hparams) -> f32[]`, the textbook loss over all pairs of a batch
  (optionally followed by reference columns `ref_embeddings`/`ref_labels`, e.g. a cross-batch memory);
* `<loss>_from_matrix(s, y, valid, *, hparams) -> f32[]` over three same-shaped `[A, B]` matrices: `s` the
  distance or similarity of anchor a and candidate x, `y` the **soft** pair label in [0, 1], `valid` the 0/1 mask of
  pairs that exist. With binary `y` these are the textbook losses; with soft `y` they are the Metrix losses
  (Venkataramanan et al. 2022, eq. c.3: each candidate contributes y·ρ⁺ to the positive part and (1−y)·ρ⁻ to the
  negative part of its anchor's loss). Methods (Metrix, DAML, AML, APFS) only build matrices and call these;
`matrix_form(name, kwargs)` translates an embedding form's keywords into the matrix form's.

With their defaults, values and gradients equal pytorch-metric-learning's (PML 2.x) for the same settings:
`normalize=True` L2-normalises inside the loss as PML's distances do, hinge losses average their strictly positive
terms (PML's `AvgNonZeroReducer`), log-sum-exps over an empty set are 0 (PML's masked `logsumexp`). PML's other
options are keywords: `reducer=`, `distance="cosine"`, triplet `smooth_loss=`, `miner_distance="euclidean"`, and
PML's `ref_emb` as `reference_only=True` (README, "Coming from PML").
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp

from metriclearn import distances
from metriclearn import labels as labels_lib
from metriclearn import reducers


# ----------------------------------------------------------------------------------------------------------------
# Shared plumbing: embeddings and labels -> (s, y, valid).


def _check_batch(embeddings: jax.Array, labels: jax.Array, name: str = "embeddings") -> None:
  if embeddings.ndim != 2:
    raise ValueError(f"{name} must be [B, D], got shape {embeddings.shape}")
  if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
    raise ValueError(f"labels must be [B] with B = {embeddings.shape[0]} to match {name}, got shape {labels.shape}")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"labels must be integers (class ids), got dtype {labels.dtype}")


def batch_matrices(
    embeddings: jax.Array,
    labels: jax.Array,
    ref_embeddings: jax.Array | None = None,
    ref_labels: jax.Array | None = None,
    *,
    metric: str = "euclidean",
    normalize: bool = True,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`(s, y, valid)` of a batch against `[batch; reference]`, self-pairs excluded.

  Args:
    embeddings: `f[B, D]`; labels: `i[B]`.
    ref_embeddings, ref_labels: optional `f[R, D]`, `i[R]` extra candidate columns (cross-batch memory).
    metric: one of `distances.METRICS`.
    normalize: L2-normalise the rows first.

  Returns:
    `s` (`f32[B, B + R]`), `y` (`f32[B, B + R]`), `valid` (`f32[B, B + R]`).
  """
  _check_batch(embeddings, labels)
  if (ref_embeddings is None) != (ref_labels is None):
    raise ValueError("pass ref_embeddings and ref_labels together, or neither")
  if normalize:
    embeddings = distances.l2_normalize(embeddings)
  s = distances.pairwise(embeddings, metric=metric)
  if ref_embeddings is not None:
    _check_batch(ref_embeddings, ref_labels, name="ref_embeddings")
    if normalize:
      ref_embeddings = distances.l2_normalize(ref_embeddings)
    s = jnp.concatenate([s, distances.pairwise(embeddings, ref_embeddings, metric=metric)], axis=1)
  y, valid = labels_lib.batch_matrices(labels, ref_labels)
  return s, y, valid


def query_reference_matrices(
    embeddings: jax.Array,
    labels: jax.Array,
    ref_embeddings: jax.Array,
    ref_labels: jax.Array,
    *,
    metric: str = "euclidean",
    normalize: bool = True,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`(s, y, valid)` of the batch (queries, rows) against the reference set **only** (columns): PML's `ref_emb`.

  Unlike `batch_matrices(..., ref_embeddings, ref_labels)` (columns `[batch; reference]`, self-pairs excluded), the
  batch is not among the columns and no pair is excluded by index: `s` is `f32[B, R]`, `valid` is all ones (a
  reference row equal to a query is an ordinary candidate, as in PML's `loss(emb, labels, ref_emb, ref_labels)`).
  """
  _check_batch(embeddings, labels)
  _check_batch(ref_embeddings, ref_labels, name="ref_embeddings")
  if normalize:
    embeddings, ref_embeddings = distances.l2_normalize(embeddings), distances.l2_normalize(ref_embeddings)
  s = distances.pairwise(embeddings, ref_embeddings, metric=metric)
  y = labels_lib.pair_labels(labels, ref_labels.astype(labels.dtype))
  return s, y, jnp.ones_like(y)


def _loss_matrices(embeddings, labels, ref_embeddings, ref_labels, *, reference_only: bool, metric: str,
                   normalize: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The embedding forms' `(s, y, valid)`: `[batch; reference]` columns, or the reference alone (`reference_only`)."""
  if reference_only:
    if ref_embeddings is None or ref_labels is None:
      raise ValueError("reference_only=True needs ref_embeddings and ref_labels (the only candidate columns)")
    return query_reference_matrices(embeddings, labels, ref_embeddings, ref_labels, metric=metric,
                                    normalize=normalize)
  return batch_matrices(embeddings, labels, ref_embeddings, ref_labels, metric=metric, normalize=normalize)


# The `distance=` keyword of contrastive and triplet (PML's `distance=`): name -> (metric, is a similarity).
PAIR_DISTANCES = {"euclidean": ("euclidean", False), "squared_euclidean": ("squared_euclidean", False),
                  "cosine": ("cosine", True)}


def _pair_distance(distance: str, squared: bool) -> tuple[str, bool]:
  """`(metric, similarity)` of the `distance` / `squared` keywords; `squared=True` means `"squared_euclidean"`."""
  if distance not in PAIR_DISTANCES:
    raise ValueError(f"unknown distance {distance!r}; valid distances: {list(PAIR_DISTANCES)}")
  if squared:
    if distance not in ("euclidean", "squared_euclidean"):
      raise ValueError(f"squared=True means distance='squared_euclidean'; it contradicts distance={distance!r}")
    distance = "squared_euclidean"
  return PAIR_DISTANCES[distance]


def _check_matrices(*matrices: jax.Array) -> None:
  shapes = {m.shape for m in matrices}
  if len(shapes) != 1 or matrices[0].ndim != 2:
    raise ValueError(f"s, y and valid must be [A, B] matrices of one shape, got {[m.shape for m in matrices]}")


def _pair_weights(y: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Positive weights y·valid and negative weights (1−y)·valid, in float32."""
  y = y.astype(jnp.float32)
  valid = valid.astype(jnp.float32)
  return y * valid, (1.0 - y) * valid


# ----------------------------------------------------------------------------------------------------------------
# Contrastive (Hadsell et al. 2006).


def contrastive_from_matrix(
    distance: jax.Array,
    y: jax.Array,
    valid: jax.Array,
    *,
    pos_margin: float = 0.0,
    neg_margin: float = 0.5,
    reducer: str = "mean_nonzero",
    similarity: bool = False,
) -> jax.Array:
  """Contrastive loss over a distance matrix with soft labels.

  Positive part y·[d − pos_margin]₊, negative part (1−y)·[neg_margin − d]₊, each reduced on its own and summed.
  With `mean_nonzero` and soft y this is Metrix's mixed contrastive loss exactly as coded (metrix.md c.6):
  `mean_{k: λd_k>0} λd_k + mean_{k: (1−λ)[0.5−d_k]₊>0} (1−λ)[0.5−d_k]₊`.

  Args:
    distance: `f[A, B]` distances (Euclidean or squared), or similarities with `similarity=True`; y: `f[A, B]` soft
      pair labels; valid: `f[A, B]` 0/1.
    pos_margin, neg_margin: hinge margins on the distance.
    reducer: one of `reducers.REDUCERS`: `mean_nonzero` (PML `AvgNonZeroReducer`), `mean` (PML `MeanReducer`, each
      part averaged over all its pairs), `sum` (PML `SumReducer`).
    similarity: the matrix is a similarity s (larger = closer, e.g. cosine): the hinges flip as PML's
      `CosineSimilarity` flips them, positive part y·[pos_margin − s]₊, negative part (1−y)·[s − neg_margin]₊.

  Returns:
    `f32[]`.
  """
  _check_matrices(distance, y, valid)
  pos_weight, neg_weight = _pair_weights(y, valid)
  distance = distance.astype(jnp.float32)
  if similarity:  # d = −s with negated margins: [−s + m⁺]₊ and [−m⁻ + s]₊
    distance, pos_margin, neg_margin = -distance, -pos_margin, -neg_margin
  pos_terms = pos_weight * jax.nn.relu(distance - pos_margin)
  neg_terms = neg_weight * jax.nn.relu(neg_margin - distance)
  return reducers.reduce(pos_terms, pos_weight, reducer) + reducers.reduce(neg_terms, neg_weight, reducer)


def contrastive(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    pos_margin: float = 0.0,
    neg_margin: float = 0.5,
    squared: bool = False,
    normalize: bool = True,
    reducer: str = "mean_nonzero",
    ref_embeddings: jax.Array | None = None,
    ref_labels: jax.Array | None = None,
    distance: str = "euclidean",
    reference_only: bool = False,
) -> jax.Array:
  """Contrastive loss over all ordered pairs i ≠ j of a batch (Hadsell et al. 2006; PML `ContrastiveLoss`).

  L = mean⁺_{(a,p)} [d(a,p) − pos_margin]₊ + mean⁺_{(a,n)} [neg_margin − d(a,n)]₊, where mean⁺ averages the strictly
  positive terms (`reducer`: see `contrastive_from_matrix`). `squared=True` is `distance="squared_euclidean"`;
  `distance="cosine"` is PML's `distance=CosineSimilarity()`: [pos_margin − s]₊ and [s − neg_margin]₊ (set the
  margins for a similarity, e.g. pos_margin=1, neg_margin=0.5; the defaults are distance margins).

  `ref_embeddings`, `ref_labels`: extra candidate columns after the batch's own (`[batch; reference]`, a cross-batch
  memory); with `reference_only=True` the reference rows are the **only** columns (PML's `ref_emb`, see
  `query_reference_matrices`). Departure (reference_only): PML returns 0 when there is at most one positive and
  at most one negative pair; we compute the loss on them.

  Example:
    >>> loss = contrastive(jnp.ones((4, 8)), jnp.array([0, 0, 1, 1]))
  """
  metric, is_similarity = _pair_distance(distance, squared)
  s, y, valid = _loss_matrices(embeddings, labels, ref_embeddings, ref_labels, reference_only=reference_only,
                               metric=metric, normalize=normalize)
  return contrastive_from_matrix(s, y, valid, pos_margin=pos_margin, neg_margin=neg_margin, reducer=reducer,
                                 similarity=is_similarity)


# ----------------------------------------------------------------------------------------------------------------
# Triplet margin loss (Weinberger & Saul 2009; Schroff et al. 2015), all triplets.


def _searchsorted_rows(sorted_rows: jax.Array, queries: jax.Array) -> jax.Array:
  """Per row r: the number of entries of `sorted_rows[r]` strictly less than each `queries[r, j]`."""
  return jax.vmap(lambda row, q: jnp.searchsorted(row, q, side="left"))(sorted_rows, queries)


def triplet_from_matrix(
    distance: jax.Array,
    y: jax.Array,
    valid: jax.Array,
    *,
    margin: float = 0.1,
    max_positives: int | None = None,
    reducer: str = "mean_nonzero",
    smooth_loss: bool = False,
    similarity: bool = False,
) -> jax.Array:
  """Triplet loss over all (a, p, n): mean of the strictly positive w·[d(a,p) − d(a,n) + margin]₊.

  `reducer`: `mean_nonzero` (that mean; PML `AvgNonZeroReducer`), `mean` (Σ w·[…]₊ / Σ w over all triplets; PML
  `MeanReducer`) or `sum` (PML `SumReducer`). `smooth_loss=True`: softplus(d(a,p) − d(a,n) + margin) = log(1 +
  e^{…}) in place of the hinge (PML `TripletMarginLoss(smooth_loss=True)`; every triplet's term is positive, so
  `mean_nonzero` is the mean over all triplets); it has no prefix-sum form and costs O(A·B²) time, computed one
  block of anchors at a time (O(B²) memory per anchor). `similarity=True`: the matrix is a similarity s (e.g.
  cosine) and the violation is s(a,n) − s(a,p) + margin (PML's `CosineSimilarity`).

  The weight of a triplet is y[a,p]·(1−y[a,n]) (times validity), so binary labels give the textbook all-triplets
  loss and soft labels weight each mixed candidate as a positive by y and as a negative by 1−y (a candidate is never
  paired with itself).

  Computed exactly in O(A·B log B) time and O(A·B) memory instead of materialising A·B² triplets: per anchor, the
  negatives are sorted by distance and, for each positive threshold t = d(a,p) + margin, the sum over violating
  negatives Σ_{n: d_an < t} v_n (t − d_an) = t·V(t) − Z(t) is read from prefix sums V, Z of the sorted weights and
  weighted distances. Gradients flow through the sort's permutation and the prefix sums.

  `max_positives = K`: the same loss over each anchor's K largest-weight positives only, with the hinges of those
  K·B triplets computed directly (O(A·K·B), no sort). Exact when no anchor has more than K positives, e.g. K = m − 1
  for an m-per-class batch (the training program passes it then); XLA's CPU sort makes the sorted path ~10× slower
  at B = 512.

  Returns:
    `f32[]`; 0 when no triplet violates the margin.
  """
  _check_matrices(distance, y, valid)
  if reducer not in reducers.REDUCERS:
    raise ValueError(f"unknown reducer {reducer!r}; valid reducers: {list(reducers.REDUCERS)}")
  pos_weight, neg_weight = _pair_weights(y, valid)
  distance = distance.astype(jnp.float32)
  if similarity:  # d(a,p) − d(a,n) with d = −s is s(a,n) − s(a,p)
    distance = -distance
  if max_positives is not None:
    return _triplet_over_top_positives(distance, pos_weight, neg_weight, margin, int(max_positives), reducer,
                                       smooth_loss)
  if smooth_loss:
    return _smooth_triplet_over_all(distance, pos_weight, neg_weight, margin, reducer)
  is_negative = neg_weight > 0
  # Sort key: non-negatives go last (+inf) so they are never counted as violating.
  sort_key = jnp.where(is_negative, jax.lax.stop_gradient(distance), jnp.inf)
  order = jnp.argsort(sort_key, axis=1)
  sorted_key = jnp.take_along_axis(sort_key, order, axis=1)
  sorted_distance = jnp.take_along_axis(distance, order, axis=1)
  sorted_weight = jnp.take_along_axis(neg_weight, order, axis=1)
  sorted_count = jnp.take_along_axis(is_negative.astype(jnp.float32), order, axis=1)

  def prefix(values):  # [A, B] -> [A, B + 1] with a leading zero, so index k means "the first k sorted negatives".
    return jnp.pad(jnp.cumsum(values, axis=1), ((0, 0), (1, 0)))

  threshold = distance + margin  # one per positive candidate p
  num_below = _searchsorted_rows(sorted_key, jax.lax.stop_gradient(threshold))
  weight_below = jnp.take_along_axis(prefix(sorted_weight), num_below, axis=1)
  weighted_distance_below = jnp.take_along_axis(prefix(sorted_weight * sorted_distance), num_below, axis=1)
  count_below = jnp.take_along_axis(prefix(sorted_count), num_below, axis=1)

  # Remove the triplet (a, p, p) that a soft-labelled candidate forms with itself (its hinge is exactly the margin).
  # Counted by the search exactly when d < d + margin in float32 (not for |d| ≳ 1e6 with margin 0.1).
  self_triplet = (pos_weight > 0) & is_negative & (distance < threshold)
  total = jnp.sum(pos_weight * (threshold * weight_below - weighted_distance_below))
  total -= jnp.sum(jnp.where(self_triplet, pos_weight * neg_weight * margin, 0.0))
  count = jnp.sum(jnp.where(pos_weight > 0, count_below, 0.0)) - jnp.sum(self_triplet.astype(jnp.float32))
  # Σ over all triplets of w⁺_ap·w⁻_an, (a, x, x) excluded: only the `mean` reducer reads it.
  weight_sum = lambda: (jnp.sum(jnp.sum(pos_weight, axis=1) * jnp.sum(neg_weight, axis=1))  # noqa: E731
                        - jnp.sum(pos_weight * neg_weight))
  return _reduce_triplets(total, count, weight_sum, reducer)


def _reduce_triplets(total: jax.Array, nonzero_count: jax.Array, weight_sum, reducer: str) -> jax.Array:
  """`reducers.reduce` for triplets: Σ of the positive weighted terms, their count, and (a thunk) Σ of all weights."""
  if reducer == "mean_nonzero":
    return reducers.safe_divide(total, nonzero_count)
  if reducer == "mean":
    return reducers.safe_divide(total, weight_sum())
  return total


def _triplet_terms(positive_distance, positive_weight, positive_index, distance, neg_weight, margin: float,
                   smooth_loss: bool):
  """Triplet terms of anchors `[..., k]` positives × `[..., B]` candidates: (Σ weighted terms, count of the
  positive ones, Σ weights), each summed over the leading axes."""
  hinge = positive_distance[..., :, None] - distance[..., None, :] + margin  # [..., k, B]
  not_self = positive_index[..., :, None] != jnp.arange(distance.shape[-1])  # (a, p, p): never a triplet
  pair = (positive_weight[..., :, None] > 0) & (neg_weight[..., None, :] > 0) & not_self
  value = jax.nn.softplus(hinge) if smooth_loss else hinge
  counted = pair & (value > 0)
  weight = positive_weight[..., :, None] * neg_weight[..., None, :]
  return (jnp.sum(jnp.where(counted, weight * value, 0.0)), jnp.sum(counted.astype(jnp.float32)),
          jnp.sum(jnp.where(pair, weight, 0.0)))


def _triplet_over_top_positives(distance, pos_weight, neg_weight, margin: float, k: int, reducer: str = "mean_nonzero",
                                smooth_loss: bool = False) -> jax.Array:
  """`triplet_from_matrix` over each anchor's `k` largest-weight positive columns, by direct hinges [A, k, B]."""
  if not 1 <= k <= distance.shape[1]:
    raise ValueError(f"max_positives must be in [1, {distance.shape[1]}] (the candidate columns), got {k}")
  top_weight, top_index = jax.lax.top_k(jax.lax.stop_gradient(pos_weight), k)  # [A, k]
  positive_distance = jnp.take_along_axis(distance, top_index, axis=1)
  total, count, weight_sum = _triplet_terms(positive_distance, top_weight, top_index, distance, neg_weight, margin,
                                            smooth_loss)
  return _reduce_triplets(total, count, lambda: weight_sum, reducer)


# Anchors per block of the smooth triplet loss over all positives: [block, B, B] terms at a time.
_SMOOTH_TRIPLET_BLOCK = 16


def _smooth_triplet_over_all(distance, pos_weight, neg_weight, margin: float, reducer: str) -> jax.Array:
  """The smooth triplet loss over every (a, p, n), by direct terms, `_SMOOTH_TRIPLET_BLOCK` anchors at a time."""
  index = jnp.broadcast_to(jnp.arange(distance.shape[1]), distance.shape)

  def anchor_terms(row):
    d, wp, wn, i = row
    return _triplet_terms(d, wp, i, d, wn, margin, smooth_loss=True)

  total, count, weight_sum = jax.lax.map(anchor_terms, (distance, pos_weight, neg_weight, index),
                                         batch_size=min(_SMOOTH_TRIPLET_BLOCK, distance.shape[0]))
  return _reduce_triplets(jnp.sum(total), jnp.sum(count), lambda: jnp.sum(weight_sum), reducer)


def triplet(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    margin: float = 0.1,
    squared: bool = False,
    normalize: bool = True,
    ref_embeddings: jax.Array | None = None,
    ref_labels: jax.Array | None = None,
    max_positives: int | None = None,
    reducer: str = "mean_nonzero",
    smooth_loss: bool = False,
    distance: str = "euclidean",
    reference_only: bool = False,
) -> jax.Array:
  """Triplet margin loss over all valid (a, p, n), p ≠ a (PML `TripletMarginLoss`, all triplets).

  L = mean⁺_{(a,p,n)} [d(a,p) − d(a,n) + margin]₊ (mean of the strictly positive terms). Eq. (1), Schroff et al.
  2015, with unsquared distances by default as PML. `max_positives`, `reducer`, `smooth_loss`: see
  `triplet_from_matrix`. `squared=True` is `distance="squared_euclidean"`; `distance="cosine"` is PML's
  `distance=CosineSimilarity()`: [s(a,n) − s(a,p) + margin]₊. `ref_embeddings`, `ref_labels`, `reference_only`:
  as in `contrastive` (`reference_only=True` is PML's `ref_emb`: positives and negatives are reference rows).
  """
  metric, is_similarity = _pair_distance(distance, squared)
  s, y, valid = _loss_matrices(embeddings, labels, ref_embeddings, ref_labels, reference_only=reference_only,
                               metric=metric, normalize=normalize)
  return triplet_from_matrix(s, y, valid, margin=margin, max_positives=max_positives, reducer=reducer,
                             smooth_loss=smooth_loss, similarity=is_similarity)


# ----------------------------------------------------------------------------------------------------------------
# Multi-similarity (Wang et al. 2019) and proxy anchor (Kim et al. 2020).


def multi_similarity_miner(similarity: jax.Array, y: jax.Array, valid: jax.Array, *, epsilon: float,
                           is_distance: bool = False) -> jax.Array:
  """The pairs multi-similarity mining keeps (Wang et al. 2019, eqs. 5–6; PML `MultiSimilarityMiner`): `valid` of
  the informative pairs.

  Per anchor a, a negative n is kept if s_an + ε > min_p s_ap and a positive p if s_ap − ε < max_n s_an, over the
  anchor's valid positives (y = 1) and negatives (y = 0). An anchor without positives keeps no negative and one
  without negatives keeps no positive, as in PML. Pairs with a soft label 0 < y < 1 (Metrix's mixed columns) are
  not mined and stay valid: our extension, the paper mines hard-labelled pairs only.

  `is_distance=True`: the matrix is a distance d (smaller = closer; PML `MultiSimilarityMiner(distance=
  LpDistance())`), so a negative is kept if d_an − ε < max_p d_ap and a positive if d_ap + ε > min_n d_an.

  Returns:
    `f32[A, B]`, the new `valid`.
  """
  _check_matrices(similarity, y, valid)
  similarity = jax.lax.stop_gradient(similarity.astype(jnp.float32))
  if is_distance:  # the rules above are the similarity rules on s = −d
    similarity = -similarity
  valid = valid.astype(bool)
  pos, neg = valid & (y >= 1), valid & (y <= 0)
  max_neg = jnp.max(jnp.where(neg, similarity, -jnp.inf), axis=1, keepdims=True)
  min_pos = jnp.min(jnp.where(pos, similarity, jnp.inf), axis=1, keepdims=True)
  hard = (pos & (similarity - epsilon < max_neg)) | (neg & (similarity + epsilon > min_pos))
  return (hard | (valid & ~pos & ~neg)).astype(jnp.float32)


MINER_DISTANCES = ("cosine", "euclidean")


def multi_similarity_from_matrix(
    similarity: jax.Array,
    y: jax.Array,
    valid: jax.Array,
    *,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    miner_epsilon: float | None = None,
    miner_distance: str = "cosine",
) -> jax.Array:
  """Multi-similarity loss over a similarity matrix with soft labels (Wang et al. 2019, eq. 8; Metrix eq. c.3).

  Per anchor: (1/α)·log(1 + Σ_x y·e^{−α(s−base)}) + (1/β)·log(1 + Σ_x (1−y)·e^{β(s−base)}); mean over all anchors.
  `miner_epsilon`: first keep only the pairs `multi_similarity_miner` selects (the paper's mining, eqs. 5–6), on
  the cosine similarities (`miner_distance="cosine"`, PML's default) or on the Euclidean distances of the unit
  vectors, d = √(2 − 2s) (`"euclidean"`, PML `MultiSimilarityMiner(distance=LpDistance())`).
  """
  _check_matrices(similarity, y, valid)
  if miner_distance not in MINER_DISTANCES:
    raise ValueError(f"unknown miner_distance {miner_distance!r}; valid: {list(MINER_DISTANCES)}")
  if miner_epsilon is not None:
    if miner_distance == "euclidean":
      unit_distance = distances.safe_sqrt(jnp.maximum(2.0 - 2.0 * similarity.astype(jnp.float32), 0.0))
      valid = multi_similarity_miner(unit_distance, y, valid, epsilon=miner_epsilon, is_distance=True)
    else:
      valid = multi_similarity_miner(similarity, y, valid, epsilon=miner_epsilon)
  pos_weight, neg_weight = _pair_weights(y, valid)
  similarity = similarity.astype(jnp.float32)
  pos = reducers.masked_logsumexp(-alpha * (similarity - base), pos_weight, add_one=True) / alpha
  neg = reducers.masked_logsumexp(beta * (similarity - base), neg_weight, add_one=True) / beta
  return jnp.mean(pos + neg)


def multi_similarity(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    miner_epsilon: float | None = None,
    ref_embeddings: jax.Array | None = None,
    ref_labels: jax.Array | None = None,
    miner_distance: str = "cosine",
    reference_only: bool = False,
) -> jax.Array:
  """Multi-similarity loss on cosine similarities of all pairs (PML `MultiSimilarityLoss`); with `miner_epsilon`,
  on the pairs PML's `MultiSimilarityMiner(epsilon)` selects (`miner_distance`: see `multi_similarity_from_matrix`).
  `ref_embeddings`, `ref_labels`, `reference_only`: as in `contrastive`."""
  s, y, valid = _loss_matrices(embeddings, labels, ref_embeddings, ref_labels, reference_only=reference_only,
                               metric="cosine", normalize=True)
  return multi_similarity_from_matrix(s, y, valid, alpha=alpha, beta=beta, base=base, miner_epsilon=miner_epsilon,
                                      miner_distance=miner_distance)


def proxy_anchor_from_matrix(
    similarity: jax.Array,
    y: jax.Array,
    valid: jax.Array,
    *,
    margin: float = 0.1,
    alpha: float = 32.0,
) -> jax.Array:
  """Proxy-anchor loss with proxies as anchors (rows) and batch embeddings as candidates (Kim et al. 2020, eq. 4).

  (1/|P⁺|) Σ_c log(1 + Σ_x y·e^{−α(s−δ)}) + (1/C) Σ_c log(1 + Σ_x (1−y)·e^{α(s+δ)}), where C is the number of
  proxies (rows) and P⁺ the proxies with a positive candidate. Soft y gives Metrix's mixed proxy anchor (c.2–c.3).
  """
  _check_matrices(similarity, y, valid)
  pos_weight, neg_weight = _pair_weights(y, valid)
  similarity = similarity.astype(jnp.float32)
  pos = reducers.masked_logsumexp(-alpha * (similarity - margin), pos_weight, add_one=True)
  neg = reducers.masked_logsumexp(alpha * (similarity + margin), neg_weight, add_one=True)
  num_with_positive = jnp.sum(jnp.any(pos_weight > 0, axis=1).astype(jnp.float32))
  return reducers.safe_divide(jnp.sum(pos), num_with_positive) + jnp.sum(neg) / similarity.shape[0]


def proxy_anchor(
    embeddings: jax.Array,
    labels: jax.Array,
    proxies: jax.Array,
    *,
    margin: float = 0.1,
    alpha: float = 32.0,
) -> jax.Array:
  """Proxy-anchor loss (PML `ProxyAnchorLoss`): `proxies` `f[C, D]` are learnable, one per training class.

  Labels must lie in [0, C); a label outside that range would silently have no proxy, so keep C ≥ num classes.
  """
  _check_batch(embeddings, labels)
  if proxies.ndim != 2 or proxies.shape[1] != embeddings.shape[1]:
    raise ValueError(f"proxies must be [C, D] with D = {embeddings.shape[1]}, got shape {proxies.shape}")
  similarity = distances.cosine_similarity(proxies, embeddings)
  y = labels_lib.pair_labels(jnp.arange(proxies.shape[0], dtype=labels.dtype), labels)
  return proxy_anchor_from_matrix(similarity, y, jnp.ones_like(y), margin=margin, alpha=alpha)


# ----------------------------------------------------------------------------------------------------------------
# N-pair (Sohn 2016).


def npair_from_matrix(similarity: jax.Array, y: jax.Array, valid: jax.Array) -> jax.Array:
  """N-pair loss as a cross-entropy per anchor row (Sohn 2016, eq. 3): LSE_valid(s) − Σ y·s / Σ y.

  With one positive per row this is log(1 + Σ_n e^{s_an − s_ap}). Rows without a positive are skipped; the loss is
  the mean over the rows with one.
  """
  _check_matrices(similarity, y, valid)
  pos_weight, _ = _pair_weights(y, valid)
  similarity = similarity.astype(jnp.float32)
  valid = valid.astype(jnp.float32)
  positive_mass = jnp.sum(pos_weight, axis=1)
  has_positive = positive_mass > 0
  log_partition = reducers.masked_logsumexp(similarity, valid, add_one=False)
  positive_similarity = reducers.safe_divide(jnp.sum(pos_weight * similarity, axis=1), positive_mass)
  per_row = jnp.where(has_positive, log_partition - positive_similarity, 0.0)
  return reducers.safe_divide(jnp.sum(per_row), jnp.sum(has_positive.astype(jnp.float32)))


def npair_pairs(labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One (anchor, positive) per class with ≥ 2 samples: its first and second occurrence in batch order.

  Returns:
    `is_anchor` (`bool[B]`, True at each class's first occurrence when the class has a second one) and
    `positive_index` (`i32[B]`, the second occurrence; meaningful where `is_anchor`).
  """
  # A stable sort groups each class in batch order: a class's first occurrence is where a run of equal labels
  # starts, its second the next position of the run (O(B log B), no [B, B] masks).
  order = jnp.argsort(labels, stable=True)
  ranked = labels[order]
  starts = jnp.concatenate([jnp.ones(1, bool), ranked[1:] != ranked[:-1]])
  has_next = jnp.concatenate([ranked[1:] == ranked[:-1], jnp.zeros(1, bool)])
  following = jnp.concatenate([order[1:], order[:1]])
  is_anchor = jnp.zeros(labels.shape, bool).at[order].set(starts & has_next)
  positive_index = jnp.zeros(labels.shape, order.dtype).at[order].set(following)
  return is_anchor, positive_index.astype(jnp.int32)


def _npair_over_slots(embeddings: jax.Array, is_anchor: jax.Array, positive_index: jax.Array, slots: int) -> jax.Array:
  """N-pair loss with the anchors compacted into `slots` static slots ([slots, slots] similarities)."""
  anchor_index = jnp.nonzero(is_anchor, size=slots, fill_value=0)[0]
  slot_used = jnp.arange(slots) < jnp.sum(is_anchor)
  similarity = distances.dot_product(embeddings[anchor_index], embeddings[positive_index[anchor_index]])
  y = jnp.eye(slots, dtype=jnp.float32)
  valid = (slot_used[:, None] & slot_used[None, :]).astype(jnp.float32)
  return npair_from_matrix(similarity, y, valid)


def _npair_value_and_grad(embeddings: jax.Array, is_anchor: jax.Array, positive_index: jax.Array,
                          slots: int) -> tuple[jax.Array, jax.Array]:
  """`_npair_over_slots` and its gradient with respect to `embeddings`, written out (Sohn 2016, eq. 3).

  With S = A·Pᵀ over the used slots (A the anchors, P their positives) and n used slots, the loss is
  (1/n) Σ_i (LSE_j S_ij − S_ii), so ∂L/∂S = (softmax_rows(S) − I)/n, ∂L/∂A = (∂L/∂S)·P and ∂L/∂P = (∂L/∂S)ᵀ·A,
  scattered back to the anchors' and positives' rows.
  """
  anchor_index = jnp.nonzero(is_anchor, size=slots, fill_value=0)[0]
  positive_rows = positive_index[anchor_index]
  used = jnp.arange(slots) < jnp.sum(is_anchor)
  anchors = embeddings[anchor_index].astype(jnp.float32)
  positives = embeddings[positive_rows].astype(jnp.float32)
  similarity = jnp.matmul(anchors, positives.T)
  valid = used[:, None] & used[None, :]
  shift = jax.lax.stop_gradient(jnp.max(jnp.where(valid, similarity, -jnp.inf), axis=1, keepdims=True))
  shift = jnp.where(used[:, None], shift, 0.0)
  exp = jnp.where(valid, jnp.exp(jnp.where(valid, similarity, shift) - shift), 0.0)
  total = jnp.sum(exp, axis=1, keepdims=True)
  log_partition = jnp.log(jnp.where(used[:, None], total, 1.0)) + shift
  count = jnp.maximum(jnp.sum(used.astype(jnp.float32)), 1.0)
  per_row = jnp.where(used, log_partition[:, 0] - jnp.diagonal(similarity), 0.0)
  loss = jnp.sum(per_row) / count
  d_similarity = (exp / jnp.where(used[:, None], total, 1.0) - jnp.eye(slots) * used[:, None]) / count
  d_anchors = jnp.where(used[:, None], jnp.matmul(d_similarity, positives), 0.0)
  d_positives = jnp.where(used[:, None], jnp.matmul(d_similarity.T, anchors), 0.0)
  grad = jnp.zeros(embeddings.shape, jnp.float32).at[anchor_index].add(d_anchors).at[positive_rows].add(d_positives)
  return loss, grad.astype(embeddings.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _npair_adaptive(embeddings, is_anchor, positive_index, options):
  """N-pair loss over the smallest of `options` slot counts that holds every anchor (no gradient needed here)."""
  branch = jnp.sum(jnp.asarray(options) < jnp.sum(is_anchor))
  branches = [functools.partial(_npair_over_slots, slots=slots) for slots in options]
  return jax.lax.switch(branch, branches, embeddings, is_anchor, positive_index)


def _npair_adaptive_fwd(embeddings, is_anchor, positive_index, options):
  # The smallest slot count that holds every anchor; loss and gradient come out of one `lax.switch`, so the
  # backward pass is a scaling, not a differentiation through the switch.
  branch = jnp.sum(jnp.asarray(options) < jnp.sum(is_anchor))
  branches = [functools.partial(_npair_value_and_grad, slots=slots) for slots in options]
  loss, grad = jax.lax.switch(branch, branches, embeddings, is_anchor, positive_index)
  return loss, grad


def _npair_adaptive_bwd(options, grad, cotangent):
  del options
  return (cotangent.astype(grad.dtype) * grad, None, None)


_npair_adaptive.defvjp(_npair_adaptive_fwd, _npair_adaptive_bwd)


def npair(embeddings: jax.Array, labels: jax.Array, *, normalize: bool = True,
          max_pairs: int | None = None) -> jax.Array:
  """N-pair loss (PML `NPairsLoss`): one (anchor, positive) per class, cross-entropy over the other positives.

  Similarities are cosine (PML's `DotProductSimilarity` on normalised embeddings); `normalize=False` uses raw dot
  products as in Sohn 2016. The anchors are compacted into static slots, so the similarity matrix is [slots, slots]
  rather than [B, B]. By default the slot count follows the batch: `lax.switch` runs the smallest of B/16, B/8, B/4
  and B/2 slots that holds every anchor (B/2 always does), so a 4-per-class batch pays for B/4 slots, not B/2 (the
  same loss; half the time at B = 512); its gradient is written out and computed in the same branch (a custom VJP,
  so the backward pass does not differentiate through the switch). `max_pairs` fixes the slot count instead (e.g.
  B // m for an m-per-class sampler); set it only when the sampler guarantees it: anchors beyond it are dropped. A batch without a positive
  pair (one row, or all labels distinct) gives 0 with a zero gradient, as PML.
  """
  _check_batch(embeddings, labels)
  if max_pairs is not None and int(max_pairs) < 1:
    raise ValueError(f"max_pairs must be at least 1, got {max_pairs}")
  if normalize:
    embeddings = distances.l2_normalize(embeddings)
  is_anchor, positive_index = npair_pairs(labels)
  if max_pairs is not None:
    return _npair_over_slots(embeddings, is_anchor, positive_index, int(max_pairs))
  half = embeddings.shape[0] // 2
  options = tuple(sorted({max(1, half >> shift) for shift in range(4)}))  # ascending; the last is B // 2
  return _npair_adaptive(embeddings, is_anchor, positive_index, options)


# ----------------------------------------------------------------------------------------------------------------
# Lifted structure (Song et al. 2016) and its generalisation (Hermans et al. 2017).


def lifted_structure_from_matrix(
    distance: jax.Array,
    y: jax.Array,
    valid: jax.Array,
    *,
    neg_margin: float = 1.0,
    pos_margin: float = 0.0,
    reducer: str = "mean",
    anchor_columns: bool = True,
) -> jax.Array:
  """Smooth lifted structure loss (Song et al. 2016, eq. 4; PML `LiftedStructureLoss`).

  For each positive pair (a, p): J = log(Σ_{(a,n)} e^{m − d_an} + Σ_{(p,n)} e^{m − d_pn}) + d_ap − pos_margin, the
  loss ½[J]₊², averaged over ordered positive pairs (weighted by y for soft labels). `reducer`: `mean` (that
  average; PML's default `MeanReducer`), `mean_nonzero` (over the pairs with J > 0; PML `AvgNonZeroReducer`), `sum`.

  The first A candidate columns must be the anchors themselves (rows), as `batch_matrices` builds them, so that the
  negatives of p are row p; a positive among the extra columns (index ≥ A) pools the negatives of a alone.
  `anchor_columns=False` (`query_reference_matrices`: no column is an anchor): every pair pools the negatives of a
  alone. Departure: PML's `ref_emb` form pools the negatives of *query row* p for a reference column p (an index of
  one set read in the other), which has no meaning; we do not reproduce it.
  A pair with no negative on either side contributes 0, as in PML.
  """
  _check_matrices(distance, y, valid)
  num_anchors, num_candidates = distance.shape
  if anchor_columns and num_candidates < num_anchors:
    raise ValueError(f"lifted structure needs the anchors among the candidates (B ≥ A), got {distance.shape}")
  pos_weight, neg_weight = _pair_weights(y, valid)
  distance = distance.astype(jnp.float32)
  row_lse = reducers.masked_logsumexp(neg_margin - distance, neg_weight)  # [A]
  row_nonempty = jnp.any(neg_weight > 0, axis=1)
  if anchor_columns:
    pad = num_candidates - num_anchors
    column_lse = jnp.pad(row_lse, (0, pad))
    column_nonempty = jnp.pad(row_nonempty, (0, pad))
  else:
    column_lse = jnp.zeros((num_candidates,), jnp.float32)
    column_nonempty = jnp.zeros((num_candidates,), bool)
  anchor_lse, anchor_nonempty = row_lse[:, None], row_nonempty[:, None]
  positive_lse, positive_nonempty = column_lse[None, :], column_nonempty[None, :]
  # Union of the negatives of a and of p: a log-add-exp of the two row log-sum-exps; an empty side drops out.
  pooled = jnp.where(
      anchor_nonempty & positive_nonempty,
      jnp.logaddexp(anchor_lse, positive_lse),
      jnp.where(anchor_nonempty, anchor_lse, jnp.where(positive_nonempty, positive_lse, 0.0)),
  )
  # With no negative on either side J = log(0) + … = −∞: the pair contributes 0 (as PML).
  per_pair = jnp.where(anchor_nonempty | positive_nonempty,
                       0.5 * jnp.square(jax.nn.relu(pooled + distance - pos_margin)), 0.0)
  if reducer == "mean":
    return reducers.weighted_mean(per_pair, pos_weight)
  return reducers.reduce(pos_weight * per_pair, pos_weight, reducer)


def lifted_structure(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    neg_margin: float = 1.0,
    pos_margin: float = 0.0,
    normalize: bool = True,
    ref_embeddings: jax.Array | None = None,
    ref_labels: jax.Array | None = None,
    reducer: str = "mean",
    reference_only: bool = False,
) -> jax.Array:
  """Lifted structure loss over all ordered positive pairs of the batch (Euclidean distances).

  `reducer`, and `reference_only=True` (each pair pools its anchor's negatives alone): see
  `lifted_structure_from_matrix`; `ref_embeddings`, `ref_labels` as in `contrastive`."""
  s, y, valid = _loss_matrices(embeddings, labels, ref_embeddings, ref_labels, reference_only=reference_only,
                               metric="euclidean", normalize=normalize)
  return lifted_structure_from_matrix(s, y, valid, neg_margin=neg_margin, pos_margin=pos_margin, reducer=reducer,
                                      anchor_columns=not reference_only)


def generalized_lifted_structure_from_matrix(
    distance: jax.Array,
    y: jax.Array,
    valid: jax.Array,
    *,
    neg_margin: float = 1.0,
    pos_margin: float = 0.0,
    reducer: str = "mean",
) -> jax.Array:
  """Generalised lifted structure (Hermans et al. 2017, p. 4; PML `GeneralizedLiftedStructureLoss`).

  Per anchor: [LSE_P(d − pos_margin) + LSE_N(neg_margin − d)]₊ with soft weights y and 1−y; an empty set's LSE is 0;
  mean over all anchors (`reducer="mean"`, PML's default), over the anchors with a positive term (`mean_nonzero`),
  or their sum (`sum`).
  """
  _check_matrices(distance, y, valid)
  pos_weight, neg_weight = _pair_weights(y, valid)
  distance = distance.astype(jnp.float32)
  pos = reducers.masked_logsumexp(distance - pos_margin, pos_weight)
  neg = reducers.masked_logsumexp(neg_margin - distance, neg_weight)
  per_anchor = jax.nn.relu(pos + neg)
  if reducer == "mean":
    return jnp.mean(per_anchor)
  return reducers.reduce(per_anchor, jnp.ones_like(per_anchor), reducer)


def generalized_lifted_structure(
    embeddings: jax.Array,
    labels: jax.Array,
    *,
    neg_margin: float = 1.0,
    pos_margin: float = 0.0,
    normalize: bool = True,
    ref_embeddings: jax.Array | None = None,
    ref_labels: jax.Array | None = None,
    reducer: str = "mean",
    reference_only: bool = False,
) -> jax.Array:
  """Generalised lifted structure loss over all anchors of the batch (Euclidean distances); `reducer`: see
  `generalized_lifted_structure_from_matrix`; `ref_embeddings`, `ref_labels`, `reference_only` as in `contrastive`."""
  s, y, valid = _loss_matrices(embeddings, labels, ref_embeddings, ref_labels, reference_only=reference_only,
                               metric="euclidean", normalize=normalize)
  return generalized_lifted_structure_from_matrix(s, y, valid, neg_margin=neg_margin, pos_margin=pos_margin,
                                                  reducer=reducer)


# ----------------------------------------------------------------------------------------------------------------
# Registry: name -> (embedding form, matrix form, the metric its matrix form expects).

from metriclearn import proxy_losses  # noqa: E402  (the classification/proxy losses; it does not import this module)
from metriclearn import pair_losses  # noqa: E402  (NT-Xent, SupCon, margin, FastAP, SNR contrastive, circle)

LOSSES = {
    "contrastive": contrastive,
    "triplet": triplet,
    "multi_similarity": multi_similarity,
    "proxy_anchor": proxy_anchor,
    "npair": npair,
    "lifted_structure": lifted_structure,
    "generalized_lifted_structure": generalized_lifted_structure,
    "proxy_nca": proxy_losses.proxy_nca,
    "normalized_softmax": proxy_losses.normalized_softmax,
    "cosface": proxy_losses.cosface,
    "arcface": proxy_losses.arcface,
    "soft_triple": proxy_losses.soft_triple,
    **pair_losses.LOSSES,
}

MATRIX_LOSSES = {
    "contrastive": contrastive_from_matrix,
    "triplet": triplet_from_matrix,
    "multi_similarity": multi_similarity_from_matrix,
    "proxy_anchor": proxy_anchor_from_matrix,
    "npair": npair_from_matrix,
    "lifted_structure": lifted_structure_from_matrix,
    "generalized_lifted_structure": generalized_lifted_structure_from_matrix,
    "proxy_nca": proxy_losses.proxy_nca_from_matrix,
    "normalized_softmax": proxy_losses.normalized_softmax_from_matrix,
    "cosface": proxy_losses.cosface_from_matrix,
    "arcface": proxy_losses.arcface_from_matrix,
    "soft_triple": proxy_losses.soft_triple_from_matrix,
    **pair_losses.MATRIX_LOSSES,
}

# The `s` each matrix form expects when built from embeddings (what `batch_matrices(metric=...)` should produce).
MATRIX_METRIC = {
    "contrastive": "euclidean",
    "triplet": "euclidean",
    "multi_similarity": "cosine",
    "proxy_anchor": "cosine",
    "npair": "cosine",
    "lifted_structure": "euclidean",
    "generalized_lifted_structure": "euclidean",
    "proxy_nca": "squared_euclidean",  # the proxy forms: `s` of the rows to the class rows, [A, C]
    "normalized_softmax": "cosine",
    "cosface": "cosine",
    "arcface": "cosine",
    "soft_triple": "cosine",  # then `proxy_losses.soft_triple_class_similarity` over the K centres
    **pair_losses.MATRIX_METRIC,
}

# Loss-owned arrays (DESIGN §3): loss name -> init(rng, num_classes, embedding_dim, **loss_kwargs) -> {name: array}.
# Convention: the arrays are learnable parameters of the loss, stored under `params["loss"]` and updated by the
# optimiser (their learning rate: `optimizer.loss_lr_multiplier`). The keys of the returned dict are the names of the
# loss's positional parameters after `labels`, in their order (`proxy_anchor(embeddings, labels, proxies, *, ...)`
# -> {"proxies": f[C, D]}); methods call `LOSSES[name](embeddings, labels, **params["loss"], **kwargs)`. The init
# takes the loss's own keywords (`config.loss.kwargs`) and ignores those it does not need (`**_`); it may return {}
# when those settings need no array (e.g. a fixed β). A loss without an entry owns no array. AML and APFS, which build
# batch-pair matrices only, refuse the losses listed here; a cross-batch memory refuses a loss whose arrays exist.
LOSS_PARAMS = {
    "proxy_anchor": proxy_losses.init_proxy_anchor,
    "proxy_nca": proxy_losses.init_proxy_nca,
    "normalized_softmax": proxy_losses.init_class_weights,
    "cosface": proxy_losses.init_class_weights,
    "arcface": proxy_losses.init_class_weights,
    "soft_triple": proxy_losses.init_soft_triple,
    "margin": pair_losses.init_margin_params,  # {} unless learn_beta: with a fixed β it owns nothing
}

# The losses whose anchors or columns are their own learned class rows (proxies, class weights, centres), not the
# batch's pairs: methods that build batch-pair matrices (AML, APFS) and the cross-batch memory cannot use them.
CLASS_ROW_LOSSES = ("proxy_anchor", "proxy_nca", "normalized_softmax", "cosface", "arcface", "soft_triple")


def matrix_form(loss_name: str, loss_kwargs: dict[str, Any]) -> tuple[str, bool, dict[str, Any]]:
  """`(metric, normalize, matrix kwargs)` equivalent to the embedding form `LOSSES[loss_name](**loss_kwargs)`.

  The embedding form's `squared`, `distance` and `normalize` choose the matrix `s` (`distance="cosine"` becomes
  `similarity=True`); the rest go to `<loss>_from_matrix`.
  """
  kwargs = dict(loss_kwargs)
  squared, normalize = kwargs.pop("squared", False), kwargs.pop("normalize", True)
  metric = MATRIX_METRIC[loss_name]
  if "distance" in kwargs:
    if loss_name not in ("contrastive", "triplet"):
      raise ValueError(f"loss keyword 'distance' exists for contrastive and triplet only, not {loss_name!r}")
    metric, is_similarity = _pair_distance(kwargs.pop("distance"), squared)
    if is_similarity:
      kwargs["similarity"] = True
  elif squared:
    metric = "squared_euclidean"
  elif loss_name == "npair" and not normalize:
    metric = "dot"  # Sohn 2016's raw inner products
  accepted = inspect.signature(MATRIX_LOSSES[loss_name]).parameters
  unknown = sorted(set(kwargs) - set(accepted))
  if unknown:
    raise ValueError(f"loss keyword(s) {unknown} of {loss_name!r} have no matrix form")
  return metric, normalize, kwargs
