"""Tests for metriclearn.losses: pytorch-metric-learning parity, loop references, hand-computed constants, edge cases.

Compilation dominates the run time on CPU (about 0.3–1 s per loss and shape), so every batch of a group has one
shape and the jitted `value_and_grad` of each loss configuration is built once (`_ours`) and reused.
"""

from __future__ import annotations

import functools
import math

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers

from metriclearn import losses

# ----------------------------------------------------------------------------------------------------------------------
# Loss configurations: ours (function, keyword arguments) next to the PML loss with the same settings.

_CONFIGS = {
    "contrastive": (losses.contrastive, {}, lambda: pml_losses.ContrastiveLoss(pos_margin=0.0, neg_margin=0.5)),
    "contrastive_margins": (
        losses.contrastive,
        {"pos_margin": 0.2, "neg_margin": 1.2},
        lambda: pml_losses.ContrastiveLoss(pos_margin=0.2, neg_margin=1.2),
    ),
    "contrastive_squared": (
        losses.contrastive,
        {"squared": True, "neg_margin": 1.0},
        lambda: pml_losses.ContrastiveLoss(
            pos_margin=0.0, neg_margin=1.0, distance=pml_distances.LpDistance(power=2)
        ),
    ),
    "triplet": (losses.triplet, {}, lambda: pml_losses.TripletMarginLoss(margin=0.1)),
    "triplet_0.5": (losses.triplet, {"margin": 0.5}, lambda: pml_losses.TripletMarginLoss(margin=0.5)),
    "triplet_squared": (
        losses.triplet,
        {"squared": True, "margin": 0.2},
        lambda: pml_losses.TripletMarginLoss(margin=0.2, distance=pml_distances.LpDistance(power=2)),
    ),
    # PML options (issue 18): reducers, cosine similarity as the distance, smooth triplets, Euclidean mining.
    "contrastive_mean": (
        losses.contrastive,
        {"reducer": "mean"},
        lambda: pml_losses.ContrastiveLoss(pos_margin=0.0, neg_margin=0.5, reducer=pml_reducers.MeanReducer()),
    ),
    "contrastive_sum": (
        losses.contrastive,
        {"reducer": "sum", "pos_margin": 0.3},
        lambda: pml_losses.ContrastiveLoss(pos_margin=0.3, neg_margin=0.5, reducer=pml_reducers.SumReducer()),
    ),
    "contrastive_cosine": (
        losses.contrastive,
        {"distance": "cosine", "pos_margin": 0.9, "neg_margin": 0.2},
        lambda: pml_losses.ContrastiveLoss(pos_margin=0.9, neg_margin=0.2, distance=pml_distances.CosineSimilarity()),
    ),
    "contrastive_cosine_mean": (
        losses.contrastive,
        {"distance": "cosine", "pos_margin": 1.0, "neg_margin": 0.0, "reducer": "mean"},
        lambda: pml_losses.ContrastiveLoss(pos_margin=1.0, neg_margin=0.0, distance=pml_distances.CosineSimilarity(),
                                           reducer=pml_reducers.MeanReducer()),
    ),
    "triplet_mean": (
        losses.triplet,
        {"reducer": "mean"},
        lambda: pml_losses.TripletMarginLoss(margin=0.1, reducer=pml_reducers.MeanReducer()),
    ),
    "triplet_sum": (
        losses.triplet,
        {"reducer": "sum", "margin": 0.3},
        lambda: pml_losses.TripletMarginLoss(margin=0.3, reducer=pml_reducers.SumReducer()),
    ),
    "triplet_smooth": (
        losses.triplet,
        {"smooth_loss": True},
        lambda: pml_losses.TripletMarginLoss(margin=0.1, smooth_loss=True),
    ),
    "triplet_smooth_squared_sum": (
        losses.triplet,
        {"smooth_loss": True, "squared": True, "margin": 0.2, "reducer": "sum"},
        lambda: pml_losses.TripletMarginLoss(margin=0.2, smooth_loss=True, reducer=pml_reducers.SumReducer(),
                                             distance=pml_distances.LpDistance(power=2)),
    ),
    "triplet_cosine": (
        losses.triplet,
        {"distance": "cosine", "margin": 0.2},
        lambda: pml_losses.TripletMarginLoss(margin=0.2, distance=pml_distances.CosineSimilarity()),
    ),
    "triplet_cosine_smooth_mean": (
        losses.triplet,
        {"distance": "cosine", "smooth_loss": True, "reducer": "mean"},
        lambda: pml_losses.TripletMarginLoss(margin=0.1, smooth_loss=True, distance=pml_distances.CosineSimilarity(),
                                             reducer=pml_reducers.MeanReducer()),
    ),
    "multi_similarity_mined_euclidean": (
        losses.multi_similarity,
        {"miner_epsilon": 0.1, "miner_distance": "euclidean"},
        lambda: _Mined(pml_losses.MultiSimilarityLoss(),
                       pml_miners.MultiSimilarityMiner(epsilon=0.1, distance=pml_distances.LpDistance())),
    ),
    "lifted_structure_nonzero": (
        losses.lifted_structure,
        {"reducer": "mean_nonzero", "neg_margin": 0.5},
        lambda: pml_losses.LiftedStructureLoss(neg_margin=0.5, reducer=pml_reducers.AvgNonZeroReducer()),
    ),
    "lifted_structure_sum": (
        losses.lifted_structure,
        {"reducer": "sum"},
        lambda: pml_losses.LiftedStructureLoss(reducer=pml_reducers.SumReducer()),
    ),
    "generalized_lifted_structure_nonzero": (
        losses.generalized_lifted_structure,
        {"reducer": "mean_nonzero", "neg_margin": 0.2},
        lambda: pml_losses.GeneralizedLiftedStructureLoss(neg_margin=0.2, reducer=pml_reducers.AvgNonZeroReducer()),
    ),
    "generalized_lifted_structure_sum": (
        losses.generalized_lifted_structure,
        {"reducer": "sum"},
        lambda: pml_losses.GeneralizedLiftedStructureLoss(reducer=pml_reducers.SumReducer()),
    ),
    "multi_similarity": (losses.multi_similarity, {}, pml_losses.MultiSimilarityLoss),
    "multi_similarity_hparams": (
        losses.multi_similarity,
        {"alpha": 1.0, "beta": 10.0, "base": 0.2},
        lambda: pml_losses.MultiSimilarityLoss(alpha=1.0, beta=10.0, base=0.2),
    ),
    "multi_similarity_mined": (
        losses.multi_similarity,
        {"alpha": 17.97, "beta": 75.66, "base": 0.77, "miner_epsilon": 0.39},  # the Metrix code's MS
        lambda: _Mined(pml_losses.MultiSimilarityLoss(alpha=17.97, beta=75.66, base=0.77),
                       pml_miners.MultiSimilarityMiner(epsilon=0.39)),
    ),
    "proxy_anchor": (losses.proxy_anchor, {}, None),  # PML's loss holds the proxies: built per batch in `_pml`.
    "npair": (losses.npair, {}, pml_losses.NPairsLoss),
    "lifted_structure": (losses.lifted_structure, {}, pml_losses.LiftedStructureLoss),
    "generalized_lifted_structure": (
        losses.generalized_lifted_structure,
        {},
        pml_losses.GeneralizedLiftedStructureLoss,
    ),
}
_DEFAULT_CONFIGS = [name for name in _CONFIGS if name in losses.LOSSES]


class _Mined:
  """A PML loss on the pairs a PML miner selects, called as a plain loss."""

  def __init__(self, loss, miner):
    self.loss, self.miner = loss, miner

  def __call__(self, embeddings, labels):
    return self.loss(embeddings, labels, self.miner(embeddings, labels))
# Every loss defined in metriclearn.losses is tested here (those of other modules in their own test files).
assert sorted(_DEFAULT_CONFIGS) == sorted(name for name, fn in losses.LOSSES.items() if fn.__module__ == losses.__name__)


@functools.lru_cache(maxsize=None)
def _ours(config: str, dtype: str = "float32"):
  """Jitted `(embeddings, labels, proxies) -> (value, (d/dembeddings, d/dproxies))`; built once per config."""
  del dtype  # only part of the cache key: a new dtype compiles anew anyway, but keeps the cache entries apart.
  fn, kwargs, _ = _CONFIGS[config]
  if config == "proxy_anchor":
    return jax.jit(jax.value_and_grad(lambda e, l, p: fn(e, l, p, **kwargs), argnums=(0, 2)))
  grad_fn = jax.value_and_grad(lambda e, l: fn(e, l, **kwargs))
  return jax.jit(lambda e, l, p: (lambda v, g: (v, (g, jnp.zeros_like(p))))(*grad_fn(e, l)))


