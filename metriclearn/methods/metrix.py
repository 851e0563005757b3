"""Metrix (Venkataramanan et al., ICLR 2022, "It Takes Two to Tango: Mixup for Deep Metric Learning").

Mixed examples enter the *same* matrix-form losses as the clean batch (`losses.<loss>_from_matrix`, DESIGN §2):
each mixed example v = mix_λ(x, x') is a candidate column of its anchor with the soft pair label
y_mix = λ·y[a, x] + (1−λ)·y[a, x'] (eq. c.3), so it feeds λ·ρ⁺ to the positive part and (1−λ)·ρ⁻ to the negative part
of that anchor's loss. The total is L = L_clean + w·L_mix (c.3, c.6), each part reduced on its own. Anchors stay
clean, and gradients flow through the anchors, both mixed sources and the clean loss (no stop-gradient; (h)).

Losses (`SUPPORTED_LOSSES`): the paper's contrastive, multi-similarity and proxy anchor, and two further pair losses
of c.1's form, circle and SNR contrastive (our extension, `mixed_loss`); the others are refused with the reason.

Which pairs are mixed (c.5, as the official code). One λ ~ Beta(α, α) and one fair coin per step, both from
`fold_in(state.rng, step)`. Branches: the positive–negative branch, for every anchor a with a positive in the batch,
mixes mix_λ(p, n) for positives p and negatives n of a; the anchor–negative branch, for anchors without a positive,
mixes mix_λ(a, n). `branches="coin"` runs one branch per step (probability `positive_negative_probability` for the
first), `"both"` runs both every step (they act on disjoint anchors).

Fixed-size sets with masks. Per anchor the mixed examples are slots (k, t): k < K positive slots (the k-th positive
in batch order; K = `max_positives`, by default M−1 under the m-per-class sampler, else B−1) and t < T negative slots
(every batch column, masked, or the T hardest negatives by clean distance). The loss matrices are [B, K·T].

Spaces (c.4):
* `embed`: v = normalise(λe_x + (1−λ)e_x'); ⟨e_a, v⟩ and ‖λe_x + (1−λ)e_x'‖² are combinations of entries of the
  clean Gram matrix, so only [B, K', T] scalars are formed (never a [B, B, B, d] tensor); no extra forward.
* `feature`: the backbone's last feature maps (before pooling) are mixed, then pooling → head → L2 runs on the
  B·K'·T mixed maps. One backbone pass serves clean and mixed examples. With the linear GAP pooling, mixing commutes
  with the pooling, so the pooled features are mixed instead (exact, h·w times less memory; `pool_before_mixing`).
* `input`: the B·K'·T mixed images get one extra forward pass (BatchNorm statistics from that pass, as a second
  forward in the reference code; the running statistics are updated by the clean pass and then the mixed pass).

(K' = 1 when `first_positive_only` or for proxy-anchor, else K: the distinct mixed examples per anchor.)

Memory (float32; the loss matrices hold B·K·T floats in every space). Compiled peak of the whole train step, glyphs
small CNN (4×4×128 maps, 64-d), M = 4, the official pair sets, over the baseline step (benchmarks/RESULTS.md):
embed 1.01× at B = 100 and 1.04× at B = 512; feature with pooled mixing 1.04× / 2.90×, with mixed maps 4.6× / 21×
(B·K'·T·h·w·c floats: ResNet-50's 7×7×2048 maps take 0.4 MB per mixed example, so limit `negatives_per_anchor`);
input with every positive 3.45× / 3.53× (B·K'·T extra images and activations), with one positive 1.6×.

Departure: with m-per-class batches the anchor–negative branch is empty (no anchor lacks a positive); the released
code would crash there. By default (`fallback_to_other_branch=True`) an empty branch hands the step to the other one;
with False the step's mixed loss is 0.
Departure (from the paper's M(a), kept from the code that produced its numbers): the official embed/feature code
mixes only the *first* positive of each anchor, repeated once per positive of the anchor (c.5). `first_positive_only`
reproduces it exactly (multiplicity included) and is the default in `embed` and `feature` space; `input` uses every
positive, as its code does. Configurable either way.
Departure: `feature` reuses the clean backbone pass instead of running the backbone again. The reference code
forwards the same whole batch twice, so the maps, the batch statistics and the gradients are the same (exact with
frozen BN, and in training mode too, since both passes normalise with the same batch's statistics); only the BN
running statistics are updated once per step instead of twice.
Departure: one mixup weight w for both branches (the official embed code uses 0.3 in its anchor–negative branch).
Released code, as an option (c.9): `released_negative_index=True` picks the input code's "hardest" negative as that
code does (an index into the wrong list) and labels it a negative; the published input-mixing numbers came from it.
The released multi-similarity objective is not offered (not a well-defined objective: configs/photos_metrix.py).
Unverified (c.3 [U]): the mixed multi-similarity loss averages over the anchors that have a mixed example (the clean
one over all anchors; `mean_over_mixed_anchors=False` for all); contrastive averages non-zero terms (c.6).
Proxy anchor (c.2–c.3 [I]): proxies are the anchors (rows); the mixed examples are mix_λ(x, n) for every batch example
x (positive–negative branch: x has a same-class partner in the batch; anchor–negative: x has none) and its negatives
n, one column each, labelled mix_λ(1[y=c], 1[y'=c]) for proxy c.
Cross-batch memory (`metriclearn.memory`; our design): the memory's entries are extra clean reference columns of the
clean loss; the mixed examples still come from the batch alone, and the memory stores the clean batch embeddings.
Proxy anchor has no use for a memory (its anchors are the proxies).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from metriclearn import distances
from metriclearn import labels as labels_lib
from metriclearn import losses
from metriclearn import memory
from metriclearn import reducers
from metriclearn import registry
from metriclearn.methods.baseline import Baseline, apply_gradients, apply_model
from metriclearn.models.embedder import Embedder
from metriclearn.state import TrainState, model_params

SPACES = ("input", "feature", "embed")
BRANCHES = ("coin", "both")
SUPPORTED_LOSSES = ("contrastive", "multi_similarity", "proxy_anchor", "circle", "snr_contrastive")
# Why the other registered losses are not mixed. Metrix needs the generic form of c.1, τ(σ⁺(Σ_x y·ρ⁺(s_ax)) +
# σ⁻(Σ_x (1−y)·ρ⁻(s_ax))), where a mixed label λ weights one positive and one negative term (c.3).
_NOT_MIXED = {
    **dict.fromkeys(("ntxent", "supcon", "npair"), "a softmax of each positive against the negatives couples the two "
                    "parts (not c.1's form), and its average over the positives divides the shared label λ out"),
    "fastap": "all mixed examples of a step share the label λ, so the AP of their ranking is λ whatever the distances "
              "(a constant loss, zero gradient)",
    "margin": "its triplet weights y_p·(1 − y_n) give both hinges of a mixed example the weight λ(1 − λ), not c.3's λ "
              "and 1 − λ",
    **dict.fromkeys(("triplet", "lifted_structure", "generalized_lifted_structure"),
                    "its terms couple a positive and a negative in one hinge (not c.1's form)"),
    **dict.fromkeys(("proxy_nca", "normalized_softmax", "cosface", "arcface", "soft_triple"),
                    "a classification softmax over class rows: mixing would be classification mixup of class labels "
                    "(not implemented), not Metrix's pair labels"),
}


def _unsupported_loss_message(loss_name: str) -> str:
  reason = _NOT_MIXED.get(loss_name)
  return (f"Metrix supports config.loss.name in {list(SUPPORTED_LOSSES)}, got {loss_name!r}"
          + (f": {reason}" if reason else ""))


@dataclasses.dataclass(frozen=True)
class MetrixOptions:
  """`config.method.kwargs` of Metrix (defaults: the official code).

  Attributes:
    space: "input", "feature" (the paper's default Metrix) or "embed".
    mixup_weight: w in L = L_clean + w·L_mix (0.4).
    beta_alpha: α of λ ~ Beta(α, α) (2.0).
    branches: "coin" (one branch per step, as the code) or "both" (both branches every step).
    positive_negative_probability: probability of the positive–negative branch under "coin" (0.5).
    fallback_to_other_branch: an empty drawn branch hands the step to the other one (see the Departure above).
    first_positive_only: mix only each anchor's first positive, once per positive it has (the official embed/feature
      quirk). None: True for "embed" and "feature", False for "input".
    max_positives: positive slots per anchor K. None: M−1 with the m-per-class sampler, else batch_size−1. Positives
      beyond K (batch order) are not mixed.
    negatives_per_anchor: None (the space's default: "all" for "embed"/"feature", 1 for "input"), "all", or T > 0 to
      mix only the T hardest negatives of each anchor (smallest clean distance; the input code's top_k = 1). A
      decimal string ("8") counts as T, so a config can keep this a string field overridable on the command line.
    pool_before_mixing: "feature" space: mix the pooled features instead of the maps. Exact for the linear "gap"
      pooling (GAP(λh + (1−λ)h') = λGAP(h) + (1−λ)GAP(h')) and h·w times cheaper; None: whenever the pooling is
      "gap". GMP and GAP+GMP (the paper's ResNet) always mix the maps.
    mean_over_mixed_anchors: the mixed multi-similarity loss averages over the anchors that have a mixed example
      (True) or over all anchors (False); the paper's normalisation is unverified (c.3 [U]).
    released_negative_index: reproduce the released input code's choice of "hardest" negative (c.9), which the
      published input-mixing numbers came from: the rank of an anchor's t-th hardest negative within its own negative
      list indexes the batch-wide list of negative pairs (`neg[indices]` for `neg[idxs][indices]`), so the source is
      a negative of the first anchors in that list, at times the anchor itself or one of its class, and the mix is
      labelled anchor–negative whatever that source's class. Needs `negatives_per_anchor` = T; False: eq. c.3.
  """

  space: str = "feature"
  mixup_weight: float = 0.4
  beta_alpha: float = 2.0
  branches: str = "coin"
  positive_negative_probability: float = 0.5
  fallback_to_other_branch: bool = True
  first_positive_only: bool | None = None
  max_positives: int | None = None
  negatives_per_anchor: int | str | None = None
  pool_before_mixing: bool | None = None
  mean_over_mixed_anchors: bool = True
  released_negative_index: bool = False


class MixingSlots(NamedTuple):
  """Fixed-size mixing sets of R rows: slot (r, k, t) is mix_λ(first[r, k], second[r, t]).

  Attributes:
    first: `i32[R, K]` batch index of the source weighted by λ (a positive, or the anchor itself).
    second: `i32[R, T]` batch index of the source weighted by 1−λ (a negative).
    valid: `bool[R, K, T]` slots that exist.
    num_distinct: K' — slots k ≥ K' repeat slot 0 (`first_positive_only`), so only [R, K', T] examples are built.
  """

  first: jax.Array
  second: jax.Array
  valid: jax.Array
  num_distinct: int


def active_rows(has_positive: jax.Array, use_positive_negative: jax.Array | None, *,
                fallback: bool = True) -> jax.Array:
  """`bool[R]`: rows whose branch runs this step (positive–negative for rows with a positive, else anchor–negative).

  `use_positive_negative` is the step's coin (a traced bool), or None to run both branches. With `fallback`, a drawn
  branch that has no row is replaced by the other one.
  """
  if use_positive_negative is None:
    return jnp.ones_like(has_positive)
  if fallback:
    any_pos, any_without = jnp.any(has_positive), jnp.any(~has_positive)
    use_positive_negative = jnp.where(any_pos & any_without, use_positive_negative, any_pos)
  return jnp.where(has_positive, use_positive_negative, ~use_positive_negative)


def mixing_slots(labels: jax.Array, clean_distance: jax.Array | None, row_active: jax.Array, *,
                 max_positives: int, first_positive_only: bool, negatives_per_anchor: int | None,
                 source_is_row: bool = False, released_negative_index: bool = False) -> MixingSlots:
  """The fixed-size mixing sets of c.5 for a batch.

  Args:
    labels: `i[B]`.
    clean_distance: `f[B, B]` clean distances (used only to rank negatives when `negatives_per_anchor` is set).
    row_active: `bool[B]` (from `active_rows`).
    max_positives: K; first_positive_only: the official embed/feature quirk; negatives_per_anchor: None = all, else T.
    source_is_row: the row itself is the first source (proxy anchor: one mixed example per (x, negative of x)).
    released_negative_index: the released input code's negative indexing (`MetrixOptions`; needs T).

  Returns:
    `MixingSlots` with R = B rows.
  """
  batch = labels.shape[0]
  same = labels[:, None] == labels[None, :]
  positive = same & ~jnp.eye(batch, dtype=bool)
  has_positive = jnp.any(positive, axis=1)
  rows = jnp.arange(batch)
  if source_is_row:
    first, first_valid, num_distinct = rows[:, None], jnp.ones((batch, 1), bool), 1
  else:
    k = max(1, min(max_positives, batch - 1))
    order = jnp.argsort(~positive, axis=1, stable=True)[:, :k]  # positives first, in batch order
    slot = jnp.arange(k)[None, :]
    positive_index = jnp.broadcast_to(order[:, :1], order.shape) if first_positive_only else order
    # Anchor–negative rows (no positive): the anchor itself plays the positive, in slot 0 only.
    first = jnp.where(has_positive[:, None], positive_index, rows[:, None])
    first_valid = jnp.where(has_positive[:, None], slot < jnp.sum(positive, axis=1, keepdims=True), slot == 0)
    num_distinct = 1 if first_positive_only else k
  negative = ~same
  if negatives_per_anchor is None:
    second = jnp.broadcast_to(rows[None, :], (batch, batch))
    second_valid = negative
  else:
    t = max(1, min(int(negatives_per_anchor), batch))
    ranking = jnp.where(negative, -jax.lax.stop_gradient(clean_distance), -jnp.inf)
    _, second = jax.lax.top_k(ranking, t)
    second_valid = jnp.take_along_axis(negative, second, axis=1)
    if released_negative_index:
      second = released_negative_columns(negative, has_positive, second)
  valid = row_active[:, None, None] & first_valid[:, :, None] & second_valid[:, None, :]
  return MixingSlots(first=first, second=second, valid=valid, num_distinct=num_distinct)


def released_negative_columns(negative: jax.Array, has_positive: jax.Array, ranked: jax.Array) -> jax.Array:
  """`i32[B, T]`: the batch columns the released input code mixes in place of each anchor's ranked negatives (c.9).

  The code lists negative pairs row by row (`get_all_pairs_indices`; in the anchor–negative branch only the rows
  without a positive) and takes `neg[indices]`: the position p of the anchor's negative within the anchor's own list
  indexes the whole list, whose p-th entry is the column returned here. `ranked` are the columns in rank order.
  """
  batch = negative.shape[0]
  position = jnp.take_along_axis(jnp.cumsum(negative, axis=1) - 1, ranked, axis=1)  # within the anchor's own list

  def lookup(list_rows):
    count = jnp.cumsum((negative & list_rows[:, None]).reshape(-1))  # list entries up to each flat index
    flat = jnp.searchsorted(count, position + 1, side="left")  # the flat index of list entry `position`
    return jnp.minimum(flat, batch * batch - 1) % batch

  return jnp.where(has_positive[:, None], lookup(jnp.ones_like(has_positive)), lookup(~has_positive))


def mixed_norm_from_gram(gram: jax.Array, first: jax.Array, second: jax.Array, mix_lambda: jax.Array) -> jax.Array:
  """`f32[R, K, T]` of max(‖λe_first + (1−λ)e_second‖, 1e-12) from the Gram matrix `gram` = e·eᵀ (`[B, B]`)."""
  diag = jnp.diagonal(gram)
  cross = gram[first[:, :, None], second[:, None, :]]
  squared = (jnp.square(mix_lambda) * diag[first][:, :, None] + jnp.square(1.0 - mix_lambda) * diag[second][:, None, :]
             + 2.0 * mix_lambda * (1.0 - mix_lambda) * cross)
  # The safe square root: mixes of opposite vectors at λ = ½ have norm 0 (same eps as `distances.l2_normalize`).
  return jnp.maximum(distances.safe_sqrt(jnp.maximum(squared, 0.0)), 1e-12)


def mixed_cosine_from_gram(gram: jax.Array, first: jax.Array, second: jax.Array, mix_lambda: jax.Array) -> jax.Array:
  """`f32[R, K, T]`: cos(e_r, normalise(λe_first[r,k] + (1−λ)e_second[r,t])) for unit e, from inner products only.

  Metrix/embed (c.4) with the re-normalisation the reference code's distance applies; row r is the anchor.
  """
  numerator = (mix_lambda * jnp.take_along_axis(gram, first, axis=1)[:, :, None]
               + (1.0 - mix_lambda) * jnp.take_along_axis(gram, second, axis=1)[:, None, :])
  return numerator / mixed_norm_from_gram(gram, first, second, mix_lambda)


def _snr_from_parts(signal: jax.Array, noise_plus_signal: jax.Array) -> jax.Array:
  """`distances.pairwise_snr`'s quotient ‖c_v − c_a‖² / ‖c_a‖², 0 (zero gradient) where ‖c_a‖² ≤ 1e-15."""
  has_signal = signal > 1e-15
  noise = jnp.maximum(noise_plus_signal, 0.0)
  return jnp.where(has_signal, noise / jnp.where(has_signal, signal, 1.0), 0.0)


def _centred(x: jax.Array) -> jax.Array:
  return x - jnp.mean(x, axis=-1, keepdims=True)


def mixed_snr_from_gram(unit: jax.Array, first: jax.Array, second: jax.Array, mix_lambda: jax.Array) -> jax.Array:
  """`f32[R, K, T]`: the SNR distance (`distances.pairwise_snr`) of anchor e_r to v = normalise(λe_first[r,k] +
  (1−λ)e_second[r,t]), for unit rows `unit` `[B, D]`, from the plain and the centred Gram matrices only.

  Centring is linear, so c_v = (λc_x + (1−λ)c_x')/‖λe_x + (1−λ)e_x'‖: ‖c_v − c_r‖² = ‖c_v‖² + ‖c_r‖² − 2⟨c_r, c_v⟩
  takes entries of C = c·cᵀ and the mixed norm, as `mixed_cosine_from_gram` does for cosines.
  """
  norm = mixed_norm_from_gram(unit @ unit.T, first, second, mix_lambda)
  c = _centred(unit)
  centred_gram = c @ c.T
  signal = jnp.diagonal(centred_gram)
  inner = (mix_lambda * jnp.take_along_axis(centred_gram, first, axis=1)[:, :, None]
           + (1.0 - mix_lambda) * jnp.take_along_axis(centred_gram, second, axis=1)[:, None, :]) / norm
  mixed_squared = (jnp.square(mix_lambda) * signal[first][:, :, None]
                   + jnp.square(1.0 - mix_lambda) * signal[second][:, None, :]
                   + 2.0 * mix_lambda * (1.0 - mix_lambda) * centred_gram[first[:, :, None], second[:, None, :]]
                   ) / jnp.square(norm)
  signal = signal[:, None, None]
  return _snr_from_parts(signal, mixed_squared + signal - 2.0 * inner)


def mixed_snr(unit: jax.Array, mixed: jax.Array) -> jax.Array:
  """`f32[R, K, T]` SNR distances of anchors `unit` `[R, D]` to their mixed embeddings `mixed` `[R, K, T, D]`."""
  c, c_mixed = _centred(unit), _centred(mixed)
  signal = jnp.sum(jnp.square(c), axis=-1)[:, None, None]
  return _snr_from_parts(signal, jnp.sum(jnp.square(c_mixed), axis=-1) + signal
                         - 2.0 * jnp.einsum("rd,rktd->rkt", c, c_mixed))


def mixed_labels(y: jax.Array, first: jax.Array, second: jax.Array, mix_lambda: jax.Array,
                 second_y: jax.Array | None = None) -> jax.Array:
  """`f32[R, K, T]` soft labels y_mix[r, k, t] = λ·y[r, first[r,k]] + (1−λ)·y'[r, second[r,t]] (eq. c.3).

  y' = y unless `second_y` is given (the released input code's all-negative labels). (`labels.mixed_pair_labels`
  with per-row source indices.)
  """
  second_y = y if second_y is None else second_y
  return (mix_lambda * jnp.take_along_axis(y, first, axis=1)[:, :, None]
          + (1.0 - mix_lambda) * jnp.take_along_axis(second_y, second, axis=1)[:, None, :])


def mixed_loss(loss_name: str, similarity: jax.Array, y: jax.Array, valid: jax.Array, *,
               mean_over_mixed_anchors: bool = True, **loss_kwargs) -> jax.Array:
  """The mixed loss ℓ̃ (c.3) on `[A, M]` cosine similarities of anchors (or proxies) and mixed examples
  (`snr_contrastive`: their SNR distances, `mixed_snr`).

  `loss_kwargs` are the clean loss's keywords (`config.loss.kwargs`). Contrastive turns cosines of unit vectors into
  the Euclidean distance sqrt(2 − 2s) (squared: 2 − 2s), as the code's `LpDistance` on normalised embeddings (c.6).
  Multi-similarity averages over the anchors with a mixed example (|A'| of c.3, unverified [U]), or over all anchors
  with `mean_over_mixed_anchors=False`.

  The two pair losses of c.1's form beyond the paper's three (our extension, c.3 applied as written):
  * circle: log(1 + Σ_n e^{γα_n(s_n−Δ_n)}·Σ_p e^{−γα_p(s_p−Δ_p)}) = softplus(σ⁺ + σ⁻) with σ± = log-sums, so a
    mixed example enters the positive sum with weight λ and the negative sum with 1 − λ (`pair_losses.circle` soft
    labels); the mean over the anchors with a non-zero loss (PML's reducer) is over the anchors with a mixed example.
  * snr_contrastive: the contrastive loss (mean of non-zero hinges per part, as c.6) on the SNR distance of the
    anchor to the mixed example; its zero-mean regulariser is a term of the clean loss only.
  """
  valid = valid.astype(jnp.float32)
  if loss_name == "contrastive":
    metric = loss_kwargs.get("distance", "euclidean")
    if metric not in ("euclidean", "squared_euclidean"):
      raise ValueError(f"Metrix mixes the contrastive loss on Euclidean distances of unit embeddings (c.6, the code's "
                       f"LpDistance); loss.kwargs.distance={metric!r} is not supported: use 'euclidean' or "
                       "'squared_euclidean'")
    squared_distance = jnp.maximum(2.0 - 2.0 * similarity, 0.0)
    squared = loss_kwargs.get("squared", False) or metric == "squared_euclidean"
    distance = squared_distance if squared else distances.safe_sqrt(squared_distance)
    kwargs = {k: v for k, v in loss_kwargs.items() if k in ("pos_margin", "neg_margin", "reducer")}
    return losses.contrastive_from_matrix(distance, y, valid, **kwargs)
  if loss_name == "multi_similarity":
    per_anchor_mean = losses.multi_similarity_from_matrix(similarity, y, valid, **loss_kwargs)
    if not mean_over_mixed_anchors:
      return per_anchor_mean
    # Rows without a mixed example contribute 0 to the mean over all rows: rescale to the mean over the others.
    num_rows = jnp.sum(jnp.any(valid > 0, axis=1).astype(jnp.float32))
    return reducers.safe_divide(per_anchor_mean * similarity.shape[0], num_rows)
  if loss_name == "proxy_anchor":
    return losses.proxy_anchor_from_matrix(similarity, y, valid, **loss_kwargs)
  if loss_name == "circle":
    return losses.MATRIX_LOSSES["circle"](similarity, y, valid, **loss_kwargs)
  if loss_name == "snr_contrastive":
    kwargs = {k: v for k, v in loss_kwargs.items() if k in ("pos_margin", "neg_margin")}
    return losses.MATRIX_LOSSES["snr_contrastive"](similarity, y, valid, **kwargs)
  raise ValueError(_unsupported_loss_message(loss_name))


def _gather_mix(values: jax.Array, first: jax.Array, second: jax.Array, mix_lambda: jax.Array) -> jax.Array:
  """`[R, K, T, ...]` of λ·values[first] + (1−λ)·values[second]."""
  lam = mix_lambda.astype(values.dtype)
  return lam * values[first][:, :, None] + (1 - lam) * values[second][:, None, :]


class Metrix:
  """Metrix on top of a baseline loss (`config.loss` ∈ `SUPPORTED_LOSSES`); options in `config.method.kwargs`."""

  def __init__(self, config, model: nn.Module, num_classes: int):
    kwargs = dict(config.method.get("kwargs", {}))
    registry.check_kwargs(MetrixOptions, kwargs, "method 'metrix'")
    options = MetrixOptions(**kwargs)
    if options.space not in SPACES:
      raise ValueError(f"unknown Metrix space {options.space!r}; valid: {list(SPACES)}")
    if options.branches not in BRANCHES:
      raise ValueError(f"unknown Metrix branches {options.branches!r}; valid: {list(BRANCHES)}")
    if config.loss.name not in SUPPORTED_LOSSES:
      raise ValueError(_unsupported_loss_message(config.loss.name))
    if not options.beta_alpha > 0:
      raise ValueError(f"beta_alpha must be positive, got {options.beta_alpha}")
    negatives = options.negatives_per_anchor
    if negatives is None:
      negatives = 1 if options.space == "input" else "all"
    if isinstance(negatives, str) and negatives.isdigit():
      negatives = int(negatives)
    if negatives != "all" and not (isinstance(negatives, int) and negatives > 0):
      raise ValueError(f"negatives_per_anchor must be None, 'all' or a positive integer, got {negatives!r}")
    self.negatives_per_anchor = None if negatives == "all" else int(negatives)
    if options.released_negative_index and (self.negatives_per_anchor is None or config.loss.name == "proxy_anchor"):
      raise ValueError("released_negative_index reproduces the released input code's pick among the T hardest "
                       "negatives: set negatives_per_anchor to T (the code's 1) and use a pair loss, not proxy_anchor")
    self.first_positive_only = (options.space != "input" if options.first_positive_only is None
                                else bool(options.first_positive_only))
    if options.max_positives is not None:
      self.max_positives = int(options.max_positives)
    elif config.sampler.name == "m_per_class":
      self.max_positives = int(dict(config.sampler.get("kwargs", {})).get("m", 4)) - 1
    else:
      self.max_positives = int(config.batch_size) - 1
    self.loss_kwargs = dict(config.loss.get("kwargs", {}))
    if config.loss.name in ("contrastive", "snr_contrastive") and not self.loss_kwargs.get("normalize", True):
      raise ValueError("Metrix needs L2-normalised embeddings: leave config.loss.kwargs.normalize at True")
    pool_first = options.pool_before_mixing
    if pool_first is None:
      pool_first = getattr(model, "pooling", None) == "gap"
    elif pool_first and getattr(model, "pooling", None) != "gap":
      raise ValueError(f"pool_before_mixing=True needs the linear 'gap' pooling (mixing commutes with it), the model "
                       f"pools with {getattr(model, 'pooling', None)!r}: leave pool_before_mixing at None")
    self.source_kind = ("images" if options.space == "input" else "features" if pool_first else "feature_maps")
    self.options = options
    self.model = model
    self.loss_name = config.loss.name
    self.baseline = Baseline(config, model, num_classes)  # the clean loss and the initialisation

  def init(self, rng: jax.Array, images: jax.Array):
    """`(params, batch_stats, method_state)`: the baseline's (proxies under `params["loss"]` for proxy anchor)."""
    return self.baseline.init(rng, images)

  def _mixed_embeddings(self, params, batch_stats, sources: jax.Array, first: jax.Array, second: jax.Array,
                        mix_lambda: jax.Array):
    """Unit embeddings `f32[R, K', T, D]` of mix_λ(sources[first], sources[second]) and the batch statistics after.

    `sources` are images (a second forward pass), feature maps (pooling → head → L2) or, when the pooling is
    linear, pooled features (head → L2).
    """
    mixed = _gather_mix(sources, first, second, mix_lambda)
    mixed = mixed.reshape((-1,) + sources.shape[1:])
    if self.source_kind == "images":
      embeddings, batch_stats = apply_model(self.model, params, batch_stats, mixed, train=True)
    else:
      # Head BatchNorm (if any) normalises mixed features with their own statistics; its running ones are kept
      # from the clean pass.
      entry = Embedder.embed_from_feature_maps if self.source_kind == "feature_maps" else Embedder.embed_from_features
      variables = {"params": model_params(params), "batch_stats": batch_stats}
      embeddings, _ = self.model.apply(variables, mixed, train=True, mutable=["batch_stats"], method=entry)
    embeddings = distances.l2_normalize(embeddings).astype(jnp.float32)
    return embeddings.reshape(first.shape + second.shape[1:] + embeddings.shape[-1:]), batch_stats

  def loss(self, params, batch_stats, batch, rng, mix_lambda: jax.Array | None = None,
           use_positive_negative: jax.Array | None = None, ref: memory.Reference | None = None):
    """L = L_clean + w·L_mix for one batch (c.3, c.6).

    Args:
      params, batch_stats: the model's variables (and proxies under `params["loss"]`).
      batch: `{"image": f[B, ...], "label": i[B]}`.
      rng: the step's key; λ and the coin are drawn from it unless given.
      mix_lambda, use_positive_negative: fixed λ and coin (tests).
      ref: a cross-batch memory's entries, extra reference columns of the clean loss.

    Returns:
      `(loss, (batch_stats, metrics))`.
    """
    total, (new_batch_stats, metrics, _) = self.loss_and_embeddings(params, batch_stats, batch, rng, mix_lambda,
                                                                     use_positive_negative, ref)
    return total, (new_batch_stats, metrics)

  def loss_and_embeddings(self, params, batch_stats, batch, rng, mix_lambda: jax.Array | None = None,
                          use_positive_negative: jax.Array | None = None, ref: memory.Reference | None = None):
    """`loss` that also returns the clean embeddings: `(loss, (batch_stats, metrics, embeddings))`."""
    options = self.options
    lambda_rng, coin_rng = jax.random.split(rng)
    if mix_lambda is None:
      mix_lambda = jax.random.beta(lambda_rng, options.beta_alpha, options.beta_alpha)
    mix_lambda = jnp.asarray(mix_lambda, jnp.float32)
    if use_positive_negative is None and options.branches == "coin":
      use_positive_negative = jax.random.bernoulli(coin_rng, options.positive_negative_probability)
    images, labels = batch["image"], batch["label"]

    if options.space == "feature":
      out, new_batch_stats = apply_model(self.model, params, batch_stats, images, train=True, return_intermediates=True)
      embeddings, sources = out["embeddings"], out[self.source_kind]
    else:
      embeddings, new_batch_stats = apply_model(self.model, params, batch_stats, images, train=True)
      sources = images
    clean_loss = self._clean_loss(params, embeddings, labels, ref)

    proxy_anchor = self.loss_name == "proxy_anchor"
    has_positive = jnp.any((labels[:, None] == labels[None, :]) & ~jnp.eye(labels.shape[0], dtype=bool), axis=1)
    row_active = active_rows(has_positive, use_positive_negative if options.branches == "coin" else None,
                             fallback=options.fallback_to_other_branch)
    # The hardest negatives are ranked on the unit embeddings the losses and the mixing see (with an unnormalised
    # model, raw distances would rank by norm as well as by angle).
    unit = distances.l2_normalize(embeddings).astype(jnp.float32)
    clean_distance = distances.pairwise_euclidean(unit) if self.negatives_per_anchor else None
    slots = mixing_slots(labels, clean_distance, row_active, max_positives=self.max_positives,
                         first_positive_only=self.first_positive_only,
                         negatives_per_anchor=self.negatives_per_anchor, source_is_row=proxy_anchor,
                         released_negative_index=options.released_negative_index)
    first = slots.first[:, :slots.num_distinct]

    if proxy_anchor:
      proxies = distances.l2_normalize(params["loss"]["proxies"]).astype(jnp.float32)
      if options.space == "embed":
        proxy_inner = proxies @ unit.T  # [C, B]
        norm = mixed_norm_from_gram(unit @ unit.T, first, slots.second, mix_lambda)  # [B, 1, T]
        numerator = (mix_lambda * proxy_inner[:, first][:, :, :, None]
                     + (1.0 - mix_lambda) * proxy_inner[:, slots.second][:, :, None, :])
        similarity = numerator / norm[None]
      else:
        mixed_emb, new_batch_stats = self._mixed_embeddings(params, new_batch_stats, sources, first, slots.second,
                                                            mix_lambda)
        similarity = jnp.einsum("cd,rktd->crkt", proxies, mixed_emb)
      similarity = similarity.reshape(proxies.shape[0], -1)
      class_labels = labels_lib.pair_labels(jnp.arange(proxies.shape[0], dtype=labels.dtype), labels)
      first_flat = jnp.broadcast_to(first[:, :, None], slots.valid.shape).reshape(-1)
      second_flat = jnp.broadcast_to(slots.second[:, None, :], slots.valid.shape).reshape(-1)
      y_mix = labels_lib.mixed_pair_labels(class_labels, first_flat, second_flat, mix_lambda)
      valid = jnp.broadcast_to(slots.valid.reshape(1, -1), y_mix.shape)
    else:
      snr = self.loss_name == "snr_contrastive"  # its matrix is the SNR distance, not the cosine
      if options.space == "embed":
        similarity = (mixed_snr_from_gram(unit, first, slots.second, mix_lambda) if snr
                      else mixed_cosine_from_gram(unit @ unit.T, first, slots.second, mix_lambda))  # [B, K', T]
      else:
        mixed_emb, new_batch_stats = self._mixed_embeddings(params, new_batch_stats, sources, first, slots.second,
                                                            mix_lambda)
        similarity = mixed_snr(unit, mixed_emb) if snr else jnp.einsum("rd,rktd->rkt", unit, mixed_emb)
      # Repeated slots (first_positive_only) share the similarity of slot 0: the code's multiplicity, exactly.
      similarity = jnp.broadcast_to(similarity, slots.valid.shape).reshape(labels.shape[0], -1)
      y = labels_lib.pair_labels(labels)
      # The released code labels its second source a negative whatever its class: y_mix = λ·y[a, first].
      second_y = jnp.zeros_like(y) if options.released_negative_index else None
      y_mix = mixed_labels(y, slots.first, slots.second, mix_lambda, second_y).reshape(similarity.shape)
      valid = slots.valid.reshape(similarity.shape)

    mix_loss = mixed_loss(self.loss_name, similarity, y_mix, valid,
                          mean_over_mixed_anchors=options.mean_over_mixed_anchors, **self.loss_kwargs)
    total = clean_loss + options.mixup_weight * mix_loss
    metrics = {"clean_loss": clean_loss, "mixed_loss": mix_loss, "mix_lambda": mix_lambda,
               "mixed_pairs": jnp.sum(slots.valid.astype(jnp.float32)),
               "positive_negative_rows": jnp.sum((row_active & has_positive).astype(jnp.float32))}
    return total, (new_batch_stats, metrics, embeddings)

  def _clean_loss(self, params, embeddings: jax.Array, labels: jax.Array,
                  ref: memory.Reference | None) -> jax.Array:
    if "loss" in params:
      return self.baseline.loss_with_own_arrays(params, embeddings, labels, ref)
    return memory.pair_loss(self.loss_name, self.loss_kwargs, embeddings, labels, ref)

  def train_step_with_reference(self, state: TrainState, batch: dict[str, jax.Array],
                                tx: optax.GradientTransformation, phase: str, ref: memory.Reference | None):
    """`train_step` with a memory's `ref` as extra clean columns; also returns the entries to enqueue (the clean
    batch)."""
    del phase  # one phase
    rng = jax.random.fold_in(state.rng, state.step)
    (loss, (batch_stats, metrics, embeddings)), grads = jax.value_and_grad(self.loss_and_embeddings, has_aux=True)(
        state.params, state.batch_stats, batch, rng, None, None, ref)
    state = apply_gradients(state, grads, tx, batch_stats=batch_stats)
    return state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}, (embeddings, batch["label"])

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], tx: optax.GradientTransformation,
                 phase: str = "train"):
    """One step: λ and the coin from `fold_in(state.rng, step)`, gradient of L_clean + w·L_mix, one optax update."""
    state, metrics, _ = self.train_step_with_reference(state, batch, tx, phase, None)
    return state, metrics


__all__ = ["BRANCHES", "SPACES", "SUPPORTED_LOSSES", "Metrix", "MetrixOptions", "MixingSlots", "active_rows",
           "mixed_cosine_from_gram", "mixed_labels", "mixed_loss", "mixed_norm_from_gram", "mixed_snr",
           "mixed_snr_from_gram", "mixing_slots", "released_negative_columns"]
