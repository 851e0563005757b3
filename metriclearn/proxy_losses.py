"""Classification and proxy losses: a softmax over one learnable row per class (ProxyNCA, normalised softmax, CosFace,
ArcFace, SoftTriple), and the initialisers of every loss-owned array (`LOSS_PARAMS` in `metriclearn.losses`).

Each loss exists in two forms, as the pair losses of `metriclearn.losses` (DESIGN §2–§3):

* `<loss>(embeddings f[B, D], labels i[B], <loss-owned array>, *, hparams) -> f32[]`: the array holds one row per
  class, `f[C, D]` (SoftTriple: K rows per class, `f[C·K, D]`, rows c·K … c·K + K − 1 belong to class c). Labels
  must lie in [0, C). Keyword names and defaults are PML 2.9's constructor arguments.
* `<loss>_from_matrix(s, y, valid, *, hparams) -> f32[]` over `[A, C]` matrices with the classes as columns: `s` the
  similarity (ProxyNCA: squared distance) of row a to class c, `y` the **soft** class label (one-hot for a clean
  example, λ·1[c = y] + (1−λ)·1[c = y'] for a Metrix mix), `valid` the 0/1 mask of the classes that exist. Every one
  is a softmax cross-entropy Σ_c y_c·(LSE_{valid}(z) − z_c), averaged over the rows with a target (Σ_c y_c·valid > 0),
  with logits z = scale·f(s, y): a margin that enters where y = 1 enters in proportion to y for soft labels (our
  extension for mixed examples; the papers have hard labels only).

With their defaults, values and gradients equal pytorch-metric-learning 2.9's (tests/test_proxy_losses.py). PML
stores the class weights of normalised softmax, CosFace, ArcFace and SoftTriple as `W[D, C]`; ours are its transpose.
PML's optional `weight_regularizer` is not provided (its default is none).

Cost: one [B, D]×[D, C] matmul and one log-sum-exp per row; nothing of size B·C·D is formed, so SOP's C = 11,318
classes take [B, C] floats (SoftTriple [B, C·K]).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from metriclearn import distances
from metriclearn import reducers


# ----------------------------------------------------------------------------------------------------------------
# Loss-owned arrays: initialisers with PML's default initialisation. Convention in `losses.LOSS_PARAMS`.


def init_proxy_anchor(rng: jax.Array, num_classes: int, embedding_dim: int, **_) -> dict[str, jax.Array]:
  """`{"proxies": f32[C, D]}`, Kaiming-normal with fan_out = C (PML `ProxyAnchorLoss`)."""
  return {"proxies": jax.random.normal(rng, (num_classes, embedding_dim)) * jnp.sqrt(2.0 / num_classes)}


def init_proxy_nca(rng: jax.Array, num_classes: int, embedding_dim: int, **_) -> dict[str, jax.Array]:
  """`{"proxies": f32[C, D]}`, standard normal (PML `ProxyNCALoss`: `torch.nn.init.normal_`)."""
  return {"proxies": jax.random.normal(rng, (num_classes, embedding_dim))}


def init_class_weights(rng: jax.Array, num_classes: int, embedding_dim: int, **_) -> dict[str, jax.Array]:
  """`{"weights": f32[C, D]}`, standard normal (PML's `W[D, C]` of normalised softmax, CosFace, ArcFace)."""
  return {"weights": jax.random.normal(rng, (num_classes, embedding_dim))}


def init_soft_triple(rng: jax.Array, num_classes: int, embedding_dim: int, *, centers_per_class: int = 10,
                     **_) -> dict[str, jax.Array]:
  """`{"centers": f32[C·K, D]}`, U(±1/√(C·K)): PML's `kaiming_uniform_(a=√5)` of its `fc[D, C·K]` (fan_in = C·K)."""
  rows = num_classes * int(centers_per_class)
  bound = 1.0 / math.sqrt(rows)
  return {"centers": jax.random.uniform(rng, (rows, embedding_dim), minval=-bound, maxval=bound)}


# ----------------------------------------------------------------------------------------------------------------
# The shared softmax cross-entropy over classes.


def _check_matrices(*matrices: jax.Array) -> None:
  shapes = {m.shape for m in matrices}
  if len(shapes) != 1 or matrices[0].ndim != 2:
    raise ValueError(f"s, y and valid must be [A, C] matrices of one shape, got {[m.shape for m in matrices]}")


def _check_inputs(embeddings: jax.Array, labels: jax.Array, rows: jax.Array, name: str) -> None:
  if embeddings.ndim != 2:
    raise ValueError(f"embeddings must be [B, D], got shape {embeddings.shape}")
  if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
    raise ValueError(f"labels must be [B] with B = {embeddings.shape[0]} to match embeddings, got shape {labels.shape}")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"labels must be integers (class ids), got dtype {labels.dtype}")
  if rows.ndim != 2 or rows.shape[1] != embeddings.shape[1]:
    raise ValueError(f"{name} must be [C, D] with D = {embeddings.shape[1]} (one row per class), got shape "
                     f"{rows.shape}")


