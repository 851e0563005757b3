"""Tests for metriclearn.pair_losses: PML 2.9 parity of values and gradients (β's included), loop references of the
matrix forms with soft labels, hand-computed constants, jit = eager, permutation invariance, bf16, distance zero,
empty sets, reference columns, input errors, and a 2-step training run of each glyph recipe.

The batches are tests/test_losses.py's (24 rows with duplicates, no positives, one class, …, and 128 rows).
"""

from __future__ import annotations

import functools
import math
import os

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import regularizers as pml_regularizers

from metriclearn import config_util
from metriclearn import distances
from metriclearn import losses
from metriclearn import memory
from metriclearn import pair_losses
from metriclearn import train
from test_losses import _LARGE, _SMALL, _batches

NUM_BETAS = 32  # per-class β: as many as the labels of any test batch need (≤ 32 classes)

# name -> (loss name, keyword arguments, PML factory, β: None | "scalar" | "per_class")
_CONFIGS = {
    "ntxent": ("ntxent", {}, pml_losses.NTXentLoss, None),
    "ntxent_0.5": ("ntxent", {"temperature": 0.5}, lambda: pml_losses.NTXentLoss(temperature=0.5), None),
    "supcon": ("supcon", {}, pml_losses.SupConLoss, None),
    "supcon_0.5": ("supcon", {"temperature": 0.5}, lambda: pml_losses.SupConLoss(temperature=0.5), None),
    "circle": ("circle", {}, pml_losses.CircleLoss, None),
    "circle_face": ("circle", {"m": 0.25, "gamma": 256.0}, lambda: pml_losses.CircleLoss(m=0.25, gamma=256), None),
    "margin": ("margin", {}, pml_losses.MarginLoss, None),
    "margin_hparams": ("margin", {"margin": 0.1, "beta": 0.8},
                       lambda: pml_losses.MarginLoss(margin=0.1, beta=0.8), None),
    "margin_learned": ("margin", {"nu": 0.1, "learn_beta": True},
                       lambda: pml_losses.MarginLoss(nu=0.1, learn_beta=True), "scalar"),
    "margin_per_class": ("margin", {"nu": 0.1, "learn_beta": True, "num_classes": NUM_BETAS},
                         lambda: pml_losses.MarginLoss(nu=0.1, learn_beta=True, num_classes=NUM_BETAS), "per_class"),
    "fastap": ("fastap", {}, pml_losses.FastAPLoss, None),
    "fastap_5": ("fastap", {"num_bins": 5}, lambda: pml_losses.FastAPLoss(num_bins=5), None),
    "snr_contrastive": ("snr_contrastive", {}, pml_losses.SignalToNoiseRatioContrastiveLoss, None),
    "snr_contrastive_regularized": (
        "snr_contrastive", {"pos_margin": 0.1, "neg_margin": 0.8, "regularizer_weight": 0.1},
        lambda: pml_losses.SignalToNoiseRatioContrastiveLoss(
            pos_margin=0.1, neg_margin=0.8, embedding_regularizer=pml_regularizers.ZeroMeanRegularizer(),
            embedding_reg_weight=0.1),
        None),
}
_DEFAULTS = list(pair_losses.LOSSES)


def _initial_beta(config: str) -> np.ndarray:
  """β as PML's learnable parameter would hold it after some training: 1.2 shifted per class, so classes differ."""
  mode = _CONFIGS[config][3]
  if mode == "per_class":
    return (1.2 + np.linspace(-0.3, 0.3, NUM_BETAS)).astype(np.float32)
  return np.asarray(1.1 if mode == "scalar" else 0.0, np.float32)


@functools.lru_cache(maxsize=None)
def _ours(config: str, dtype: str = "float32"):
  """Jitted `(embeddings, labels, β) -> (value, (d/dembeddings, d/dβ))`; built once per config (and dtype)."""
  del dtype  # only part of the cache key
  name, kwargs, _, mode = _CONFIGS[config]
  fn = pair_losses.LOSSES[name]
  if mode is None:
    loss = lambda e, l, b: fn(e, l, **kwargs) + 0.0 * b  # noqa: E731  (β unused: its gradient is 0)
  else:
    loss = lambda e, l, b: fn(e, l, b, **kwargs)  # noqa: E731
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 2)))