def _num_proxies(batch_size: int) -> int:
  return batch_size  # enough for all-distinct labels; classes without samples exercise the positive divisor


def _proxies_like(embeddings: np.ndarray) -> np.ndarray:
  """PML's initial proxies (kaiming normal, fan_out) for this batch, seeded, as float32 NumPy."""
  torch.manual_seed(0)
  pml = pml_losses.ProxyAnchorLoss(num_classes=_num_proxies(len(embeddings)), embedding_size=embeddings.shape[1])
  return pml.proxies.detach().numpy().copy()


def _run_ours(config: str, embeddings: np.ndarray, labels: np.ndarray):
  proxies = _proxies_like(embeddings)
  value, (grad, proxy_grad) = _ours(config)(jnp.asarray(embeddings), jnp.asarray(labels), jnp.asarray(proxies))
  return float(value), np.asarray(grad), np.asarray(proxy_grad)


def _pml(config: str, embeddings: np.ndarray, labels: np.ndarray):
  """PML's value, embedding gradient and proxy gradient (zeros for losses without proxies), in float32."""
  embeddings_t = torch.tensor(embeddings, requires_grad=True)
  if config == "proxy_anchor":
    torch.manual_seed(0)  # the same initial proxies as `_proxies_like`
    loss_fn = pml_losses.ProxyAnchorLoss(num_classes=_num_proxies(len(embeddings)), embedding_size=embeddings.shape[1])
  else:
    loss_fn = _CONFIGS[config][2]()
  value = loss_fn(embeddings_t, torch.tensor(labels))
  value.backward()
  if config == "proxy_anchor":
    proxy_grad = loss_fn.proxies.grad.numpy()
  else:
    proxy_grad = np.zeros((_num_proxies(len(embeddings)), embeddings.shape[1]), np.float32)
  return value.item(), embeddings_t.grad.numpy(), proxy_grad


# ----------------------------------------------------------------------------------------------------------------------
# Batches. Those of 24 rows can hold exact duplicates: torch.cdist is exact only up to 25 rows (above, it uses a matmul
# and leaves duplicates ~5e-4 apart, where ours are exactly 0), so larger batches have no duplicates.


