"""Tests for AML: the linear model (`metriclearn.linear_aml`) and the deep method (`metriclearn.methods.aml`).

Linear: the trace-form objective against a NumPy port of the released code's eigendecomposition form, the explicit
min–max against the closed form (values, adversarial pairs, bilevel gradient), finite differences, SPD iterates,
the GMML point against an independent SciPy implementation. Deep: the confusion stage, the jitted step, a smoke run.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.linalg

from metriclearn import config_util
from metriclearn import labels as labels_lib
from metriclearn import linear_aml
from metriclearn import losses
from metriclearn import models
from metriclearn import optim
from metriclearn import train
from metriclearn.methods import aml
from metriclearn.state import TrainState

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------------------------------------------
# Linear AML fixtures (float64 inside `jax.enable_x64`).


def _problem(seed: int = 0, dim: int = 4, num_pairs: int = 120):
  """Random 3-class features, sampled pairs, their scatters and a random SPD M."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 3, 50)
  features = rng.normal(size=(50, dim)) + 0.8 * labels[:, None]
  first, second, y = linear_aml.sample_pairs(labels, num_pairs, seed)
  pairs = np.stack([features[first], features[second]], axis=1)
  q = rng.normal(size=(dim, dim))
  metric = q @ q.T / dim + 0.5 * np.eye(dim)
  return pairs, y, metric


def _scatters(pairs, y):
  return linear_aml.pair_scatter(jnp.asarray(pairs[:, 0] - pairs[:, 1]), jnp.asarray(y))


def _released_objective(metric, pairs, y, num_pairs, alpha, beta):
  """NumPy port of the released `obj()` (aml.md c.2): eigendecomposition M = UΛUᵀ and h_y(λ) = λ^{3+2y}/(2+β²λ^{1+y})²."""
  eigenvalues, eigenvectors = np.linalg.eigh(metric)
  differences = pairs[:, 0] - pairs[:, 1]
  similar, dissimilar = differences[y > 0], differences[y < 0]
  gmml = np.sum(similar * (similar @ metric)) + np.sum(dissimilar * np.linalg.solve(metric, dissimilar.T).T)
  adversarial = 0.0
  for difference, label in zip(differences, y):
    h = eigenvalues ** (3 + 2 * label) / (2 + beta**2 * eigenvalues ** (1 + label)) ** 2
    projected = eigenvectors.T @ difference
    adversarial += np.sum(h * projected**2)
  return (gmml + alpha * beta**2 * adversarial) / num_pairs


@pytest.mark.parametrize("alpha,beta", [(10.0, 1.0), (2.0, 0.5), (0.7, 2.0)])
def test_trace_form_equals_released_eigendecomposition_form(alpha, beta):
  pairs, y, metric = _problem()
  with jax.enable_x64(True):
    a, b = _scatters(pairs, y)
    ours = float(linear_aml.objective(jnp.asarray(metric), a, b, len(y), alpha=alpha, beta=beta))
  np.testing.assert_allclose(ours, _released_objective(metric, pairs, y, len(y), alpha, beta), rtol=1e-12)


@pytest.mark.parametrize("dissimilar_term", linear_aml.DISSIMILAR_TERMS)
def test_minmax_objective_at_closed_form_pairs_equals_trace_form(dissimilar_term):
  pairs, y, metric = _problem(seed=1)
  kwargs = dict(alpha=3.0, beta=0.7, dissimilar_term=dissimilar_term)
  with jax.enable_x64(True):
    a, b = _scatters(pairs, y)
    m = jnp.asarray(metric)
    adversarial = linear_aml.closed_form_adversarial_pairs(m, jnp.asarray(pairs), jnp.asarray(y), beta=0.7)
    explicit = linear_aml.minmax_objective(m, adversarial, jnp.asarray(pairs), jnp.asarray(y), **kwargs)
    closed = linear_aml.objective(m, a, b, len(y), **kwargs)
    # The closed-form Π is the minimiser of the confusion objective: its gradient vanishes there.
    confusion_grad = jax.grad(linear_aml.confusion_objective)(adversarial, jnp.asarray(pairs), jnp.asarray(y), m,
                                                              beta=0.7)
  np.testing.assert_allclose(float(explicit), float(closed), rtol=1e-12)
  assert np.max(np.abs(confusion_grad)) < 1e-9
  # The two readings of the dissimilar term differ (otherwise the flag would be moot).
  other = [t for t in linear_aml.DISSIMILAR_TERMS if t != dissimilar_term][0]
  with jax.enable_x64(True):
    assert abs(float(linear_aml.objective(m, a, b, len(y), **{**kwargs, "dissimilar_term": other})) - float(closed)) > 1e-3


