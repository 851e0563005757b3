"""Pair and tuple losses of the Reality Check (Musgrave et al. 2020) beyond `metriclearn.losses`' seven.

NT-Xent, SupCon, the margin loss (fixed or learnable β), FastAP, SNR contrastive and circle loss. Each exists in the
two forms of `metriclearn.losses` (DESIGN §2–§3): `<loss>(embeddings f[B, D], labels i[B], *, hparams) -> f32[]`
with pytorch-metric-learning's (PML 2.9) constructor keywords and defaults, and `<loss>_from_matrix(s, y, valid, *,
hparams)` over soft pair labels y (Metrix) and reference columns (cross-batch memory). With binary y and the
defaults, values and gradients equal PML's (tests/test_pair_losses.py). All are registered in `losses.LOSSES`.

Soft labels: a candidate with label y counts as a positive with weight y and as a negative with weight 1 − y, in
every sum over positives or negatives (as Metrix eq. c.3 does for multi-similarity), and averages over positive pairs
are weighted by y. For binary labels these are the textbook losses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metriclearn import distances
from metriclearn import reducers


def _batch_matrices(embeddings, labels, ref_embeddings, ref_labels, *, metric, normalize=True):
  # Imported at call time: `losses` imports this module to register its losses.
  from metriclearn import losses  # pylint: disable=import-outside-toplevel
  return losses.batch_matrices(embeddings, labels, ref_embeddings, ref_labels, metric=metric, normalize=normalize)


def _weights(s: jax.Array, y: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`s` as float32, the positive weights y·valid and the negative weights (1 − y)·valid; checks the shapes."""
  if s.ndim != 2 or not s.shape == y.shape == valid.shape:
    raise ValueError(f"s, y and valid must be [A, B] matrices of one shape, got {[s.shape, y.shape, valid.shape]}")
  y, valid = y.astype(jnp.float32), valid.astype(jnp.float32)
  return s.astype(jnp.float32), y * valid, (1.0 - y) * valid


def _any(weights: jax.Array, axis=None) -> jax.Array:
  return jnp.any(weights > 0, axis=axis)


# ----------------------------------------------------------------------------------------------------------------
# NT-Xent (Chen et al. 2020) and supervised contrastive (Khosla et al. 2020).


def ntxent_from_matrix(similarity: jax.Array, y: jax.Array, valid: jax.Array, *,
                       temperature: float = 0.07) -> jax.Array:
  """NT-Xent over a similarity matrix: per positive pair (a, p), −log(e^{s_ap/τ} / (e^{s_ap/τ} + Σ_n e^{s_an/τ})).

  The mean over positive pairs (weighted by y); the negatives n of a are weighted by 1 − y. 0 without positive pairs;
  an anchor without negatives contributes 0 (with zero gradient).
  """
  similarity, pos_weight, neg_weight = _weights(similarity, y, valid)
  logits = similarity / temperature
  has_negative = _any(neg_weight, axis=1)[:, None]
  negatives = reducers.masked_logsumexp(logits, neg_weight)[:, None]
  log_denominator = jnp.where(has_negative, jnp.logaddexp(logits, negatives), logits)
  return reducers.weighted_mean(log_denominator - logits, pos_weight)


def ntxent(embeddings: jax.Array, labels: jax.Array, *, temperature: float = 0.07,
           ref_embeddings: jax.Array | None = None, ref_labels: jax.Array | None = None) -> jax.Array:
  """NT-Xent loss (Chen et al. 2020, SimCLR, eq. 1; PML `NTXentLoss`) on cosine similarities of all pairs.

  L = mean_{(a,p)} −log(e^{s_ap/τ} / (e^{s_ap/τ} + Σ_{n: y_n ≠ y_a} e^{s_an/τ})), over every ordered positive pair.

  Departure: the paper has one positive per anchor and a denominator over all k ≠ a; with several positives (labels,
  not augmented views) each positive pair is its own softmax over itself and the negatives, as PML (the default).
  Departure: the exact log-softmax, where PML takes log(ratio + 1.2e-38) (equal unless the ratio underflows).

  Example:
    >>> loss = ntxent(jnp.eye(4), jnp.array([0, 0, 1, 1]))
  """
  s, y, valid = _batch_matrices(embeddings, labels, ref_embeddings, ref_labels, metric="cosine")
  return ntxent_from_matrix(s, y, valid, temperature=temperature)


