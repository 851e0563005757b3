"""Tests for APFS (`metriclearn.methods.apfs`, `metriclearn.data.apfs_sampler`; `papers/apfs.md`).

Unit tests use synthetic labels and an MLP embedder with BatchNorm on flat inputs; the end-to-end tests run the
`configs/glyphs_apfs.py:smoke` recipe through `train.train_and_evaluate` on a small glyph set generated once per
module.
"""

from __future__ import annotations

import json
import os
import threading

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from metriclearn import config_util
from metriclearn import data
from metriclearn import losses
from metriclearn import models
from metriclearn import optim
from metriclearn import train
from metriclearn.data.apfs_sampler import APFSSampler, mine_class_neighbors
from metriclearn.methods import apfs
from metriclearn.methods.apfs import APFS
from metriclearn.methods.baseline import apply_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(arg=None) -> ml_collections.ConfigDict:
  return config_util.load_config(os.path.join(REPO, "configs", "glyphs_apfs.py"), arg)


def uneven_labels() -> np.ndarray:
  """7 classes with 3 to 6 members, shuffled."""
  labels = np.repeat(np.arange(7), [3, 4, 5, 6, 3, 4, 5]).astype(np.int32)
  return np.random.default_rng(0).permutation(labels)


# ----------------------------------------------------------------------------------------------------------------
# Sampler.


