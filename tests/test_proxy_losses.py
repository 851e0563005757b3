"""Tests for metriclearn.proxy_losses: PML parity (values, embedding and class-row gradients), hand constants, matrix
forms with soft labels, edge cases, the loss-owned-array registry and its learning-rate multiplier, and two training
steps of each loss through the training program (configs/glyphs_proxy.py).
"""

from __future__ import annotations

import functools
import inspect
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

from metriclearn import config_util
from metriclearn import losses
from metriclearn import methods
from metriclearn import models
from metriclearn import optim
from metriclearn import proxy_losses
from metriclearn import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NUM_CLASSES = 6

# name -> (our keyword arguments, PML constructor, PML's attribute holding the class rows, stored as [D, rows]).
_CONFIGS = {
    "proxy_nca": ({}, lambda c, d: pml_losses.ProxyNCALoss(c, d), "proxies", False),
    "proxy_nca_scale": ({"softmax_scale": 3.0}, lambda c, d: pml_losses.ProxyNCALoss(c, d, softmax_scale=3.0),
                        "proxies", False),
    "normalized_softmax": ({}, lambda c, d: pml_losses.NormalizedSoftmaxLoss(c, d), "W", True),
    "normalized_softmax_t": ({"temperature": 0.5},
                             lambda c, d: pml_losses.NormalizedSoftmaxLoss(c, d, temperature=0.5), "W", True),
    "cosface": ({}, lambda c, d: pml_losses.CosFaceLoss(c, d), "W", True),
    "cosface_hparams": ({"margin": 0.2, "scale": 10.0},
                        lambda c, d: pml_losses.CosFaceLoss(c, d, margin=0.2, scale=10.0), "W", True),
    "arcface": ({}, lambda c, d: pml_losses.ArcFaceLoss(c, d), "W", True),
    # A margin of 60°: many targets lie beyond π − m, where the monotone continuation cos θ − m·sin m takes over.
    "arcface_wide": ({"margin": 60.0, "scale": 8.0},
                     lambda c, d: pml_losses.ArcFaceLoss(c, d, margin=60.0, scale=8.0), "W", True),
    "soft_triple": ({}, lambda c, d: pml_losses.SoftTripleLoss(c, d), "fc", True),
    "soft_triple_hparams": ({"centers_per_class": 3, "la": 5.0, "gamma": 0.5, "margin": 0.1},
                            lambda c, d: pml_losses.SoftTripleLoss(c, d, centers_per_class=3, la=5.0, gamma=0.5,
                                                                   margin=0.1), "fc", True),
}
_NAMES = ["proxy_nca", "normalized_softmax", "cosface", "arcface", "soft_triple"]
# Every loss of the module is tested here.
assert sorted(_NAMES) == sorted(name for name, fn in losses.LOSSES.items() if fn.__module__ == proxy_losses.__name__)


def _loss_name(config: str) -> str:
  return next(name for name in _NAMES if config == name or config.startswith(name + "_"))


@functools.lru_cache(maxsize=None)
def _ours(config: str):
  """Jitted `(embeddings, labels, rows) -> (value, (d/dembeddings, d/drows))`."""
  fn, kwargs = losses.LOSSES[_loss_name(config)], _CONFIGS[config][0]
  return jax.jit(jax.value_and_grad(lambda e, l, w: fn(e, l, w, **kwargs), argnums=(0, 2)))


def _pml(config: str, embeddings: np.ndarray, labels: np.ndarray):
  """PML's value and gradients, and its (seeded) initial class rows, all as our [rows, D] layout."""
  _, make, attribute, transposed = _CONFIGS[config]
  torch.manual_seed(0)
  loss_fn = make(_NUM_CLASSES, embeddings.shape[1])
  rows = getattr(loss_fn, attribute)
  initial = rows.detach().numpy().copy()
  embeddings_t = torch.tensor(embeddings, requires_grad=True)
  value = loss_fn(embeddings_t, torch.tensor(labels))
  value.backward()
  grad = rows.grad.numpy()
  if transposed:
    initial, grad = initial.T, grad.T
  return value.item(), embeddings_t.grad.numpy(), grad, np.ascontiguousarray(initial)


