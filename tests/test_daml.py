"""Tests for DAML (`metriclearn.methods.daml`, `daml_losses`) and its tuple samplers.

Each term of eq. (6) and each J_m (eqs. 8–12) on hand-computed examples; the generator's factorised first layer
against a Dense on the concatenation; gradient routing (joint eq. 7 vs the GAN ablation); the "code" preset's triplet
step against the released code's formulas written out here; no NaN when synthetic negatives coincide with anchors;
the optimizer's phase handling; one compilation per phase; the samplers; a smoke run of each glyphs config.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from metriclearn import config_util
from metriclearn import models
from metriclearn import optim
from metriclearn import train
from metriclearn.data import samplers
from metriclearn.methods import daml
from metriclearn.methods import daml_losses
from metriclearn.state import TrainState

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANT_OF = {"cont": "contrastive", "tri": "triplet", "lifted": "lifted_structure", "npair": "npair"}


def _a(x):
  return jnp.asarray(x, jnp.float32)


# ----------------------------------------------------------------------------------------------------------------
# Eq. (6): J_hard, J_reg, J_adv.


def test_j_hard_and_j_reg_hand_computed():
  anchor = _a([[0.0, 0.0], [1.0, 1.0]])
  synthetic = _a([[[1.0, 2.0], [0.0, 1.0]], [[1.0, 1.0], [3.0, 1.0]]])  # [A=2, K=2, c=2]
  negatives = _a([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 1.0], [3.0, 3.0]]])
  # J_hard = mean ‖x̃ − x‖² = (5 + 1 + 0 + 4) / 4.
  assert float(daml_losses.j_hard(synthetic, anchor)) == pytest.approx(2.5)
  # J_reg = mean ‖x̃ − x⁻‖² = (4 + 0 + 1 + 4) / 4.
  assert float(daml_losses.j_reg(synthetic, negatives)) == pytest.approx(2.25)


def test_j_adv_hand_computed():
  anchor, positive = _a([[0.0, 0.0]]), _a([[1.0, 0.0]])  # D(x⁺, x)² = 1
  synthetic = _a([[[3.0, 0.0], [1.0, 1.0]]])  # D(x̃, x)² = 9 and 2
  # Eq. (6): [9 − 1 − 1]₊ = 7 and [2 − 1 − 1]₊ = 0; mean 3.5.
  assert float(daml_losses.j_adv(anchor, positive, synthetic, margin=1.0)) == pytest.approx(3.5)
  # Pairwise input: the anchor fills the positive slot, [D(x̃, x)² − γ]₊ = 8 and 1.
  assert float(daml_losses.j_adv(anchor, anchor, synthetic, margin=1.0)) == pytest.approx(4.5)
  # N-pair, similarity form [D(x, x⁺) − D(x, x̃) − γ]₊ with D = inner product: s⁺ = 0.8; s̃ = −1 and 0.6.
  anchor, positive = _a([[1.0, 0.0]]), _a([[0.8, 0.6]])
  synthetic = _a([[[-1.0, 0.0], [0.6, 0.8]]])
  expected = (max(0.8 + 1.0 - 1.0, 0.0) + max(0.8 - 0.6 - 1.0, 0.0)) / 2
  assert float(daml_losses.j_adv(anchor, positive, synthetic, margin=1.0, similarity=True)) == pytest.approx(expected)


# ----------------------------------------------------------------------------------------------------------------
# J_m, eqs. (8)–(12).


def test_j_m_contrastive_eq8_hand_computed():
  anchor, positive = _a([[0.0, 0.0], [2.0, 0.0]]), _a([[1.0, 0.0], [2.0, 2.0]])  # D² = 1, 4
  negatives = _a([[[0.0, 0.5]], [[2.0, 3.0]]])  # D² = 0.25, 9
  # Eq. 8's sum over the 2 positive and 2 negative pairs, divided by the 4 pairs (the default, "pooled_mean"):
  # (1 + 4 + [2 − 0.25]₊ + [2 − 9]₊) / 4.
  value = daml_losses.j_m_contrastive(anchor, positive, negatives, margin=2.0)
  assert float(value) == pytest.approx((1.0 + 4.0 + 1.75 + 0.0) / 4)
  # "mean": mean_pos D² + mean_neg [γ − D²]₊ = (1 + 4)/2 + (1.75 + 0)/2.
  mean = daml_losses.j_m_contrastive(anchor, positive, negatives, margin=2.0, reducer="mean")
  assert float(mean) == pytest.approx(2.5 + 0.875)


def test_j_m_triplet_eq9_hand_computed():
  anchor, positive = _a([[0.0, 0.0], [2.0, 0.0]]), _a([[1.0, 0.0], [2.0, 2.0]])  # D² = 1, 4
  negatives = _a([[[0.0, 0.5]], [[2.0, 3.0]]])  # D² = 0.25, 9
  # [D⁺² − D̃² + γ]₊ = [1 − 0.25 + 1]₊ = 1.75 and [4 − 9 + 1]₊ = 0.
  assert float(daml_losses.j_m_triplet(anchor, positive, negatives, margin=1.0)) == pytest.approx(0.875)
  nonzero = daml_losses.j_m_triplet(anchor, positive, negatives, margin=1.0, reducer="mean_nonzero")
  assert float(nonzero) == pytest.approx(1.75)  # the shared matrix form averages the violating tuples only
  with pytest.raises(ValueError, match="unknown triplet reducer 'sum'"):
    daml_losses.j_m_triplet(anchor, positive, negatives, margin=1.0, reducer="sum")


def test_j_m_lifted_eqs10_11_hand_computed():
  anchor, positive, negatives = _a([[0.0, 0.0]]), _a([[1.0, 0.0]]), _a([[[0.0, 2.0]]])
  # D(x, x⁺) = 1, D(x, x̃) = 2, D(x⁺, x̃) = √5; J = log(e^{1−2} + e^{1−√5}) + 1, loss ½[J]₊².
  j = math.log(math.exp(1.0 - 2.0) + math.exp(1.0 - math.sqrt(5.0))) + 1.0
  value = daml_losses.j_m_lifted(anchor, positive, negatives, margin=1.0)
  assert float(value) == pytest.approx(0.5 * j * j, rel=1e-6)


def test_j_m_lifted_equals_naive_loop():
  rng = np.random.default_rng(0)
  anchor, positive = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
  negatives = rng.normal(size=(4, 3, 3))
  margin = 1.5
  terms = []
  for i in range(4):
    lse = np.log(sum(np.exp(margin - np.linalg.norm(x - n)) for x in (anchor[i], positive[i]) for n in negatives[i]))
    j = lse + np.linalg.norm(anchor[i] - positive[i])
    terms.append(0.5 * max(j, 0.0) ** 2)
  value = daml_losses.j_m_lifted(_a(anchor), _a(positive), _a(negatives), margin=margin)
  np.testing.assert_allclose(float(value), np.mean(terms), rtol=1e-5)


def test_j_m_npair_eq12_hand_computed():
  anchor, positive = _a([[1.0, 0.0]]), _a([[0.6, 0.8]])  # D(x, x⁺) = 0.6
  negatives = _a([[[0.0, 1.0], [-1.0, 0.0]]])  # D(x, x̃) = 0 and −1
  value = daml_losses.j_m_npair(anchor, positive, negatives, margin=1.0)
  assert float(value) == pytest.approx(math.log(1.0 + math.exp(-0.6) + math.exp(-1.6)), rel=1e-6)


@pytest.mark.parametrize("name", sorted(daml_losses.J_M))
def test_no_nan_when_synthetic_negatives_coincide_with_anchors(name):
  rng = np.random.default_rng(1)
  anchor, positive = _a(rng.normal(size=(3, 4))), _a(rng.normal(size=(3, 4)))
  negatives = jnp.repeat(anchor[:, None], 2, axis=1)  # every synthetic negative is its anchor

  def total(anchor, positive, negatives):
    j_m = daml_losses.J_M[name](anchor, positive, negatives, margin=1.0)
    gen = daml_losses.j_hard(negatives, anchor) + daml_losses.j_reg(negatives, negatives)
    return j_m + gen + daml_losses.j_adv(anchor, positive, negatives, margin=1.0, similarity=name == "npair")

  value, grads = jax.value_and_grad(total, argnums=(0, 1, 2))(anchor, positive, negatives)
  assert np.isfinite(float(value))
  assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


# ----------------------------------------------------------------------------------------------------------------
# The generator.


def test_generator_equals_dense_on_concatenation():
  width, rng = 5, np.random.default_rng(2)
  generator = daml.Generator(output_dim=width, hidden_dims=(7, 6), output_relu=True)
  sources, anchor, positive = (_a(rng.normal(size=(n, width))) for n in (4, 3, 3))
  index = jnp.asarray([[1, 2], [0, 3], [3, 3]], jnp.int32)
  params = generator.init(jax.random.key(0), sources, index, anchor, positive)["params"]
  out = generator.apply({"params": params}, sources, index, anchor, positive)
  assert out.shape == (3, 2, width)
  assert params["input_kernel"].shape == (3 * width, 7)
  for a in range(3):
    for k in range(2):
      h = np.concatenate([sources[index[a, k]], anchor[a], positive[a]]) @ params["input_kernel"]
      h = np.maximum(h + params["input_bias"], 0) @ params["layers_0"]["kernel"] + params["layers_0"]["bias"]
      h = np.maximum(h, 0) @ params["layers_1"]["kernel"] + params["layers_1"]["bias"]
      np.testing.assert_allclose(out[a, k], np.maximum(h, 0), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# The method on a tiny model.


def _config(loss: str, batch_size: int, **kwargs) -> ml_collections.ConfigDict:
  layout = daml.LAYOUTS[loss]
  sampler_name, sampler_kwargs = daml.SAMPLER_OF_LAYOUT[layout]
  return ml_collections.ConfigDict(dict(
      num_steps=10, batch_size=batch_size, loss=dict(name=loss, kwargs={}),
      sampler=dict(name=sampler_name, kwargs=dict(sampler_kwargs)),
      method=dict(name="daml", kwargs=dict(kwargs)), optimizer=optim.default_config()))


def _setup(loss: str, *, batch_size: int | None = None, seed: int = 0, **kwargs):
  batch_size = batch_size or (12 if daml.LAYOUTS[loss] == "triplets" else 8)
  # An MLP backbone (Dense–BN–ReLU, then the embedder's pooling and head) compiles in a fraction of a CNN's time.
  model = models.create_model("mlp", embedding_dim=6, hidden_dims=(12,))
  method = daml.DAML(_config(loss, batch_size, **kwargs), model, num_classes=10)
  images = jax.random.uniform(jax.random.key(seed), (batch_size, 10))
  labels = jnp.arange(batch_size, dtype=jnp.int32)  # DAML reads the tuple layout, not the labels
  params, batch_stats, _ = method.init(jax.random.key(seed + 1), images)
  return method, params, batch_stats, {"image": images, "label": labels}


def _grads(loss, params, batch_stats, batch, **kwargs):
  method = _setup(loss, **kwargs)[0]
  objective_and_grad = jax.jit(jax.value_and_grad(method.objective, has_aux=True), static_argnums=3)
  (_, (_, terms)), grads = objective_and_grad(params, batch_stats, batch, "joint")
  return grads, terms


def _norm(tree) -> float:
  return float(optax.tree.norm(tree))


def _close(a, b) -> bool:
  return all(np.allclose(x, y, rtol=1e-4, atol=1e-7) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# N-pair with γ = 0: its J_m is never 0 and J_adv is active as soon as one synthetic negative is less similar to its
# anchor than the positive, so every path below carries a gradient.
ROUTING_CASE = dict(margin=0.0, lambda_m=3.0)


def test_joint_routing_sends_every_term_to_every_module():
  _, params, batch_stats, batch = _setup("npair")
  full, terms = _grads("npair", params, batch_stats, batch, **ROUTING_CASE)
  assert float(terms["j_adv"]) > 0 and float(terms["j_m"]) > 0
  without_m, _ = _grads("npair", params, batch_stats, batch, **{**ROUTING_CASE, "lambda_m": 0.0})
  without_adv, _ = _grads("npair", params, batch_stats, batch, **{**ROUTING_CASE, "lambda_adv": 0.0})
  # The generator's gradient contains ∂(λJ_m)/∂θ_g; the backbone's contains ∂J_adv/∂θ_f (eq. 7).
  diff = jax.tree.map(jnp.subtract, full["generator"], without_m["generator"])
  assert _norm(diff) > 1e-4 * _norm(full["generator"])
  diff = jax.tree.map(jnp.subtract, full["backbone"], without_adv["backbone"])
  assert _norm(diff) > 1e-4 * _norm(full["backbone"])


def test_gan_routing_separates_generator_and_metric():
  _, params, batch_stats, batch = _setup("npair")
  base = dict(ROUTING_CASE, routing="gan")
  full, terms = _grads("npair", params, batch_stats, batch, **base)
  assert float(terms["j_adv"]) > 0 and float(terms["j_m"]) > 0
  without_m, _ = _grads("npair", params, batch_stats, batch, **{**base, "lambda_m": 0.0})
  without_gen, _ = _grads("npair", params, batch_stats, batch, **{**base, "lambda_reg": 0.0, "lambda_adv": 0.0})
  assert _close(full["generator"], without_m["generator"])  # θ_g ← J_gen only
  assert _close(full["backbone"], without_gen["backbone"]) and _close(full["head"], without_gen["head"])  # θ_f ← J_m
  assert _norm(without_m["backbone"]) == 0.0 and _norm(without_m["head"]) == 0.0
  assert _norm(full["generator"]) > 0 and _norm(full["backbone"]) > 0


def _code_formulas(h, gen, head, phase):
  """The released code's triplet objective (daml.md "Released code"), in NumPy float64, input order [a, p, n]."""
  h = np.asarray(h, np.float64)
  h_a, h_p, h_n = h[0::3], h[1::3], h[2::3]
  width = h.shape[1]
  sq = lambda u, v: np.sum((u - v) ** 2, axis=1)
  relu = lambda z: np.maximum(z, 0.0)
  if phase == "pretrain":
    return np.mean(relu(sq(h_a, h_p) - sq(h_a, h_n) + 1.0)) / 2
  w = np.asarray(gen["input_kernel"], np.float64)  # our rows: [x⁻; x; x⁺]; the code concatenates [a, p, n]
  w_code = np.concatenate([w[width:2 * width], w[2 * width:], w[:width]])
  hidden = relu(np.concatenate([h_a, h_p, h_n], axis=1) @ w_code + np.asarray(gen["input_bias"]))
  h_syn = relu(hidden @ np.asarray(gen["layers_0"]["kernel"]) + np.asarray(gen["layers_0"]["bias"]))
  metric = lambda x: (relu(x @ np.asarray(head["dense_0"]["kernel"]) + np.asarray(head["dense_0"]["bias"]))
                      @ np.asarray(head["dense_1"]["kernel"]) + np.asarray(head["dense_1"]["bias"]))
  d_ap, d_an = sq(metric(h_a), metric(h_p)), sq(metric(h_a), metric(h_syn))
  j_hard, j_reg = np.mean(sq(h_syn, h_a)), np.mean(sq(h_syn, h_n))
  j_adv = np.mean(relu(d_an - d_ap - 1.0)) / 2
  j_m = np.mean(relu(d_ap - d_an + 1.0)) / 2
  return j_hard + j_reg + j_adv + j_m