def test_batch_layout_representatives_first_then_samples_interleaved_by_slot():
  labels = uneven_labels()
  sampler = APFSSampler(labels, batch_size=12, seed=3, m=4, representative_lifetime=5)  # P = 3, M = 4
  for step in (0, 4, 5, 17):
    indices = sampler.batch_indices(step)
    classes = sampler.batch_classes(step)
    assert indices.shape == (12,) and indices.dtype == np.int32 and len(set(classes)) == 3
    np.testing.assert_array_equal(indices[:3], sampler.representatives(step // 5)[classes])
    # Slot j of class i sits at P + j·P + i: [s_c1,1, s_c2,1, s_c3,1, s_c1,2, ...].
    np.testing.assert_array_equal(labels[indices[3:]].reshape(3, 3), np.tile(classes, (3, 1)))
    for i in range(3):  # the M−1 ordinary samples of a class are distinct
      assert len(set(indices[3:].reshape(3, 3)[:, i])) == 3
  np.testing.assert_array_equal(sampler.representative_mask(), np.arange(12) < 3)
  np.testing.assert_array_equal(sampler.test_time_preprocessing_mask(7), np.arange(12) < 3)
  augmented = APFSSampler(labels, 12, 3, m=4, representative_lifetime=5, augment_representatives=True)
  assert not augmented.test_time_preprocessing_mask(7).any()


def test_random_classes_visit_every_class_once_per_pass():
  sampler = APFSSampler(np.repeat(np.arange(10), 4).astype(np.int32), batch_size=9, seed=0, m=3,
                        representative_lifetime=2)  # P = 3: 3 batches per pass of 10 classes, one left out
  for class_pass in range(3):
    seen = np.concatenate([sampler.batch_classes(3 * class_pass + i) for i in range(3)])
    assert len(set(seen)) == 9


def test_representatives_persist_for_exactly_t_steps_and_run_through_each_class_without_replacement():
  labels = uneven_labels()
  lifetime = 4
  sampler = APFSSampler(labels, batch_size=12, seed=1, m=4, representative_lifetime=lifetime)
  members = [set(np.flatnonzero(labels == c)) for c in range(7)]
  per_stage = np.stack([sampler.representatives(stage) for stage in range(12)])  # [stage, class]
  for c in range(7):
    n = len(members[c])
    assert set(per_stage[:n, c]) == members[c]  # a permutation of the class: without replacement
    assert set(per_stage[n:2 * n, c]) == members[c]  # refilled and reshuffled
    assert all(labels[i] == c for i in per_stage[:, c])
  assert (per_stage[1:] != per_stage[:-1]).any(axis=1).all()  # redrawn at every boundary
  for step in range(40):  # what each batch holds: the representative set of its stage, held for exactly T steps
    reps = sampler.batch_indices(step)[:3]
    np.testing.assert_array_equal(reps, per_stage[step // lifetime][sampler.batch_classes(step)])


def test_sampler_is_a_pure_function_of_seed_and_step():
  labels = uneven_labels()
  first, second = (APFSSampler(labels, 12, 5, m=4, representative_lifetime=3) for _ in range(2))
  steps = [9, 0, 30, 4, 9]
  batches = [first.batch_indices(s) for s in steps]
  for step, batch in zip(reversed(steps), reversed(batches)):  # another order, another instance
    np.testing.assert_array_equal(second.batch_indices(step), batch)
  other = APFSSampler(labels, 12, 6, m=4, representative_lifetime=3)
  assert any((other.batch_indices(s) != first.batch_indices(s)).any() for s in range(5))


def test_sampler_rejects_bad_arguments():
  labels = uneven_labels()
  with pytest.raises(ValueError, match="M ≥ 2"):
    APFSSampler(labels, 12, m=1)
  with pytest.raises(ValueError, match="multiple of 4"):
    APFSSampler(labels, 14, m=4)
  with pytest.raises(ValueError, match="distinct classes"):
    APFSSampler(labels, 16, m=2)
  with pytest.raises(ValueError, match="class_selection"):
    APFSSampler(labels, 12, m=4, class_selection="hardest")


def test_hard_batches_are_a_seed_class_and_its_planned_neighbors_and_wait_for_the_plan():
  labels = np.repeat(np.arange(6), 3).astype(np.int32)
  sampler = APFSSampler(labels, 9, 0, m=3, representative_lifetime=2, class_selection="hard",
                        plan_wait_timeout_s=0.2)
  assert not sampler.uses_class_plan(0) and sampler.uses_class_plan(1)
  sampler.batch_indices(1)  # stage 0: random classes, no plan needed
  with pytest.raises(TimeoutError, match="host_update"):
    sampler.batch_indices(2)
  plan = np.array([[1, 2], [2, 0], [3, 4], [4, 5], [5, 0], [0, 1]], np.int32)
  sampler.set_class_plan(1, plan)
  for step in (2, 3):
    classes = sampler.batch_classes(step)
    np.testing.assert_array_equal(classes[1:], plan[classes[0]])
  with pytest.raises(ValueError, match="P−1"):
    sampler.set_class_plan(2, plan[:, :1])
  seeds = []
  for stage in range(2, 6):
    sampler.set_class_plan(stage, plan)
    seeds += [sampler.batch_classes(step)[0] for step in (2 * stage, 2 * stage + 1)]
  assert sorted(seeds[2:]) == list(range(6))  # steps 6..11: every class is the seed once per pass of C = 6 steps
  # A loader thread waiting for a plan is woken by `set_class_plan` (and released by `close`).
  waiting = APFSSampler(labels, 9, 0, m=3, representative_lifetime=2, class_selection="hard")
  result = {}
  thread = threading.Thread(target=lambda: result.setdefault("batch", waiting.batch_indices(2)))
  thread.start()
  waiting.set_class_plan(1, plan)
  thread.join(timeout=10)
  assert result["batch"].shape == (9,)
  waiting.close()
  with pytest.raises(RuntimeError, match="closed"):
    waiting.batch_indices(4)


def test_mining_picks_the_nearest_classes():
  # Classes on a line at 0, 1, 3, 7, 15, 16: the nearest of each is known by hand.
  positions = np.array([0.0, 1.0, 3.0, 7.0, 15.0, 16.0])
  embeddings = np.stack([positions, np.zeros(6)], axis=1).astype(np.float32)
  np.testing.assert_array_equal(mine_class_neighbors(embeddings, 2),
                                [[1, 2], [0, 2], [1, 0], [2, 1], [5, 3], [4, 3]])
  # Coincident representatives: a class never lists itself, even when a twin comes first.
  twins = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0]], np.float32)
  plan = mine_class_neighbors(twins, 2)
  assert all(c not in plan[c] for c in range(3))
  np.testing.assert_array_equal(plan[:2, 0], [1, 0])


# ----------------------------------------------------------------------------------------------------------------
# Restricted loss.


def restricted_batch(num_classes=4, m=3, dim=5, seed=0):
  """A layout-conforming batch: P representatives, then M−1 samples per class interleaved by slot."""
  classes = np.arange(num_classes, dtype=np.int32)
  labels = np.concatenate([classes, np.tile(classes, m - 1)])
  embeddings = np.random.default_rng(seed).normal(size=(len(labels), dim)).astype(np.float32)
  return jnp.asarray(embeddings), jnp.asarray(labels)


def test_restricted_contrastive_pair_counts_and_value():
  p, m = 4, 3
  embeddings, labels = restricted_batch(p, m)
  s, y, valid = apfs.representative_pair_matrices(embeddings, labels, p)
  assert s.shape == (p * (m - 1), p * m)
  assert float(jnp.sum(y * valid)) == p * (m - 1)
  assert float(jnp.sum((1 - y) * valid)) == p * (m - 1) * (p - 1)
  s, y, valid = apfs.representative_pair_matrices(embeddings, labels, p, anchors="representatives")
  assert s.shape == (p, p * m) and float(jnp.sum(y * valid)) == p * (m - 1)
  assert float(jnp.sum((1 - y) * valid)) == p * (m - 1) * (p - 1)
  _, y, valid = apfs.representative_pair_matrices(embeddings, labels, p, anchors="representatives",
                                                  representative_pairs=True)
  assert float(jnp.sum((1 - y) * valid)) == p * (m - 1) * (p - 1) + p * (p - 1)
  # The value: a loop over (sample, representative) pairs, mean of the non-zero hinge terms per part.
  unit = np.asarray(embeddings) / np.linalg.norm(np.asarray(embeddings), axis=1, keepdims=True)
  positive, negative = [], []
  for a in range(p, len(labels)):
    for r in range(p):
      d = np.linalg.norm(unit[a] - unit[r])
      (positive if labels[a] == labels[r] else negative).append(d if labels[a] == labels[r] else max(0.5 - d, 0))
  expected = np.mean([t for t in positive if t > 0]) + np.mean([t for t in negative if t > 0] or [0.0])
  value = apfs.representative_pair_loss("contrastive", embeddings, labels, p, neg_margin=0.5)
  np.testing.assert_allclose(float(value), expected, rtol=1e-5)


def test_restricted_multi_similarity_and_triplet_equal_loops():
  p, m = 4, 3
  embeddings, labels = restricted_batch(p, m, seed=1)
  unit = np.asarray(embeddings) / np.linalg.norm(np.asarray(embeddings), axis=1, keepdims=True)
  alpha, beta, base = 2.0, 10.0, 0.5
  per_anchor = []
  for a in range(p, len(labels)):  # one positive (its representative), P−1 negatives (the other representatives)
    sim = unit[:p] @ unit[a]
    pos, neg = sim[labels[:p] == labels[a]], sim[labels[:p] != labels[a]]
    per_anchor.append(np.log1p(np.exp(-alpha * (pos - base)).sum()) / alpha
                      + np.log1p(np.exp(beta * (neg - base)).sum()) / beta)
  value = apfs.representative_pair_loss("multi_similarity", embeddings, labels, p, alpha=alpha, beta=beta, base=base)
  np.testing.assert_allclose(float(value), np.mean(per_anchor), rtol=1e-5)
  margin, terms = 0.3, []
  for a in range(p, len(labels)):
    d = np.linalg.norm(unit[:p] - unit[a], axis=1)
    d_pos = d[labels[:p] == labels[a]][0]
    terms += [max(d_pos - d_n + margin, 0.0) for d_n in d[labels[:p] != labels[a]]]
  assert len(terms) == p * (m - 1) * (p - 1)
  value = apfs.representative_pair_loss("triplet", embeddings, labels, p, margin=margin)
  np.testing.assert_allclose(float(value), np.mean([t for t in terms if t > 0]), rtol=1e-5)


def test_full_pairs_ablation_is_the_registered_loss_on_the_whole_batch():
  embeddings, labels = restricted_batch(seed=2)
  for name, kwargs in (("contrastive", {}), ("multi_similarity", dict(beta=10.0)), ("triplet", {})):
    full = apfs.representative_pair_loss(name, embeddings, labels, 4, pair_restriction="full", **kwargs)
    np.testing.assert_allclose(float(full), float(losses.LOSSES[name](embeddings, labels, **kwargs)), rtol=1e-6)
    restricted = apfs.representative_pair_loss(name, embeddings, labels, 4, **kwargs)
    assert abs(float(full) - float(restricted)) > 1e-4


@pytest.mark.parametrize("name", apfs.SUPPORTED_LOSSES)
def test_no_nan_when_a_representative_duplicates_a_sample(name):
  p = 4
  embeddings, labels = restricted_batch(p, 3, seed=3)
  embeddings = embeddings.at[p + 1].set(embeddings[1])  # the representative of class 1 is also its first sample

  def loss(e):
    return apfs.representative_pair_loss(name, e, labels, p)

  value, grad = jax.jit(jax.value_and_grad(loss))(embeddings)
  assert np.isfinite(float(value)) and np.isfinite(np.asarray(grad)).all()
  s, _, _ = apfs.representative_pair_matrices(embeddings, labels, p)
  # Row 1 is the sample at batch position P + 1; column (B − P) + 1 is the representative of class 1.
  assert float(s[1, (len(labels) - p) + 1]) == 0.0  # exactly 0, so the safe square root's zero gradient applies


# ----------------------------------------------------------------------------------------------------------------
# The proximal term and the method.


def mlp_method(**method_kwargs):
  config = ml_collections.ConfigDict(dict(
      batch_size=9, sampler=dict(name="m_per_class", kwargs=dict(m=3)),
      loss=dict(name="contrastive", kwargs={}),
      method=dict(name="apfs", kwargs=dict(method_kwargs)), optimizer=optim.default_config()))
  model = models.create_model("mlp", embedding_dim=4, hidden_dims=(8,), batchnorm=True)
  return config, APFS(config, model, num_classes=6)


def test_regulariser_equals_the_gradient_of_the_proximal_penalty():
  _, method = mlp_method()
  params, batch_stats, method_state = method.init(jax.random.key(0), jnp.zeros((2, 5)))
  assert set(method_state) == {"anchor_params", "class_plan", "class_plan_stage"}
  mask = method.proximal_mask(params)
  assert mask["backbone"]["dense0"]["kernel"] and mask["head"]["out"]["kernel"]
  assert not mask["backbone"]["bn0"]["scale"] and not mask["backbone"]["bn0"]["bias"]  # BatchNorm is left out
  rng = np.random.default_rng(0)
  theta = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
  anchor = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
  grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
  weight = 0.3

  def penalty(theta):
    return 0.5 * weight * sum(jnp.sum(jnp.square(t - a)) for t, a, keep in zip(
        jax.tree.leaves(theta), jax.tree.leaves(anchor), jax.tree.leaves(mask)) if keep)

  expected = jax.tree.map(jnp.add, grads, jax.grad(penalty)(theta))
  transform = apfs.proximal_regularizer(mask)
  got, _ = transform.update(grads, transform.init(theta), theta, proximal_anchor=anchor, proximal_weight=weight)
  jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7), got, expected)
  np.testing.assert_array_equal(got["backbone"]["bn0"]["scale"], grads["backbone"]["bn0"]["scale"])
  # Chained before plain SGD (lr 1): the update is −(g + λ(θ − θ_anchor)), i.e. coupled, not decoupled.
  config = optim.default_config()
  config.update(dict(name="sgd", momentum=0.0, learning_rate=1.0))
  tx = method.create_optimizer(config, theta)
  updates, _ = tx.update(grads, tx.init(theta), theta, proximal_anchor=anchor, proximal_weight=weight)
  jax.tree.map(lambda u, e: np.testing.assert_allclose(u, -e, rtol=1e-6, atol=1e-7), updates, expected)
  with pytest.raises(ValueError, match="proximal_anchor"):
    transform.update(grads, transform.init(theta), theta)
  _, with_bn = mlp_method(proximal_include_batchnorm=True)
  with_bn.init(jax.random.key(0), jnp.zeros((2, 5)))
  assert all(jax.tree.leaves(with_bn.proximal_mask(params)))


