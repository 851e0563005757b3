"""Tests for the cross-batch memory (`metriclearn.memory`; Wang et al. 2020) and its composition with the methods.

Unit tests use random embeddings and an MLP embedder on flat inputs. The end-to-end tests run the
`configs/glyphs_xbm.py:smoke` recipe (memory of 2 batches from the second step, so it wraps around) through
`train.train_and_evaluate` with plain SGD on a small glyph set generated once per module: a resumed run must equal an
uninterrupted one, and 8 simulated devices (a subprocess) must compute what 1 device computes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from metriclearn import config_util
from metriclearn import data
from metriclearn import losses
from metriclearn import memory
from metriclearn import methods
from metriclearn import models
from metriclearn import optim
from metriclearn import train
from metriclearn.methods import apfs
from metriclearn.methods.baseline import apply_model

ROOT = Path(__file__).resolve().parents[1]
XBM_CONFIG = ROOT / "configs" / "glyphs_xbm.py"


def _queue(entries: np.ndarray, labels: np.ndarray, size: int) -> dict:
  return memory.enqueue(memory.init(size, entries.shape[1]), jnp.asarray(entries), jnp.asarray(labels))


def _random_batch(seed: int, batch: int = 8, dim: int = 4, classes: int = 3):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(batch, dim)).astype(np.float32), rng.integers(0, classes, size=batch).astype(np.int32)


# ----------------------------------------------------------------------------------------------------------------
# 1. The queue.


def test_enqueue_writes_in_order_and_overwrites_the_oldest_entries():
  # By hand: 5 slots, batches of 2 labelled [0, 1], [2, 3], [4, 5]: the third batch wraps, 5 overwrites 0.
  queue = memory.init(5, 2)
  for first in (0, 2, 4):
    queue = memory.enqueue(queue, jnp.full((2, 2), float(first)) + jnp.arange(2.0)[:, None],
                           jnp.arange(first, first + 2))
  np.testing.assert_array_equal(queue["labels"], [5, 1, 2, 3, 4])
  np.testing.assert_array_equal(queue["embeddings"][:, 0], [5.0, 1.0, 2.0, 3.0, 4.0])
  assert int(queue["count"]) == 5 and int(queue["pointer"]) == 1

  # Against a model of the stream, jitted, over two wrap-arounds (B = 4 does not divide S = 10).
  size, batch, rng = 10, 4, np.random.default_rng(0)
  enqueue = jax.jit(memory.enqueue)
  queue, stream = memory.init(size, 3), np.zeros((0, 3), np.float32)
  for k in range(6):
    entries = rng.normal(size=(batch, 3)).astype(np.float32)
    queue = enqueue(queue, entries, np.arange(k * batch, (k + 1) * batch, dtype=np.int32))
    stream = np.concatenate([stream, entries])
    total = len(stream)
    assert int(queue["count"]) == min(total, size) and int(queue["pointer"]) == total % size
    expected_labels = np.full(size, -1)
    expected_embeddings = np.zeros((size, 3), np.float32)
    for index in range(total):  # slot i holds the newest entry j with j ≡ i (mod S)
      expected_labels[index % size], expected_embeddings[index % size] = index, stream[index]
    np.testing.assert_array_equal(queue["labels"], expected_labels)
    np.testing.assert_array_equal(queue["embeddings"], expected_embeddings)
  # From the pointer on, the slots hold the last S entries, oldest first.
  order = np.roll(np.arange(size), -int(queue["pointer"]))
  np.testing.assert_array_equal(queue["labels"][order], np.arange(len(stream) - size, len(stream)))
  assert queue["embeddings"].dtype == jnp.float32 and queue["labels"].dtype == jnp.int32

  with pytest.raises(ValueError, match="at least as large"):
    memory.enqueue(memory.init(3, 2), jnp.ones((4, 2)), jnp.arange(4))
  with pytest.raises(ValueError, match="enqueue expects"):
    memory.enqueue(memory.init(3, 2), jnp.ones((2, 5)), jnp.arange(2))


def test_reference_is_invalid_during_warmup_and_for_unwritten_slots():
  queue = _queue(np.ones((3, 2), np.float32), np.array([4, 5, 6], np.int32), size=8)
  before = memory.reference(queue, jnp.int32(4), warmup_steps=5)
  assert not np.any(before.valid)
  after = memory.reference(queue, jnp.int32(5), warmup_steps=5)
  np.testing.assert_array_equal(after.valid, [True] * 3 + [False] * 5)
  np.testing.assert_array_equal(after.labels[:3], [4, 5, 6])
  assert np.all(memory.reference(queue, jnp.int32(0)).valid[:3])  # no warm-up


# ----------------------------------------------------------------------------------------------------------------
# 2. The loss with a memory.


def _numpy_multi_similarity(anchors, anchor_labels, candidates, candidate_labels, *, alpha=2.0, beta=50.0,
                            base=0.5):
  """Wang et al. 2019, eq. 8, per anchor in float64; the first A candidates are the anchors (self-pairs skipped)."""
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
  similarity = unit(anchors.astype(np.float64)) @ unit(candidates.astype(np.float64)).T
  total = 0.0
  for i in range(len(anchors)):
    others = np.arange(len(candidates)) != i
    positive = others & (candidate_labels == anchor_labels[i])
    negative = others & (candidate_labels != anchor_labels[i])
    total += np.log1p(np.sum(np.exp(-alpha * (similarity[i, positive] - base)))) / alpha
    total += np.log1p(np.sum(np.exp(beta * (similarity[i, negative] - base)))) / beta
  return total / len(anchors)


@pytest.mark.parametrize("name, kwargs", [
    ("contrastive", {}),
    ("contrastive", {"squared": True, "neg_margin": 1.0, "pos_margin": 0.1}),
    ("multi_similarity", {"alpha": 2.0, "beta": 10.0, "base": 0.5}),
    ("triplet", {"margin": 0.2}),
    ("lifted_structure", {}),
    ("generalized_lifted_structure", {}),
])
def test_loss_with_memory_equals_the_loss_on_the_concatenated_reference_set(name, kwargs):
  embeddings, labels = _random_batch(1)
  stored, stored_labels = _random_batch(2, batch=7)
  loss = lambda e, ref: memory.pair_loss(name, kwargs, e, jnp.asarray(labels), ref)  # noqa: E731
  # 7 entries in 12 slots: only the written ones are candidates.
  queue = _queue(stored, stored_labels, size=12)
  expected = losses.LOSSES[name](jnp.asarray(embeddings), jnp.asarray(labels), ref_embeddings=jnp.asarray(stored),
                                 ref_labels=jnp.asarray(stored_labels), **kwargs)
  np.testing.assert_allclose(loss(embeddings, memory.reference(queue, jnp.int32(0))), expected, rtol=1e-5)
  # During the warm-up the memory drops out: the batch loss.
  batch_only = losses.LOSSES[name](jnp.asarray(embeddings), jnp.asarray(labels), **kwargs)
  np.testing.assert_allclose(loss(embeddings, memory.reference(queue, jnp.int32(2), warmup_steps=3)), batch_only,
                             rtol=1e-5)
  assert not np.isclose(float(expected), float(batch_only))  # the memory changes the loss
  # A wrapped queue (15 entries into 12 slots): the last 12 entries, in any order.
  more, more_labels = _random_batch(3, batch=8)
  wrapped = memory.enqueue(queue, jnp.asarray(more), jnp.asarray(more_labels))
  last = np.concatenate([stored, more])[-12:], np.concatenate([stored_labels, more_labels])[-12:]
  expected = losses.LOSSES[name](jnp.asarray(embeddings), jnp.asarray(labels), ref_embeddings=jnp.asarray(last[0]),
                                 ref_labels=jnp.asarray(last[1]), **kwargs)
  np.testing.assert_allclose(loss(embeddings, memory.reference(wrapped, jnp.int32(0))), expected, rtol=1e-5)
  if name == "multi_similarity":  # and the value itself, from the definition over [batch; memory]
    np.testing.assert_allclose(
        expected, _numpy_multi_similarity(embeddings, labels, np.concatenate([embeddings, last[0]]),
                                          np.concatenate([labels, last[1]]), **kwargs), rtol=1e-5)


def test_gradients_flow_into_the_current_batch_only():
  embeddings, labels = _random_batch(4)
  stored, stored_labels = _random_batch(5, batch=6)

  def loss(batch_embeddings, memory_embeddings):
    queue = memory.enqueue(memory.init(6, 4), memory_embeddings, jnp.asarray(stored_labels))
    return memory.pair_loss("contrastive", {}, batch_embeddings, jnp.asarray(labels),
                            memory.reference(queue, jnp.int32(0)))

  batch_grad, memory_grad = jax.grad(loss, argnums=(0, 1))(jnp.asarray(embeddings), jnp.asarray(stored))
  assert np.all(np.isfinite(batch_grad)) and np.any(batch_grad != 0)
  np.testing.assert_array_equal(memory_grad, 0.0)
  # The memory's columns change the batch's gradient.
  without = jax.grad(lambda e: losses.contrastive(e, jnp.asarray(labels)))(jnp.asarray(embeddings))
  assert not np.allclose(batch_grad, without)
  # The stored entries are constants also when written inside a differentiated function.
  written = jax.grad(lambda e: jnp.sum(memory.enqueue(memory.init(8, 4), e, jnp.asarray(labels))["embeddings"]))
  np.testing.assert_array_equal(written(jnp.asarray(embeddings)), 0.0)


def test_unsupported_losses_and_methods_are_clear_errors():
  config = _mlp_config("baseline", memory_size=16)
  model = _mlp()
  for loss_name, message in (("proxy_anchor", "proxies"), ("npair", "reference columns")):
    config.loss = dict(name=loss_name, kwargs={})
    with pytest.raises(ValueError, match=message):
      methods.create_method(config, model, num_classes=4)
  config = _mlp_config("baseline", memory_size=4)  # smaller than the batch of 8
  with pytest.raises(ValueError, match="at least config.batch_size"):
    methods.create_method(config, model, num_classes=4)
  for name in ("daml", "aml"):
    with pytest.raises(ValueError, match=r"\['apfs', 'baseline', 'metrix'\]"):
      methods.create_method(_mlp_config(name, memory_size=16), model, num_classes=4)
  with pytest.raises(ValueError, match="lifted_structure"):
    memory.pair_loss("npair", {}, jnp.ones((4, 2)), jnp.arange(4), memory.reference(memory.init(4, 2), 0))
  assert type(methods.create_method(_mlp_config("baseline", memory_size=0), model, 4)).__name__ == "Baseline"


# ----------------------------------------------------------------------------------------------------------------
# 3. The wrapper around the methods, on an MLP.


def _mlp():
  # 32 hidden units: with 8, a row whose ReLUs are all off embeds to the zero vector, where the L2 normalisation's
  # gradient is 1/eps (Metrix then overflows).
  return models.create_model("mlp", embedding_dim=4, hidden_dims=(32,), batchnorm=True)


def _mlp_config(method: str, *, memory_size: int = 16, warmup_steps: int = 2, loss: str = "contrastive",
                method_kwargs: dict | None = None) -> ml_collections.ConfigDict:
  optimizer = optim.default_config()
  optimizer.update(dict(name="sgd", learning_rate=0.1, momentum=0.0, schedule="constant"))
  return ml_collections.ConfigDict(dict(
      batch_size=8, sampler=dict(name="m_per_class", kwargs=dict(m=2)), loss=dict(name=loss, kwargs={}),
      method=dict(name=method, kwargs=method_kwargs or {}), optimizer=optimizer,
      memory=dict(size=memory_size, warmup_steps=warmup_steps)))


def _batches(num_steps: int, num_classes_per_batch: int = 4, m: int = 2, dim: int = 5):
  """Fixed-shape batches of flat inputs `[B, 1, 1, dim]`; labels [c_1..c_P, c_1..c_P, ...] (APFS's layout)."""
  rng = np.random.default_rng(7)
  centres = rng.normal(size=(6, dim))
  for step in range(num_steps):
    classes = rng.choice(6, size=num_classes_per_batch, replace=False)
    labels = np.tile(classes, m).astype(np.int32)
    images = centres[labels] + 0.3 * rng.normal(size=(len(labels), dim))
    yield {"image": jnp.asarray(images[:, None, None, :], jnp.float32), "label": jnp.asarray(labels)}


def _initial_state(method, config):
  params, batch_stats, method_state = method.init(jax.random.key(0), jnp.zeros((2, 1, 1, 5)))
  tx = getattr(method, "create_optimizer", optim.create_optimizer)(config.optimizer, params)
  state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                           opt_state=tx.init(params), rng=jax.random.key(1), method_state=method_state)
  return state, tx