def _scaled(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
  """Gaussian rows with norms spread over six decades (the losses normalise, so only the directions matter)."""
  return (rng.normal(size=(n, d)) * 10.0 ** rng.uniform(-3, 3, size=(n, 1))).astype(np.float32)


def _no_violation_batch(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """4 classes of 6 around orthogonal axes: d(a, p) ≈ 0.1–0.35 < d(a, n) − 0.9, so no triplet violates margin ≤ 0.5."""
  labels = np.repeat(np.arange(4), 6)
  embeddings = np.eye(8, dtype=np.float32)[labels] + 0.1 * rng.uniform(-1, 1, size=(24, 8)).astype(np.float32)
  return embeddings, labels


def _duplicates_batch(rng: np.random.Generator, same_class: bool) -> tuple[np.ndarray, np.ndarray]:
  labels = rng.integers(0, 4, size=24)
  embeddings = _scaled(rng, 24, 8)
  for i, j in [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]:  # exact copies: d = 0 pairs
    embeddings[j] = embeddings[i]
    if same_class:
      labels[j] = labels[i]
    else:
      labels[j] = (labels[i] + 1) % 4
  embeddings[10] = embeddings[11] = embeddings[12] = embeddings[0]  # a triple copy across classes
  labels[10], labels[11], labels[12] = labels[0], (labels[0] + 1) % 4, (labels[0] + 2) % 4
  return embeddings, labels


def _small_batches() -> dict[str, tuple[np.ndarray, np.ndarray]]:
  rng = np.random.default_rng(1234)
  batches = {
      "random_labels": (_scaled(rng, 24, 8), rng.integers(0, 5, size=24)),
      "m_per_class": (_scaled(rng, 24, 8), rng.permutation(np.repeat(np.arange(6), 4))),
      "duplicates_same_class": _duplicates_batch(rng, same_class=True),
      "duplicates_other_class": _duplicates_batch(rng, same_class=False),
      # Classes 5..14 are singletons: their anchors have no positive.
      "no_positive": (_scaled(rng, 24, 8), np.concatenate([np.repeat(np.arange(5), 3), np.arange(5, 14)])),
      "one_class": (_scaled(rng, 24, 8), np.zeros(24, np.int64)),
      "all_distinct": (_scaled(rng, 24, 8), rng.permutation(24)),
      "no_violation": _no_violation_batch(rng),
  }
  return batches


def _large_batches() -> dict[str, tuple[np.ndarray, np.ndarray]]:
  rng = np.random.default_rng(5678)
  return {
      "m_per_class_128": (_scaled(rng, 128, 32), rng.permutation(np.repeat(np.arange(32), 4))),
      "random_labels_128": (_scaled(rng, 128, 32), rng.integers(0, 12, size=128)),
  }


_SMALL = _small_batches()
_LARGE = _large_batches()

def _pml_cases():
  for config in _CONFIGS:
    for batch in _SMALL:
      yield pytest.param(config, batch, id=f"{config}-{batch}")
  for config in _DEFAULT_CONFIGS:
    for batch in _LARGE:
      yield pytest.param(config, batch, id=f"{config}-{batch}")


def _assert_gradients_close(ours: np.ndarray, theirs: np.ndarray, embeddings: np.ndarray, *,
                            relative_atol: bool = False) -> None:
  # The losses depend on the directions x/‖x‖ only, so ∂L/∂x scales as 1/‖x‖: compare ‖x‖·∂L/∂x, the gradient with
  # respect to the direction, at atol 1e-6 whatever the row's scale (rows span 1e-3..1e3 here).
  # `relative_atol` (sum reducers): the gradient is the mean's times the number of terms (hundreds here), and so is
  # its float32 rounding, so atol is 1e-5 of the largest entry instead (the Gram form's relative error in d is
  # ~1e-7/d², up to ~1e-5 for the d ≈ 0.1 pairs of the no_violation batch, and reaches every term of the sum).
  scale = np.linalg.norm(embeddings, axis=1, keepdims=True)
  atol = 1e-5 * max(1.0, np.abs(theirs * scale).max()) if relative_atol else 1e-6
  np.testing.assert_allclose(ours * scale, theirs * scale, rtol=1e-5, atol=atol)


# ----------------------------------------------------------------------------------------------------------------------
# 1. Parity with pytorch-metric-learning 2.9.0: values and gradients.


@pytest.mark.parametrize("config, batch", list(_pml_cases()))
def test_matches_pml(config, batch):
  embeddings, labels = {**_SMALL, **_LARGE}[batch]
  value, grad, proxy_grad = _run_ours(config, embeddings, labels)
  pml_value, pml_grad, pml_proxy_grad = _pml(config, embeddings, labels)
  np.testing.assert_allclose(value, pml_value, rtol=1e-5, atol=1e-6)
  _assert_gradients_close(grad, pml_grad, embeddings, relative_atol=config.endswith("_sum"))
  # Proxies are unit-scale (kaiming normal on 8 or 32 inputs): compare their gradient directly.
  np.testing.assert_allclose(proxy_grad, pml_proxy_grad, rtol=1e-5, atol=1e-6)
  assert np.all(np.isfinite(grad)) and np.all(np.isfinite(proxy_grad))


def test_near_duplicates_agree_with_pml_to_gram_precision():
  """Points 0 < d ≲ 0.03 apart: the Gram form's rounding bounds the agreement with PML (1e-3, not 1e-5).

  Our d² = ‖u‖² + ‖v‖² − 2⟨u, v⟩ has an absolute float32 error of ~1e-7, so a relative error of ~1e-7/d² in d² (half
  that in d): ~5e-4 at d = 0.01. torch.cdist (≤ 25 rows) subtracts coordinates first and has none. The gradient of d,
  (u − v)/d, inherits the relative error. Cosine-based losses are unaffected (no division by d).
  """
  rng = np.random.default_rng(99)
  labels = np.repeat(np.arange(4), 6)
  embeddings = np.eye(8, dtype=np.float32)[labels] + 0.01 * rng.uniform(-1, 1, size=(24, 8)).astype(np.float32)
  for config in ("contrastive", "triplet", "lifted_structure", "generalized_lifted_structure", "multi_similarity"):
    value, grad, _ = _run_ours(config, embeddings, labels)
    pml_value, pml_grad, _ = _pml(config, embeddings, labels)
    tolerance = 1e-5 if config == "multi_similarity" else 2e-3
    np.testing.assert_allclose(value, pml_value, rtol=tolerance, err_msg=config)
    np.testing.assert_allclose(grad, pml_grad, atol=tolerance * np.abs(pml_grad).max(), err_msg=config)


@pytest.mark.parametrize("config", ["triplet", "triplet_0.5", "triplet_squared"])
def test_triplet_without_violation_is_exactly_zero(config):
  value, grad, _ = _run_ours(config, *_SMALL["no_violation"])
  assert value == 0.0
  assert np.all(grad == 0.0)


# PML options (issue 18) beyond the `_CONFIGS` above: N-pair without pairs, `ref_emb`, bf16, the matrix forms.

_PML_OPTION_CONFIGS = [name for name in _CONFIGS if name not in losses.LOSSES and any(
    option in name for option in ("_mean", "_sum", "_cosine", "_smooth", "_euclidean", "_nonzero"))]


@pytest.mark.parametrize("num_rows, labels", [(1, [0]), (2, [0, 1]), (5, [0, 1, 2, 3, 4])])
def test_npair_without_a_positive_pair_is_zero_with_zero_gradient_as_pml(num_rows, labels):
  embeddings = _scaled(np.random.default_rng(num_rows), num_rows, 8)
  labels = np.asarray(labels)
  value, grad, _ = _run_ours("npair", embeddings, labels)
  pml_value, pml_grad, _ = _pml("npair", embeddings, labels)
  assert value == pml_value == 0.0
  assert np.all(grad == 0.0) and np.all(pml_grad == 0.0)


def _mined_with_reference(loss, miner):
  return lambda e, l, ref_emb, ref_labels: loss(e, l, miner(e, l, ref_emb, ref_labels), ref_emb, ref_labels)


# ours (function, keyword arguments) and PML's `loss(emb, labels, ref_emb=..., ref_labels=...)` with the same settings.
_REFERENCE_CONFIGS = {
    "contrastive": (losses.contrastive, {}, lambda: pml_losses.ContrastiveLoss(pos_margin=0.0, neg_margin=0.5)),
    "contrastive_cosine_mean": _CONFIGS["contrastive_cosine_mean"],
    "triplet": (losses.triplet, {}, lambda: pml_losses.TripletMarginLoss(margin=0.1)),
    "triplet_smooth": _CONFIGS["triplet_smooth"],
    "triplet_cosine": _CONFIGS["triplet_cosine"],
    "multi_similarity": (losses.multi_similarity, {}, pml_losses.MultiSimilarityLoss),
    "multi_similarity_mined": (
        losses.multi_similarity, {"miner_epsilon": 0.3},
        lambda: _mined_with_reference(pml_losses.MultiSimilarityLoss(), pml_miners.MultiSimilarityMiner(epsilon=0.3))),
    "multi_similarity_mined_euclidean": (
        losses.multi_similarity, {"miner_epsilon": 0.1, "miner_distance": "euclidean"},
        lambda: _mined_with_reference(pml_losses.MultiSimilarityLoss(), pml_miners.MultiSimilarityMiner(
            epsilon=0.1, distance=pml_distances.LpDistance()))),
    "generalized_lifted_structure": _CONFIGS["generalized_lifted_structure"],
}


@pytest.mark.parametrize("config", list(_REFERENCE_CONFIGS))
@pytest.mark.parametrize("batch", list(_SMALL))
def test_reference_only_matches_pml_ref_emb(config, batch):
  """Queries = the first 14 rows, reference = the other 10: values and gradients for both, as PML's `ref_emb`."""
  embeddings, labels = _SMALL[batch]
  query, query_labels, ref, ref_labels = embeddings[:14], labels[:14], embeddings[14:], labels[14:]
  fn, kwargs, pml_factory = _REFERENCE_CONFIGS[config]
  loss = lambda q, r: fn(q, jnp.asarray(query_labels), ref_embeddings=r, ref_labels=jnp.asarray(ref_labels),  # noqa
                         reference_only=True, **kwargs)
  value, (grad, ref_grad) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(jnp.asarray(query), jnp.asarray(ref))
  query_t, ref_t = torch.tensor(query, requires_grad=True), torch.tensor(ref, requires_grad=True)
  pml_value = pml_factory()(query_t, torch.tensor(query_labels), ref_emb=ref_t, ref_labels=torch.tensor(ref_labels))
  pml_value.backward()
  # PML returns 0 when there is at most one positive and one negative pair (GenericPairLoss); no batch here has that.
  np.testing.assert_allclose(value, pml_value.item(), rtol=1e-5, atol=1e-6)
  # PML's zero loss (sum(embeddings · 0)) leaves no gradient on the reference (None): it is 0.
  grad_of = lambda x: np.zeros(x.shape, np.float32) if x.grad is None else x.grad.numpy()  # noqa: E731
  _assert_gradients_close(np.asarray(grad), grad_of(query_t), query)
  _assert_gradients_close(np.asarray(ref_grad), grad_of(ref_t), ref)


def test_reference_only_lifted_structure_pools_the_anchors_negatives():
  """Each (query a, reference p) pair: J = log Σ_{n ∈ N(a)} e^{m − d_an} + d_ap, ½[J]₊² averaged (float64 loop)."""
  rng = np.random.default_rng(4)
  query, ref = rng.normal(size=(7, 5)).astype(np.float32), rng.normal(size=(9, 5)).astype(np.float32)
  query_labels, ref_labels = rng.integers(0, 3, size=7), rng.integers(0, 3, size=9)
  unit = lambda x: x.astype(np.float64) / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
  d = np.linalg.norm(unit(query)[:, None] - unit(ref)[None], axis=-1)
  terms = []
  for a in range(7):
    negatives = [math.exp(1.0 - d[a, n]) for n in range(9) if ref_labels[n] != query_labels[a]]
    for p in range(9):
      if ref_labels[p] == query_labels[a] and negatives:
        terms.append(0.5 * _relu(math.log(sum(negatives)) + d[a, p]) ** 2)
  value = losses.lifted_structure(jnp.asarray(query), jnp.asarray(query_labels), ref_embeddings=jnp.asarray(ref),
                                  ref_labels=jnp.asarray(ref_labels), reference_only=True)
  np.testing.assert_allclose(value, np.mean(terms), rtol=1e-5)


def test_reference_only_differs_from_reference_columns():
  """The two readings of a reference set give different losses (the batch's own pairs count only in the second)."""
  embeddings, labels = _SMALL["m_per_class"]
  e, l = jnp.asarray(embeddings), jnp.asarray(labels)
  columns = losses.contrastive(e[:12], l[:12], ref_embeddings=e[12:], ref_labels=l[12:])
  only = losses.contrastive(e[:12], l[:12], ref_embeddings=e[12:], ref_labels=l[12:], reference_only=True)
  s, y, valid = losses.query_reference_matrices(e[:12], l[:12], e[12:], l[12:])
  assert s.shape == (12, 12) and float(jnp.min(valid)) == 1.0
  np.testing.assert_allclose(only, losses.contrastive_from_matrix(s, y, valid), rtol=1e-6)
  assert not np.isclose(float(columns), float(only), rtol=1e-3)


@pytest.mark.parametrize("name", _PML_OPTION_CONFIGS)
def test_pml_options_in_bfloat16_give_float32_close_to_float32(name):
  embeddings, labels = _SMALL["m_per_class"]
  embeddings = jnp.asarray(embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True), jnp.bfloat16)
  proxies = jnp.zeros((24, 8), jnp.float32)
  value, (grad, _) = _ours(name, "bfloat16")(embeddings, jnp.asarray(labels), proxies)
  reference, (reference_grad, _) = _ours(name)(embeddings.astype(jnp.float32), jnp.asarray(labels), proxies)
  assert value.dtype == jnp.float32 and grad.dtype == jnp.bfloat16
  # As the bf16 test above: the normalised rows are rounded to bf16 (relative 2^-9) before the float32 Gram matrix.
  np.testing.assert_allclose(value, reference, rtol=1e-2)
  np.testing.assert_allclose(np.asarray(grad, np.float32), reference_grad, atol=2e-2 * np.abs(reference_grad).max())


@pytest.mark.parametrize("name, kwargs", [
    ("contrastive", {"distance": "cosine", "pos_margin": 0.9, "neg_margin": 0.2, "reducer": "mean"}),
    ("triplet", {"distance": "cosine", "smooth_loss": True}),
    ("triplet", {"distance": "squared_euclidean", "reducer": "sum"}),
    ("multi_similarity", {"miner_epsilon": 0.1, "miner_distance": "euclidean"}),
    ("lifted_structure", {"reducer": "mean_nonzero"}),
])
def test_matrix_form_maps_the_pml_options(name, kwargs):
  embeddings, labels = (jnp.asarray(x) for x in _SMALL["random_labels"])
  metric, normalize, matrix_kwargs = losses.matrix_form(name, kwargs)
  s, y, valid = losses.batch_matrices(embeddings, labels, metric=metric, normalize=normalize)
  np.testing.assert_allclose(losses.MATRIX_LOSSES[name](s, y, valid, **matrix_kwargs),
                             losses.LOSSES[name](embeddings, labels, **kwargs), rtol=1e-6)


def loop_triplet_terms(d, y, v, *, margin, smooth, reducer):
  """All (a, p, n), p ≠ n, weight y[a,p](1−y[a,n]): PML's reducers over w·f(d_ap − d_an + m), f = hinge or softplus."""
  terms, weights = [], []
  for a in range(d.shape[0]):
    for p in range(d.shape[1]):
      for n in range(d.shape[1]):
        weight = y[a, p] * (1 - y[a, n]) if p != n and v[a, p] and v[a, n] else 0.0
        if weight > 0:
          x = d[a, p] - d[a, n] + margin
          terms.append(weight * (math.log1p(math.exp(x)) if smooth else _relu(x)))
          weights.append(weight)
  if reducer == "sum":
    return sum(terms)
  if reducer == "mean":
    return sum(terms) / sum(weights) if weights else 0.0
  return _mean_positive(terms)


@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize("reducer", ["mean_nonzero", "mean", "sum"])
def test_triplet_matrix_form_options_match_soft_label_loop(smooth, reducer):
  """Soft labels, every reducer, hinge and softplus; the sorted (or blocked) form and `max_positives` = B agree."""
  for seed in range(3):
    s, y, valid = _soft_matrices(seed, "distance", num_anchors=19, num_candidates=9)  # 19: blocks of 16 + 3
    expected = loop_triplet_terms(s.astype(np.float64), y.astype(np.float64), valid.astype(np.float64), margin=0.3,
                                  smooth=smooth, reducer=reducer)
    kwargs = {"margin": 0.3, "smooth_loss": smooth, "reducer": reducer}
    value, grad = jax.value_and_grad(functools.partial(losses.triplet_from_matrix, **kwargs))(s, y, valid)
    direct, direct_grad = jax.value_and_grad(functools.partial(losses.triplet_from_matrix, max_positives=9,
                                                               **kwargs))(s, y, valid)
    np.testing.assert_allclose(value, expected, rtol=1e-5, err_msg=f"seed {seed}")
    np.testing.assert_allclose(direct, expected, rtol=1e-5, err_msg=f"seed {seed}")
    np.testing.assert_allclose(direct_grad, grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, kwargs", [("contrastive", {"reducer": "mean"}), ("triplet", {"reducer": "sum"}),
                                          ("triplet", {"smooth_loss": True}),
                                          ("lifted_structure", {"reducer": "sum"}),
                                          ("generalized_lifted_structure", {"reducer": "mean_nonzero"})])