def supcon_from_matrix(similarity: jax.Array, y: jax.Array, valid: jax.Array, *,
                       temperature: float = 0.1) -> jax.Array:
  """SupCon over a similarity matrix: per anchor, LSE_valid(s/τ) − Σ_x y·s/τ / Σ_x y; mean over the anchors whose
  value is > 0 (PML's `AvgNonZeroReducer`). 0 when the matrix has no positive or no negative pair (as PML)."""
  similarity, pos_weight, neg_weight = _weights(similarity, y, valid)
  logits = similarity / temperature
  log_denominator = reducers.masked_logsumexp(logits, pos_weight + neg_weight)
  positive_mass = jnp.sum(pos_weight, axis=1)
  per_anchor = jnp.where(positive_mass > 0,
                         log_denominator - reducers.safe_divide(jnp.sum(pos_weight * logits, axis=1), positive_mass),
                         0.0)
  return jnp.where(_any(pos_weight) & _any(neg_weight), reducers.mean_nonzero(per_anchor), 0.0)


def supcon(embeddings: jax.Array, labels: jax.Array, *, temperature: float = 0.1,
           ref_embeddings: jax.Array | None = None, ref_labels: jax.Array | None = None) -> jax.Array:
  """Supervised contrastive loss, L^sup_out (Khosla et al. 2020, eq. 2; PML `SupConLoss`), cosine similarities.

  Per anchor a: −(1/|P(a)|) Σ_{p ∈ P(a)} log(e^{s_ap/τ} / Σ_{x ≠ a} e^{s_ax/τ}).

  Departure: the paper sums over all anchors; PML (the default) averages over the anchors with a non-zero loss,
  which leaves out anchors without positives.
  """
  s, y, valid = _batch_matrices(embeddings, labels, ref_embeddings, ref_labels, metric="cosine")
  return supcon_from_matrix(s, y, valid, temperature=temperature)


# ----------------------------------------------------------------------------------------------------------------
# Circle loss (Sun et al. 2020).


def circle_from_matrix(similarity: jax.Array, y: jax.Array, valid: jax.Array, *, m: float = 0.4,
                       gamma: float = 80.0) -> jax.Array:
  """Circle loss over a similarity matrix: per anchor softplus(LSE_P(−γ α_p (s − Δ_p)) + LSE_N(γ α_n (s − Δ_n))),
  α_p = [1 + m − s]₊ and α_n = [s + m]₊ held constant (not differentiated, as in the paper and PML), Δ_p = 1 − m,
  Δ_n = m; anchors without a positive or a negative give 0; mean over the anchors with a non-zero loss (PML)."""
  similarity, pos_weight, neg_weight = _weights(similarity, y, valid)
  fixed = jax.lax.stop_gradient(similarity)
  pos_logits = -gamma * jax.nn.relu(1.0 + m - fixed) * (similarity - (1.0 - m))
  neg_logits = gamma * jax.nn.relu(fixed + m) * (similarity - m)
  total = reducers.masked_logsumexp(pos_logits, pos_weight) + reducers.masked_logsumexp(neg_logits, neg_weight)
  per_anchor = jnp.where(_any(pos_weight, axis=1) & _any(neg_weight, axis=1), jax.nn.softplus(total), 0.0)
  return reducers.mean_nonzero(per_anchor)