def test_baseline_with_memory_uses_it_after_warmup_and_enqueues_the_training_embeddings():
  config = _mlp_config("baseline", memory_size=16, warmup_steps=2, loss="multi_similarity")
  model = _mlp()
  method = methods.create_method(config, model, num_classes=6)
  assert isinstance(method, memory.CrossBatchMemory) and method.model is model  # hooks and attributes pass through
  state, tx = _initial_state(method, config)
  assert set(state.method_state) == {"memory"} and state.method_state["memory"]["embeddings"].shape == (16, 4)
  traces = []

  def train_step(s, b):
    traces.append(1)
    return method.train_step(s, b, tx)

  step = jax.jit(train_step)
  plain_loss = jax.jit(lambda s, b: method.method.loss(s.params, s.batch_stats, b, None)[0])
  written = []
  for k, batch in enumerate(_batches(5)):
    embeddings, _ = apply_model(model, state.params, state.batch_stats, batch["image"], train=True)
    written.append((np.asarray(embeddings), np.asarray(batch["label"])))
    batch_loss = float(plain_loss(state, batch))
    state, metrics = step(state, batch)
    # Steps 0 and 1 are the warm-up: the loss is the batch's; then the last 16 entries (2 batches) are columns.
    assert float(metrics["memory_columns"]) == (0 if k < 2 else min(8 * k, 16))
    assert (float(metrics["loss"]) == pytest.approx(batch_loss, rel=1e-6)) == (k < 2)
    queue = state.method_state["memory"]
    last = written[-2:]  # 16 slots hold the last two batches: slots 0–7 and 8–7 alternate
    for j, (emb, labels) in enumerate(last):
      slot = ((k - len(last) + 1 + j) % 2) * 8
      np.testing.assert_allclose(queue["embeddings"][slot:slot + 8], emb, rtol=1e-5, atol=1e-6)
      np.testing.assert_array_equal(queue["labels"][slot:slot + 8], labels)
  assert int(state.step) == 5 and np.all(np.isfinite(jax.tree.leaves(state.params)[0]))
  assert len(traces) == 1  # the queue's shapes and dtypes never change: one compilation