def _run_ours(config, embeddings, labels):
  value, (grad, beta_grad) = _ours(config)(jnp.asarray(embeddings), jnp.asarray(labels),
                                           jnp.asarray(_initial_beta(config)))
  return float(value), np.asarray(grad), np.asarray(beta_grad)


def _pml(config, embeddings, labels):
  loss_fn = _CONFIGS[config][2]()
  if _CONFIGS[config][3] is not None:
    # β as a float64 parameter (the loss still computes in float32: PML casts the gathered β to the embeddings'
    # dtype). PML gathers one β per triplet and its backward adds the ~10⁴ per-triplet gradients of a class one by one
    # into a float32 β: relative error up to ~10⁴·2⁻²⁴ ≈ 6e-4 at B = 128 (measured 2.4e-4 against a float64 NumPy
    # evaluation, which ours matches to 1e-7). Into a float64 β that sum is exact enough to be the reference.
    loss_fn.beta = torch.nn.Parameter(torch.tensor(_initial_beta(config), dtype=torch.float64).reshape(
        loss_fn.beta.shape))
  embeddings_t = torch.tensor(embeddings, requires_grad=True)
  value = loss_fn(embeddings_t, torch.tensor(labels))
  value.backward()
  beta_grad = np.zeros_like(_initial_beta(config))
  if _CONFIGS[config][3] is not None and loss_fn.beta.grad is not None:
    beta_grad = loss_fn.beta.grad.numpy().astype(np.float32).reshape(beta_grad.shape)
  return value.item(), embeddings_t.grad.numpy(), beta_grad


def _assert_gradients_close(ours, theirs, embeddings, config=""):
  # The losses depend on the directions x/‖x‖ (the SNR regulariser aside), so ∂L/∂x scales as 1/‖x‖: compare
  # ‖x‖·∂L/∂x. Float32 rounding of the logits (up to γ·(1 + m)·1 ≈ 112 for circle, 1/τ ≈ 14 for NT-Xent) is
  # ~1e-7 of their size and reaches the gradient relative to its largest entry, hence the atol on that scale.
  scale = np.linalg.norm(embeddings, axis=1, keepdims=True)
  if config == "snr_contrastive_regularized":
    scale = np.ones_like(scale)  # the regulariser's gradient, sign(Σx), does not scale with 1/‖x‖
  ours, theirs = ours * scale, theirs * scale
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=max(1e-6, 1e-5 * np.abs(theirs).max()), err_msg=config)


def _parity_cases():
  for config in _CONFIGS:
    for batch in _SMALL:
      yield pytest.param(config, batch, id=f"{config}-{batch}")
  for config in _DEFAULTS + ["margin_per_class"]:
    for batch in _LARGE:
      yield pytest.param(config, batch, id=f"{config}-{batch}")


# ----------------------------------------------------------------------------------------------------------------------
# 1. Parity with pytorch-metric-learning 2.9.


@pytest.mark.parametrize("config, batch", list(_parity_cases()))
def test_matches_pml(config, batch):
  embeddings, labels = {**_SMALL, **_LARGE}[batch]
  value, grad, beta_grad = _run_ours(config, embeddings, labels)
  pml_value, pml_grad, pml_beta_grad = _pml(config, embeddings, labels)
  np.testing.assert_allclose(value, pml_value, rtol=1e-5, atol=1e-6)
  _assert_gradients_close(grad, pml_grad, embeddings, config)
  np.testing.assert_allclose(beta_grad, pml_beta_grad, rtol=1e-5, atol=1e-6)
  assert np.all(np.isfinite(grad)) and np.all(np.isfinite(beta_grad))


# ----------------------------------------------------------------------------------------------------------------------
# 2. Matrix forms with soft labels against float64 loops (candidate x: positive with weight y, negative with 1 − y).


def _log_sum(terms):
  return math.log(sum(terms)) if terms else None