def circle(embeddings: jax.Array, labels: jax.Array, *, m: float = 0.4, gamma: float = 80.0,
           ref_embeddings: jax.Array | None = None, ref_labels: jax.Array | None = None) -> jax.Array:
  """Circle loss with pair-wise labels (Sun et al. 2020, eq. 6 with the margins of eq. 8; PML `CircleLoss`).

  Per anchor: log(1 + Σ_n e^{γ α_n (s_n − m)} · Σ_p e^{−γ α_p (s_p − 1 + m)}), cosine similarities; m = 0.4, γ = 80
  are the paper's fine-grained image retrieval values.

  Departure: the paper sums the anchors' losses; PML (the default) averages over the anchors with a non-zero loss.
  """
  s, y, valid = _batch_matrices(embeddings, labels, ref_embeddings, ref_labels, metric="cosine")
  return circle_from_matrix(s, y, valid, m=m, gamma=gamma)


# ----------------------------------------------------------------------------------------------------------------
# Margin loss (Wu et al. 2017), over all triplets as PML, with a fixed or a learnable β.


def _check_triplets_per_anchor(triplets_per_anchor) -> None:
  if triplets_per_anchor != "all":
    raise ValueError(f"triplets_per_anchor must be 'all', got {triplets_per_anchor!r}: PML's integer setting samples "
                     "random triplets per anchor, which has no deterministic matrix form here")


def margin_from_matrix(distance: jax.Array, y: jax.Array, valid: jax.Array, anchor_beta: jax.Array | None = None, *,
                       margin: float = 0.2, nu: float = 0.0, beta: float = 1.2, triplets_per_anchor: str = "all",
                       learn_beta: bool = False, num_classes: int | None = None) -> jax.Array:
  """Margin loss over all (a, p, n): Σ w·([d_ap − β_a + α]₊ + [β_a − d_an + α]₊) / (number of non-zero hinges).

  The weight of a triplet is y[a,p]·(1 − y[a,n]) (times validity); a soft candidate is never paired with itself.
  O(A·B): per anchor, each positive hinge counts once per negative and each negative hinge once per positive.

  Args:
    distance, y, valid: `f[A, B]`.
    anchor_beta: β of each anchor row, `f[]` or `f[A]`; None uses the constant `beta`.
    margin: α. nu: weight ν of the β regulariser (only with `learn_beta`). beta: the constant β.
    triplets_per_anchor: "all" (the only setting). num_classes: unused here (the embedding form's per-class β).

  Returns:
    `f32[]`; 0 without triplets. With `learn_beta`, plus ν·β (scalar β) or ν·Σ_triplets w·β_a / (the divisor).
  """
  del num_classes
  _check_triplets_per_anchor(triplets_per_anchor)
  distance, pos_weight, neg_weight = _weights(distance, y, valid)
  if anchor_beta is None:
    if learn_beta:
      raise ValueError("learn_beta=True needs β as an array: pass it positionally after the labels "
                       "(`pair_losses.init_margin_beta` creates it)")
    anchor_beta = jnp.asarray(beta, jnp.float32)
  anchor_beta = jnp.asarray(anchor_beta).astype(jnp.float32)
  if anchor_beta.shape not in ((), (distance.shape[0],)):
    raise ValueError(f"anchor_beta must be a scalar or one β per anchor row [{distance.shape[0]}], "
                     f"got shape {anchor_beta.shape}")
  row_beta = anchor_beta[:, None] if anchor_beta.ndim else anchor_beta
  pos_hinge = jax.nn.relu(distance - row_beta + margin)
  neg_hinge = jax.nn.relu(row_beta - distance + margin)
  is_pos, is_neg = (pos_weight > 0).astype(jnp.float32), (neg_weight > 0).astype(jnp.float32)
  pos_active, neg_active = (pos_hinge > 0).astype(jnp.float32), (neg_hinge > 0).astype(jnp.float32)
  self_weight = pos_weight * neg_weight  # (a, x, x): a soft candidate with itself, never a triplet
  self_count = is_pos * is_neg

  def per_triplet_sum(pos_values, neg_values, pos_mass, neg_mass, self_mass):
    """Σ_{(a,p,n), p≠n} of pos_values[a,p]·neg_mass[a,n] + pos_mass[a,p]·neg_values[a,n]."""
    total = (jnp.sum(pos_values, axis=1) * jnp.sum(neg_mass, axis=1)
             + jnp.sum(pos_mass, axis=1) * jnp.sum(neg_values, axis=1))
    return jnp.sum(total) - jnp.sum(self_mass)

  total = per_triplet_sum(pos_weight * pos_hinge, neg_weight * neg_hinge, pos_weight, neg_weight,
                          self_weight * (pos_hinge + neg_hinge))
  divisor = per_triplet_sum(is_pos * pos_active, is_neg * neg_active, is_pos, is_neg,
                            self_count * (pos_active + neg_active))
  loss = reducers.safe_divide(total, divisor)
  num_triplets = jnp.sum(jnp.sum(is_pos, axis=1) * jnp.sum(is_neg, axis=1)) - jnp.sum(self_count)
  if learn_beta:
    if anchor_beta.ndim == 0:  # PML: ν·β, added whenever there is a triplet
      regulariser = jnp.where(num_triplets > 0, nu * anchor_beta, 0.0)
    else:  # PML: ν·β_a per triplet, over the same divisor
      triplet_mass = (jnp.sum(pos_weight, axis=1) * jnp.sum(neg_weight, axis=1)
                      - jnp.sum(self_weight, axis=1))
      regulariser = reducers.safe_divide(nu * jnp.sum(triplet_mass * anchor_beta), divisor)
    loss = loss + regulariser
  return jnp.where(num_triplets > 0, loss, 0.0)