@pytest.mark.parametrize("phase", ["pretrain", "joint"])
def test_code_preset_triplet_equals_released_code_formulas(phase):
  method, params, batch_stats, batch = _setup("triplet", batch_size=15, **daml.PRESETS["code"])
  # Move the identity-initialised metric head away from the identity, so that the test sees it.
  params["metric_head"] = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(5), p.shape),
                                       params["metric_head"])
  h, _ = method.model.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
                            mutable=["batch_stats"])
  ours, (_, terms) = method.objective(params, batch_stats, batch, phase)
  expected = _code_formulas(h, params["generator"], params["metric_head"], phase)
  np.testing.assert_allclose(float(ours), expected, rtol=1e-5)
  if phase == "joint":  # both hinges are active in this batch, so the comparison covers them
    assert float(terms["j_adv"]) > 0 and float(terms["j_m"]) > 0


@pytest.mark.parametrize("loss", sorted(daml.LAYOUTS))
def test_no_nan_when_the_generator_returns_the_anchor(loss):
  method, params, batch_stats, batch = _setup(loss)
  generator = params["generator"]
  width = generator["input_bias"].shape[0]
  # x̃ = ReLU(x·I)·I = x: the pooled features are non-negative (ReLU before pooling).
  kernel = jnp.zeros_like(generator["input_kernel"]).at[width:2 * width].set(jnp.eye(width))
  params["generator"] = {"input_kernel": kernel, "input_bias": jnp.zeros(width),
                         "layers_0": {"kernel": jnp.eye(width), "bias": jnp.zeros(width)}}
  (value, (_, terms)), grads = jax.jit(jax.value_and_grad(method.objective, has_aux=True), static_argnums=3)(
      params, batch_stats, batch, "joint")
  assert float(terms["j_hard"]) == 0.0
  assert np.isfinite(float(value)) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_pretraining_ignores_the_generator_and_the_optimizer_holds_it_back():
  method, params, batch_stats, batch = _setup("npair", pretrain_steps=2)
  config = optim.default_config()
  config.weight_decay = 0.1  # coupled weight decay would move a parameter with a zero gradient
  tx = method.create_optimizer(config, params)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                     opt_state=tx.init(params), rng=jax.random.key(0), method_state={})
  step = jax.jit(lambda s, b, phase: method.train_step(s, b, tx, phase), static_argnums=2)
  phases = [method.phase(i) for i in range(4)]
  assert phases == ["pretrain", "pretrain", "joint", "joint"]
  for phase in phases:
    before = state.params
    state, metrics = step(state, batch, phase)
    moved = _norm(jax.tree.map(jnp.subtract, state.params["generator"], before["generator"]))
    assert (moved == 0.0) == (phase == "pretrain"), phase
    assert _norm(jax.tree.map(jnp.subtract, state.params["backbone"], before["backbone"])) > 0
    assert ("j_adv" in metrics) == (phase == "joint") and np.isfinite(float(metrics["loss"]))
  assert step._cache_size() == 2  # one compilation per phase