def _inverse_norm(x: jax.Array) -> jax.Array:
  """`f32[N]` of 1 / max(‖x_n‖, 1e-12), the factor of `distances.l2_normalize` (PyTorch's eps)."""
  return 1.0 / jnp.maximum(distances.safe_norm(x, axis=1), 1e-12)


def _cosine_to_rows(embeddings: jax.Array, rows: jax.Array) -> jax.Array:
  """`f32[B, R]` cosines of the embeddings and the rows: ⟨x_b, w_r⟩ / (‖x_b‖‖w_r‖), as `distances.cosine_similarity`.

  The product of the raw arrays (float32-accumulated) is scaled by the inverse norms afterwards: equal to the product
  of the normalised rows up to float32 rounding, but no normalised copy of either operand is written, and the scaling
  fuses into the loss's own pass over the [B, R] logits (and the backward's over their cotangent). Normalised softmax
  at B = 512, d = 512, C = 100, forward + backward: ~30% less time than normalising first (2 shared CPU cores, rough),
  about the time of its three matmuls alone (`benchmarks/losses.py --floor`).
  """
  product = jnp.matmul(embeddings, rows.T, preferred_element_type=jnp.float32)
  return product * _inverse_norm(embeddings)[:, None] * _inverse_norm(rows)[None, :]


def _class_targets(labels: jax.Array, num_classes: int) -> jax.Array:
  return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)


def _cross_entropy(logits: jax.Array, y: jax.Array, valid: jax.Array | None) -> jax.Array:
  """Σ_c y_c·(LSE_valid(z) − z_c) per row, averaged over the rows with Σ_c y_c·valid > 0; 0 when none has one.

  `valid=None`: every class exists (the embedding forms; a plain log-sum-exp).
  """
  if valid is None:
    target = y
    log_partition = jax.nn.logsumexp(logits, axis=1)
  else:
    valid = valid.astype(jnp.float32)
    target = y * valid
    log_partition = reducers.masked_logsumexp(logits, valid)
  mass = jnp.sum(target, axis=1)
  has_target = mass > 0
  target_logit = jnp.sum(jnp.where(target > 0, target * logits, 0.0), axis=1)
  per_row = jnp.where(has_target, mass * log_partition - target_logit, 0.0)
  return reducers.safe_divide(jnp.sum(per_row), jnp.sum(has_target.astype(jnp.float32)))