def margin(embeddings: jax.Array, labels: jax.Array, learned_beta: jax.Array | None = None, *, margin: float = 0.2,
           nu: float = 0.0, beta: float = 1.2, triplets_per_anchor: str = "all", learn_beta: bool = False,
           num_classes: int | None = None, normalize: bool = True, ref_embeddings: jax.Array | None = None,
           ref_labels: jax.Array | None = None) -> jax.Array:
  """Margin loss (Wu et al. 2017, "Sampling Matters in Deep Embedding Learning", §4: ℓ(i, j) = (α + y_ij(D_ij −
  β))₊ with β learnable and ν-regularised; PML `MarginLoss`), Euclidean distances of L2-normalised rows.

  L = Σ_{(a,p,n)} ([d_ap − β + α]₊ + [β − d_an + α]₊) / #(non-zero hinges) over all triplets (+ ν·β with
  `learn_beta`). `learned_beta` is the learnable β (`f32[]`, or `f32[num_classes]` for one β per class, indexed by the
  anchor's label, so labels must lie in [0, num_classes)), made by `init_margin_beta`; without it β is the constant
  `beta` (and `learn_beta` must be False).

  Departure: the paper sums over pairs drawn by distance-weighted sampling; PML (the default) takes all triplets, so a
  positive pair's hinge counts once per negative and a negative's once per positive.
  """
  _check_triplets_per_anchor(triplets_per_anchor)
  anchor_beta = None
  if learned_beta is not None:
    learned_beta = jnp.asarray(learned_beta)
    expected = () if not num_classes else (int(num_classes),)
    if learned_beta.shape != expected:
      raise ValueError(f"learned_beta must have shape {expected} (num_classes={num_classes}), got "
                       f"{learned_beta.shape}; `pair_losses.init_margin_beta` makes one of the right shape")
    anchor_beta = learned_beta[labels] if learned_beta.ndim else learned_beta
  s, y, valid = _batch_matrices(embeddings, labels, ref_embeddings, ref_labels, metric="euclidean",
                                normalize=normalize)
  return margin_from_matrix(s, y, valid, anchor_beta, margin=margin, nu=nu, beta=beta, learn_beta=learn_beta)