def test_pretrain_lr_multipliers_switch_at_the_phase_boundary():
  method, params, _, _ = _setup("triplet", pretrain_steps=3, pretrain_lr_multipliers=())
  config = optim.default_config()
  config.lr_multipliers = (("backbone", 1e-3), ("generator", 0.1))
  tx = method.create_optimizer(config, params)
  opt_state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  sizes = []
  for _ in range(5):
    updates, opt_state = tx.update(grads, opt_state, params)
    sizes.append((float(jnp.abs(updates["backbone"]["dense0"]["kernel"]).max()),
                  float(jnp.abs(updates["generator"]["input_kernel"]).max()),
                  float(jnp.abs(updates["head"]["out"]["kernel"]).max())))
  lr = config.learning_rate
  for i, (backbone, generator, head) in enumerate(sizes):  # Adam on constant gradients: |update| = lr · multiplier
    assert backbone == pytest.approx(lr * (1.0 if i < 3 else 1e-3), rel=1e-3)
    assert generator == pytest.approx(0.0 if i < 3 else lr * 0.1, rel=1e-3)
    assert head == pytest.approx(lr, rel=1e-3)


def test_config_errors():
  model = models.create_model("mlp", embedding_dim=6, hidden_dims=(12,))
  with pytest.raises(ValueError, match="unknown DAML keyword.*'lambda'.*valid:.*'lambda_m'"):
    daml.DAML(_config("triplet", 12, **{"lambda": 50.0}), model, 10)
  config = _config("triplet", 12)
  config.sampler = dict(name="m_per_class", kwargs=dict(m=4))
  with pytest.raises(ValueError, match=r"DAML with triplet needs triplets batches: set config.sampler"):
    daml.DAML(config, model, 10)
  config = _config("npair", 8)
  config.loss.name = "multi_similarity"
  with pytest.raises(ValueError, match="DAML extends one of the losses"):
    daml.DAML(config, model, 10)
  config = _config("triplet", 12)
  config.loss.kwargs = dict(margin=0.2)
  with pytest.raises(ValueError, match="config.loss.kwargs must be empty"):
    daml.DAML(config, model, 10)
  with pytest.raises(ValueError, match="metric_head_layers > 0 needs generator_space='embeddings'"):
    daml.DAML(_config("triplet", 12, metric_head_layers=2), model, 10)
  with pytest.raises(ValueError, match=r"negatives_per_anchor must lie in \[1, C−1 = 3\]"):
    daml.DAML(_config("npair", 8, negatives_per_anchor=4), model, 10)
  with pytest.raises(ValueError, match=r"pretrain_steps must lie in \[0, num_steps = 10\]"):
    daml.DAML(_config("npair", 8, pretrain_steps=11), model, 10)