def test_optax_confusion_reaches_closed_form_and_bilevel_gradient_matches_closed_form():
  pairs, y, metric = _problem(seed=2)
  kwargs = dict(alpha=10.0, beta=1.0, dissimilar_term="official")
  with jax.enable_x64(True):
    pairs_j, y_j = jnp.asarray(pairs), jnp.asarray(y)
    a, b = _scatters(pairs, y)
    params = linear_aml.cholesky_params(jnp.asarray(metric))
    m = linear_aml.metric_from_params(params)
    confused = linear_aml.confuse(m, pairs_j, y_j, beta=1.0, steps=400)
    closed = linear_aml.closed_form_adversarial_pairs(m, pairs_j, y_j, beta=1.0)
    assert float(jnp.max(jnp.abs(confused - closed))) < 1e-9

    def unrolled(p, stop_gradient):
      mm = linear_aml.metric_from_params(p)
      adversarial = linear_aml.confuse(mm, pairs_j, y_j, beta=1.0, steps=400)
      if stop_gradient:
        adversarial = jax.lax.stop_gradient(adversarial)
      return linear_aml.minmax_objective(mm, adversarial, pairs_j, y_j, **kwargs)

    bilevel = jax.grad(unrolled)(params, False)
    alternating = jax.grad(unrolled)(params, True)
    reference = jax.grad(lambda p: linear_aml.objective(linear_aml.metric_from_params(p), a, b, len(y), **kwargs))(
        params)
  for key in params:
    np.testing.assert_allclose(bilevel[key], reference[key], rtol=1e-7, atol=1e-9)
  # Freezing Π drops the derivative through the confusion stage: a different gradient.
  assert max(np.max(np.abs(alternating[k] - reference[k])) for k in params) > 1e-3


@pytest.mark.parametrize("dissimilar_term", linear_aml.DISSIMILAR_TERMS)
@pytest.mark.parametrize("at_identity", [True, False])
def test_objective_gradient_matches_finite_differences(dissimilar_term, at_identity):
  pairs, y, metric = _problem(seed=3)
  rng = np.random.default_rng(4)
  with jax.enable_x64(True):
    a, b = _scatters(pairs, y)
    m = jnp.eye(metric.shape[0]) if at_identity else jnp.asarray(metric)  # M = I: every eigenvalue repeated
    fn = lambda mm: linear_aml.objective(mm, a, b, len(y), alpha=10.0, beta=1.0, dissimilar_term=dissimilar_term)
    gradient = jax.grad(fn)(m)
    assert bool(jnp.all(jnp.isfinite(gradient)))
    for _ in range(3):
      direction = rng.normal(size=m.shape)
      direction = jnp.asarray(direction + direction.T)
      eps = 1e-6
      numeric = (fn(m + eps * direction) - fn(m - eps * direction)) / (2 * eps)
      np.testing.assert_allclose(float(jnp.sum(gradient * direction)), float(numeric), rtol=1e-6, atol=1e-8)


def test_gmml_part_gradient_is_the_known_matrix_derivative():
  """d/dM [tr(MA) + tr(M⁻¹B)] = A − M⁻¹BM⁻¹ (no sign error, unlike the released hand-written gradient)."""
  pairs, y, metric = _problem(seed=5)
  with jax.enable_x64(True):
    a, b = _scatters(pairs, y)
    gradient = jax.grad(linear_aml.objective)(jnp.asarray(metric), a, b, 1, alpha=0.0)
  inverse = np.linalg.inv(metric)
  np.testing.assert_allclose(gradient, np.asarray(a) - inverse @ np.asarray(b) @ inverse, rtol=1e-9, atol=1e-9)