def loop_ntxent(s, y, v, *, temperature=0.07):
  weighted, weight = 0.0, 0.0
  for a in range(s.shape[0]):
    negatives = [(1 - y[a, n]) * math.exp(s[a, n] / temperature) for n in range(s.shape[1]) if v[a, n]]
    for p in range(s.shape[1]):
      if v[a, p] and y[a, p] > 0:
        ratio = math.exp(s[a, p] / temperature) / (math.exp(s[a, p] / temperature) + sum(negatives))
        weighted += y[a, p] * -math.log(ratio)
        weight += y[a, p]
  return weighted / weight if weight else 0.0


def loop_supcon(s, y, v, *, temperature=0.1):
  per_anchor = []
  for a in range(s.shape[0]):
    candidates = [x for x in range(s.shape[1]) if v[a, x]]
    mass = sum(y[a, x] for x in candidates)
    if not mass:
      continue
    log_denominator = math.log(sum(math.exp(s[a, x] / temperature) for x in candidates))
    per_anchor.append(sum(y[a, x] * (log_denominator - s[a, x] / temperature) for x in candidates) / mass)
  positive = [value for value in per_anchor if value > 0]
  return sum(positive) / len(positive) if positive else 0.0


def loop_circle(s, y, v, *, m=0.4, gamma=80.0):
  per_anchor = []
  for a in range(s.shape[0]):
    pos = [y[a, x] * math.exp(-gamma * max(1 + m - s[a, x], 0) * (s[a, x] - 1 + m))
           for x in range(s.shape[1]) if v[a, x] and y[a, x] > 0]
    neg = [(1 - y[a, x]) * math.exp(gamma * max(s[a, x] + m, 0) * (s[a, x] - m))
           for x in range(s.shape[1]) if v[a, x] and y[a, x] < 1]
    if pos and neg:
      per_anchor.append(math.log1p(sum(pos) * sum(neg)))
  positive = [value for value in per_anchor if value > 0]
  return sum(positive) / len(positive) if positive else 0.0


def loop_margin(d, y, v, *, margin=0.2, beta=1.2):
  total, count = 0.0, 0
  for a in range(d.shape[0]):
    for p in range(d.shape[1]):
      for n in range(d.shape[1]):
        if p != n and v[a, p] and v[a, n] and y[a, p] > 0 and y[a, n] < 1:
          weight = y[a, p] * (1 - y[a, n])
          pos, neg = max(d[a, p] - beta + margin, 0.0), max(beta - d[a, n] + margin, 0.0)
          total += weight * (pos + neg)
          count += int(pos > 0) + int(neg > 0)  # (NumPy bools would add as a logical or)
  return total / count if count else 0.0


def loop_fastap(d, y, v, *, num_bins=10):
  delta = 4.0 / num_bins
  per_anchor = []
  for a in range(d.shape[0]):
    pos_hist, all_hist = [0.0] * (num_bins + 1), [0.0] * (num_bins + 1)
    for x in range(d.shape[1]):
      if v[a, x]:
        for k in range(num_bins + 1):
          kernel = max(1 - abs(d[a, x] - k * delta) / delta, 0.0)
          pos_hist[k] += y[a, x] * kernel
          all_hist[k] += kernel
    num_positive = sum(y[a, x] for x in range(d.shape[1]) if v[a, x])
    if num_positive:
      fast_ap = sum(pos_hist[k] * sum(pos_hist[:k + 1]) / sum(all_hist[:k + 1])
                    for k in range(num_bins + 1) if pos_hist[k] > 0)
      per_anchor.append(1 - fast_ap / num_positive)
  return sum(per_anchor) / len(per_anchor) if per_anchor else 0.0


_SOFT_CASES = {
    "ntxent": (loop_ntxent, {"temperature": 0.5}, "similarity"),
    "supcon": (loop_supcon, {"temperature": 0.5}, "similarity"),
    "circle": (loop_circle, {"m": 0.25, "gamma": 4.0}, "similarity"),
    "margin": (loop_margin, {"margin": 0.2, "beta": 1.0}, "distance"),
    "fastap": (loop_fastap, {"num_bins": 10}, "squared_distance"),
}