def test_negatives_per_anchor_limits_the_synthetic_columns():
  method, params, batch_stats, batch = _setup("lifted_structure", batch_size=10, negatives_per_anchor=2)
  np.testing.assert_array_equal(daml.negative_index("pairs", 5, 2), [[1, 2], [2, 3], [3, 4], [4, 0], [0, 1]])
  value, (_, terms) = jax.jit(method.objective, static_argnums=3)(params, batch_stats, batch, "joint")
  assert np.isfinite(float(value)) and float(terms["j_hard"]) > 0


# ----------------------------------------------------------------------------------------------------------------
# Samplers.


def _labels(counts):
  return np.random.default_rng(3).permutation(np.repeat(np.arange(len(counts)), counts)).astype(np.int32)


def test_triplet_sampler_batches_are_exact():
  labels = _labels([2, 5, 3, 4, 2, 6, 3, 2, 4, 5, 3, 2, 7])
  sampler = samplers.make_sampler("triplets", labels, 12, seed=0)  # 4 triplets, 8 distinct classes
  assert sampler.steps_per_epoch == 13 // 8
  for step in range(30):
    batch = sampler.batch_indices(step)
    assert batch.shape == (12,) and batch.dtype == np.int32
    anchor, positive, negative = labels[batch[0::3]], labels[batch[1::3]], labels[batch[2::3]]
    np.testing.assert_array_equal(anchor, positive)
    assert np.all(batch[0::3] != batch[1::3])  # two different examples of the anchor's class
    assert len(set(anchor.tolist()) | set(negative.tolist())) == 8  # all 2T classes distinct