def test_gmml_closed_form_matches_scipy_geometric_mean():
  """Independent reference: A^{-1/2}(A^{1/2}BA^{1/2})^{1/2}A^{-1/2} with SciPy's `sqrtm`; and the Riccati equation
  MAM = B, the stationarity condition of tr(MA) + tr(M⁻¹B)."""
  pairs, y, _ = _problem(seed=6, dim=5, num_pairs=300)
  with jax.enable_x64(True):
    a, b = _scatters(pairs, y)
    ours = np.asarray(linear_aml.gmml_closed_form(a, b))
    value_at = lambda m: float(linear_aml.objective(jnp.asarray(m), a, b, len(y), alpha=0.0))
    gradient = np.asarray(jax.grad(linear_aml.objective)(jnp.asarray(ours), a, b, len(y), alpha=0.0))
  a, b = np.asarray(a), np.asarray(b)
  a_half = np.real(scipy.linalg.sqrtm(a))
  a_inverse_half = np.linalg.inv(a_half)
  reference = a_inverse_half @ np.real(scipy.linalg.sqrtm(a_half @ b @ a_half)) @ a_inverse_half
  np.testing.assert_allclose(ours, reference, rtol=1e-8, atol=1e-10)
  np.testing.assert_allclose(ours @ a @ ours, b, rtol=1e-8, atol=1e-8)
  assert np.max(np.abs(gradient)) < 1e-8
  assert value_at(ours) < value_at(np.eye(5))


def test_backtracking_solver_descends_keeps_spd_and_uses_the_special_point_at_alpha_zero():
  pairs, y, _ = _problem(seed=7)
  with jax.enable_x64(True):
    a, b = _scatters(pairs, y)
    start = float(linear_aml.objective(jnp.eye(4), a, b, len(y)))
  result = linear_aml.fit_backtracking(a, b, len(y), max_iter=30)
  assert result.objective < start and result.info["accepted_steps"] > 0
  assert np.all(np.linalg.eigvalsh(result.metric) > 0)
  gmml = linear_aml.fit_backtracking(a, b, len(y), alpha=0.0, max_iter=5)
  assert gmml.info["used_gmml_point"]
  assert jnp.ones(1).dtype == jnp.float32  # float64 stayed local to the solver


@pytest.mark.parametrize("through_confusion", [True, False])
def test_minmax_solver_stays_spd_finite_and_descends(through_confusion):
  pairs, y, _ = _problem(seed=8)
  result = linear_aml.fit_minmax(pairs, y, steps=60, confusion_steps=10, through_confusion=through_confusion,
                                 ridge=1e-3)
  history = result.info["history"]
  assert np.all(np.isfinite(history)) and history[-1] < history[0]
  assert np.all(np.linalg.eigvalsh(result.metric) > 0)
  transformed = result.transform(pairs[:, 0] - pairs[:, 1])
  distances_m = np.einsum("nd,de,ne->n", pairs[:, 0] - pairs[:, 1], result.metric, pairs[:, 0] - pairs[:, 1])
  np.testing.assert_allclose(np.sum(transformed**2, axis=1), distances_m, rtol=1e-10)
  assert jnp.ones(1).dtype == jnp.float32


def test_ridge_pairs_reproduce_the_ridged_scatters():
  pairs, y, _ = _problem(seed=9)
  extra_pairs, extra_y = linear_aml.ridge_pairs(4, 0.1, len(y))
  with jax.enable_x64(True):
    a, b = linear_aml.pair_scatter(jnp.asarray(pairs[:, 0] - pairs[:, 1]), jnp.asarray(y), ridge=0.1)
    all_pairs = np.concatenate([pairs, extra_pairs])
    a2, b2 = _scatters(all_pairs, np.concatenate([y, extra_y]))
  np.testing.assert_allclose(a, a2, rtol=1e-12)
  np.testing.assert_allclose(b, b2, rtol=1e-12)


def test_linear_bad_input():
  pairs, y, metric = _problem()
  with pytest.raises(ValueError, match="gmml_consistent"):
    linear_aml.objective(jnp.asarray(metric), jnp.eye(4), jnp.eye(4), 1, dissimilar_term="paper")
  with pytest.raises(ValueError, match="backtracking"):
    linear_aml.fit(np.zeros((5, 2)), np.arange(5), num_pairs=3, solver="lbfgs")
  with pytest.raises(ValueError, match="num_pairs"):
    linear_aml.sample_pairs(np.arange(3), 10, 0)


# ----------------------------------------------------------------------------------------------------------------
# Deep AML.


def _deep_setup(through_confusion=False, confusion_steps=3, alpha=1.0, loss_name="contrastive"):
  config = ml_collections.ConfigDict()
  loss_kwargs = {"contrastive": dict(pos_margin=0.0, neg_margin=0.5), "multi_similarity": {}}[loss_name]
  config.loss = dict(name=loss_name, kwargs=loss_kwargs)
  config.method = dict(name="aml", kwargs=dict(through_confusion=through_confusion, confusion_steps=confusion_steps,
                                               alpha=alpha))
  model = models.create_model("mlp", embedding_dim=8, hidden_dims=(16,))
  method = aml.AML(config, model, num_classes=4)
  x = jax.random.normal(jax.random.key(0), (16, 12))
  labels = jnp.repeat(jnp.arange(4), 4)
  params, batch_stats, method_state = method.init(jax.random.key(1), x)
  tx = optim.create_optimizer(dict(name="adam", learning_rate=1e-2), params)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                           opt_state=tx.init(params), rng=jax.random.key(2), method_state=method_state)
  return method, model, state, tx, {"image": x, "label": labels}