def test_metrix_with_memory_adds_clean_columns_and_keeps_the_mixed_loss():
  config = _mlp_config("metrix", loss="multi_similarity", warmup_steps=1,
                       method_kwargs=dict(space="embed", branches="both"))
  method = methods.create_method(config, _mlp(), num_classes=6)
  state, tx = _initial_state(method, config)
  step = jax.jit(lambda s, b: method.train_step(s, b, tx))
  batches = list(_batches(4))
  for batch in batches[:3]:
    state, metrics = step(state, batch)
    assert all(np.isfinite(float(v)) for v in metrics.values())
  assert float(metrics["memory_columns"]) == 16 and float(metrics["mixed_pairs"]) > 0
  np.testing.assert_array_equal(state.method_state["memory"]["labels"][:8], batches[2]["label"])  # the clean batch
  # Same λ, with and without the memory: the clean loss changes, the mixed loss (batch columns only) does not.
  ref = memory.reference(state.method_state["memory"], state.step, warmup_steps=1)
  args = (state.params, state.batch_stats, batches[3], jax.random.key(3), 0.3)
  _, (_, with_memory) = method.method.loss(*args, ref=ref)
  _, (_, without) = method.method.loss(*args)
  assert float(with_memory["mixed_loss"]) == pytest.approx(float(without["mixed_loss"]), rel=1e-6)
  assert float(with_memory["clean_loss"]) != pytest.approx(float(without["clean_loss"]), rel=1e-3)