def test_triplet_sampler_is_deterministic_and_resumable():
  labels = _labels([4] * 30)
  run = samplers.TripletSampler(labels, 15, seed=7)
  uninterrupted = [run.batch_indices(step) for step in range(12)]
  resumed = samplers.TripletSampler(labels, 15, seed=7)
  for step in range(5, 12):
    np.testing.assert_array_equal(resumed.batch_indices(step), uninterrupted[step])
  other = samplers.TripletSampler(labels, 15, seed=8)
  assert not all(np.array_equal(other.batch_indices(s), uninterrupted[s]) for s in range(12))
  # Within an epoch of classes (3 batches of 10 classes) no class repeats.
  epoch = np.concatenate([labels[uninterrupted[s]][np.r_[0:15:3, 2:15:3]] for s in range(3)])
  assert len(np.unique(epoch)) == 30


def test_triplet_sampler_errors():
  with pytest.raises(ValueError, match="batch_size 10 cannot hold .* triplets: choose a multiple of 3"):
    samplers.TripletSampler(_labels([3] * 10), 10)
  with pytest.raises(ValueError, match=r"need 8 distinct classes per batch, but the labels have only 6 classes: "
                                       r"choose batch_size <= 9"):
    samplers.TripletSampler(_labels([3] * 6), 12)