def _scaled(rng, n, d):
  return (rng.normal(size=(n, d)) * 10.0 ** rng.uniform(-3, 3, size=(n, 1))).astype(np.float32)


def _batches():
  rng = np.random.default_rng(1234)
  duplicates = _scaled(rng, 24, 8)
  dup_labels = rng.integers(0, _NUM_CLASSES, size=24)
  for i, j in [(0, 1), (2, 3), (4, 5)]:
    duplicates[j] = duplicates[i]
  dup_labels[3] = (dup_labels[2] + 1) % _NUM_CLASSES  # a copy in another class
  return {
      "random_labels": (_scaled(rng, 24, 8), rng.integers(0, _NUM_CLASSES, size=24)),
      "m_per_class": (_scaled(rng, 24, 8), rng.permutation(np.repeat(np.arange(_NUM_CLASSES), 4))),
      "duplicates": (duplicates, dup_labels),
      # Each class once: no positive pair in the batch (a proxy loss still has its target class row).
      "no_positive": (_scaled(rng, _NUM_CLASSES, 8), rng.permutation(_NUM_CLASSES)),
      "one_class": (_scaled(rng, 24, 8), np.full(24, 2, np.int64)),
      "large": (_scaled(rng, 128, 32), rng.integers(0, _NUM_CLASSES, size=128)),
  }


_BATCHES = _batches()


# ----------------------------------------------------------------------------------------------------------------
# 1. Parity with pytorch-metric-learning 2.9: values, embedding gradients and class-row gradients.


@pytest.mark.parametrize("batch", list(_BATCHES))
@pytest.mark.parametrize("config", list(_CONFIGS))
def test_matches_pml(config, batch):
  embeddings, labels = _BATCHES[batch]
  pml_value, pml_grad, pml_rows_grad, rows = _pml(config, embeddings, labels)
  value, (grad, rows_grad) = _ours(config)(jnp.asarray(embeddings), jnp.asarray(labels), jnp.asarray(rows))
  # Both compute in float32: logits up to scale·1 = 64 enter a log-sum-exp, so agreement is ~1e-6 relative.
  np.testing.assert_allclose(float(value), pml_value, rtol=1e-5, atol=1e-6)
  # The losses depend on directions only, so ∂L/∂x scales as 1/‖x‖ (rows span 1e-3..1e3): compare ‖x‖·∂L/∂x, and
  # relative to the largest entry (a logit scale of 64 makes gradients of order 10).
  scale = np.linalg.norm(embeddings, axis=1, keepdims=True)
  tol = 1e-5 * max(1.0, np.abs(pml_grad * scale).max())
  np.testing.assert_allclose(np.asarray(grad) * scale, pml_grad * scale, rtol=1e-4, atol=tol)
  row_scale = np.linalg.norm(rows, axis=1, keepdims=True)
  tol = 1e-5 * max(1.0, np.abs(pml_rows_grad * row_scale).max())
  np.testing.assert_allclose(np.asarray(rows_grad) * row_scale, pml_rows_grad * row_scale, rtol=1e-4, atol=tol)
  assert np.all(np.isfinite(grad)) and np.all(np.isfinite(rows_grad))


@pytest.mark.parametrize("name", _NAMES)
def test_init_matches_pml_distribution(name):
  # PML's initialisers (normal; SoftTriple U(±1/√(C·K))): compare moments on a large draw, 5σ of the estimate.
  num_classes, dim = 200, 64
  key = list(inspect.signature(losses.LOSSES[name]).parameters)[2]
  rows = np.asarray(losses.LOSS_PARAMS[name](jax.random.key(0), num_classes, dim)[key])
  torch.manual_seed(0)
  _, make, attribute, _ = _CONFIGS[name]
  theirs = getattr(make(num_classes, dim), attribute).detach().numpy()
  assert rows.size == theirs.size
  std = theirs.std()
  assert abs(rows.std() - std) < 5 * std / math.sqrt(2 * rows.size)
  assert abs(rows.mean()) < 5 * std / math.sqrt(rows.size)
  # The shape of the distribution: the 99th percentile of |x| in standard deviations is 2.58 for a normal, 1.71 for
  # a uniform; with ≥ 12,800 draws each estimate is within ~2%.
  np.testing.assert_allclose(np.quantile(np.abs(rows), 0.99) / rows.std(),
                             np.quantile(np.abs(theirs), 0.99) / std, rtol=0.05)