def test_pml_options_with_nothing_valid_are_zero_with_zero_gradient(name, kwargs):
  s, y, _ = _soft_matrices(0, "distance")
  value, grad = jax.value_and_grad(functools.partial(losses.MATRIX_LOSSES[name], **kwargs))(s, y, np.zeros_like(y))
  assert float(value) == 0.0
  assert np.all(np.asarray(grad) == 0.0)


@pytest.mark.parametrize("call", [
    pytest.param(lambda: losses.contrastive(_E, _L, distance="manhattan"), id="unknown distance"),
    pytest.param(lambda: losses.triplet(_E, _L, distance="cosine", squared=True), id="squared cosine"),
    pytest.param(lambda: losses.triplet(_E, _L, reducer="median"), id="unknown triplet reducer"),
    pytest.param(lambda: losses.lifted_structure(_E, _L, reference_only=True), id="reference_only without reference"),
    pytest.param(lambda: losses.multi_similarity(_E, _L, miner_epsilon=0.1, miner_distance="l1"), id="miner distance"),
    pytest.param(lambda: losses.matrix_form("lifted_structure", {"distance": "cosine"}), id="distance of lifted"),
])
def test_pml_option_errors(call):
  with pytest.raises(ValueError):
    call()


# ----------------------------------------------------------------------------------------------------------------------
# 2. Soft labels: plain loops over anchors and candidates in float64, from Metrix eq. c.3 / c.6 (papers/metrix.md).


def _relu(x: float) -> float:
  return max(x, 0.0)


def _mean_positive(terms: list[float]) -> float:
  positive = [t for t in terms if t > 0]
  return sum(positive) / len(positive) if positive else 0.0


def _log_or_zero(total: float) -> float:
  """log Σ, with the empty set (Σ = 0 over no entries) giving 0, as PML's masked log-sum-exp."""
  return math.log(total) if total > 0 else 0.0


def loop_contrastive(d, y, v, *, pos_margin=0.0, neg_margin=0.5):
  """c.6: mean over non-zero y·[d − m⁺]₊ plus mean over non-zero (1−y)·[m⁻ − d]₊."""
  pos, neg = [], []
  for a in range(d.shape[0]):
    for x in range(d.shape[1]):
      if v[a, x]:
        pos.append(y[a, x] * _relu(d[a, x] - pos_margin))
        neg.append((1 - y[a, x]) * _relu(neg_margin - d[a, x]))
  return _mean_positive(pos) + _mean_positive(neg)


def loop_triplet(d, y, v, *, margin=0.1):
  """Weight y[a,p](1−y[a,n]) over all (a, p, n) with p ≠ n; mean over the strictly positive weighted hinges."""
  terms = []
  num_anchors, num_candidates = d.shape
  for a in range(num_anchors):
    for p in range(num_candidates):
      for n in range(num_candidates):
        if p != n and v[a, p] and v[a, n]:
          terms.append(y[a, p] * (1 - y[a, n]) * _relu(d[a, p] - d[a, n] + margin))
  return _mean_positive(terms)


def loop_multi_similarity(s, y, v, *, alpha=2.0, beta=50.0, base=0.5):
  """c.2–c.3: (1/α)log(1 + Σ y e^{−α(s−base)}) + (1/β)log(1 + Σ (1−y) e^{β(s−base)}), mean over anchors."""
  total = 0.0
  for a in range(s.shape[0]):
    pos = sum(y[a, x] * math.exp(-alpha * (s[a, x] - base)) for x in range(s.shape[1]) if v[a, x])
    neg = sum((1 - y[a, x]) * math.exp(beta * (s[a, x] - base)) for x in range(s.shape[1]) if v[a, x])
    total += math.log1p(pos) / alpha + math.log1p(neg) / beta
  return total / s.shape[0]


def loop_proxy_anchor(s, y, v, *, margin=0.1, alpha=32.0):
  """Rows are proxies: positive part over proxies with positive mass, negative part over all C proxies."""
  pos_total, neg_total, with_positive = 0.0, 0.0, 0
  for c in range(s.shape[0]):
    pos = sum(y[c, x] * math.exp(-alpha * (s[c, x] - margin)) for x in range(s.shape[1]) if v[c, x])
    neg = sum((1 - y[c, x]) * math.exp(alpha * (s[c, x] + margin)) for x in range(s.shape[1]) if v[c, x])
    with_positive += any(v[c, x] and y[c, x] > 0 for x in range(s.shape[1]))
    pos_total += math.log1p(pos)
    neg_total += math.log1p(neg)
  return (pos_total / with_positive if with_positive else 0.0) + neg_total / s.shape[0]