def _soft_matrices(seed: int, kind: str, num_anchors: int = 6, num_candidates: int = 9):
  """Random s, soft y ∈ [0, 1] with exact 0s and 1s, a random valid mask (every row with a negative)."""
  rng = np.random.default_rng(seed)
  low, high = {"similarity": (-1.0, 1.0), "distance": (0.0, 2.0), "squared_distance": (0.0, 4.0)}[kind]
  s = rng.uniform(low, high, size=(num_anchors, num_candidates))
  y = rng.uniform(size=s.shape)
  y[rng.uniform(size=y.shape) < 0.3] = 0.0
  y[rng.uniform(size=y.shape) < 0.3] = 1.0
  valid = (rng.uniform(size=y.shape) < 0.8).astype(np.float64)
  valid[:, 0], y[:, 0] = 1.0, 0.0
  return s.astype(np.float32), y.astype(np.float32), valid.astype(np.float32)


@pytest.mark.parametrize("case", list(_SOFT_CASES))
def test_matrix_form_matches_soft_label_loop(case):
  loop_fn, kwargs, kind = _SOFT_CASES[case]
  matrix_loss = jax.jit(functools.partial(pair_losses.MATRIX_LOSSES[case], **kwargs))
  for seed in range(4):
    s, y, valid = _soft_matrices(seed, kind)
    expected = loop_fn(s.astype(np.float64), y.astype(np.float64), valid.astype(np.float64), **kwargs)
    np.testing.assert_allclose(matrix_loss(s, y, valid), expected, rtol=1e-5, atol=1e-6, err_msg=f"seed {seed}")


@pytest.mark.parametrize("case", list(pair_losses.MATRIX_LOSSES))
def test_matrix_form_with_nothing_valid_is_zero_with_zero_gradient(case):
  s, y, _ = _soft_matrices(0, "distance")
  value, grad = jax.value_and_grad(pair_losses.MATRIX_LOSSES[case])(jnp.asarray(s), y, np.zeros_like(y))
  assert float(value) == 0.0
  assert np.all(np.asarray(grad) == 0.0)


# ----------------------------------------------------------------------------------------------------------------------
# 3. Hand-computed constants. The unit square's corners: adjacent points have cosine 0 (squared distance 2, distance
# √2), opposite ones cosine −1 (squared distance 4, distance 2).