def init_margin_beta(rng: jax.Array, num_classes: int, embedding_dim: int, /, **loss_kwargs) -> jax.Array | None:
  """The margin loss's learnable β for `loss_kwargs` (its keywords): None unless `learn_beta`; else `beta` as `f32[]`,
  or `f32[loss_kwargs["num_classes"]]` (one per class, as PML's `num_classes`), which must cover the training set's
  `num_classes` labels. `rng` and `embedding_dim` are unused (β starts at `beta`, as in PML)."""
  del rng, embedding_dim
  if not loss_kwargs.get("learn_beta", False):
    return None
  beta = float(loss_kwargs.get("beta", 1.2))
  per_class = loss_kwargs.get("num_classes")
  if not per_class:
    return jnp.asarray(beta, jnp.float32)
  if int(per_class) < num_classes:
    raise ValueError(f"margin loss: num_classes={per_class} gives fewer β than the {num_classes} training classes; "
                     f"set config.loss.kwargs.num_classes to at least {num_classes} (or None for one shared β)")
  return jnp.full((int(per_class),), beta, jnp.float32)


def init_margin_params(rng: jax.Array, num_classes: int, embedding_dim: int, /, **loss_kwargs) -> dict[str, jax.Array]:
  """`losses.LOSS_PARAMS`'s entry for the margin loss: `{"learned_beta": β}` when `learn_beta`, else `{}`."""
  beta = init_margin_beta(rng, num_classes, embedding_dim, **loss_kwargs)
  return {} if beta is None else {"learned_beta": beta}


# ----------------------------------------------------------------------------------------------------------------
# FastAP (Cakir et al. 2019).


def fastap_from_matrix(distance: jax.Array, y: jax.Array, valid: jax.Array, *, num_bins: int = 10) -> jax.Array:
  """FastAP over squared Euclidean distances of unit vectors (in [0, 4]): 1 − FastAP per anchor with a positive,
  averaged.

  Each distance is spread over the two nearest of the `num_bins + 1` bin centres c_k = 4k/num_bins by the triangular
  kernel [1 − |d − c_k|/Δ]₊ (Δ = 4/num_bins); h⁺ and h⁻ are the positive (weight y) and negative (1 − y) histograms,
  H⁺ and H their cumulative sums, and FastAP = Σ_k h⁺_k H⁺_k / H_k / N⁺ (no one-hot bins, no scatter).
  """
  distance, pos_weight, neg_weight = _weights(distance, y, valid)
  num_bins = int(num_bins)
  if num_bins < 1:
    raise ValueError(f"num_bins must be ≥ 1, got {num_bins}")
  histogram_max = 4.0  # the largest squared distance of two unit vectors
  delta = histogram_max / num_bins
  # One [A, B] kernel and two row sums per bin centre c_k = k·Δ, unrolled: each reduction runs over the contiguous
  # candidate axis. The same sums over an [A, B, bins] kernel ran 3.7× slower (forward + backward) on XLA:CPU.
  scaled = distance / delta
  all_weight = pos_weight + neg_weight
  pos_hist, all_hist = [], []
  for k in range(num_bins + 1):
    kernel = jax.nn.relu(1.0 - jnp.abs(scaled - k))
    pos_hist.append(jnp.sum(kernel * pos_weight, axis=1))
    all_hist.append(jnp.sum(kernel * all_weight, axis=1))
  pos_hist, all_hist = jnp.stack(pos_hist, axis=1), jnp.stack(all_hist, axis=1)  # [A, bins + 1]
  product = pos_hist * jnp.cumsum(pos_hist, axis=1)
  cumulative = jnp.cumsum(all_hist, axis=1)
  counted = (product > 0) & (cumulative > 0)
  precision_sum = jnp.sum(jnp.where(counted, product / jnp.where(counted, cumulative, 1.0), 0.0), axis=1)
  num_positive = jnp.sum(pos_weight, axis=1)
  has_positive = num_positive > 0
  per_anchor = jnp.where(has_positive, 1.0 - reducers.safe_divide(precision_sum, num_positive), 0.0)
  return reducers.safe_divide(jnp.sum(per_anchor), jnp.sum(has_positive.astype(jnp.float32)))