# ----------------------------------------------------------------------------------------------------------------
# 2. Hand-computed constants.


_X = jnp.asarray([[1.0, 0.0], [0.0, 2.0]])  # unit directions (1, 0) and (0, 1)
_Y = jnp.asarray([0, 1])
_ROWS = jnp.asarray([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # class rows: cosines [[1, 0, −1], [0, 1, 0]]


def _ce(logits, target):
  return math.log(sum(math.exp(z) for z in logits)) - logits[target]


def test_constants():
  # ProxyNCA, s = 1: d² = 2 − 2cos → row 0: [0, 2, 4], row 1: [2, 0, 2]; logits −d².
  # Row 0: log(1 + e^−2 + e^−4) ≈ 0.142930; row 1: log(1 + 2e^−2) ≈ 0.239546; mean ≈ 0.191238.
  expected = (_ce([0, -2, -4], 0) + _ce([-2, 0, -2], 1)) / 2
  np.testing.assert_allclose(proxy_losses.proxy_nca(_X, _Y, _ROWS), expected, rtol=1e-6)
  np.testing.assert_allclose(expected, 0.191238, rtol=1e-5)
  # Normalised softmax, σ = 0.5: logits 2·cos.
  expected = (_ce([2, 0, -2], 0) + _ce([0, 2, 0], 1)) / 2
  np.testing.assert_allclose(proxy_losses.normalized_softmax(_X, _Y, _ROWS, temperature=0.5), expected, rtol=1e-6)
  # CosFace, s = 2, m = 0.5: target logits 2·(1 − 0.5) = 1.
  expected = (_ce([1, 0, -2], 0) + _ce([0, 1, 0], 1)) / 2
  np.testing.assert_allclose(proxy_losses.cosface(_X, _Y, _ROWS, margin=0.5, scale=2.0), expected, rtol=1e-6)
  # ArcFace, s = 2, m = 60°: θ_target = 0, cos(0 + π/3) = 0.5 → target logits 1.
  np.testing.assert_allclose(proxy_losses.arcface(_X, _Y, _ROWS, margin=60.0, scale=2.0), expected, rtol=1e-6)
  # ArcFace beyond π − m: x = (−1, 0) of class 0 has θ = π > π − m, so the target logit is cos θ − m·sin m.
  m = math.pi / 3
  value = proxy_losses.arcface(jnp.asarray([[-1.0, 0.0]]), jnp.asarray([0]), _ROWS, margin=60.0, scale=2.0)
  np.testing.assert_allclose(value, _ce([2 * (-1 - m * math.sin(m)), 0, 2], 0), rtol=1e-6)
  # SoftTriple, K = 2, classes 0, 1 with centres {(1,0), (0,1)} and {(−1,0), (0,−1)}; γ = 1, λ = 1, δ = 0.
  # x = (1, 0): class 0 cosines (1, 0) → S' = (e·1 + 1·0)/(e + 1); class 1 cosines (−1, 0) → S' = −1/(e^{−1}·… )
  centres = jnp.asarray([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
  s0 = math.e / (math.e + 1)
  s1 = -math.exp(-1) / (math.exp(-1) + 1)
  value = proxy_losses.soft_triple(jnp.asarray([[1.0, 0.0]]), jnp.asarray([0]), centres, centers_per_class=2,
                                   la=1.0, gamma=1.0, margin=0.0)
  np.testing.assert_allclose(value, _ce([s0, s1], 0), rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# 3. Matrix forms: equal the embedding forms, and soft labels mix the hard losses as documented.


def _matrix_inputs(name, embeddings, labels, rows, kwargs):
  if name == "soft_triple":
    k = kwargs.get("centers_per_class", 10)
    s = proxy_losses.soft_triple_class_similarity(losses.distances.cosine_similarity(embeddings, rows),
                                                  centers_per_class=k, gamma=kwargs.get("gamma", 0.1))
    kwargs = {key: v for key, v in kwargs.items() if key not in ("centers_per_class", "gamma")}
  else:
    s = losses.distances.pairwise(losses.distances.l2_normalize(embeddings), losses.distances.l2_normalize(rows),
                                  metric=losses.MATRIX_METRIC[name])
  y = jax.nn.one_hot(labels, s.shape[1])
  return s, y, jnp.ones_like(y), kwargs


@pytest.mark.parametrize("config", list(_CONFIGS))
def test_matrix_form_equals_embedding_form(config):
  name, kwargs = _loss_name(config), _CONFIGS[config][0]
  embeddings, labels = (jnp.asarray(x) for x in _BATCHES["random_labels"])
  rows = jnp.asarray(_pml(config, *_BATCHES["random_labels"])[3])
  s, y, valid, matrix_kwargs = _matrix_inputs(name, embeddings, labels, rows, kwargs)
  np.testing.assert_allclose(losses.MATRIX_LOSSES[name](s, y, valid, **matrix_kwargs),
                             losses.LOSSES[name](embeddings, labels, rows, **kwargs), rtol=1e-5)


@pytest.mark.parametrize("name", _NAMES)
def test_soft_labels(name):
  # Margin-free settings: a soft row λ·e_a + (1−λ)·e_b gives λ·CE(a) + (1−λ)·CE(b) (our extension: with margins,
  # each target's margin enters in proportion to its label). Invalid classes leave the log-sum-exp; rows without a
  # valid target are skipped.
  rng = np.random.default_rng(7)
  s = jnp.asarray(rng.uniform(-1, 1, size=(3, 5)).astype(np.float32))
  if name == "proxy_nca":
    s = 2.0 - 2.0 * s
  kwargs = {"cosface": {"margin": 0.0}, "arcface": {"margin": 0.0}, "soft_triple": {"margin": 0.0}}.get(name, {})
  fn = losses.MATRIX_LOSSES[name]
  valid = jnp.ones((3, 5))
  hard = [fn(s, jax.nn.one_hot(jnp.full(3, c), 5), valid, **kwargs) * 3 for c in range(5)]  # sums over the 3 rows
  lam = 0.3
  y = lam * jax.nn.one_hot(jnp.full(3, 1), 5) + (1 - lam) * jax.nn.one_hot(jnp.full(3, 4), 5)
  np.testing.assert_allclose(fn(s, y, valid, **kwargs) * 3, lam * hard[1] + (1 - lam) * hard[4], rtol=1e-5)
  # A column marked invalid drops out of every row's softmax: as if the matrix had 4 columns.
  valid = valid.at[:, 2].set(0.0)
  keep = np.asarray([0, 1, 3, 4])
  np.testing.assert_allclose(fn(s, y, valid, **kwargs), fn(s[:, keep], y[:, keep], jnp.ones((3, 4)), **kwargs),
                             rtol=1e-6)
  # Nothing valid: 0 with a zero gradient.
  value, grad = jax.value_and_grad(lambda s: fn(s, y, jnp.zeros_like(y), **kwargs))(s)
  assert value == 0.0 and np.all(np.asarray(grad) == 0.0)


def test_margins_with_soft_labels_enter_in_proportion():
  s = jnp.asarray([[0.2, -0.4, 0.7]])
  y = jnp.asarray([[0.25, 0.75, 0.0]])
  logits = 4.0 * (np.asarray(s) - 0.3 * np.asarray(y))
  expected = sum(y[0, c] * _ce(list(logits[0]), c) for c in range(3))
  np.testing.assert_allclose(losses.MATRIX_LOSSES["cosface"](s, y, jnp.ones_like(y), margin=0.3, scale=4.0),
                             expected, rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# 4. jit = eager, bf16, edge cases, errors.


@pytest.mark.parametrize("name", _NAMES)
def test_jit_equals_eager(name):
  embeddings, labels = _BATCHES["m_per_class"]
  rows = _pml(name, embeddings, labels)[3]
  eager = losses.LOSSES[name](jnp.asarray(embeddings), jnp.asarray(labels), jnp.asarray(rows))
  jitted, _ = _ours(name)(jnp.asarray(embeddings), jnp.asarray(labels), jnp.asarray(rows))
  np.testing.assert_allclose(jitted, eager, rtol=1e-6)


@pytest.mark.parametrize("name", _NAMES)
def test_bfloat16_embeddings_give_float32_close_to_float32(name):
  embeddings, labels = _BATCHES["m_per_class"]
  rows = jnp.asarray(_pml(name, embeddings, labels)[3])
  unit = jnp.asarray(embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True), jnp.bfloat16)
  value, (grad, _) = _ours(name)(unit, jnp.asarray(labels), rows)
  reference, (reference_grad, _) = _ours(name)(unit.astype(jnp.float32), jnp.asarray(labels), rows)
  assert value.dtype == jnp.float32 and grad.dtype == jnp.bfloat16
  # The bf16 normalised rows are rounded again (relative 2^-9 per coordinate); a logit scale of up to 64 turns a
  # cosine error of ~4e-3 into a logit error of ~0.25 at worst, so compare at 5% (a wrong dtype path is far off).
  np.testing.assert_allclose(value, reference, rtol=5e-2)
  np.testing.assert_allclose(np.asarray(grad, np.float32), reference_grad, atol=5e-2 * np.abs(reference_grad).max())


@pytest.mark.parametrize("name", _NAMES)
def test_degenerate_inputs_are_finite(name):
  # Zero embeddings, rows equal to the embeddings (cos = 1: ArcFace's acos would give PML a NaN gradient), and
  # opposite ones (cos = −1).
  embeddings = jnp.asarray([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]])
  per_class = 10 if name == "soft_triple" else 1
  rows = jnp.repeat(jnp.asarray([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), per_class, axis=0)
  value, (grad, rows_grad) = jax.jit(jax.value_and_grad(losses.LOSSES[name], argnums=(0, 2)))(
      embeddings, jnp.asarray([0, 0, 1]), rows)
  assert np.isfinite(value) and np.all(np.isfinite(grad)) and np.all(np.isfinite(rows_grad))


@pytest.mark.parametrize("call, message", [
    (lambda: proxy_losses.proxy_nca(jnp.ones((4, 3)), jnp.zeros(4, jnp.int32), jnp.ones((5, 2))), "proxies"),
    (lambda: proxy_losses.cosface(jnp.ones((4, 3)), jnp.zeros(3, jnp.int32), jnp.ones((5, 3))), "labels"),
    (lambda: proxy_losses.arcface(jnp.ones((4, 3)), jnp.zeros(4), jnp.ones((5, 3))), "integers"),
    (lambda: proxy_losses.soft_triple(jnp.ones((4, 3)), jnp.zeros(4, jnp.int32), jnp.ones((25, 3))), "multiple"),
    (lambda: proxy_losses.normalized_softmax_from_matrix(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((3, 2))),
     "one shape"),
])
def test_input_errors(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_memory_safe_at_sop_class_count():
  # C = 11,318 classes, B = 64, D = 128: the compiled step holds [B, C]-sized buffers, never B·C·D floats.
  num_classes, batch, dim = 11_318, 64, 128
  e = jax.ShapeDtypeStruct((batch, dim), jnp.float32)
  l = jax.ShapeDtypeStruct((batch,), jnp.int32)
  for name in ("proxy_nca", "arcface"):
    w = jax.ShapeDtypeStruct((num_classes, dim), jnp.float32)
    compiled = jax.jit(jax.grad(losses.LOSSES[name], argnums=(0, 2))).lower(e, l, w).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp < 16 * batch * num_classes * 4, (name, temp)  # a handful of [B, C] floats; B·C·D would be 128×


# ----------------------------------------------------------------------------------------------------------------
# 5. The registry of loss-owned arrays and the training program.


@pytest.mark.parametrize("name", sorted(losses.LOSS_PARAMS))
def test_loss_params_keys_name_the_positional_arguments(name):
  arrays = losses.LOSS_PARAMS[name](jax.random.key(0), 4, 3)
  positional = [p.name for p in inspect.signature(losses.LOSSES[name]).parameters.values()
                if p.kind is p.POSITIONAL_OR_KEYWORD][2:]
  assert list(arrays) == positional[:len(arrays)]
  assert all(a.dtype == jnp.float32 and a.shape[-1] == 3 for a in arrays.values())


def test_loss_lr_multiplier_scales_loss_arrays_only():
  params = {"head": {"kernel": jnp.ones((2, 2))}, "loss": {"proxies": jnp.ones((3, 2))}}
  grads = jax.tree.map(jnp.ones_like, params)

  def first_update(config):
    tx = optim.create_optimizer({"name": "sgd", "momentum": 0.0, "learning_rate": 0.1, **config}, params)
    return tx.update(grads, tx.init(params), params)[0]

  plain, scaled = first_update({}), first_update({"loss_lr_multiplier": 100.0})
  np.testing.assert_allclose(scaled["head"]["kernel"], plain["head"]["kernel"])
  np.testing.assert_allclose(scaled["loss"]["proxies"], 100.0 * plain["loss"]["proxies"], rtol=1e-6)
  # An explicit lr_multipliers pattern wins over it.
  explicit = first_update({"loss_lr_multiplier": 100.0, "lr_multipliers": (("loss", 3.0),)})
  np.testing.assert_allclose(explicit["loss"]["proxies"], 3.0 * plain["loss"]["proxies"], rtol=1e-6)
  # No loss arrays: no effect, no error.
  optim.create_optimizer({"loss_lr_multiplier": 100.0}, {"head": params["head"]})


def _baseline(loss_name: str, loss_kwargs: dict | None = None):
  config = ml_collections.ConfigDict(dict(
      batch_size=8, sampler=dict(name="m_per_class", kwargs=dict(m=2)), loss=dict(name=loss_name,
                                                                                  kwargs=loss_kwargs or {}),
      method=dict(name="baseline", kwargs={})))
  model = models.create_model("mlp", embedding_dim=4, hidden_dims=(8,), batchnorm=False)
  return methods.create_method(config, model, num_classes=5)


def test_baseline_keeps_loss_arrays_under_params_and_passes_them_by_name():
  method = _baseline("soft_triple", {"centers_per_class": 3})
  params, _, _ = method.init(jax.random.key(0), jnp.zeros((8, 1, 1, 6)))
  assert list(params["loss"]) == ["centers"] and params["loss"]["centers"].shape == (15, 4)
  batch = {"image": jnp.asarray(np.random.default_rng(0).normal(size=(8, 1, 1, 6)), jnp.float32),
           "label": jnp.asarray([0, 1, 2, 3, 0, 1, 2, 3])}
  value, _ = method.loss(params, {}, batch, None)
  embeddings = method.model.apply({"params": {k: v for k, v in params.items() if k != "loss"}}, batch["image"],
                                  train=False)
  np.testing.assert_allclose(value, proxy_losses.soft_triple(embeddings, batch["label"], params["loss"]["centers"],
                                                             centers_per_class=3), rtol=1e-6)
  with pytest.raises(ValueError, match="cross-batch memory"):
    method.loss_with_own_arrays(params, embeddings, batch["label"], ref=object())


def test_an_init_without_arrays_adds_no_loss_params(monkeypatch):
  # e.g. a margin loss with a fixed β: the init returns {} and the loss is called without arrays.
  monkeypatch.setitem(losses.LOSS_PARAMS, "contrastive", lambda rng, num_classes, embedding_dim, **_: {})
  params, _, _ = _baseline("contrastive").init(jax.random.key(0), jnp.zeros((8, 1, 1, 6)))
  assert "loss" not in params


@pytest.mark.parametrize("name", [*_NAMES, "proxy_anchor"])
def test_glyph_recipe_trains_two_steps(name, tmp_path):
  config = config_util.load_config(os.path.join(ROOT, "configs", "glyphs_proxy.py"), f"{name},smoke")
  config.num_steps = 2
  config.eval_every = config.checkpoint_every = config.log_every = 2
  config.eval.clustering = config.eval.baselines = config.eval.plots = False
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results["num_steps"] == 2 and np.isfinite(results["final_loss"])