_SQUARE = jnp.asarray([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
_PAIRS = jnp.asarray([0, 0, 1, 1])  # adjacent points share a class


def test_ntxent_constant():
  # Anchor 0: positive 1 (cosine 0), negatives 2 (−1) and 3 (0). τ = 0.5: −log(e^0 / (e^0 + e^{−2} + e^0)) =
  # log(2 + e^{−2}) ≈ 0.758624 for every ordered positive pair.
  np.testing.assert_allclose(pair_losses.ntxent(_SQUARE, _PAIRS, temperature=0.5), math.log(2 + math.exp(-2)),
                             rtol=1e-6)
  np.testing.assert_allclose(math.log(2 + math.exp(-2)), 0.758624, rtol=1e-6)


def test_supcon_constant():
  # Labels 0, 0, 0, 1; τ = 1; D = log(e^0 + e^{−1} + e^0) is every anchor's denominator. Anchor 0: positives 1 (0),
  # 2 (−1): D + ½; anchor 1: positives 0 (0), 2 (0): D; anchor 2: like anchor 0; anchor 3 has no positive (excluded).
  # Mean over the three: D + 1/3 ≈ 1.195327.
  value = pair_losses.supcon(_SQUARE, jnp.asarray([0, 0, 0, 1]), temperature=1.0)
  expected = math.log(2 + math.exp(-1)) + 1 / 3
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  np.testing.assert_allclose(expected, 1.195327, rtol=1e-6)


def test_circle_constant():
  # m = 0.25, γ = 1. Anchor 0: positive s = 0: α_p = 1.25, logit −1.25·(0 − 0.75) = 0.9375; negatives s = −1
  # (α_n = [−0.75]₊ = 0, logit 0) and s = 0 (α_n = 0.25, logit 0.25·(0 − 0.25) = −0.0625).
  # softplus(0.9375 + log(1 + e^{−0.0625})) = log(1 + e^{0.9375}(1 + e^{−0.0625})) ≈ 1.783805, every anchor.
  value = pair_losses.circle(_SQUARE, _PAIRS, m=0.25, gamma=1.0)
  expected = math.log1p(math.exp(0.9375) * (1 + math.exp(-0.0625)))
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  np.testing.assert_allclose(expected, 1.783805, rtol=1e-6)


def test_margin_constant():
  # β = 1.5, α = 0.2. Anchor 0: positive at √2 → [√2 − 1.3]₊ ≈ 0.1142 in both of its triplets; negatives at 2 →
  # [1.7 − 2]₊ = 0 and at √2 → 1.7 − √2 ≈ 0.2858. Per anchor: 2(√2 − 1.3) + (1.7 − √2) over 3 non-zero hinges; all
  # anchors alike: (√2 − 0.9)/3 ≈ 0.171405.
  value = pair_losses.margin(_SQUARE, _PAIRS, beta=1.5)
  np.testing.assert_allclose(value, (math.sqrt(2) - 0.9) / 3, rtol=1e-6)
  np.testing.assert_allclose((math.sqrt(2) - 0.9) / 3, 0.171405, rtol=1e-5)


def test_fastap_constant():
  # Labels 0, 1, 0, 1: anchor 0's positive is opposite (squared distance 4, the last bin), its negatives adjacent
  # (2, the middle bin). h⁺ = 1 at 4; H = 3 there, H⁺ = 1: FastAP = 1·1/3, loss 2/3 for every anchor.
  np.testing.assert_allclose(pair_losses.fastap(_SQUARE, jnp.asarray([0, 1, 0, 1])), 2 / 3, rtol=1e-6)


def test_snr_contrastive_constant():
  # In 2-D the centred unit rows are ±(½, −½): variance (up to the shared 1/(D − 1)) ½, and var(b − a) is 2 (opposite
  # centred rows) or 0, so d = 4 or 0. Positive pairs (0,1), (2,3): d = 4 → mean 4. Negative pairs: d = 0 for (0,3),
  # (1,2) and reverses → [1 − 0]₊ = 1, d = 4 for the others → 0, mean of the non-zero 1. The regulariser: |Σ_k x_k| = 1
  # for every row. Total 5 + 0.1.
  np.testing.assert_allclose(pair_losses.snr_contrastive(_SQUARE, _PAIRS), 5.0, rtol=1e-6)
  np.testing.assert_allclose(pair_losses.snr_contrastive(_SQUARE, _PAIRS, regularizer_weight=0.1), 5.1, rtol=1e-6)


def test_snr_distance_is_variance_ratio():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(5, 7)), rng.normal(size=(3, 7))
  expected = np.var(b[None] - a[:, None], axis=-1) / np.var(a, axis=-1)[:, None]
  np.testing.assert_allclose(distances.pairwise_snr(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)),
                             expected, rtol=1e-5)
  self_distance = np.asarray(distances.pairwise_snr(jnp.asarray(a, jnp.float32)))
  np.testing.assert_allclose(self_distance, np.var(a[None] - a[:, None], axis=-1) / np.var(a, axis=-1)[:, None],
                             rtol=1e-5, atol=1e-6)
  assert np.all(np.diagonal(self_distance) == 0.0)


# ----------------------------------------------------------------------------------------------------------------------
# 4. jit = eager, permutation invariance, bf16, distance zero, empty sets, random inputs.


def _call(config, embeddings, labels):
  name, kwargs, _, mode = _CONFIGS[config]
  beta = () if mode is None else (jnp.asarray(_initial_beta(config)),)
  return pair_losses.LOSSES[name](embeddings, labels, *beta, **kwargs)


@pytest.mark.parametrize("config", _DEFAULTS + ["margin_per_class"])
def test_jit_equals_eager(config):
  embeddings, labels = (jnp.asarray(x) for x in _SMALL["m_per_class"])
  jitted, _ = _ours(config)(embeddings, labels, jnp.asarray(_initial_beta(config)))
  np.testing.assert_allclose(jitted, _call(config, embeddings, labels), rtol=1e-6)