def test_npair_batches_are_m_per_class_with_m_2():
  labels = _labels([2, 5, 3, 4, 2, 6, 3, 2, 4, 5, 3])
  sampler = samplers.make_sampler(*daml.SAMPLER_OF_LAYOUT["pairs"][:1], labels, 10, seed=1,
                                  **daml.SAMPLER_OF_LAYOUT["pairs"][1])
  for step in range(20):
    batch = sampler.batch_indices(step)
    anchor, positive = labels[batch[0::2]], labels[batch[1::2]]
    np.testing.assert_array_equal(anchor, positive)  # one anchor–positive pair per class ...
    assert np.all(batch[0::2] != batch[1::2]) and len(set(anchor.tolist())) == 5  # ... of 5 distinct classes
    np.testing.assert_array_equal(batch, samplers.MPerClassSampler(labels, 10, seed=1, m=2).batch_indices(step))


# ----------------------------------------------------------------------------------------------------------------
# Smoke runs of the glyphs configs.


def _load_config(name: str, arg: str):
  return config_util.load_config(os.path.join(ROOT, "configs", f"{name}.py"), arg)


def test_glyphs_daml_config_arguments():
  for variant, loss in VARIANT_OF.items():
    config = _load_config("glyphs_daml", variant)
    assert config.loss.name == loss and config.method.name == "daml"
    assert config.method.kwargs.lambda_m == 50.0 and config.method.kwargs.pretrain_steps == 120
    assert set(config.method.kwargs) == {field.name for field in dataclasses.fields(daml.DAMLOptions)}
    recommended = _load_config("glyphs_daml", f"{variant},recommended")
    assert recommended.method.kwargs.lambda_m == 1.0 and recommended.method.kwargs.j_gen_backbone_factor == 0.0
    assert recommended.model.kwargs.normalize == (loss != "lifted_structure")
    code = _load_config("glyphs_daml", f"{variant},code")
    assert code.method.kwargs.lambda_m == 1.0 and code.method.kwargs.generator_space == "embeddings"
    assert dict(code.optimizer.lr_multipliers) == dict(daml.CODE_LR_MULTIPLIERS)
  with pytest.raises(ValueError, match="give exactly one variant"):
    _load_config("glyphs_daml", "tri,npair")