def synthetic_split(num_classes=6, per_class=5, dim=5, seed=0) -> data.Split:
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_classes, dim))
  labels = np.repeat(np.arange(num_classes), per_class).astype(np.int32)
  images = (centres[labels] + 0.3 * rng.normal(size=(len(labels), dim))).astype(np.float32)
  return data.Split(images=images[:, None, None, :], labels=labels, class_names=[str(c) for c in range(num_classes)])


def simulated_run(config, split, start, stop, *, state=None, compiled=None, snapshot_at=None):
  """The training loop as `train.py` runs it, but with `host_update(step)` *before* the batch of `step` is taken
  (the order a mid-stage resume with mining needs; see the module docstring of `methods/apfs.py`), and with a new
  method and sampler, as a new process would have. `compiled` shares the jitted functions between runs.

  Returns:
    `(history, snapshot)`: per step the batch indices and the metrics, and the state after `snapshot_at` steps.
  """
  model = models.create_model("mlp", embedding_dim=4, hidden_dims=(8,), batchnorm=True)
  method = APFS(config, model, split.num_classes)
  sampler = method.make_sampler(split.labels, config.batch_size, 0)
  params, batch_stats, method_state = method.init(jax.random.key(0), jnp.zeros((2, 1, 1, 5)))
  if not compiled:
    tx = method.create_optimizer(config.optimizer, params)
    compiled.update(
        tx=tx, step=jax.jit(lambda state, batch: method.train_step(state, batch, tx)),
        embed=jax.jit(lambda params, batch_stats, images: apply_model(model, params, batch_stats, images,
                                                                      train=False)))
  if state is None:
    state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                             opt_state=compiled["tx"].init(params), rng=jax.random.key(1), method_state=method_state)
  context = train.StepContext(config=config, train_split=split, embed=lambda params, batch_stats, s: np.asarray(
      compiled["embed"](params, batch_stats, s.images)))
  batches = data.Loader(split, sampler, prefetch=2).iterate(start, stop - start)
  history, snapshot = [], None
  for step in range(start, stop):
    if step == snapshot_at:
      snapshot = jax.device_get(state)
    state = method.host_update(step, state, context)
    state, metrics = compiled["step"](state, next(batches))
    history.append((sampler.batch_indices(step), {k: float(v) for k, v in metrics.items()}))
  batches.close()
  return history, snapshot