@pytest.mark.parametrize("config", _DEFAULTS + ["margin_per_class"])
def test_permutation_invariance(config):
  embeddings, labels = _SMALL["random_labels"]
  value, grad, beta_grad = _run_ours(config, embeddings, labels)
  order = np.random.default_rng(3).permutation(len(labels))
  permuted_value, permuted_grad, permuted_beta_grad = _run_ours(config, embeddings[order], labels[order])
  np.testing.assert_allclose(permuted_value, value, rtol=1e-5)
  _assert_gradients_close(permuted_grad, grad[order], embeddings[order], config)
  np.testing.assert_allclose(permuted_beta_grad, beta_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("config", _DEFAULTS)
def test_bfloat16_embeddings_give_float32_close_to_float32(config):
  embeddings, labels = _SMALL["m_per_class"]
  embeddings = jnp.asarray(embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True), jnp.bfloat16)
  beta = jnp.asarray(_initial_beta(config))
  value, (grad, _) = _ours(config, "bfloat16")(embeddings, jnp.asarray(labels), beta)
  reference, (reference_grad, _) = _ours(config)(embeddings.astype(jnp.float32), jnp.asarray(labels), beta)
  assert value.dtype == jnp.float32 and grad.dtype == jnp.bfloat16
  assert np.all(np.isfinite(np.asarray(grad, np.float32)))
  # Same bf16-representable inputs; the normalised rows are rounded to bf16 again (relative 2^-9 per coordinate)
  # before the float32-accumulated Gram matrix, and the gradient is rounded to bf16.
  np.testing.assert_allclose(value, reference, rtol=2e-2)
  grad = np.asarray(grad, np.float32)
  if config == "fastap":
    # FastAP's gradient is piecewise constant in d², with a slope of ±1/Δ that flips at each bin centre (every 0.4):
    # the bf16 rounding moves d² by ~1e-2, so the few pairs within that of a centre change sign. Measured: 4.6%.
    assert np.linalg.norm(grad - reference_grad) < 0.2 * np.linalg.norm(reference_grad)
  else:
    np.testing.assert_allclose(grad, reference_grad, atol=3e-2 * np.abs(reference_grad).max())


@pytest.mark.parametrize("config", _DEFAULTS + ["margin_per_class"])
def test_identical_rows_give_zero_gradient(config):
  # Every distance 0 (safe sqrt, centred Gram: zero gradient), every cosine 1 (its gradient (I − uuᵀ)u/‖x‖ = 0).
  embeddings = np.tile(np.asarray([[0.3, -1.2, 0.5, 2.0, 0.0, 0.1, -0.7, 1.1]], np.float32), (24, 1))
  value, grad, _ = _run_ours(config, embeddings, np.repeat(np.arange(6), 4))
  assert np.isfinite(value)
  np.testing.assert_allclose(grad, 0.0, atol=1e-6)


# Every loss here but SNR's needs both a positive and a negative pair (NT-Xent and FastAP: a positive pair; FastAP
# of one class is the perfect ranking, tested below); the contrastive loss on SNR distances keeps its non-empty part.
_EMPTY_CASES = [(config, batch) for config in _DEFAULTS + ["margin_learned", "margin_per_class"]
                for batch in ("one_class", "all_distinct")
                if config != "snr_contrastive" and (config, batch) != ("fastap", "one_class")]


@pytest.mark.parametrize("config, batch", _EMPTY_CASES)
def test_no_positive_or_no_negative_pair_gives_zero(config, batch):
  value, grad, beta_grad = _run_ours(config, *_SMALL[batch])
  assert value == 0.0
  assert np.all(grad == 0.0) and np.all(beta_grad == 0.0)


def test_snr_keeps_the_non_empty_part():
  embeddings, labels = _SMALL["all_distinct"]
  s, y, valid = losses.batch_matrices(jnp.asarray(embeddings), jnp.asarray(labels), metric="snr")
  value = pair_losses.snr_contrastive(jnp.asarray(embeddings), jnp.asarray(labels))
  np.testing.assert_allclose(value, losses.contrastive_from_matrix(s, jnp.zeros_like(y), valid, neg_margin=1.0),
                             rtol=1e-6)
  assert value > 0


def test_fastap_of_one_class_is_zero():
  embeddings, labels = _SMALL["one_class"]
  value, grad, _ = _run_ours("fastap", embeddings, labels)
  # Σ_k h⁺_k H⁺_k / H_k = Σ_k h⁺_k = N⁺ (the kernel weights of a distance sum to 1), up to float32 rounding; the
  # gradient (with respect to the directions: ‖x‖·∂L/∂x) is rounding noise as well.
  np.testing.assert_allclose(value, 0.0, atol=1e-6)
  np.testing.assert_allclose(grad * np.linalg.norm(embeddings, axis=1, keepdims=True), 0.0, atol=1e-6)


