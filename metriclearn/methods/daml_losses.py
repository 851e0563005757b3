"""DAML's objective terms as pure functions (Duan et al., CVPR 2018, eqs. 6 and 8–12; `papers/daml.md` (c)).

Every function sees the tuples of one batch in a fixed-shape layout: A anchors x_a (`[A, ·]`), their positives x⁺
(`[A, ·]`) and K negatives per anchor (`[A, K, ·]`: K = 1 for triplet input, K = C − 1 for N-pair input). The negatives
are the synthetic x̃⁻ = G(x⁻, x, x⁺) in the joint phase and the observed x⁻ in pre-training. The generator terms
(`j_hard`, `j_reg`) live in the generator's input space; `j_adv` and J_m in the metric (embedding) space.

J_m is expressed through the shared matrix-form losses (`losses.<name>_from_matrix`, DESIGN §2): each anchor row has
its positive in column 0 and its *own* negatives in columns 1..K (anchor-specific columns, y = 0), so the K columns
hold different points for different rows. Lifted structure also needs the anchors among the columns (its pooled
negatives of a positive are read from the positive's row).

Departure: sums over tuples (eqs. 6, 9) are means over the tuples, as the released code: for a fixed batch layout
a constant scale, so λ keeps its meaning across batch sizes (with the code's batch of 40 triplets, λ·Σ would be
40× λ·mean). The contrastive J_m (eq. 8) has three reducers (`CONTRASTIVE_REDUCERS`): "pooled_mean" is eq. 8's sum
divided by the number of pairs (a constant scale again); "mean" averages the positive and the negative part
separately over all their pairs, which is *not* a scale of eq. 8 (with C = 64 classes each of the 63 negatives of an
anchor weighs 1/63 of its positive); "mean_nonzero" averages each part over its non-zero terms (PML's AvgNonZero,
`losses.contrastive`'s default). Measured (glyphs, seed 0, 600 steps, J_m without the generator): "mean" 0.43 R@1,
eq. 8's sum 0.59, "mean_nonzero" 0.775.
Departure: the triplet J_m with the paper's reduction (mean over *all* tuples, eq. 9) is not
`losses.triplet_from_matrix`, which averages only the violating triplets (PML's AvgNonZero). `reducer="mean"`
(default) is the small pure function below; `reducer="mean_nonzero"` is the shared matrix form on the same matrix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metriclearn import distances
from metriclearn import losses

TRIPLET_REDUCERS = ("mean", "mean_nonzero")
CONTRASTIVE_REDUCERS = ("pooled_mean", "mean", "mean_nonzero")


def _check_tuples(anchor: jax.Array, positive: jax.Array, negatives: jax.Array) -> None:
  if anchor.ndim != 2 or positive.shape != anchor.shape:
    raise ValueError(f"anchor and positive must be [A, d] of one shape, got {anchor.shape} and {positive.shape}")
  if negatives.ndim != 3 or negatives.shape[0] != anchor.shape[0] or negatives.shape[2] != anchor.shape[1]:
    raise ValueError(f"negatives must be [A, K, d] with A = {anchor.shape[0]}, d = {anchor.shape[1]}, "
                     f"got {negatives.shape}")


def squared_distance_to_each(anchor: jax.Array, points: jax.Array) -> jax.Array:
  """`f32[A, K]` of ‖anchor_a − points_{a,k}‖² (anchor `[A, d]`, points `[A, K, d]`).

  An explicit difference rather than the Gram form, so a synthetic point that coincides with its anchor (J_hard
  pulls it there) is at distance exactly 0.
  """
  difference = anchor.astype(jnp.float32)[:, None, :] - points.astype(jnp.float32)
  return jnp.sum(jnp.square(difference), axis=-1)


def _squared_distance(a: jax.Array, b: jax.Array) -> jax.Array:
  """`f32[A]` of ‖a_i − b_i‖² for row-aligned `[A, d]` arrays."""
  return jnp.sum(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)), axis=-1)


def _similarity_to_each(anchor: jax.Array, points: jax.Array) -> jax.Array:
  return jnp.einsum("ad,akd->ak", anchor, points, preferred_element_type=jnp.float32)


def anchor_matrices(anchor: jax.Array, positive: jax.Array, negatives: jax.Array, *,
                    metric: str) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`(s, y, valid)`, each `f32[A, 1 + K]`: column 0 the anchor's positive, columns 1..K its own negatives.

  Args:
    anchor, positive: `[A, d]`; negatives: `[A, K, d]`.
    metric: "squared_euclidean", "euclidean" (safe square root) or "dot".
  """
  _check_tuples(anchor, positive, negatives)
  if metric == "dot":
    s = _similarity_to_each(anchor, jnp.concatenate([positive[:, None], negatives], axis=1))
  elif metric in ("squared_euclidean", "euclidean"):
    s = squared_distance_to_each(anchor, jnp.concatenate([positive[:, None], negatives], axis=1))
    if metric == "euclidean":
      s = distances.safe_sqrt(s)
  else:
    raise ValueError(f"metric must be 'squared_euclidean', 'euclidean' or 'dot', got {metric!r}")
  y = jnp.zeros_like(s).at[:, 0].set(1.0)
  return s, y, jnp.ones_like(s)