def loop_generalized_lifted(d, y, v, *, neg_margin=1.0, pos_margin=0.0):
  """Per anchor [log Σ y e^{d−m⁺} + log Σ (1−y) e^{m⁻−d}]₊ (an empty sum's log is 0), mean over anchors."""
  total = 0.0
  for a in range(d.shape[0]):
    pos = sum(y[a, x] * math.exp(d[a, x] - pos_margin) for x in range(d.shape[1]) if v[a, x] and y[a, x] > 0)
    neg = sum((1 - y[a, x]) * math.exp(neg_margin - d[a, x]) for x in range(d.shape[1]) if v[a, x] and y[a, x] < 1)
    total += _relu(_log_or_zero(pos) + _log_or_zero(neg))
  return total / d.shape[0]


def loop_lifted(d, y, v, *, neg_margin=1.0, pos_margin=0.0):
  """Song et al. eq. 4 with weights: Σ_{(a,p)} y ½[J]₊² / Σ y, J = log(Σ_{a's and p's negatives} (1−y)e^{m−d}) + d_ap.

  The negatives of candidate p are row p when p is also an anchor (p < A). Every pair here has a negative.
  """
  num_anchors, num_candidates = d.shape

  def negatives(row):
    return [(1 - y[row, n]) * math.exp(neg_margin - d[row, n]) for n in range(num_candidates) if v[row, n]]

  weighted, weight = 0.0, 0.0
  for a in range(num_anchors):
    for p in range(num_candidates):
      if v[a, p] and y[a, p] > 0:
        pooled = sum(negatives(a)) + (sum(negatives(p)) if p < num_anchors else 0.0)
        assert pooled > 0, "the test builds masks where every pair has a negative"
        j = math.log(pooled) + d[a, p] - pos_margin
        weighted += y[a, p] * 0.5 * _relu(j) ** 2
        weight += y[a, p]
  return weighted / weight if weight else 0.0


def loop_npair(s, y, v):
  """Cross-entropy per anchor with target y·valid / Σ y·valid over the valid candidates; mean over rows with a target."""
  total, rows = 0.0, 0
  for a in range(s.shape[0]):
    mass = sum(y[a, x] for x in range(s.shape[1]) if v[a, x])
    if mass == 0:
      continue
    log_partition = math.log(sum(math.exp(s[a, x]) for x in range(s.shape[1]) if v[a, x]))
    total += sum(y[a, x] / mass * (log_partition - s[a, x]) for x in range(s.shape[1]) if v[a, x])
    rows += 1
  return total / rows if rows else 0.0


_SOFT_CASES = {
    "contrastive": (loop_contrastive, {}, "distance"),
    "contrastive_margins": (loop_contrastive, {"pos_margin": 0.3, "neg_margin": 1.2}, "distance"),
    "triplet": (loop_triplet, {}, "distance"),
    "multi_similarity": (loop_multi_similarity, {}, "similarity"),
    "proxy_anchor": (loop_proxy_anchor, {}, "similarity"),
    "generalized_lifted_structure": (loop_generalized_lifted, {}, "distance"),
    "lifted_structure": (loop_lifted, {}, "distance"),
    "lifted_structure_margins": (loop_lifted, {"neg_margin": 0.5, "pos_margin": 0.2}, "distance"),
    "npair": (loop_npair, {}, "similarity"),
}


def _soft_matrices(seed: int, kind: str, num_anchors: int = 6, num_candidates: int = 9):
  """Random s, soft y ∈ [0, 1] with exact 0s and 1s, and a random valid mask in which every row has a negative."""
  rng = np.random.default_rng(seed)
  if kind == "distance":
    s = rng.uniform(0.0, 2.0, size=(num_anchors, num_candidates))
  else:
    s = rng.uniform(-1.0, 1.0, size=(num_anchors, num_candidates))
  y = rng.uniform(size=(num_anchors, num_candidates))
  y[rng.uniform(size=y.shape) < 0.3] = 0.0
  y[rng.uniform(size=y.shape) < 0.3] = 1.0
  valid = (rng.uniform(size=y.shape) < 0.8).astype(np.float64)
  valid[:, 0] = 1.0
  y[:, 0] = 0.0  # every row has a valid, fully negative candidate (lifted's negatives are never empty)
  return s.astype(np.float32), y.astype(np.float32), valid.astype(np.float32)


@functools.lru_cache(maxsize=None)
def _matrix_loss(case: str):
  """Jitted value and gradient (with respect to s) of the matrix form of a `_SOFT_CASES` case."""
  return jax.jit(jax.value_and_grad(functools.partial(losses.MATRIX_LOSSES[case.removesuffix("_margins")],
                                                      **_SOFT_CASES[case][1])))


@pytest.mark.parametrize("case", list(_SOFT_CASES))
def test_matrix_form_matches_soft_label_loop(case):
  loop_fn, kwargs, kind = _SOFT_CASES[case]
  for seed in range(4):
    s, y, valid = _soft_matrices(seed, kind)
    expected = loop_fn(s.astype(np.float64), y.astype(np.float64), valid.astype(np.float64), **kwargs)
    value, _ = _matrix_loss(case)(s, y, valid)
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6, err_msg=f"seed {seed}")


@pytest.mark.parametrize("case", [case for case in _SOFT_CASES if case in losses.MATRIX_LOSSES])
def test_matrix_form_with_nothing_valid_is_zero_with_zero_gradient(case):
  s, y, _ = _soft_matrices(0, _SOFT_CASES[case][2])
  value, grad = _matrix_loss(case)(s, y, np.zeros_like(y))
  assert float(value) == 0.0
  assert np.all(np.asarray(grad) == 0.0)


def test_lifted_pair_without_negatives_contributes_zero():
  # One anchor, one positive candidate, nothing negative: J = log(empty sum) + d = −∞, so ½[J]₊² = 0.
  distance = jnp.asarray([[0.0, 0.7]])
  y = jnp.asarray([[0.0, 1.0]])
  valid = jnp.asarray([[0.0, 1.0]])
  assert float(losses.lifted_structure_from_matrix(distance, y, valid)) == 0.0


# ----------------------------------------------------------------------------------------------------------------------
# 3. The triplet matrix form is exact: equal to the dense A×B×B computation, ties included, gradients included.


def dense_triplet(distance, y, valid, *, margin):
  pos_weight, neg_weight = y * valid, (1.0 - y) * valid
  not_self = 1.0 - jnp.eye(distance.shape[1])
  weight = pos_weight[:, :, None] * neg_weight[:, None, :] * not_self[None]
  terms = weight * jax.nn.relu(distance[:, :, None] - distance[:, None, :] + margin)
  count = jnp.sum(terms > 0)
  return jnp.where(count > 0, jnp.sum(terms) / jnp.maximum(count, 1), 0.0)


@pytest.mark.parametrize("margin", [0.25, 0.1, 0.0])
@pytest.mark.parametrize("soft", [False, True])
def test_triplet_matrix_form_equals_dense(margin, soft):
  rng = np.random.default_rng(7)
  for _ in range(3):
    # Multiples of 1/8 make ties exact: equal distances, and hinges d_ap − d_an + 0.25 that are exactly 0.
    distance = jnp.asarray(rng.integers(0, 12, size=(10, 14)) / 8.0, jnp.float32)
    if soft:
      y = jnp.asarray(rng.choice([0.0, 0.25, 0.5, 1.0], size=(10, 14)), jnp.float32)
    else:
      y = jnp.asarray(rng.integers(0, 2, size=(10, 14)), jnp.float32)
    valid = jnp.asarray(rng.uniform(size=(10, 14)) < 0.85, jnp.float32)
    value, grad = jax.value_and_grad(lambda d: losses.triplet_from_matrix(d, y, valid, margin=margin))(distance)
    dense_value, dense_grad = jax.value_and_grad(lambda d: dense_triplet(d, y, valid, margin=margin))(distance)
    # With a dyadic margin every operation is exact and so is the agreement; with margin 0.1 the prefix-sum form
    # computes Σ_n (t − d_an) as t·Σ_n 1 − Σ_n d_an, which rounds differently (relative ~1e-6) but selects the same set.
    # (The gradients divide by the count of violating triplets: 1 ulp apart even when the rest is exact.)
    tolerance = 1e-6 if margin in (0.25, 0.0) else 1e-5
    np.testing.assert_allclose(value, dense_value, rtol=tolerance, atol=1e-8)
    np.testing.assert_allclose(grad, dense_grad, rtol=tolerance, atol=1e-8)