@pytest.fixture(scope="module")
def glyphs_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("glyphs"))  # generated once for the four runs


@pytest.mark.parametrize("variant", sorted(VARIANT_OF))
def test_glyphs_daml_smoke_run(variant, glyphs_dir, tmp_path):
  config = _load_config("glyphs_daml", f"{variant},smoke")
  config.dataset.data_dir = glyphs_dir
  config.dataset.kwargs = dict(images_per_class=4, max_classes=40)
  config.num_steps = 2  # one pre-training step, one joint step
  config.model.kwargs = dict(widths=(8, 16))  # compiles faster than the recipe's (32, 64, 128)
  config.method.kwargs.pretrain_steps = 1
  config.eval.update(plots=False, baselines=False, clustering=False)
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["num_steps"] == 2 and np.isfinite(results["final_loss"])
  assert 0.0 <= results["recall@1"] <= 1.0


# ----------------------------------------------------------------------------------------------------------------
# The named J_m options (issue 16): reducers, triplet negatives, N-pair scale, Sohn's penalty, J_gen's factor.


def test_contrastive_reducers_hand_computed():
  anchor, positive = _a([[0.0, 0.0], [2.0, 0.0]]), _a([[1.0, 0.0], [2.0, 2.0]])  # D² = 1, 4
  negatives = _a([[[0.0, 0.5], [0.0, 3.0]], [[2.0, 3.0], [2.0, 0.5]]])  # D² = 0.25, 9 | 9, 0.25
  # Hinges [2 − D²]₊ of the negatives: 1.75, 0 | 0, 1.75.
  value = lambda reducer: float(daml_losses.j_m_contrastive(anchor, positive, negatives, margin=2.0, reducer=reducer))
  assert value("pooled_mean") == pytest.approx((1 + 4 + 1.75 + 1.75) / 6)  # eq. 8's sum over the 6 pairs / 6
  assert value("mean") == pytest.approx((1 + 4) / 2 + 3.5 / 4)
  assert value("mean_nonzero") == pytest.approx((1 + 4) / 2 + 3.5 / 2)
  with pytest.raises(ValueError, match="pooled_mean"):
    value("sum")