def test_confusion_ascends_its_objective():
  method, model, state, _, batch = _deep_setup()
  out = model.apply({"params": state.params, "batch_stats": state.batch_stats}, batch["image"],
                    return_intermediates=True)
  y, valid = labels_lib.batch_matrices(batch["label"])
  head = functools.partial(method._head, state.params, state.batch_stats)

  def objective(adversarial):
    embeddings = head(adversarial)
    closeness = jnp.mean(jnp.sum((embeddings - out["embeddings"]) ** 2, axis=1))
    return method.pair_loss(embeddings, y, valid) - closeness

  adversarial = jax.jit(lambda f, e: aml.confuse(head, f, e, y, valid, method.pair_loss, beta=1.0, steps=5,
                                                 optimizer="sgd", learning_rate=0.05))(out["features"], out["embeddings"])
  assert float(objective(adversarial)) > float(objective(out["features"])) + 1e-4
  assert float(method.pair_loss(head(adversarial), y, valid)) > float(method.pair_loss(out["embeddings"], y, valid))


@pytest.mark.parametrize("loss_name", ["contrastive", "multi_similarity"])
def test_zero_confusion_steps_is_the_pair_loss_times_one_plus_alpha(loss_name):
  method, model, state, _, batch = _deep_setup(confusion_steps=0, alpha=0.5, loss_name=loss_name)
  total, (_, metrics) = method.loss(state.params, state.batch_stats, batch)
  embeddings, _ = model.apply({"params": state.params, "batch_stats": state.batch_stats}, batch["image"], train=True,
                              mutable=["batch_stats"])
  reference = losses.LOSSES[loss_name](embeddings, batch["label"])
  np.testing.assert_allclose(float(metrics["clean_loss"]), float(reference), rtol=1e-5)
  np.testing.assert_allclose(float(total), 1.5 * float(reference), rtol=1e-5)


def test_jitted_step_compiles_once_and_bilevel_changes_the_gradient():
  method, _, state, tx, batch = _deep_setup()
  step = jax.jit(lambda s, b: method.train_step(s, b, tx))
  first, metrics = step(state, batch)
  second, metrics = step(first, batch)
  assert step._cache_size() == 1
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert float(metrics["adversarial_loss"]) > 0
  assert not np.allclose(second.params["head"]["out"]["kernel"], state.params["head"]["out"]["kernel"])
  grads = {}
  for through_confusion in (False, True):
    method, _, state, _, batch = _deep_setup(through_confusion=through_confusion)
    grads[through_confusion] = jax.jit(jax.grad(lambda p: method.loss(p, state.batch_stats, batch)[0]))(state.params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads[True]))
  difference = jax.tree_util.tree_map(lambda a, b: jnp.max(jnp.abs(a - b)), grads[False], grads[True])
  assert max(jax.tree_util.tree_leaves(difference)) > 1e-6


def test_deep_bad_config():
  config = ml_collections.ConfigDict(dict(loss=dict(name="contrastive", kwargs={}),
                                          method=dict(name="aml", kwargs=dict(alfa=1.0))))
  model = models.create_model("mlp", embedding_dim=8, hidden_dims=(16,))
  with pytest.raises(ValueError, match="confusion_steps"):
    aml.AML(config, model, 4)
  config.method.kwargs = {}
  config.loss = dict(name="proxy_anchor", kwargs={})
  with pytest.raises(ValueError, match="contrastive"):
    aml.AML(config, model, 4)


def test_glyphs_aml_smoke_run(tmp_path):
  config = config_util.load_config(os.path.join(ROOT, "configs", "glyphs_aml.py"), "smoke")
  config.dataset.data_dir = str(tmp_path / "data")
  config.dataset.kwargs = dict(images_per_class=4, max_classes=40)
  config.eval.plots = False
  config.eval.baselines = False
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["num_steps"] == config.num_steps and np.isfinite(results["final_loss"])
  assert 0.0 <= results["recall@1"] <= 1.0