@hypothesis.settings(max_examples=20, deadline=None, derandomize=True)
@hypothesis.given(_batches())
def test_random_batches_give_finite_values_and_gradients(batch):
  embeddings, labels, _ = (jnp.asarray(x) for x in batch)
  for config in _DEFAULTS + ["margin_per_class", "snr_contrastive_regularized"]:
    value, (grad, beta_grad) = _ours(config)(embeddings, labels, jnp.asarray(_initial_beta(config)))
    assert np.isfinite(value), config
    assert np.all(np.isfinite(grad)) and np.all(np.isfinite(beta_grad)), config


# ----------------------------------------------------------------------------------------------------------------------
# 5. Reference columns (cross-batch memory), the learnable β's initialisation, input errors.


@pytest.mark.parametrize("name", _DEFAULTS)
def test_reference_columns_equal_the_memory_path(name):
  """`ref_embeddings` (the embedding form) and `memory.pair_loss` (the matrix form on [batch; memory]) agree, and
  equal the matrix form on hand-built concatenated candidates."""
  rng = np.random.default_rng(21)
  embeddings, labels = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32), jnp.asarray(rng.integers(0, 3, size=6))
  ref, ref_labels = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32), jnp.asarray(rng.integers(0, 3, size=5))
  assert name in memory.SUPPORTED_LOSSES
  value = losses.LOSSES[name](embeddings, labels, ref_embeddings=ref, ref_labels=ref_labels)
  through_memory = memory.pair_loss(name, {}, embeddings, labels,
                                    memory.Reference(ref, ref_labels, jnp.ones(5, bool)))
  np.testing.assert_allclose(through_memory, value, rtol=1e-6)
  unit = distances.l2_normalize
  candidates = jnp.concatenate([unit(embeddings), unit(ref)])
  s = distances.pairwise(unit(embeddings), candidates, metric=losses.MATRIX_METRIC[name])
  y = (labels[:, None] == jnp.concatenate([labels, ref_labels])[None]).astype(jnp.float32)
  valid = 1.0 - jnp.eye(6, 11)
  np.testing.assert_allclose(value, losses.MATRIX_LOSSES[name](s, y, valid), rtol=1e-5)
  # Masked memory slots drop out: the batch loss.
  masked = memory.pair_loss(name, {}, embeddings, labels, memory.Reference(ref, ref_labels, jnp.zeros(5, bool)))
  np.testing.assert_allclose(masked, losses.LOSSES[name](embeddings, labels), rtol=1e-6)


def test_init_margin_beta():
  rng = jax.random.PRNGKey(0)
  assert pair_losses.init_margin_beta(rng, 10, 8) is None  # a fixed β owns no array
  scalar = pair_losses.init_margin_beta(rng, 10, 8, learn_beta=True, beta=0.9)
  assert scalar.shape == () and float(scalar) == pytest.approx(0.9)
  per_class = pair_losses.init_margin_beta(rng, 10, 8, learn_beta=True, num_classes=12)
  np.testing.assert_allclose(per_class, np.full(12, 1.2, np.float32))
  with pytest.raises(ValueError, match="fewer β than the 10 training classes"):
    pair_losses.init_margin_beta(rng, 10, 8, learn_beta=True, num_classes=5)
  # The initial β equals PML's, so the first value equals PML's MarginLoss(learn_beta=True).
  embeddings, labels = _SMALL["m_per_class"]
  ours = pair_losses.margin(jnp.asarray(embeddings), jnp.asarray(labels), per_class, learn_beta=True, num_classes=12)
  pml = pml_losses.MarginLoss(learn_beta=True, num_classes=12)(torch.tensor(embeddings), torch.tensor(labels))
  np.testing.assert_allclose(ours, pml.item(), rtol=1e-5)


_E, _L = jnp.ones((4, 3)), jnp.asarray([0, 0, 1, 1])