def _prepare(s: jax.Array, y: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  _check_matrices(s, y, valid)
  return s.astype(jnp.float32), y.astype(jnp.float32), valid.astype(jnp.float32)


# ----------------------------------------------------------------------------------------------------------------
# ProxyNCA (Movshovitz-Attias et al. 2017).


def proxy_nca_from_matrix(distance: jax.Array, y: jax.Array, valid: jax.Array, *,
                          softmax_scale: float = 1.0) -> jax.Array:
  """ProxyNCA over squared distances `distance[a, c]` = ‖x̂_a − p̂_c‖² of unit rows to unit proxies.

  Per row: −log softmax_c(−softmax_scale·d)[y] (Movshovitz-Attias et al. 2017, §3's NCA loss over proxies, with
  PML's denominator).
  """
  distance, y, valid = _prepare(distance, y, valid)
  return _cross_entropy(-softmax_scale * distance, y, valid)


def proxy_nca(embeddings: jax.Array, labels: jax.Array, proxies: jax.Array, *,
              softmax_scale: float = 1.0) -> jax.Array:
  """ProxyNCA loss (Movshovitz-Attias et al. 2017, "No Fuss Distance Metric Learning using Proxies", §3: the NCA loss with proxies in place of points; PML
  `ProxyNCALoss`): `proxies` `f[C, D]`, one per class.

  L = mean_i −log( e^{−s·d(x̂_i, p̂_{y_i})} / Σ_c e^{−s·d(x̂_i, p̂_c)} ), d the squared Euclidean distance of the
  L2-normalised embedding and proxy (= 2 − 2cos, computed from one matmul of cosines), s = `softmax_scale`.
  Departure: the paper's denominator sums over the other classes' proxies only (Z \\ {p(y)}); PML's softmax includes
  the positive proxy (as ProxyNCA++). The default follows PML.
  Departure (from PML): PML drops a row whose target probability underflows to 0 in float32 (possible only for
  softmax_scale ≳ 20); here its loss is kept, finite, from the log-sum-exp.
  """
  _check_inputs(embeddings, labels, proxies, "proxies")
  distance = 2.0 - 2.0 * _cosine_to_rows(embeddings, proxies)
  return _cross_entropy(-softmax_scale * distance, _class_targets(labels, proxies.shape[0]), None)


# ----------------------------------------------------------------------------------------------------------------
# Normalised softmax (Zhai & Wu 2019).


def normalized_softmax_from_matrix(similarity: jax.Array, y: jax.Array, valid: jax.Array, *,
                                   temperature: float = 0.05) -> jax.Array:
  """Normalised softmax over cosines `similarity[a, c]` of rows and class weights: CE of cos/temperature."""
  similarity, y, valid = _prepare(similarity, y, valid)
  return _cross_entropy(similarity / temperature, y, valid)


def normalized_softmax(embeddings: jax.Array, labels: jax.Array, weights: jax.Array, *,
                       temperature: float = 0.05) -> jax.Array:
  """Normalised softmax loss (Zhai & Wu 2019, "Classification is a Strong Baseline for Deep Metric Learning",
  §3's normalised softmax with temperature; PML `NormalizedSoftmaxLoss`): `weights` `f[C, D]` (PML's `W`, transposed).

  L = mean_i −log( e^{cos(x_i, w_{y_i})/σ} / Σ_c e^{cos(x_i, w_c)/σ} ), σ = `temperature`; both the embeddings and
  the class weights are L2-normalised.
  """
  _check_inputs(embeddings, labels, weights, "weights")
  logits = _cosine_to_rows(embeddings, weights) / temperature
  return _cross_entropy(logits, _class_targets(labels, weights.shape[0]), None)


# ----------------------------------------------------------------------------------------------------------------
# CosFace (Wang et al. 2018) and ArcFace (Deng et al. 2019).


def cosface_from_matrix(similarity: jax.Array, y: jax.Array, valid: jax.Array, *, margin: float = 0.35,
                        scale: float = 64.0) -> jax.Array:
  """CosFace over cosines: logits scale·(cos − margin·y) (soft y: the margin in proportion)."""
  similarity, y, valid = _prepare(similarity, y, valid)
  return _cross_entropy(scale * (similarity - margin * y), y, valid)


def cosface(embeddings: jax.Array, labels: jax.Array, weights: jax.Array, *, margin: float = 0.35,
            scale: float = 64.0) -> jax.Array:
  """CosFace / large margin cosine loss (Wang et al. 2018, "CosFace: Large Margin Cosine Loss for Deep Face
  Recognition", eq. 4; PML `CosFaceLoss`): `weights` `f[C, D]` (PML's `W`, transposed).

  L = mean_i −log( e^{s(cos θ_{y_i} − m)} / (e^{s(cos θ_{y_i} − m)} + Σ_{c≠y_i} e^{s·cos θ_c}) ), s = `scale`,
  m = `margin`, θ_c the angle of x_i and w_c.
  """
  _check_inputs(embeddings, labels, weights, "weights")
  y = _class_targets(labels, weights.shape[0])
  return _cross_entropy(scale * (_cosine_to_rows(embeddings, weights) - margin * y), y, None)


def _arc_logits(cosine: jax.Array, y: jax.Array, margin_radians: float) -> jax.Array:
  """cos(θ + m·y) where θ + m·y ≤ π, else cos θ − m·y·sin(m·y) (the code's monotone continuation); y = 0: cos θ.

  cos(θ + φ) = cos θ·cos φ − sin θ·sin φ with sin θ = √(1 − cos²θ) through the safe square root, so the gradient is
  finite (not PML's NaN through acos) at cos θ = ±1.
  """
  cosine = jnp.clip(cosine, -1.0, 1.0)
  phi = margin_radians * y
  sine = distances.safe_sqrt(1.0 - cosine * cosine)
  shifted = cosine * jnp.cos(phi) - sine * jnp.sin(phi)
  # θ ≤ π − φ ⟺ cos θ ≥ cos(π − φ) = −cos φ.
  return jnp.where(cosine >= -jnp.cos(phi), shifted, cosine - phi * jnp.sin(phi))


def arcface_from_matrix(similarity: jax.Array, y: jax.Array, valid: jax.Array, *, margin: float = 28.6,
                        scale: float = 64.0) -> jax.Array:
  """ArcFace over cosines: logits scale·cos(θ + m·y) (`margin` in degrees, as PML; soft y: the margin in
  proportion)."""
  similarity, y, valid = _prepare(similarity, y, valid)
  return _cross_entropy(scale * _arc_logits(similarity, y, math.radians(margin)), y, valid)


def arcface(embeddings: jax.Array, labels: jax.Array, weights: jax.Array, *, margin: float = 28.6,
            scale: float = 64.0) -> jax.Array:
  """ArcFace / additive angular margin loss (Deng et al. 2019, "ArcFace: Additive Angular Margin Loss for Deep Face
  Recognition", eq. 3; PML `ArcFaceLoss`): `weights` `f[C, D]` (PML's `W`, transposed).

  L = mean_i −log( e^{s·cos(θ_{y_i} + m)} / (e^{s·cos(θ_{y_i} + m)} + Σ_{c≠y_i} e^{s·cos θ_c}) ), s = `scale`.
  `margin` is in degrees (PML's 28.6° ≈ the paper's 0.5 rad).
  Departure: for θ_y > π − m, where cos(θ + m) stops decreasing, the target logit is cos θ − m·sin m (the authors'
  code and PML); eq. 3 has cos(θ + m) throughout. The default follows PML.
  """
  _check_inputs(embeddings, labels, weights, "weights")
  y = _class_targets(labels, weights.shape[0])
  cosine = _cosine_to_rows(embeddings, weights)
  # Hard labels: only the target column changes, so the angle arithmetic runs on [B] cosines, not [B, C].
  target_cosine = jnp.sum(y * cosine, axis=1, keepdims=True)
  target_logit = _arc_logits(target_cosine, jnp.ones_like(target_cosine), math.radians(margin))
  return _cross_entropy(scale * (cosine + y * (target_logit - target_cosine)), y, None)


# ----------------------------------------------------------------------------------------------------------------
# SoftTriple (Qian et al. 2019).


def _relaxed_forward(per_class: jax.Array, gamma: float) -> tuple[jax.Array, jax.Array, jax.Array]:
  """S' `[A, C]` over `per_class` `[A, C, K]`, with the per-class peak and partition function of the K-softmax."""
  peak = jnp.max(per_class, axis=2, keepdims=True)  # the stable shift: every weight ≤ 1, the largest = 1
  weights = jnp.exp((per_class - peak) / gamma)
  partition = jnp.sum(weights, axis=2)
  return jnp.sum(weights * per_class, axis=2) / partition, peak, partition


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _relaxed_similarity(per_class: jax.Array, gamma: float) -> jax.Array:
  return _relaxed_forward(per_class, gamma)[0]


def _relaxed_similarity_fwd(per_class, gamma):
  relaxed, peak, partition = _relaxed_forward(per_class, gamma)
  return relaxed, (per_class, relaxed, peak, partition)


def _relaxed_similarity_bwd(gamma, residuals, cotangent):
  # ∂S'_c/∂S_{c,k} = p_k·(1 + (S_{c,k} − S'_c)/γ) with p = softmax_k(S_c/γ): one elementwise pass over [A, C, K]
  # that feeds the matmul's backward directly (autodiff instead writes the softmax's backward as several [A, C, K]
  # passes with reductions over the short K axis).
  per_class, relaxed, peak, partition = residuals
  weights = jnp.exp((per_class - peak) / gamma)
  scale = (cotangent / partition)[:, :, None]
  return (scale * weights * (1.0 + (per_class - relaxed[:, :, None]) / gamma),)


_relaxed_similarity.defvjp(_relaxed_similarity_fwd, _relaxed_similarity_bwd)


def soft_triple_class_similarity(center_similarity: jax.Array, *, centers_per_class: int = 10,
                                 gamma: float = 0.1) -> jax.Array:
  """The relaxed class similarity S'_{a,c} = Σ_k softmax_k(S_{a,c,k}/γ)·S_{a,c,k} (Qian et al. 2019, §3: the
  relaxed similarity).

  The K-softmax is shifted by each class's largest similarity (stable for any γ > 0) and the gradient is written by
  hand (`jax.custom_vjp`; equal to autodiff's up to float32 rounding, reverse mode only: `jax.jvp` raises), one
  fused pass instead of autodiff's several: SoftTriple at B = 512, C·K = 1,000, forward + backward ~10% faster (2
  shared CPU cores, rough), within ~10% of its three [512 × 512 × 1,000] products alone (`benchmarks/losses.py
  --floor`), which both libraries compute.
  Args:
    center_similarity: `f[A, C·K]` cosines of rows and centres, centre c·K + k the k-th of class c.
    gamma: a Python float (a static hyper-parameter).
  Returns:
    `f32[A, C]`.
  """
  num_rows, num_centers = center_similarity.shape
  if num_centers % int(centers_per_class):
    raise ValueError(f"SoftTriple needs C·K centre rows with K = centers_per_class = {centers_per_class}, got "
                     f"{num_centers} rows (not a multiple of K)")
  per_class = center_similarity.astype(jnp.float32).reshape(num_rows, -1, int(centers_per_class))
  return _relaxed_similarity(per_class, float(gamma))


def soft_triple_from_matrix(similarity: jax.Array, y: jax.Array, valid: jax.Array, *, la: float = 20.0,
                            margin: float = 0.01) -> jax.Array:
  """SoftTriple over relaxed class similarities S' (`soft_triple_class_similarity`): CE of λ(S' − δ·y)."""
  similarity, y, valid = _prepare(similarity, y, valid)
  return _cross_entropy(la * (similarity - margin * y), y, valid)


def soft_triple(embeddings: jax.Array, labels: jax.Array, centers: jax.Array, *, centers_per_class: int = 10,
                la: float = 20.0, gamma: float = 0.1, margin: float = 0.01) -> jax.Array:
  """SoftTriple loss (Qian et al. 2019, "SoftTriple Loss: Deep Metric Learning Without Triplet Sampling", §3: the relaxed similarity and the SoftTriple loss;
  PML `SoftTripleLoss`): `centers` `f[C·K, D]` (PML's `fc[D, C·K]`, transposed), K = `centers_per_class`.

  L = mean_i −log( e^{λ(S'_{i,y_i} − δ)} / (e^{λ(S'_{i,y_i} − δ)} + Σ_{c≠y_i} e^{λ·S'_{i,c}}) ), λ = `la`,
  δ = `margin`, S' the relaxed similarity (`soft_triple_class_similarity`) with temperature γ = `gamma`, on cosines.
  Departure: the paper adds a regulariser merging redundant centres (τ·R); PML leaves it out by default
  (`weight_regularizer=None`), and so do we. The default follows PML.
  """
  _check_inputs(embeddings, labels, centers, "centers")
  similarity = soft_triple_class_similarity(_cosine_to_rows(embeddings, centers),
                                            centers_per_class=centers_per_class, gamma=gamma)
  y = _class_targets(labels, similarity.shape[1])
  return _cross_entropy(la * (similarity - margin * y), y, None)


__all__ = [
    "arcface", "arcface_from_matrix", "cosface", "cosface_from_matrix", "init_class_weights", "init_proxy_anchor",
    "init_proxy_nca", "init_soft_triple", "normalized_softmax", "normalized_softmax_from_matrix", "proxy_nca",
    "proxy_nca_from_matrix", "soft_triple", "soft_triple_class_similarity", "soft_triple_from_matrix",
]