def test_resuming_mid_stage_with_mining_reproduces_batches_and_steps():
  split = synthetic_split()
  config, _ = mlp_method(representative_lifetime=2, proximal_weight=0.5)
  config.num_steps = 9
  config.optimizer.learning_rate = 0.05
  compiled = {}
  uninterrupted, saved = simulated_run(config, split, 0, 9, compiled=compiled, snapshot_at=5)
  assert [metrics["stage"] for _, metrics in uninterrupted] == [0, 0, 1, 1, 2, 2, 3, 3, 4]
  # λ = 0 in stage 0, and θ = θ_anchor at each stage's first step: the proximal term is 0 exactly there.
  assert [m["proximal_term"] > 0 for _, m in uninterrupted] == [False, False, False, True, False, True, False,
                                                                  True, False]
  for batch, _ in uninterrupted[2:]:  # mined stages: a seed class and its neighbours, all distinct
    assert len(set(split.labels[batch[:3]])) == 3
  # "Kill" after 5 steps (mid-stage 2) keeping only the state, as a checkpoint holds it; resume from it.
  resumed, _ = simulated_run(config, split, 5, 9, state=jax.device_put(saved), compiled=compiled)
  assert len(resumed) == 4
  for (batch, metrics), (expected_batch, expected_metrics) in zip(resumed, uninterrupted[5:]):
    np.testing.assert_array_equal(batch, expected_batch)
    assert metrics == pytest.approx(expected_metrics, rel=1e-6, abs=1e-9)