# ----------------------------------------------------------------------------------------------------------------
# J_gen = J_hard + λ1·J_reg + λ2·J_adv (eq. 6).


def j_hard(synthetic: jax.Array, anchor: jax.Array) -> jax.Array:
  """J_hard of eq. (6): mean over tuples of ‖x̃⁻ − x‖² (generator space; pulls the synthetic negative to its anchor).

  Args:
    synthetic: `[A, K, c]` synthetic negatives; anchor: `[A, c]`.
  """
  return jnp.mean(squared_distance_to_each(anchor, synthetic))


def j_reg(synthetic: jax.Array, negatives: jax.Array) -> jax.Array:
  """J_reg of eq. (6): mean over tuples of ‖x̃⁻ − x⁻‖² (keeps x̃⁻ near the observed negative it was made from).

  Args:
    synthetic, negatives: `[A, K, c]`, row-aligned (x̃_{a,k} = G(x⁻_{a,k}, ·, ·)).
  """
  if synthetic.shape != negatives.shape:
    raise ValueError(f"synthetic and negatives must have one shape, got {synthetic.shape} and {negatives.shape}")
  difference = synthetic.astype(jnp.float32) - negatives.astype(jnp.float32)
  return jnp.mean(jnp.sum(jnp.square(difference), axis=-1))


def j_adv(anchor: jax.Array, positive: jax.Array, synthetic: jax.Array, *, margin: float,
          similarity: bool = False) -> jax.Array:
  """J_adv of eq. (6), metric space: mean over tuples of [D(x̃⁻, x)² − D(x⁺, x)² − γ]₊.

  Positive when the metric still ranks the synthetic negative correctly by more than the margin; the generator
  minimises it (makes the metric fail). For pairwise (contrastive) input pass `positive = anchor` (D(x⁺, x) = 0,
  daml.md (c)).

  Args:
    anchor, positive: `[A, d]` embeddings; synthetic: `[A, K, d]` embeddings of the synthetic negatives.
    margin: γ.
    similarity: N-pair's D is the inner product f_iᵀf_j (eq. 12), so the sign flips:
      [D(x, x⁺) − D(x, x̃⁻) − γ]₊ (daml.md (c) [I]: the paper does not spell this out).

  Returns:
    `f32[]`.
  """
  _check_tuples(anchor, positive, synthetic)
  if similarity:
    positive_similarity = jnp.sum(anchor.astype(jnp.float32) * positive.astype(jnp.float32), axis=-1)
    gap = positive_similarity[:, None] - _similarity_to_each(anchor, synthetic)
  else:
    gap = squared_distance_to_each(anchor, synthetic) - _squared_distance(anchor, positive)[:, None]
  return jnp.mean(jax.nn.relu(gap - margin))


# ----------------------------------------------------------------------------------------------------------------
# J_m (eqs. 8–12) with the negatives of each anchor as its own columns.


def j_m_contrastive(anchor: jax.Array, positive: jax.Array, negatives: jax.Array, *, margin: float,
                    reducer: str = "pooled_mean") -> jax.Array:
  """DAML (cont), eq. (8): Σ_pos D(x⁺, x)² + Σ_neg [γ − D(x̃⁻, x)²]₊, reduced by `reducer`.

  Args:
    anchor, positive: `[A, d]`; negatives: `[A, K, d]`.
    margin: γ (the negative hinge; the positive margin is 0).
    reducer: one of `CONTRASTIVE_REDUCERS` (module docstring): "pooled_mean" (eq. 8's sum over the A + A·K pairs
      divided by their number), "mean" (each part's mean over its pairs) or "mean_nonzero" (each part's mean over its
      non-zero terms; `losses.contrastive_from_matrix`'s default).

  The standard hinge sign [γ − D²]₊: the extraction's [D² − γ]₊ would pull negatives in (daml.md (c), (g8)).
  """
  s, y, valid = anchor_matrices(anchor, positive, negatives, metric="squared_euclidean")
  if reducer == "pooled_mean":
    terms = y * s + (1.0 - y) * jax.nn.relu(margin - s)
    return jnp.mean(terms)
  if reducer in ("mean", "mean_nonzero"):
    return losses.contrastive_from_matrix(s, y, valid, pos_margin=0.0, neg_margin=margin, reducer=reducer)
  raise ValueError(f"unknown contrastive reducer {reducer!r}; valid: {', '.join(CONTRASTIVE_REDUCERS)}")


