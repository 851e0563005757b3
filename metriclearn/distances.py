"""Pairwise distances and similarities, safe at distance zero and float32-accumulating under bf16.

Every function takes row vectors `a: f[A, D]` and optionally `b: f[B, D]` (default: `b = a`) and returns an
`f32[A, B]` matrix. Two rules hold throughout, because DML routinely produces coincident points (duplicate images,
Metrix mixes with λ → 1, DAML generators that collapse onto the anchor):

* the Euclidean distance of two identical rows is exactly 0 and its gradient is 0 (not NaN, as a plain
  `jnp.sqrt` or `jnp.linalg.norm` would give);
* bf16 inputs are multiplied with float32 accumulation, and every result is float32.

A batch's distances or similarities to itself (`b` omitted or `b is a`) have hand-written one-matmul gradients
(`jax.custom_vjp`, below), so every loss over a batch's own pairs goes through them. Reverse mode works, grad of grad
included; forward mode (`jax.jvp`, `jax.jacfwd`, `jax.hessian`) raises JAX's "can't apply forward-mode autodiff"
error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

def safe_sqrt(x: jax.Array) -> jax.Array:
  """`sqrt(x)` for `x >= 0` whose value and gradient at 0 are 0 (the subgradient PyTorch's `cdist` uses)."""
  positive = x > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def safe_norm(x: jax.Array, axis: int = -1, keepdims: bool = False) -> jax.Array:
  """Euclidean norm along `axis` with a zero (not NaN) gradient at the zero vector."""
  x = x.astype(jnp.float32)
  return safe_sqrt(jnp.sum(x * x, axis=axis, keepdims=keepdims))


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """`x / max(‖x‖, eps)`, as `torch.nn.functional.normalize`; finite gradient at the zero vector.

  The result keeps the input dtype (so a bf16 model stays bf16); the norm is computed in float32.
  """
  norm = safe_norm(x, axis=axis, keepdims=True)
  return (x.astype(jnp.float32) / jnp.maximum(norm, eps)).astype(x.dtype)


def _gram(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.matmul(a, b.T, preferred_element_type=jnp.float32)


# The gradients of a batch's own Gram matrix G = a·aᵀ are written by hand: for a cotangent C, autodiff computes
# C·a + Cᵀ·a, two matmuls, and XLA:CPU runs the second (contracting C's rows) without its fast matmul kernel. The
# hand-written form is one matmul, (C + Cᵀ)·a. Forward values are unchanged and gradients equal autodiff's up to
# float32 rounding (tests/test_distances.py). Measured at B = 512, d = 512, forward + backward on 2 CPU cores
# (benchmarks/RESULTS.md): contrastive 3.4 → 2.7 ms, multi-similarity 3.9 → 3.4 ms.


def _materialize(x: jax.Array) -> jax.Array:
  """`x` itself, computed into its own buffer before the transposed read that follows.

  Rewriting one element in place needs `x` in memory, so XLA stops fusing x's producers into the consumer (where
  they would be evaluated twice, once at (i, j) and once at (j, i), reading every input in transposed order: this
  made multi-similarity's backward pass 1.4× slower). `lax.optimization_barrier` does not do it: XLA:CPU drops it.
  """
  origin = (jnp.int32(0),) * x.ndim
  return jax.lax.dynamic_update_slice(x, jax.lax.dynamic_slice(x, origin, (1,) * x.ndim), origin)


def _symmetric_cotangent(cotangent: jax.Array) -> jax.Array:
  cotangent = _materialize(cotangent)
  return cotangent + cotangent.T


@jax.custom_vjp
def _self_gram(a: jax.Array) -> jax.Array:
  """`f32[A, A]` = a·aᵀ, whose gradient is one matmul, (C + Cᵀ)·a."""
  return _gram(a, a)


def _self_gram_fwd(a):
  return _gram(a, a), a


def _self_gram_bwd(a, cotangent):
  grad = jnp.matmul(_symmetric_cotangent(cotangent), a.astype(jnp.float32))
  return (grad.astype(a.dtype),)


_self_gram.defvjp(_self_gram_fwd, _self_gram_bwd)


def _self_squared_euclidean_forward(a):
  gram = _gram(a, a)
  sq = jnp.diagonal(gram)  # read from the Gram, so that identical rows cancel exactly
  unclamped = sq[:, None] + sq[None, :] - 2.0 * gram
  return jnp.maximum(unclamped, 0.0), unclamped


@jax.custom_vjp
def _self_squared_euclidean(a: jax.Array) -> jax.Array:
  """`f32[A, A]` = max(‖a_i‖² + ‖a_j‖² − 2⟨a_i, a_j⟩, 0) with squared norms read from the Gram's diagonal.

  Gradient: with M the cotangent of the unclamped matrix (C where it is > 0, C/2 where it is 0, as autodiff of
  `jnp.maximum` splits ties) and S = M + Mᵀ, ∂/∂a_i = 2·(Σ_j S_ij · a_i − Σ_j S_ij · a_j): one matmul.
  """
  return _self_squared_euclidean_forward(a)[0]


def _self_squared_euclidean_fwd(a):
  squared, unclamped = _self_squared_euclidean_forward(a)
  return squared, (a, unclamped)


def _self_squared_euclidean_bwd(residuals, cotangent):
  a, unclamped = residuals
  slope = jnp.where(unclamped > 0, 1.0, jnp.where(unclamped == 0, 0.5, 0.0))
  symmetric = _symmetric_cotangent(cotangent * slope)
  a32 = a.astype(jnp.float32)
  grad = 2.0 * (jnp.sum(symmetric, axis=1, keepdims=True) * a32 - jnp.matmul(symmetric, a32))
  return (grad.astype(a.dtype),)


_self_squared_euclidean.defvjp(_self_squared_euclidean_fwd, _self_squared_euclidean_bwd)


def pairwise_squared_euclidean(a: jax.Array, b: jax.Array | None = None) -> jax.Array:
  """`f32[A, B]` of ‖a_i − b_j‖², non-negative; exactly 0 for identical rows of `a` when `b` is `a` or None.

  Gram form ‖a‖² + ‖b‖² − 2⟨a, b⟩ (one matmul), clamped at 0. For self-distances the squared norms are read from the
  Gram diagonal, so identical rows cancel exactly (measured under `jit` and `grad`, where an explicit difference
  a_i − a_j is *not* exact: XLA may re-derive the two operands differently inside a fusion). torch.cdist, by
  contrast, leaves duplicates ~5e-4 apart above 25 rows.
  """
  self_distances = b is None or b is a
  b = a if b is None else b
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f"expected a: [A, D] and b: [B, D] with the same D, got {a.shape} and {b.shape}")
  if self_distances:
    return _self_squared_euclidean(a)
  gram = _gram(a, b)
  sq_a = jnp.sum(jnp.square(a.astype(jnp.float32)), axis=-1)
  sq_b = jnp.sum(jnp.square(b.astype(jnp.float32)), axis=-1)
  return jnp.maximum(sq_a[:, None] + sq_b[None, :] - 2.0 * gram, 0.0)


def pairwise_euclidean(a: jax.Array, b: jax.Array | None = None) -> jax.Array:
  """`f32[A, B]` of ‖a_i − b_j‖ with the safe square root (0 and zero gradient for coincident points)."""
  return safe_sqrt(pairwise_squared_euclidean(a, b))


def cosine_similarity(a: jax.Array, b: jax.Array | None = None) -> jax.Array:
  """`f32[A, B]` of ⟨a_i, b_j⟩ / (‖a_i‖‖b_j‖); rows are L2-normalised first (eps 1e-12, as PyTorch)."""
  a_unit = l2_normalize(a)
  if b is None or b is a:
    return _self_gram(a_unit)
  return _gram(a_unit, l2_normalize(b))


def dot_product(a: jax.Array, b: jax.Array | None = None) -> jax.Array:
  """`f32[A, B]` of ⟨a_i, b_j⟩ with float32 accumulation."""
  return _self_gram(a) if b is None or b is a else _gram(a, b)


def pairwise_snr(a: jax.Array, b: jax.Array | None = None) -> jax.Array:
  """`f32[A, B]` of the signal-to-noise-ratio distance var(b_j − a_i) / var(a_i) (Yuan et al. 2019, "Signal-to-Noise
  Ratio: A Robust Distance Metric for Deep Metric Learning"; PML's `SNRDistance`). Asymmetric: the anchor's variance
  is the signal.

  With centred rows c = x − mean(x), var(b_j − a_i) ∝ ‖c_bj − c_ai‖² and var(a_i) ∝ ‖c_ai‖² (the same 1/(D − 1)), so
  the matrix is one centred squared-Euclidean Gram matrix over the anchors' squared norms: 0 for identical rows, and 0
  (zero gradient) where an anchor has (almost) no variance, ‖c‖² ≤ 1e-15: a constant row, D = 1, or a row of norm
  ≲ 3e-8 (unit rows have ‖c‖² ∈ [0, 1]); PML divides by 0 there, and below ~1e-19 the gradient's 1/‖c‖⁴ overflows.
  """
  def centred(x):
    x = x.astype(jnp.float32)
    return x - jnp.mean(x, axis=-1, keepdims=True)

  a_centred = centred(a)
  noise = pairwise_squared_euclidean(a_centred, None if b is None or b is a else centred(b))
  signal = jnp.sum(jnp.square(a_centred), axis=-1, keepdims=True)
  has_signal = signal > 1e-15
  return jnp.where(has_signal, noise / jnp.where(has_signal, signal, 1.0), 0.0)


METRICS = {
    "euclidean": pairwise_euclidean,
    "squared_euclidean": pairwise_squared_euclidean,
    "cosine": cosine_similarity,
    "dot": dot_product,
    "snr": pairwise_snr,
}
# Which metrics grow with dissimilarity (distances) rather than with similarity.
IS_DISTANCE = {"euclidean": True, "squared_euclidean": True, "cosine": False, "dot": False, "snr": True}


def pairwise(a: jax.Array, b: jax.Array | None = None, *, metric: str = "euclidean") -> jax.Array:
  """The `f32[A, B]` matrix of `metric` (one of `METRICS`) between the rows of `a` and `b`."""
  if metric not in METRICS:
    raise ValueError(f"unknown metric {metric!r}; valid metrics: {sorted(METRICS)}")
  return METRICS[metric](a, b)