def fastap(embeddings: jax.Array, labels: jax.Array, *, num_bins: int = 10, ref_embeddings: jax.Array | None = None,
           ref_labels: jax.Array | None = None) -> jax.Array:
  """FastAP loss (Cakir et al. 2019, "Deep Metric Learning to Rank", the FastAP approximation of AP by histogram
  binning of distances, §3; PML `FastAPLoss`): mean over anchors of 1 − FastAP of the ranking of the other rows by
  squared Euclidean distance of L2-normalised embeddings, with triangular (linear interpolation) soft binning.

  Departure: PML rejects reference columns; here they are extra candidates of each anchor's ranking.
  """
  s, y, valid = _batch_matrices(embeddings, labels, ref_embeddings, ref_labels, metric="squared_euclidean")
  return fastap_from_matrix(s, y, valid, num_bins=num_bins)


# ----------------------------------------------------------------------------------------------------------------
# Signal-to-noise-ratio contrastive loss (Yuan et al. 2019).


def snr_contrastive_from_matrix(distance: jax.Array, y: jax.Array, valid: jax.Array, *, pos_margin: float = 0.0,
                                neg_margin: float = 1.0, regularizer_weight: float = 0.0) -> jax.Array:
  """The contrastive loss (`losses.contrastive_from_matrix`, mean of non-zero hinges per part) on an SNR distance
  matrix (`distances.pairwise_snr`). The zero-mean regulariser needs the embeddings, so `regularizer_weight` must be 0
  here."""
  from metriclearn import losses  # pylint: disable=import-outside-toplevel
  if regularizer_weight:
    raise ValueError(f"snr_contrastive's zero-mean regulariser (regularizer_weight={regularizer_weight}) is a "
                     "function of the embeddings and has no matrix form (Metrix, cross-batch memory, APFS, AML); "
                     "set regularizer_weight=0 to use it there")
  return losses.contrastive_from_matrix(distance, y, valid, pos_margin=pos_margin, neg_margin=neg_margin)


def snr_contrastive(embeddings: jax.Array, labels: jax.Array, *, pos_margin: float = 0.0, neg_margin: float = 1.0,
                    regularizer_weight: float = 0.0, normalize: bool = True, ref_embeddings: jax.Array | None = None,
                    ref_labels: jax.Array | None = None) -> jax.Array:
  """SNR contrastive loss (Yuan et al. 2019, the contrastive loss on the SNR distance d(a, x) = var(x − a)/var(a),
  with the zero-mean regulariser λ·(1/B) Σ_i |Σ_k h_ik|; PML `SignalToNoiseRatioContrastiveLoss`).

  L = mean⁺_{(a,p)} [d_ap − pos_margin]₊ + mean⁺_{(a,n)} [neg_margin − d_an]₊ + regularizer_weight · mean_i |Σ_k x_ik|,
  the distance on L2-normalised rows and the regulariser on the rows as given (PML applies embedding regularisers so).

  `regularizer_weight` = PML 2.9's `embedding_regularizer=ZeroMeanRegularizer(), embedding_reg_weight=w`; its
  default 0 is PML 2.9's (no regulariser), PML ≤ 0.9's `regularizer_weight` defaulted to 0.1.
  """
  s, y, valid = _batch_matrices(embeddings, labels, ref_embeddings, ref_labels, metric="snr", normalize=normalize)
  loss = snr_contrastive_from_matrix(s, y, valid, pos_margin=pos_margin, neg_margin=neg_margin)
  if regularizer_weight:
    loss = loss + regularizer_weight * jnp.mean(jnp.abs(jnp.sum(embeddings.astype(jnp.float32), axis=1)))
  return loss


# Registered in `losses.LOSSES` / `MATRIX_LOSSES` / `MATRIX_METRIC` under these names.
LOSSES = {"ntxent": ntxent, "supcon": supcon, "margin": margin, "fastap": fastap,
          "snr_contrastive": snr_contrastive, "circle": circle}
MATRIX_LOSSES = {"ntxent": ntxent_from_matrix, "supcon": supcon_from_matrix, "margin": margin_from_matrix,
                 "fastap": fastap_from_matrix, "snr_contrastive": snr_contrastive_from_matrix,
                 "circle": circle_from_matrix}
MATRIX_METRIC = {"ntxent": "cosine", "supcon": "cosine", "margin": "euclidean", "fastap": "squared_euclidean",
                 "snr_contrastive": "snr", "circle": "cosine"}
