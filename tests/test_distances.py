"""Tests for metriclearn.distances, labels and reducers: float64 NumPy / PyTorch references and the zero-distance rules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils import loss_and_miner_utils as pml_lmu

from metriclearn import distances
from metriclearn import labels as labels_lib
from metriclearn import reducers


def _rows(seed: int, n: int, d: int, scale: float = 1.0) -> np.ndarray:
  return (np.random.default_rng(seed).normal(size=(n, d)) * scale).astype(np.float32)


def _numpy_squared_euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  a, b = a.astype(np.float64), b.astype(np.float64)
  return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def _numpy_unit(x: np.ndarray) -> np.ndarray:
  x = x.astype(np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# ----------------------------------------------------------------------------------------------------------------------
# Pairwise matrices against float64 NumPy.


@pytest.mark.parametrize("other", [False, True], ids=["self", "cross"])
def test_pairwise_matrices_match_float64(other):
  a = _rows(0, 7, 5)
  b = _rows(1, 4, 5) if other else a
  args = (jnp.asarray(a), jnp.asarray(b)) if other else (jnp.asarray(a),)
  squared = _numpy_squared_euclidean(a, b)
  # Gram form: the absolute error is ~eps·(‖a‖² + ‖b‖²), so compare with an absolute tolerance on that scale.
  np.testing.assert_allclose(distances.pairwise_squared_euclidean(*args), squared, atol=1e-5)
  np.testing.assert_allclose(distances.pairwise_euclidean(*args), np.sqrt(squared), atol=1e-5)
  np.testing.assert_allclose(distances.cosine_similarity(*args), _numpy_unit(a) @ _numpy_unit(b).T, atol=1e-6)
  np.testing.assert_allclose(distances.dot_product(*args), a.astype(np.float64) @ b.T.astype(np.float64), atol=1e-5)
  for metric, fn in distances.METRICS.items():
    np.testing.assert_array_equal(distances.pairwise(*args, metric=metric), fn(*args))


def _autodiff_self_squared_euclidean(a):
  gram = jnp.matmul(a, a.T, preferred_element_type=jnp.float32)
  sq = jnp.diagonal(gram)
  return jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)


def _autodiff_self_gram(a):
  return jnp.matmul(a, a.T, preferred_element_type=jnp.float32)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", ["squared_euclidean", "dot"])
def test_hand_written_self_gradients_equal_autodiff(name, dtype):
  """The custom VJPs of the self-Gram and the self squared distances against autodiff of the plain formulas.

  Rows include exact duplicates (unclamped distance exactly 0, where autodiff of `max(·, 0)` gives half the
  cotangent) and a zero row; the cotangent is asymmetric, as a loss's is.
  """
  rows = _rows(3, 12, 6)
  rows[5] = rows[2]
  rows[7] = 0.0
  a = jnp.asarray(rows, dtype)
  cotangent = jnp.asarray(np.random.default_rng(4).normal(size=(12, 12)), jnp.float32)
  ours_fn = distances.METRICS[name]
  reference_fn = {"squared_euclidean": _autodiff_self_squared_euclidean, "dot": _autodiff_self_gram}[name]
  ours, ours_vjp = jax.vjp(ours_fn, a)
  reference, reference_vjp = jax.vjp(reference_fn, a)
  np.testing.assert_array_equal(ours, reference)
  (grad,), (reference_grad,) = jax.jit(ours_vjp)(cotangent), jax.jit(reference_vjp)(cotangent)
  assert grad.dtype == a.dtype
  scale = float(jnp.max(jnp.abs(reference_grad.astype(jnp.float32))))
  tolerance = 1e-5 if dtype == jnp.float32 else 1e-2  # bf16 rounds the result to 8 bits
  np.testing.assert_allclose(np.asarray(grad, np.float32), np.asarray(reference_grad, np.float32),
                             atol=tolerance * scale)
  assert np.all(np.isfinite(np.asarray(grad, np.float32)))


def test_hand_written_cosine_gradient_equals_autodiff():
  a = jnp.asarray(_rows(5, 10, 7))
  cotangent = jnp.asarray(np.random.default_rng(6).normal(size=(10, 10)), jnp.float32)
  grad = jax.grad(lambda x: jnp.sum(cotangent * distances.cosine_similarity(x)))(a)
  reference = jax.grad(lambda x: jnp.sum(cotangent * _autodiff_self_gram(distances.l2_normalize(x))))(a)
  np.testing.assert_allclose(grad, reference, rtol=1e-5, atol=1e-6)


def test_pairwise_results_are_float32_for_bfloat16_inputs():
  a = jnp.asarray(_rows(2, 6, 16), jnp.bfloat16)
  exact = _numpy_squared_euclidean(np.asarray(a, np.float32), np.asarray(a, np.float32))
  for fn in distances.METRICS.values():
    assert fn(a).dtype == jnp.float32
  # float32 accumulation of exactly-representable bf16 products: as accurate as float32 inputs.
  np.testing.assert_allclose(distances.pairwise_squared_euclidean(a), exact, atol=1e-4)


def test_squared_distances_are_non_negative():
  # Nearly identical rows (relative differences ~1e-8) would give tiny negatives in the Gram form without the clamp.
  base = _rows(3, 1, 64, scale=100.0)
  a = np.concatenate([base, base * (1 + 1e-8), base * (1 - 1e-8)]).astype(np.float32)
  b = jnp.asarray(a[::-1].copy())
  assert np.all(np.asarray(distances.pairwise_squared_euclidean(jnp.asarray(a))) >= 0)
  assert np.all(np.asarray(distances.pairwise_squared_euclidean(jnp.asarray(a), b)) >= 0)


# ----------------------------------------------------------------------------------------------------------------------
# Distance zero: exact, with a zero gradient, under jit and grad.


@pytest.mark.parametrize("size", [6, 26, 600])  # 26: past torch.cdist's exact range; 600: a large batch
def test_identical_rows_are_exactly_zero_under_jit_and_grad(size):
  x = _rows(size, size, 32, scale=3.0)
  for source, target in [(0, size - 1), (1, size - 2), (1, size - 3)]:  # a pair and a triple of identical rows
    x[target] = x[source]
  pairs = (np.all(x[:, None] == x[None], axis=-1) & ~np.eye(size, dtype=bool)).astype(np.float32)
  assert pairs.sum() == 2 + 6

  def duplicate_distance(x):
    d = distances.pairwise_euclidean(x)
    return jnp.sum(d * pairs), d

  (total, d), grad = jax.jit(jax.value_and_grad(duplicate_distance, has_aux=True))(jnp.asarray(x))
  d = np.asarray(d)
  assert total == 0.0
  assert np.all(np.diagonal(d) == 0.0)
  assert np.all(d[pairs > 0] == 0.0)
  assert np.all(d[(pairs == 0) & ~np.eye(size, dtype=bool)] > 0.1)
  assert np.all(np.asarray(grad) == 0.0)  # the gradient of d(x, x) is 0, not NaN

  # The gradient of the whole matrix is finite, and so are those of the squared distances and cosines.
  def whole_matrices(x):
    weights = jnp.arange(size, dtype=jnp.float32)[:, None]
    fns = (distances.pairwise_euclidean, distances.pairwise_squared_euclidean, distances.cosine_similarity)
    return [jnp.sum(fn(x) * weights) for fn in fns]

  for grad in jax.jit(jax.jacrev(whole_matrices))(jnp.asarray(x)):
    assert np.all(np.isfinite(np.asarray(grad)))


def test_cross_distance_of_identical_rows_is_small_with_finite_gradient():
  # Between two different arrays the squared norms come from separate reductions, so a shared row is only close to 0:
  # d² ≈ eps·‖x‖², i.e. d ≲ 1e-3·‖x‖. The gradient stays finite either way (the safe square root).
  a = _rows(4, 30, 16, scale=3.0)
  b = np.concatenate([a[:10], _rows(5, 5, 16)])
  fn = jax.jit(jax.value_and_grad(lambda a: jnp.sum(distances.pairwise_euclidean(a, jnp.asarray(b)))))
  _, grad = fn(jnp.asarray(a))
  d = np.asarray(jax.jit(distances.pairwise_euclidean)(jnp.asarray(a), jnp.asarray(b)))
  assert np.all(np.diagonal(d[:10, :10]) <= 1e-3 * np.linalg.norm(a[:10], axis=1))
  assert np.all(np.isfinite(np.asarray(grad)))


def test_safe_sqrt_and_safe_norm_at_zero():
  value, grad = jax.value_and_grad(distances.safe_sqrt)(0.0)
  assert value == 0.0 and grad == 0.0
  np.testing.assert_allclose(jax.grad(distances.safe_sqrt)(4.0), 0.25)
  value, grad = jax.value_and_grad(lambda x: distances.safe_norm(x))(jnp.zeros(3))
  assert value == 0.0 and np.all(np.asarray(grad) == 0.0)
  np.testing.assert_allclose(distances.safe_norm(jnp.asarray([[3.0, 4.0]])), [5.0])


# ----------------------------------------------------------------------------------------------------------------------
# l2_normalize against torch.nn.functional.normalize.


def test_l2_normalize_matches_torch_including_zero_vector():
  x = _rows(6, 5, 4)
  x[2] = 0.0  # the zero vector: torch gives 0 with gradient cotangent / eps
  x[3] *= 1e-13  # below eps: divided by eps, not by its norm
  cotangent = _rows(7, 5, 4)
  value, vjp = jax.vjp(distances.l2_normalize, jnp.asarray(x))
  (grad,) = vjp(jnp.asarray(cotangent))
  x_t = torch.tensor(x, requires_grad=True)
  torch_value = torch.nn.functional.normalize(x_t, dim=1)
  torch_value.backward(torch.tensor(cotangent))
  np.testing.assert_allclose(value, torch_value.detach().numpy(), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(grad, x_t.grad.numpy(), rtol=1e-5)
  assert np.all(np.asarray(value)[2] == 0.0)


def test_l2_normalize_keeps_dtype():
  x = jnp.asarray(_rows(8, 3, 6), jnp.bfloat16)
  unit = distances.l2_normalize(x)
  assert unit.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.linalg.norm(np.asarray(unit, np.float32), axis=1), 1.0, atol=1e-2)


def test_pairwise_rejects_bad_inputs():
  with pytest.raises(ValueError, match="unknown metric"):
    distances.pairwise(jnp.ones((2, 3)), metric="manhattan")
  with pytest.raises(ValueError):
    distances.pairwise_squared_euclidean(jnp.ones((2, 3)), jnp.ones((2, 4)))
  with pytest.raises(ValueError):
    distances.pairwise_euclidean(jnp.ones(3))


# ----------------------------------------------------------------------------------------------------------------------
# Reducers.


@pytest.mark.parametrize("add_one", [False, True])
def test_masked_logsumexp_matches_pml(add_one):
  rng = np.random.default_rng(9)
  x = (rng.normal(size=(6, 7)) * 30).astype(np.float32)  # large magnitudes: needs the max shift
  keep = rng.uniform(size=(6, 7)) < 0.5
  keep[1] = False  # an empty row: 0 (and zero gradient) in both
  keep[2] = True
  keep[3] = np.arange(7) == 4  # a single entry
  cotangent = rng.normal(size=6).astype(np.float32)
  value, vjp = jax.vjp(lambda x: reducers.masked_logsumexp(x, jnp.asarray(keep), add_one=add_one), jnp.asarray(x))
  (grad,) = vjp(jnp.asarray(cotangent))
  x_t = torch.tensor(x, requires_grad=True)
  pml_value = pml_lmu.logsumexp(x_t, keep_mask=torch.tensor(keep), add_one=add_one, dim=1)[:, 0]
  pml_value.backward(torch.tensor(cotangent))
  np.testing.assert_allclose(value, pml_value.detach().numpy(), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(grad, x_t.grad.numpy(), rtol=1e-5, atol=1e-7)
  assert value[1] == 0.0 and np.all(np.asarray(grad)[1] == 0.0)
  # The same along axis 0.
  value_t = reducers.masked_logsumexp(jnp.asarray(x.T), jnp.asarray(keep.T), axis=0, add_one=add_one)
  np.testing.assert_allclose(value_t, value, rtol=1e-6, atol=1e-6)


def test_masked_logsumexp_soft_weights_are_log_weights():
  rng = np.random.default_rng(10)
  x = rng.normal(size=(4, 5)).astype(np.float32) * 5
  weights = rng.uniform(size=(4, 5)).astype(np.float32)
  weights[0, :2] = 0.0
  weights[3] = 0.0
  for add_one in (False, True):
    total = (np.exp(x.astype(np.float64)) * weights).sum(1) + add_one
    expected = np.log(np.where(total > 0, total, 1.0))  # row 3 is empty: 0
    np.testing.assert_allclose(
        reducers.masked_logsumexp(jnp.asarray(x), jnp.asarray(weights), add_one=add_one), expected, rtol=1e-5
    )


def test_safe_divide_mean_nonzero_weighted_mean_and_reduce():
  value, grad = jax.value_and_grad(reducers.safe_divide, argnums=(0, 1))(3.0, 0.0)
  assert value == 0.0 and grad == (0.0, 0.0)
  np.testing.assert_allclose(reducers.safe_divide(3.0, 2.0), 1.5)
  terms = jnp.asarray([[0.0, 2.0, 0.0], [4.0, 0.0, 3.0]])
  np.testing.assert_allclose(reducers.mean_nonzero(terms), 3.0)
  assert reducers.mean_nonzero(jnp.zeros(4)) == 0.0
  weights = jnp.asarray([[0.0, 1.0, 0.5], [1.0, 0.0, 0.5]])
  np.testing.assert_allclose(reducers.weighted_mean(terms, weights), (1.0 * 2.0 + 1.0 * 4.0 + 0.5 * 3.0) / 3.0)
  assert reducers.weighted_mean(terms, jnp.zeros_like(weights)) == 0.0
  np.testing.assert_allclose(reducers.reduce(terms, weights, "mean_nonzero"), 3.0)
  np.testing.assert_allclose(reducers.reduce(terms, weights, "mean"), 9.0 / 3.0)
  np.testing.assert_allclose(reducers.reduce(terms, weights, "sum"), 9.0)
  with pytest.raises(ValueError, match="unknown reducer"):
    reducers.reduce(terms, weights, "median")


# ----------------------------------------------------------------------------------------------------------------------
# Pair labels.


def test_pair_labels_and_self_pairs():
  labels = jnp.asarray([0, 1, 0, 2])
  y = np.asarray(labels_lib.pair_labels(labels))
  np.testing.assert_array_equal(y, [[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]])
  np.testing.assert_array_equal(labels_lib.pair_labels(labels, jnp.asarray([2, 0])), [[0, 1], [0, 0], [0, 1], [1, 0]])
  np.testing.assert_array_equal(labels_lib.self_pair_mask(2, 3), [[True, False, False], [False, True, False]])
  with pytest.raises(ValueError):
    labels_lib.pair_labels(labels[:, None])


def test_batch_matrices_with_reference_labels():
  y, valid = labels_lib.batch_matrices(jnp.asarray([0, 1, 0]), jnp.asarray([1, 0]))
  np.testing.assert_array_equal(y, [[1, 0, 1, 0, 1], [0, 1, 0, 1, 0], [1, 0, 1, 0, 1]])
  # Only the batch's self-pairs are invalid; a reference column is a different example even with the same label.
  np.testing.assert_array_equal(valid, [[0, 1, 1, 1, 1], [1, 0, 1, 1, 1], [1, 1, 0, 1, 1]])
  assert y.dtype == valid.dtype == jnp.float32


def test_mixed_pair_labels_formula():
  rng = np.random.default_rng(12)
  y = rng.integers(0, 2, size=(5, 6)).astype(np.float32)
  first, second = rng.integers(0, 6, size=8), rng.integers(0, 6, size=8)
  for mix_lambda in (0.3, rng.uniform(size=8).astype(np.float32)):
    mixed = np.asarray(labels_lib.mixed_pair_labels(jnp.asarray(y), jnp.asarray(first), jnp.asarray(second), mix_lambda))
    lam = np.broadcast_to(mix_lambda, (8,))
    for a in range(5):
      for m in range(8):
        np.testing.assert_allclose(mixed[a, m], lam[m] * y[a, first[m]] + (1 - lam[m]) * y[a, second[m]], rtol=1e-6)
  # Positive–negative mixes get λ, positive–positive 1, negative–negative 0.
  y = jnp.asarray([[1.0, 1.0, 0.0, 0.0]])
  mixed = labels_lib.mixed_pair_labels(y, jnp.asarray([0, 0, 2]), jnp.asarray([2, 1, 3]), 0.7)
  np.testing.assert_allclose(mixed, [[0.7, 1.0, 0.0]], rtol=1e-6)


def test_self_distances_support_reverse_mode_only():
  """What the hand-written gradients allow, as the module docstring says: grad of grad works, forward mode raises."""
  a = jnp.asarray(_rows(7, 8, 4))
  for metric in ("euclidean", "cosine"):
    def total(x, metric=metric):
      return jnp.sum(jnp.sin(distances.pairwise(x, metric=metric)))
    second = jax.grad(lambda x: jnp.sum(jax.grad(total)(x) ** 2))(a)
    assert np.all(np.isfinite(second))
    with pytest.raises(TypeError, match="forward-mode"):
      jax.jvp(total, (a,), (a,))