def test_apfs_with_memory_stores_representatives_as_columns_of_the_samples():
  config = _mlp_config("apfs", warmup_steps=1, method_kwargs=dict(representative_lifetime=2, class_selection="random",
                                                                  proximal_weight=0.1))
  method = methods.create_method(config, _mlp(), num_classes=6)
  state, tx = _initial_state(method, config)
  assert set(state.method_state) == {"anchor_params", "memory"}
  step = jax.jit(lambda s, b: method.train_step(s, b, tx))
  batches = list(_batches(6))
  for batch in batches:
    state, metrics = step(state, batch)
    assert all(np.isfinite(float(v)) for v in metrics.values())
  # P = 4 representatives per step: 6 steps wrote 24 entries, the last 16 are the representatives of steps 2–5.
  queue = state.method_state["memory"]
  assert int(queue["count"]) == 16 and float(metrics["memory_columns"]) == 16
  expected = np.concatenate([np.asarray(b["label"][:4]) for b in batches[2:]])
  np.testing.assert_array_equal(np.roll(queue["labels"], -int(queue["pointer"])), expected)

  # The restricted loss with the memory, against hand-built matrices: rows = samples, columns = [samples;
  # representatives; memory], valid = the representatives and the written memory slots.
  embeddings, labels = _random_batch(8)
  stored, stored_labels = _random_batch(9, batch=5)
  ref = memory.reference(_queue(stored, stored_labels, size=7), jnp.int32(0))
  value = apfs.representative_pair_loss("contrastive", jnp.asarray(embeddings), jnp.asarray(labels), 3, ref=ref)
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
  rows = unit(embeddings[3:].astype(np.float64))
  columns = np.concatenate([rows, unit(embeddings[:3].astype(np.float64)), unit(stored.astype(np.float64))])
  column_labels = np.concatenate([labels[3:], labels[:3], stored_labels])
  distance = np.linalg.norm(rows[:, None] - columns[None], axis=-1)
  y = (labels[3:, None] == column_labels[None]).astype(np.float32)
  valid = np.zeros_like(y)
  valid[:, 5:] = 1.0  # 5 sample columns, then 3 representatives and 5 memory entries
  expected_value = losses.contrastive_from_matrix(jnp.asarray(distance, jnp.float32), y, valid)
  np.testing.assert_allclose(value, expected_value, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# 4. The training program: resume and 8 devices.


def _xbm_recipe() -> ml_collections.ConfigDict:
  return config_util.load_config(XBM_CONFIG, "smoke")


# Plain SGD (as tests/test_train.py): 1 and 8 devices sum in another order, which Adam would amplify.
_RUN_OVERRIDES = {
    "num_steps": 6, "checkpoint_every": 3, "eval_every": 6, "log_every": 1, "optimizer.name": "sgd",
    "optimizer.learning_rate": 0.1, "optimizer.momentum": 0.9, "optimizer.schedule": "constant",
    "eval.baselines": False, "eval.plots": False, "eval.clustering": False,
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
  directory = tmp_path_factory.mktemp("glyphs")
  config = _xbm_recipe()
  data.load_dataset("glyphs", data_dir=str(directory), seed=config.seed, **dict(config.dataset.kwargs))
  return directory


def _run_config(data_dir: Path, **overrides) -> ml_collections.ConfigDict:
  config = _xbm_recipe()
  config.dataset.data_dir = str(data_dir)
  config.update_from_flattened_dict({**_RUN_OVERRIDES, **overrides})
  return config


def _losses_by_step(workdir: Path) -> dict[int, tuple[float, float, float]]:
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
  return {r["step"]: (r["loss"], r["grad_norm"], r["memory_columns"]) for r in records if "loss" in r}


def _restore(workdir: Path, step: int) -> dict:
  """`{params, method_state}` of a checkpoint as host arrays, whatever device count saved it."""
  path = workdir / "checkpoints" / str(step) / "default"
  checkpointer = ocp.StandardCheckpointer()
  tree = checkpointer.metadata(path).item_metadata.tree
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
  state = checkpointer.restore(path, abstract)
  return jax.tree.map(np.asarray, {key: state[key] for key in ("params", "method_state")})


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory) -> Path:
  workdir = tmp_path_factory.mktemp("uninterrupted")
  train.train_and_evaluate(_run_config(data_dir), str(workdir))
  return workdir


def test_resumed_run_keeps_the_queue_and_equals_the_uninterrupted_one(uninterrupted, data_dir, tmp_path):
  workdir = tmp_path / "resumed"
  train.train_and_evaluate(_run_config(data_dir, num_steps=3), str(workdir))
  at_three = _restore(workdir, 3)["method_state"]["memory"]
  assert int(at_three["count"]) == 64 and int(at_three["pointer"]) == 32  # 96 entries written into 64 slots
  np.testing.assert_array_equal(at_three["embeddings"], _restore(uninterrupted, 3)["method_state"]["memory"]
                                ["embeddings"])
  train.train_and_evaluate(_run_config(data_dir), str(workdir))  # resumes from step 3
  expected, resumed = _losses_by_step(uninterrupted), _losses_by_step(workdir)
  assert [expected[step][2] for step in range(1, 7)] == [0, 32, 64, 64, 64, 64]  # warm-up 1, then 1–2 batches
  for step in (4, 5, 6):
    assert resumed[step] == expected[step], step
  jax.tree.map(np.testing.assert_array_equal, _restore(workdir, 6), _restore(uninterrupted, 6))


def test_eight_devices_match_one_device(uninterrupted, data_dir, tmp_path):
  workdir = tmp_path / "eight"
  flags = [f"--config.{key}={value}" for key, value in _RUN_OVERRIDES.items()]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8",
             PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
  process = subprocess.run(
      [sys.executable, "-m", "metriclearn.main", f"--config={XBM_CONFIG}:smoke", f"--workdir={workdir}",
       f"--config.dataset.data_dir={data_dir}", *flags], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=300)
  assert process.returncode == 0, process.stderr[-4000:]
  # Tolerances as tests/test_train.py's CROSS_PROGRAM_* (float32 sums in another order on 8 shards, amplified step
  # to step; reasoning there): rel 1e-3 on the loss, rtol 1e-3 / atol 1e-4 on the state. A memory holding the
  # entries of one device's shard, or one per device, changes the loss from step 2 on by far more.
  one, eight = _losses_by_step(uninterrupted), _losses_by_step(workdir)
  assert sorted(one) == sorted(eight) == list(range(1, 7))
  for step in one:
    assert eight[step] == pytest.approx(one[step], rel=1e-3), step
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4), _restore(uninterrupted, 6),
               _restore(workdir, 6))