def test_npair_scale_and_l2_penalty():
  anchor, positive = _a([[1.0, 0.0]]), _a([[0.8, 0.6]])
  negatives = _a([[[-1.0, 0.0], [0.6, 0.8]]])
  for scale in (1.0, 16.0):
    expected = math.log(1 + math.exp(scale * (-1.0 - 0.8)) + math.exp(scale * (0.6 - 0.8)))
    value = daml_losses.j_m_npair(anchor, positive, negatives, margin=1.0, scale=scale)
    assert float(value) == pytest.approx(expected, rel=1e-5)
  # ¼(mean‖f_a‖² + mean‖f_p‖²) with norms² 4 and 1 (anchors) and 9 and 0 (positives).
  penalty = daml_losses.embedding_l2_penalty(_a([[2.0, 0.0], [0.0, 1.0]]), _a([[3.0, 0.0], [0.0, 0.0]]))
  assert float(penalty) == pytest.approx(0.25 * (2.5 + 4.5))


def test_triplet_batch_negatives_are_every_other_class():
  index = daml.negative_index("triplets", 3, None, "batch")
  # Anchor t's negatives: every row of the 9-row batch but 3t and 3t + 1 (its own negative 3t + 2 included).
  np.testing.assert_array_equal(index, [[2, 3, 4, 5, 6, 7, 8], [0, 1, 2, 5, 6, 7, 8], [0, 1, 2, 3, 4, 5, 8]])
  method, params, batch_stats, batch = _setup("triplet", batch_size=9, triplet_negatives="batch",
                                              triplet_reducer="mean_nonzero")
  loss, _ = method.objective(params, batch_stats, batch, "pretrain")
  # The reference: J_m on the same training-mode embeddings (BatchNorm on batch statistics, as the objective).
  model_params = {key: value for key, value in params.items() if key != "generator"}
  out, _ = method.model.apply({"params": model_params, "batch_stats": batch_stats}, batch["image"], train=True,
                              mutable=["batch_stats"])
  expected = daml_losses.j_m_triplet(out[0::3], out[1::3], out[index], margin=1.0, reducer="mean_nonzero")
  assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_j_gen_backbone_factor_scales_only_the_generator_path_into_the_embedder():
  _, params, batch_stats, batch = _setup("npair")
  grads = {}
  for factor in (0.0, 0.5, 1.0):
    grads[factor], terms = _grads("npair", params, batch_stats, batch, **ROUTING_CASE, j_gen_backbone_factor=factor)
    assert float(terms["j_adv"]) > 0
  # The generator's gradient and the loss do not depend on the factor (the damping is value-preserving).
  assert _close(grads[0.0]["generator"], grads[1.0]["generator"])
  # The embedder's gradient is linear in the factor: g(½) = ½(g(0) + g(1)), and g(0) ≠ g(1).
  model = lambda g: {k: v for k, v in g.items() if k != "generator"}  # noqa: E731
  half = jax.tree.map(lambda a, b: 0.5 * (a + b), model(grads[0.0]), model(grads[1.0]))
  assert _close(model(grads[0.5]), half)
  diff = jax.tree.map(jnp.subtract, model(grads[0.0]), model(grads[1.0]))
  assert _norm(diff) > 1e-3 * _norm(model(grads[1.0]))


def test_cont_diagnostic_compares_with_the_real_positive():
  """`synthetic_harder_than_positive` for cont: the share of synthetic negatives nearer the anchor than its real
  positive (J_adv's slot holds the anchor itself, which nothing can beat, so that comparison was always 0)."""
  method, params, batch_stats, batch = _setup("contrastive", margin=4.0)
  _, (_, terms) = method.objective(params, batch_stats, batch, "joint")
  value = float(terms["synthetic_harder_than_positive"])
  assert 0.0 < value <= 1.0