def j_m_triplet(anchor: jax.Array, positive: jax.Array, negatives: jax.Array, *, margin: float,
                reducer: str = "mean") -> jax.Array:
  """DAML (tri), eq. (9): [D(x⁺, x)² − D(x̃⁻, x)² + γ]₊ over the (anchor, negative) tuples.

  Args:
    anchor, positive: `[A, d]`; negatives: `[A, K, d]`.
    margin: γ.
    reducer: "mean" (eq. 9's sum over tuples as a mean, the released code's batch mean; a small pure function) or
      "mean_nonzero" (`losses.triplet_from_matrix` on the same squared distances: the mean of the violating tuples).
  """
  s, y, valid = anchor_matrices(anchor, positive, negatives, metric="squared_euclidean")
  if reducer == "mean":
    return jnp.mean(jax.nn.relu(s[:, :1] - s[:, 1:] + margin))
  if reducer == "mean_nonzero":
    return losses.triplet_from_matrix(s, y, valid, margin=margin)
  raise ValueError(f"unknown triplet reducer {reducer!r}; valid: {', '.join(TRIPLET_REDUCERS)}")


def j_m_lifted(anchor: jax.Array, positive: jax.Array, negatives: jax.Array, *, margin: float) -> jax.Array:
  """DAML (lifted), eqs. (10)–(11) in the smooth form of Song et al. 2016 (daml.md (c) [I]).

  For each positive pair (x, x⁺) with the anchor's negatives x̃_k:
  J = log(Σ_k e^{γ − D(x, x̃_k)} + Σ_k e^{γ − D(x⁺, x̃_k)}) + D(x, x⁺), loss = mean over pairs of ½[J]₊², with
  unsquared Euclidean D (safe square root: synthetic negatives can coincide with anchors).

  `losses.lifted_structure_from_matrix` on a `[2A, 2A + K]` matrix: rows are the anchors and the positives, the
  first 2A columns the same points (valid only for the positive pairs: observed negatives are not used, (g9)), the
  last K columns each row's tuple's negatives. Each unordered pair appears twice (a→p and p→a) with the same J, so
  the mean equals eq. (11)'s 1/(2N) Σ over pairs.
  """
  _check_tuples(anchor, positive, negatives)
  num_anchors = anchor.shape[0]
  rows = jnp.concatenate([anchor, positive], axis=0)
  batch_block = distances.pairwise_euclidean(rows)
  negative_block = distances.safe_sqrt(squared_distance_to_each(rows, jnp.concatenate([negatives, negatives])))
  pair = jnp.roll(jnp.eye(2 * num_anchors, dtype=jnp.float32), num_anchors, axis=1)  # (i, i + A) and (i + A, i)
  s = jnp.concatenate([batch_block, negative_block], axis=1)
  y = jnp.concatenate([pair, jnp.zeros_like(negative_block)], axis=1)
  valid = jnp.concatenate([pair, jnp.ones_like(negative_block)], axis=1)
  return losses.lifted_structure_from_matrix(s, y, valid, neg_margin=margin, pos_margin=0.0)


def j_m_npair(anchor: jax.Array, positive: jax.Array, negatives: jax.Array, *, margin: float,
              scale: float = 1.0) -> jax.Array:
  """DAML (N-pair), eq. (12): mean_c log(1 + Σ_k exp(s·(D(x_c, x̃_{c,k}) − D(x_c, x_c⁺)))), D the inner product.

  `losses.npair_from_matrix` on `[A, 1 + K]` inner products (column 0 the positive) times `scale` s. Eq. 12 has
  s = 1 on unnormalised embeddings (Sohn 2016 trains them with an L2 penalty on ‖f‖², `embedding_l2_penalty` of
  `DAMLOptions`). On unit embeddings the inner products lie in [−1, 1], so with s = 1 the loss cannot fall below
  log(1 + K·e⁻²) (≈ 2.26 for K = 63); s = 16 lifts that floor (measured on glyphs: s = 1 0.47 R@1, s = 16 0.76,
  unnormalised with the L2 penalty 0.66). `margin` is unused (eq. 12 has none); it is accepted so that every J_m has
  one signature.
  """
  del margin
  s, y, valid = anchor_matrices(anchor, positive, negatives, metric="dot")
  return losses.npair_from_matrix(scale * s, y, valid)


def embedding_l2_penalty(anchor: jax.Array, positive: jax.Array) -> jax.Array:
  """Sohn (2016)'s penalty on the embedding norms as TF's `npairs_loss` writes it: ¼(mean‖f_a‖² + mean‖f_p‖²).

  Multiplied by `DAMLOptions.embedding_l2_penalty` (TF's `reg_lambda` default 0.002); meaningful only for embeddings
  that are not L2-normalised (`config.model.kwargs.normalize=False`).
  """
  return 0.25 * (jnp.mean(jnp.sum(jnp.square(anchor.astype(jnp.float32)), axis=-1))
                 + jnp.mean(jnp.sum(jnp.square(positive.astype(jnp.float32)), axis=-1)))


# J_m by the name of the registered loss it extends (config.loss.name).
J_M = {
    "contrastive": j_m_contrastive,
    "triplet": j_m_triplet,
    "lifted_structure": j_m_lifted,
    "npair": j_m_npair,
}