def test_triplet_soft_self_triplet_at_large_distance():
  # Candidate 1 is half positive, half negative; its only triplet with candidate 2 has hinge 1e8 − (1e8 + 64) + 0.1 < 0.
  distance = jnp.asarray([[0.0, 1e8, 1e8 + 64]])
  y = jnp.asarray([[0.0, 0.5, 0.0]])
  valid = jnp.asarray([[0.0, 1.0, 1.0]])
  assert float(losses.triplet_from_matrix(distance, y, valid, margin=0.1)) == 0.0


# ----------------------------------------------------------------------------------------------------------------------
# 4. Hand-computed constants on 2–4 points in 2-D.

# The unit square's corners: adjacent points are √2 apart (cosine 0), opposite ones 2 apart (cosine −1).
_SQUARE = jnp.asarray([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
_SQUARE_LABELS = jnp.asarray([0, 0, 1, 1])
_SQRT2 = math.sqrt(2.0)


def test_contrastive_constant():
  # Positive pairs (0,1), (1,0), (2,3), (3,2): d = √2, mean √2. Negative pairs: (0,3), (1,2) and their reverses at
  # d = √2 give 1.5 − √2 > 0; (0,2), (1,3) at d = 2 give 0 and are not averaged. Total √2 + 1.5 − √2 = 1.5.
  value = losses.contrastive(_SQUARE, _SQUARE_LABELS, neg_margin=1.5)
  np.testing.assert_allclose(value, 1.5, rtol=1e-6)


def test_triplet_constant():
  # Anchor 0: positive 1 (√2), negatives 2 (2) and 3 (√2): hinges √2 − 2 + 0.7 ≈ 0.1142 and 0.7. Every anchor has
  # the same two, so the loss is (√2 − 2 + 0.7 + 0.7) / 2 = (√2 − 0.6) / 2 ≈ 0.407107.
  value = losses.triplet(_SQUARE, _SQUARE_LABELS, margin=0.7)
  np.testing.assert_allclose(value, (_SQRT2 - 0.6) / 2, rtol=1e-6)


def test_multi_similarity_constant():
  # Anchor 0: positive cosine 0 → ½ log(1 + e^{−2(0 − 0.5)}) = ½ log(1 + e) ≈ 0.656630; negatives at cosines −1 and 0
  # with β = 1 → log(1 + e^{−1.5} + e^{−0.5}) ≈ 0.604131. All anchors alike: ≈ 1.260761.
  value = losses.multi_similarity(_SQUARE, _SQUARE_LABELS, alpha=2.0, beta=1.0, base=0.5)
  expected = 0.5 * math.log(1 + math.e) + math.log(1 + math.exp(-1.5) + math.exp(-0.5))
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  np.testing.assert_allclose(expected, 1.260761, rtol=1e-6)


def test_proxy_anchor_constant():
  # Proxies (1,0), (−1,0), (0,1) for classes 0, 1, 2; x0 = (1,0) of class 0, x1 = (0,1) of class 1. α = 1, δ = 0.1.
  # cos(p0, ·) = (1, 0), cos(p1, ·) = (−1, 0), cos(p2, ·) = (0, 1).
  # Positive: p0 → log(1 + e^{−(1 − 0.1)}) = A ≈ 0.341154; p1 → log(1 + e^{−(0 − 0.1)}) = B ≈ 0.744397; p2 has none,
  # so divide by 2. Negative: p0 → log(1 + e^{0 + 0.1}) = B; p1 → log(1 + e^{−1 + 0.1}) = A;
  # p2 → log(1 + e^{0.1} + e^{1.1}) ≈ 1.631070; divide by C = 3. Total (A + B)/2 + (A + B + 1.631070)/3 ≈ 1.448315.
  proxies = jnp.asarray([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
  value = losses.proxy_anchor(jnp.asarray([[1.0, 0.0], [0.0, 1.0]]), jnp.asarray([0, 1]), proxies, alpha=1.0)
  a, b = math.log(1 + math.exp(-0.9)), math.log(1 + math.exp(0.1))
  expected = (a + b) / 2 + (a + b + math.log(1 + math.exp(0.1) + math.exp(1.1))) / 3
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  np.testing.assert_allclose(expected, 1.448315, rtol=1e-6)


def test_npair_constant():
  # Anchors x0 (class 0) and x2 (class 1), positives x1 and x3. Cosines anchor×positive: [[0.6, 0], [−0.6, 0]].
  # Row 0: log(e^0.6 + e^0) − 0.6 = log(1 + e^{−0.6}); row 1: log(e^{−0.6} + e^0) − 0 = the same. ≈ 0.437488.
  embeddings = jnp.asarray([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0], [0.0, 1.0]])
  value = losses.npair(embeddings, _SQUARE_LABELS)
  np.testing.assert_allclose(value, math.log(1 + math.exp(-0.6)), rtol=1e-6)
  np.testing.assert_allclose(math.log(1 + math.exp(-0.6)), 0.437488, rtol=1e-5)


def test_lifted_structure_constant():
  # Pair (0,1), d = √2: negatives of 0 are 2 (d = 2) and 3 (√2), of 1 are 2 (√2) and 3 (2).
  # J = log(2e^{1−2} + 2e^{1−√2}) + √2 ≈ 0.721481 + 1.414214 = 2.135695; all four ordered pairs alike: ½J² ≈ 2.280596.
  value = losses.lifted_structure(_SQUARE, _SQUARE_LABELS)
  j = math.log(2 * math.exp(-1) + 2 * math.exp(1 - _SQRT2)) + _SQRT2
  np.testing.assert_allclose(value, 0.5 * j * j, rtol=1e-6)
  np.testing.assert_allclose(0.5 * j * j, 2.280596, rtol=1e-6)


def test_generalized_lifted_structure_constant():
  # Anchor 0: log e^{√2 − 0} = √2 for its one positive; log(e^{1−2} + e^{1−√2}) ≈ 0.028334 for its negatives.
  # [√2 + 0.028334]₊ ≈ 1.442548, the same for every anchor.
  value = losses.generalized_lifted_structure(_SQUARE, _SQUARE_LABELS)
  expected = _SQRT2 + math.log(math.exp(-1) + math.exp(1 - _SQRT2))
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  np.testing.assert_allclose(expected, 1.442548, rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# 5. jit = eager, permutation invariance, bf16, distance zero, empty sets, random inputs.


def _call(name: str, embeddings, labels, proxies=None, **kwargs):
  if name == "proxy_anchor":
    return losses.proxy_anchor(embeddings, labels, proxies, **kwargs)
  return losses.LOSSES[name](embeddings, labels, **kwargs)


@pytest.mark.parametrize("name", _DEFAULT_CONFIGS)
def test_jit_equals_eager(name):
  embeddings, labels = _SMALL["m_per_class"]
  proxies = _proxies_like(embeddings)
  eager = _call(name, jnp.asarray(embeddings), jnp.asarray(labels), jnp.asarray(proxies))
  jitted, _ = _ours(name)(jnp.asarray(embeddings), jnp.asarray(labels), jnp.asarray(proxies))
  np.testing.assert_allclose(jitted, eager, rtol=1e-6)


@pytest.mark.parametrize("name", _DEFAULT_CONFIGS)
def test_permutation_invariance(name):
  embeddings, labels = _SMALL["random_labels"]
  value, grad, proxy_grad = _run_ours(name, embeddings, labels)
  order = np.random.default_rng(3).permutation(len(labels))
  if name == "npair":
    # N-pair's anchor is each class's first occurrence and its positive the second: only permutations that keep the
    # order within each class leave it unchanged (swapping the two swaps anchor and positive, another loss).
    for label in np.unique(labels):
      slots = np.flatnonzero(labels[order] == label)
      order[slots] = np.flatnonzero(labels == label)
  permuted_value, permuted_grad, permuted_proxy_grad = _run_ours(name, embeddings[order], labels[order])
  np.testing.assert_allclose(permuted_value, value, rtol=1e-5)
  _assert_gradients_close(permuted_grad, grad[order], embeddings[order])
  np.testing.assert_allclose(permuted_proxy_grad, proxy_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", _DEFAULT_CONFIGS)
def test_bfloat16_embeddings_give_float32_close_to_float32(name):
  embeddings, labels = _SMALL["m_per_class"]
  embeddings = jnp.asarray(embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True), jnp.bfloat16)
  proxies = jnp.asarray(_proxies_like(np.zeros((24, 8), np.float32)))
  value, (grad, _) = _ours(name, "bfloat16")(embeddings, jnp.asarray(labels), proxies)
  reference, (reference_grad, _) = _ours(name)(embeddings.astype(jnp.float32), jnp.asarray(labels), proxies)
  assert value.dtype == jnp.float32 and grad.dtype == jnp.bfloat16
  assert np.all(np.isfinite(np.asarray(grad, np.float32)))
  # Same (bf16-representable) inputs: the only difference is that l2_normalize returns bf16, i.e. the normalised rows
  # are rounded again (relative error ≤ 2^-9 per coordinate) before the float32-accumulated Gram matrix.
  np.testing.assert_allclose(value, reference, rtol=1e-2)
  np.testing.assert_allclose(np.asarray(grad, np.float32), reference_grad, atol=2e-2 * np.abs(reference_grad).max())


@pytest.mark.parametrize("name", _DEFAULT_CONFIGS)
def test_identical_rows_give_zero_gradient(name):
  # All rows equal: every Euclidean distance is 0 (safe sqrt: zero gradient) and every cosine is 1 (its gradient
  # (I − uuᵀ)u/‖x‖ = 0), so each loss is finite with a zero gradient, whichever of its parts are active.
  embeddings = np.tile(np.asarray([[0.3, -1.2, 0.5, 2.0, 0.0, 0.1, -0.7, 1.1]], np.float32), (24, 1))
  labels = np.repeat(np.arange(6), 4)
  proxies = embeddings  # for proxy anchor: every proxy in the same direction, every cosine 1
  value, (grad, proxy_grad) = _ours(name)(jnp.asarray(embeddings), jnp.asarray(labels), jnp.asarray(proxies))
  assert np.isfinite(value)
  np.testing.assert_allclose(grad, 0.0, atol=1e-6)
  np.testing.assert_allclose(proxy_grad, 0.0, atol=1e-6)


_EMPTY_CASES = [
    # Losses built from (positive, negative) combinations are 0 without negatives or without positives.
    pytest.param("triplet", "one_class"),
    pytest.param("triplet", "all_distinct"),
    pytest.param("npair", "one_class"),
    pytest.param("npair", "all_distinct"),
    pytest.param("lifted_structure", "one_class"),
    pytest.param("lifted_structure", "all_distinct"),
]


@pytest.mark.parametrize("name, batch", _EMPTY_CASES)
def test_empty_tuple_sets_give_zero(name, batch):
  value, grad, _ = _run_ours(name, *_SMALL[batch])
  assert value == 0.0
  assert np.all(grad == 0.0)


@pytest.mark.parametrize("config", ["contrastive_margins", "multi_similarity", "generalized_lifted_structure"])
@pytest.mark.parametrize("batch", ["one_class", "all_distinct"])
def test_empty_part_drops_out(config, batch):
  # Losses that add a positive and a negative part keep the non-empty one: the value equals the matrix form with the
  # other part's weights all 0, and is positive (the margins are wide enough for every pair to contribute).
  embeddings, labels = _SMALL[batch]
  value, grad, _ = _run_ours(config, embeddings, labels)
  assert np.all(np.isfinite(grad))
  name, kwargs = config.removesuffix("_margins"), _CONFIGS[config][1]
  s, y, valid = losses.batch_matrices(jnp.asarray(embeddings), jnp.asarray(labels), metric=losses.MATRIX_METRIC[name])
  only_part = jnp.ones_like(y) if batch == "one_class" else jnp.zeros_like(y)
  np.testing.assert_allclose(value, losses.MATRIX_LOSSES[name](s, only_part, valid, **kwargs), rtol=1e-6)
  assert value > 0


_MAX_DIM = 8


@st.composite
def _batches(draw):
  # Each new row count compiles every loss (~1 s per loss on a busy 2-core CPU), so row counts come from a grid: two
  # points, an odd small size, and 24 (compiled already for the PML tests). The dimension is free in 1..8: rows are
  # zero-padded to 8 columns, which leaves every norm, distance and cosine (and the gradient on the real columns)
  # unchanged, so one program serves all dimensions.
  num_rows = draw(st.sampled_from([2, 5, 24]))
  dim = draw(st.integers(1, _MAX_DIM))
  elements = st.one_of(
      st.just(0.0), st.floats(-1e4, 1e4, width=32), st.sampled_from([1.0, -1.0, 1e-6, -1e-30, 3e4, -3e4])
  )
  embeddings = draw(hnp.arrays(np.float32, (num_rows, dim), elements=elements))
  if draw(st.booleans()):  # copies of the first row: d = 0 pairs within and across classes
    copies = draw(st.lists(st.integers(0, num_rows - 1), max_size=num_rows))
    embeddings[copies] = embeddings[0]
  labels = draw(hnp.arrays(np.int32, (num_rows,), elements=st.integers(0, 2)))
  proxies = draw(hnp.arrays(np.float32, (_num_proxies(24), dim), elements=elements))
  pad = ((0, 0), (0, _MAX_DIM - dim))
  return np.pad(embeddings, pad), labels, np.pad(proxies, pad)


@hypothesis.settings(max_examples=30, deadline=None, derandomize=True)
@hypothesis.given(_batches())
def test_random_batches_give_finite_values_and_gradients(batch):
  embeddings, labels, proxies = (jnp.asarray(x) for x in batch)
  for name in _DEFAULT_CONFIGS:
    value, (grad, proxy_grad) = _ours(name)(embeddings, labels, proxies)
    assert np.isfinite(value), name
    assert np.all(np.isfinite(grad)) and np.all(np.isfinite(proxy_grad)), name


# ----------------------------------------------------------------------------------------------------------------------
# 6. Reference columns and input errors.


def test_reference_columns_equal_matrix_form_on_concatenated_candidates():
  rng = np.random.default_rng(21)
  embeddings, labels = rng.normal(size=(6, 4)).astype(np.float32), rng.integers(0, 3, size=6)
  ref, ref_labels = rng.normal(size=(5, 4)).astype(np.float32), rng.integers(0, 3, size=5)
  # Hand-built candidate set [batch; reference] in float64; only the batch's self-pairs are invalid.
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
  candidates = np.concatenate([unit(embeddings.astype(np.float64)), unit(ref.astype(np.float64))])
  distance = np.linalg.norm(unit(embeddings.astype(np.float64))[:, None] - candidates[None], axis=-1)
  y = (labels[:, None] == np.concatenate([labels, ref_labels])[None]).astype(np.float32)
  valid = 1.0 - np.eye(6, 11, dtype=np.float32)
  for name in ("contrastive", "triplet", "lifted_structure", "generalized_lifted_structure"):
    value = losses.LOSSES[name](
        jnp.asarray(embeddings), jnp.asarray(labels), ref_embeddings=jnp.asarray(ref), ref_labels=jnp.asarray(ref_labels)
    )
    expected = losses.MATRIX_LOSSES[name](jnp.asarray(distance, jnp.float32), y, valid)
    np.testing.assert_allclose(value, expected, rtol=1e-5, err_msg=name)
  ms = losses.multi_similarity(
      jnp.asarray(embeddings), jnp.asarray(labels), ref_embeddings=jnp.asarray(ref), ref_labels=jnp.asarray(ref_labels)
  )
  cosine = unit(embeddings.astype(np.float64)) @ candidates.T
  np.testing.assert_allclose(ms, losses.multi_similarity_from_matrix(jnp.asarray(cosine, jnp.float32), y, valid), rtol=1e-5)
  # And the contrastive value itself, from the loop reference.
  np.testing.assert_allclose(
      losses.contrastive(jnp.asarray(embeddings), jnp.asarray(labels), ref_embeddings=ref, ref_labels=ref_labels),
      loop_contrastive(distance, y, valid),
      rtol=1e-5,
  )


_E, _L = jnp.ones((4, 3)), jnp.asarray([0, 0, 1, 1])


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: losses.contrastive(jnp.ones(4), _L), id="1-D embeddings"),
        pytest.param(lambda: losses.triplet(_E, jnp.asarray([0, 1, 1])), id="labels too short"),
        pytest.param(lambda: losses.multi_similarity(_E, _L[:, None]), id="2-D labels"),
        pytest.param(lambda: losses.npair(_E, jnp.asarray([0.0, 0.0, 1.0, 1.0])), id="float labels"),
        pytest.param(lambda: losses.lifted_structure(_E, _L, ref_embeddings=_E), id="ref without labels"),
        pytest.param(lambda: losses.contrastive(_E, _L, ref_labels=_L), id="ref labels without embeddings"),
        pytest.param(
            lambda: losses.triplet(_E, _L, ref_embeddings=_E, ref_labels=_L.astype(jnp.float32)), id="float ref labels"
        ),
        pytest.param(lambda: losses.contrastive(_E, _L, ref_embeddings=jnp.ones((4, 5)), ref_labels=_L), id="ref dim"),
        pytest.param(lambda: losses.proxy_anchor(_E, _L, jnp.ones((2, 5))), id="proxy dim"),
        pytest.param(lambda: losses.proxy_anchor(_E, _L, jnp.ones(3)), id="1-D proxies"),
        pytest.param(lambda: losses.contrastive(_E, _L, reducer="median"), id="unknown reducer"),
        pytest.param(
            lambda: losses.triplet_from_matrix(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((3, 2))), id="mismatched"
        ),
        pytest.param(lambda: losses.npair_from_matrix(jnp.ones(3), jnp.ones(3), jnp.ones(3)), id="1-D matrices"),
        pytest.param(
            lambda: losses.lifted_structure_from_matrix(jnp.ones((3, 2)), jnp.ones((3, 2)), jnp.ones((3, 2))),
            id="lifted with fewer candidates than anchors",
        ),
        pytest.param(lambda: losses.batch_matrices(_E, _L, metric="manhattan"), id="unknown metric"),
    ],
)
def test_bad_inputs_raise_value_error(call):
  with pytest.raises(ValueError):
    call()


def test_distance_zero_is_exact_inside_losses():
  # Within a jitted loss the self-distances and duplicate distances that the loss sees are exactly 0.
  embeddings, labels = _SMALL["duplicates_other_class"]
  s, _, _ = jax.jit(losses.batch_matrices)(jnp.asarray(embeddings), jnp.asarray(labels))
  s = np.asarray(s)
  assert np.all(np.diagonal(s) == 0.0)
  for i, j in [(0, 1), (2, 3), (0, 10), (11, 12)]:
    assert s[i, j] == 0.0 and s[j, i] == 0.0


def test_multi_similarity_miner_on_a_hand_example():
  """One anchor: positives at s = 0.9, 0.5 and negatives at s = 0.6, 0.1 (ε = 0.1). Keep the positive with
  s − ε < max_n s = 0.6 (0.5, not 0.9) and the negative with s + ε > min_p s = 0.5 (0.6, not 0.1); a soft pair
  (y = 0.3) stays; an anchor without negatives keeps nothing."""
  s = jnp.array([[0.9, 0.5, 0.6, 0.1, 0.2], [0.9, 0.5, 0.6, 0.1, 0.2]])
  y = jnp.array([[1.0, 1.0, 0.0, 0.0, 0.3], [1.0, 1.0, 1.0, 1.0, 1.0]])
  valid = jnp.ones_like(s)
  mined = losses.multi_similarity_miner(s, y, valid, epsilon=0.1)
  np.testing.assert_array_equal(mined, [[0, 1, 1, 0, 1], [0, 0, 0, 0, 0]])


def test_mining_changes_the_loss_on_a_clustered_batch():
  """4 noisy clusters: the miner keeps some pairs and drops others, so the loss drops but stays positive."""
  rng = np.random.default_rng(3)
  labels = np.repeat(np.arange(4), 6)
  embeddings = np.eye(8, dtype=np.float32)[labels] + 0.6 * rng.normal(size=(24, 8)).astype(np.float32)
  s, y, valid = losses.batch_matrices(jnp.asarray(embeddings), jnp.asarray(labels), metric="cosine")
  kept = float(jnp.sum(losses.multi_similarity_miner(s, y, valid, epsilon=0.1)))
  assert 0 < kept < float(jnp.sum(valid))
  kwargs = {"alpha": 2.0, "beta": 50.0, "base": 0.5}
  mined = losses.multi_similarity(jnp.asarray(embeddings), jnp.asarray(labels), miner_epsilon=0.1, **kwargs)
  plain = losses.multi_similarity(jnp.asarray(embeddings), jnp.asarray(labels), **kwargs)
  assert 0 < float(mined) < float(plain)  # dropping pairs only removes terms from each log(1 + Σ …)


def test_npair_max_pairs_of_an_m_per_class_batch_is_the_same_loss():
  """B / m slots hold every (anchor, positive) of an m-per-class batch (the training program's setting for N-pair
  with the m-per-class sampler); fewer slots drop anchors."""
  embeddings, labels = _LARGE["m_per_class_128"]
  e, l = jnp.asarray(embeddings), jnp.asarray(labels)
  full, full_grad = jax.value_and_grad(losses.npair)(e, l)
  fitted, fitted_grad = jax.value_and_grad(functools.partial(losses.npair, max_pairs=128 // 4))(e, l)
  np.testing.assert_allclose(fitted, full, rtol=1e-6)
  np.testing.assert_allclose(fitted_grad, full_grad, rtol=1e-5, atol=1e-7)
  assert not np.isclose(float(losses.npair(e, l, max_pairs=16)), float(full), rtol=1e-4)


@pytest.mark.parametrize("num_classes", [3, 4, 6, 12, 30, 32])
def test_npair_default_slots_follow_the_batch(num_classes):
  """The default picks the smallest of B/16, B/8, B/4, B/2 slots that holds every anchor (here 4, 8, 16, 32 for
  B = 64; class counts on both sides of each boundary), and gives the loss and gradient of B/2 slots."""
  rng = np.random.default_rng(num_classes)
  labels = jnp.asarray(rng.permutation(np.arange(64) % num_classes))
  embeddings = jnp.asarray(rng.normal(size=(64, 8)), jnp.float32)
  default, default_grad = jax.jit(jax.value_and_grad(losses.npair))(embeddings, labels)
  half, half_grad = jax.value_and_grad(functools.partial(losses.npair, max_pairs=32))(embeddings, labels)
  np.testing.assert_allclose(default, half, rtol=1e-6)
  np.testing.assert_allclose(default_grad, half_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss, expected", [("npair", {"max_pairs": 16}), ("triplet", {"max_positives": 3})])
def test_baseline_sizes_npair_and_triplet_for_its_m_per_class_sampler(loss, expected):
  from metriclearn import methods, models
  config = ml_collections.ConfigDict(dict(
      loss=dict(name=loss, kwargs={}), method=dict(name="baseline", kwargs={}), batch_size=64,
      sampler=dict(name="m_per_class", kwargs=dict(m=4))))
  method = methods.create_method(config, models.create_model("mlp", embedding_dim=8), num_classes=10)
  assert method.loss_fn.keywords == expected


@pytest.mark.parametrize("kwargs", [{}, {"margin": 0.5}, {"squared": True, "margin": 0.2}])
def test_triplet_over_the_m_minus_1_positives_of_an_m_per_class_batch_is_the_same_loss(kwargs):
  embeddings, labels = _LARGE["m_per_class_128"]
  e, l = jnp.asarray(embeddings), jnp.asarray(labels)
  full, full_grad = jax.value_and_grad(functools.partial(losses.triplet, **kwargs))(e, l)
  direct, direct_grad = jax.value_and_grad(functools.partial(losses.triplet, max_positives=3, **kwargs))(e, l)
  np.testing.assert_allclose(direct, full, rtol=1e-6)
  _assert_gradients_close(np.asarray(direct_grad), np.asarray(full_grad), embeddings)
  assert not np.isclose(float(losses.triplet(e, l, max_positives=1, **kwargs)), float(full), rtol=1e-4)


def test_triplet_over_all_positives_equals_the_sorted_form_with_soft_labels():
  """K = B − 1 positive slots hold every candidate of a row (the diagonal is invalid), so the direct hinges equal
  the sort-based computation for soft labels too, (a, p, p) excluded in both."""
  rng = np.random.default_rng(11)
  distance = jnp.asarray(rng.uniform(0, 2, size=(12, 12)).astype(np.float32))
  y = jnp.asarray(rng.uniform(0, 1, size=(12, 12)).astype(np.float32))
  valid = 1.0 - jnp.eye(12)
  sorted_form = jax.value_and_grad(losses.triplet_from_matrix)(distance, y, valid, margin=0.3)
  direct = jax.value_and_grad(functools.partial(losses.triplet_from_matrix, max_positives=11))(distance, y, valid,
                                                                                               margin=0.3)
  np.testing.assert_allclose(direct[0], sorted_form[0], rtol=1e-5)
  np.testing.assert_allclose(direct[1], sorted_form[1], rtol=1e-5, atol=1e-7)