def test_train_step_compiles_once_across_stages_and_refreshes_the_anchor_at_boundaries():
  split = synthetic_split()
  config, method = mlp_method(representative_lifetime=2, class_selection="random", proximal_weight=0.5)
  sampler = method.make_sampler(split.labels, 9, 0)
  params, batch_stats, method_state = method.init(jax.random.key(0), jnp.zeros((2, 1, 1, 5)))
  assert set(method_state) == {"anchor_params"}
  tx = method.create_optimizer(config.optimizer, params)
  state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                           opt_state=tx.init(params), rng=jax.random.key(1), method_state=method_state)
  traces = []

  def step_fn(state, batch):
    traces.append(1)
    return method.train_step(state, batch, tx)

  step_fn = jax.jit(step_fn)
  loader = data.Loader(split, sampler)
  for step in range(5):
    before = state.params
    state, _ = step_fn(state, loader.batch(step))
    anchor = state.method_state["anchor_params"]
    if step % 2 == 0:  # the anchor is θ at the stage's first step
      jax.tree.map(np.testing.assert_array_equal, anchor, before)
    else:
      assert not all(np.array_equal(a, p) for a, p in zip(jax.tree.leaves(anchor), jax.tree.leaves(before)))
  assert len(traces) == 1


def test_make_sampler_resolves_t_to_the_steps_per_epoch_and_options_are_validated():
  _, method = mlp_method()
  sampler = method.make_sampler(synthetic_split(per_class=10).labels, 9, 0)
  assert sampler.representative_lifetime == 60 // 9 == method.representative_lifetime
  with pytest.raises(ValueError, match="accepted: .*class_selection"):
    mlp_method(mining=True)
  with pytest.raises(ValueError, match="class_selection"):
    mlp_method(class_selection="hardest")
  with pytest.raises(ValueError, match="representative_pairs"):
    mlp_method(representative_pairs=True)
  config, _ = mlp_method()
  config.sampler = dict(name="random", kwargs={})
  with pytest.raises(ValueError, match="m_per_class"):
    APFS(config, None, 6)
  config, _ = mlp_method()
  config.loss = dict(name="proxy_anchor", kwargs={})
  with pytest.raises(ValueError, match="pair losses|supports"):
    APFS(config, None, 6)