@pytest.mark.parametrize("call", [
    pytest.param(lambda: pair_losses.margin(_E, _L, triplets_per_anchor=5), id="random triplets"),
    pytest.param(lambda: pair_losses.margin(_E, _L, learn_beta=True), id="learn_beta without beta"),
    pytest.param(lambda: pair_losses.margin(_E, _L, jnp.ones(3), learn_beta=True), id="beta shape"),
    pytest.param(lambda: pair_losses.margin(_E, _L, jnp.ones(3), learn_beta=True, num_classes=4), id="beta classes"),
    pytest.param(lambda: pair_losses.fastap(_E, _L, num_bins=0), id="no bins"),
    pytest.param(lambda: pair_losses.snr_contrastive_from_matrix(jnp.ones((4, 4)), jnp.ones((4, 4)), jnp.ones((4, 4)),
                                                                 regularizer_weight=0.1), id="snr regulariser matrix"),
    pytest.param(lambda: pair_losses.ntxent_from_matrix(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((3, 2))),
                 id="mismatched matrices"),
    pytest.param(lambda: pair_losses.supcon(jnp.ones(4), _L), id="1-D embeddings"),
    pytest.param(lambda: pair_losses.circle(_E, _L.astype(jnp.float32)), id="float labels"),
])
def test_bad_inputs_raise_value_error(call):
  with pytest.raises(ValueError):
    call()


# ----------------------------------------------------------------------------------------------------------------------
# 6. The glyph recipes: argument parsing, and 2 training steps of each loss through the training program.

_RECIPE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "glyphs_pair.py")


def _module():
  return config_util.sibling_module(_RECIPE, "glyphs_pair.py")


def test_recipe_arguments():
  module = _module()
  assert set(module.RECIPE_ARGS) == set(pair_losses.LOSSES) | {"smoke", "finetune"}
  for arg in pair_losses.LOSSES:
    config = config_util.load_config(_RECIPE, arg)
    assert config.loss.name == arg and config.name == f"glyphs_{arg}"
    smoke = config_util.load_config(_RECIPE, f"smoke,{arg}")
    assert smoke.loss.name == arg and smoke.num_steps < config.num_steps
  for bad in ("", "smoke", "ntxent,supcon", "ntxent,fast"):
    with pytest.raises(ValueError, match="give exactly one loss"):
      config_util.load_config(_RECIPE, bad)


@pytest.fixture(scope="module")
def glyphs_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("glyphs"))  # generated once for the six runs


@pytest.mark.slow
@pytest.mark.parametrize("arg", list(pair_losses.LOSSES))
def test_recipe_trains_two_steps(arg, glyphs_dir, tmp_path):
  config = config_util.load_config(_RECIPE, f"{arg},smoke")
  config.dataset.data_dir = glyphs_dir
  config.dataset.kwargs = dict(images_per_class=4, max_classes=40)
  config.num_steps = 2
  config.model.kwargs = dict(widths=(8, 16))  # compiles faster than the recipe's (32, 64, 128)
  config.eval.update(plots=False, baselines=False, clustering=False)
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["num_steps"] == 2 and np.isfinite(results["final_loss"]) and results["final_loss"] > 0
  assert 0.0 <= results["recall@1"] <= 1.0


@pytest.mark.slow
def test_margin_learned_beta_is_trained_in_the_state(glyphs_dir, tmp_path):
  """`learn_beta` puts β (one per class) under params["loss"] through `losses.LOSS_PARAMS`, and the optimiser moves it."""
  config = config_util.load_config(_RECIPE, "margin,smoke")
  config.dataset.data_dir = glyphs_dir
  config.dataset.kwargs = dict(images_per_class=4, max_classes=40)
  config.num_steps = 2
  config.model.kwargs = dict(widths=(8, 16))
  config.loss.kwargs.update(learn_beta=True, num_classes=40)
  config.eval.update(plots=False, baselines=False, clustering=False)
  train.train_and_evaluate(config, str(tmp_path / "run"))
  trained = train.load_trained(config, str(tmp_path / "run"))
  beta = np.asarray(trained.params["loss"]["learned_beta"])
  assert beta.shape == (40,)
  assert not np.allclose(beta, config.loss.kwargs.beta)  # β received gradient updates (β starts at `beta`)