# ----------------------------------------------------------------------------------------------------------------
# The glyphs recipe through the training program.


def test_config_arguments():
  assert load_config().method.kwargs.class_selection == "hard"
  config = load_config("no_mining,full_pairs,no_proximal,smoke")
  assert config.method.kwargs.class_selection == "random" and config.method.kwargs.pair_restriction == "full"
  assert config.method.kwargs.proximal_weight == 0.0 and config.num_steps == 4
  assert config.name == "glyphs_apfs_no_mining_full_pairs_no_proximal"
  with pytest.raises(ValueError, match="unknown config argument"):
    load_config("mining")


@pytest.fixture(scope="module")
def glyph_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("glyphs"))


def smoke_config(glyph_dir, arg="smoke", **overrides):
  config = load_config(arg)
  config.dataset.data_dir = glyph_dir
  config.dataset.kwargs = dict(images_per_class=6, max_classes=40)
  config.eval.clustering = config.eval.baselines = config.eval.plots = False
  config.log_every, config.eval_every, config.checkpoint_every = 1, 100, 100
  config.optimizer.schedule = "constant"  # the same learning rates in runs of different lengths
  config.update_from_flattened_dict(overrides)
  return config


def read_records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if "loss" in line]


@pytest.mark.slow
def test_smoke_run_with_mining_through_train_and_evaluate(glyph_dir, tmp_path):
  results = train.train_and_evaluate(smoke_config(glyph_dir), str(tmp_path / "run"))
  assert np.isfinite(results["final_loss"]) and results["num_steps"] == 4 and 0 < results["recall@1"] <= 1
  records = read_records(tmp_path / "run")
  assert [r["stage"] for r in records] == [0, 0, 1, 1]  # T = 2: stage 1 is mined at the last step of stage 0
  assert all(np.isfinite(r["pair_loss"]) and r["proximal_term"] >= 0 for r in records)


@pytest.mark.slow
def test_resume_mid_stage_restores_the_anchor_through_train_and_evaluate(glyph_dir, tmp_path):
  overrides = {"method.kwargs.proximal_weight": 1.0}  # large, so a wrong anchor would show in the loss
  train.train_and_evaluate(smoke_config(glyph_dir, "no_mining,smoke", **overrides), str(tmp_path / "full"))
  train.train_and_evaluate(smoke_config(glyph_dir, "no_mining,smoke", num_steps=3, **overrides),
                           str(tmp_path / "parts"))
  train.train_and_evaluate(smoke_config(glyph_dir, "no_mining,smoke", **overrides), str(tmp_path / "parts"))
  expected, got = read_records(tmp_path / "full"), read_records(tmp_path / "parts")
  assert len(got) == len(expected) == 4 and expected[3]["proximal_term"] > 0
  for g, e in zip(got, expected):
    assert g == pytest.approx(e, rel=1e-6)
