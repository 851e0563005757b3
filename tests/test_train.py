"""End-to-end tests of the training program (`metriclearn.train`) and its command line (`metriclearn.main`).

Every run is the `glyphs` recipe at its `:smoke` size (a few steps of a small CNN on 32×32 glyphs, 6 images per
class), so the file stays within a few minutes on two CPU cores. The glyphs are generated once per module into a
temporary cache that in-process runs reach through `config.dataset.data_dir` and subprocesses through
`XDG_CACHE_HOME`. Runs that need a fresh process (a SIGKILL, 8 simulated devices) go through
`tests/train_subprocess.py`, which is the command line plus step timing and an optional slowdown.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from tensorboardX.proto import event_pb2

from metriclearn import config_util
from metriclearn import data
from metriclearn import losses
from metriclearn import train
from metriclearn.data import samplers

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILE = ROOT / "configs" / "glyphs.py"
HELPER = ROOT / "tests" / "train_subprocess.py"

# Overrides shared by the subprocess runs that are compared with one another (resume; 1 vs 8 devices). Plain SGD
# instead of the recipe's Adam: Adam divides each gradient entry by its own magnitude, so an entry that is pure
# rounding noise (~1e-9) still moves its parameter by ±lr, and 1 vs 8 devices (which sum in a different order) drift
# apart by ~1e-4 within a few steps. SGD passes rounding differences on at their own size, so the 1 vs 8 device
# comparison below can be tight. Momentum keeps an optimizer state that a resume must restore.
_COMPARED_RUN_FLAGS = (
    "--config=configs/glyphs.py:smoke",
    "--config.num_steps=12",
    "--config.checkpoint_every=4",
    "--config.eval_every=6",
    "--config.log_every=1",
    "--config.optimizer.name=sgd",
    "--config.optimizer.learning_rate=0.1",
    "--config.optimizer.momentum=0.9",
    "--config.optimizer.schedule=constant",
    "--config.eval.batch_size=256",  # divisible by 8 devices
    "--config.eval.baselines=False",
    "--config.eval.plots=False",
    "--config.eval.clustering=False",
)
_RETRIEVAL_KEYS = ("recall@1", "recall@2", "recall@4", "recall@8", "precision@1", "r_precision", "map@r")

# Tolerances between two *different programs* on the same data (1 vs 8 devices; 1 vs 2 processes in
# test_multihost.py). Each takes the same float32 sums in another order (per-shard partial sums, another all-reduce
# tree, and on another CPU other XLA kernels), so a reduction of n terms may differ by ~sqrt(n)·2^-24 relative, and
# every SGD step (lr 0.1, momentum 0.9) carries the parameters' difference into the next, amplified. Measured: ~5e-7
# relative after 12 steps on this project's 2-core x86-64 CPU (1 vs 8 devices), 1.2e-4 after 6 steps on another
# x86-64 CPU (1 vs 2 processes: grad_norm 0.09945397 vs 0.09944205). rel 1e-3 sits an order of magnitude above that
# and 20x below the smallest bug it guards against (BatchNorm statistics per device: 2e-2 relative at step 1).
# Exact equality is kept only for the same program run twice on the same machine (resume).
CROSS_PROGRAM_RTOL = 1e-3
# Parameters: the same relative tolerance; an absolute floor for entries near zero (the head's weights are ~0.1, so
# 1e-4 is the relative tolerance at that scale).
CROSS_PROGRAM_PARAM_TOL = {"rtol": 1e-3, "atol": 1e-4}
# Retrieval metrics count queries: a query's Recall@K flips only when its K-th and (K+1)-th neighbours are tied to
# within the embeddings' difference (~1e-4 relative). Measured: identical metrics here; allowed: 1 % of the queries
# (7 of the smoke test's 750), while a wrong gather or gallery moves Recall@1 by more than 0.05.
CROSS_PROGRAM_METRIC_ATOL = 0.01


# ------------------------------------------------------------------------------------------------------------------
# Helpers.


def _recipe(arg: str | None = "smoke") -> ml_collections.ConfigDict:
  """`configs/glyphs.py`'s `get_config(arg)`, loaded from its file as the command line loads it."""
  return config_util.load_config(CONFIG_FILE, arg)


def _config(data_dir: Path, **overrides) -> ml_collections.ConfigDict:
  """The smoke recipe on the module's glyph cache, without the slow extras, with dotted-key `overrides`
  (`_config(d, **{"model.embedding_dim": 16})`)."""
  config = _recipe("smoke")
  config.dataset.data_dir = str(data_dir)
  config.eval.baselines = False
  config.eval.plots = False
  config.eval.clustering = False
  config.update_from_flattened_dict(overrides)
  return config


def _subprocess_env(cache_home: Path, num_devices: int = 1, **extra: str) -> dict[str, str]:
  env = dict(os.environ)
  env.update(
      XDG_CACHE_HOME=str(cache_home),
      MPLCONFIGDIR=str(cache_home / "matplotlib"),  # matplotlib's font cache, built once per module
      PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
      JAX_PLATFORMS="cpu",
      XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}",
      **extra,
  )
  return env


def _run(args, env, *, timeout: float = 300) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout)


def _checked(process: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
  assert process.returncode == 0, f"exit {process.returncode}\n{process.stdout[-3000:]}\n{process.stderr[-5000:]}"
  return process


def _read_json(path: Path) -> dict:
  return json.loads(path.read_text())


def _read_jsonl(path: Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _checkpoint_steps(workdir: Path) -> set[int]:
  """Steps with a finished checkpoint (an unfinished save is a `*.orbax-checkpoint-tmp*` directory)."""
  directory = workdir / "checkpoints"
  return {int(p.name) for p in directory.iterdir() if p.name.isdigit()} if directory.exists() else set()


def _restore_arrays(workdir: Path, step: int) -> dict:
  """`{params, batch_stats, opt_state}` of a checkpoint as host arrays, whatever device count saved it."""
  path = workdir / "checkpoints" / str(step) / "default"
  checkpointer = ocp.StandardCheckpointer()
  tree = checkpointer.metadata(path).item_metadata.tree
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
  state = checkpointer.restore(path, abstract)
  return jax.tree.map(np.asarray, {key: state[key] for key in ("params", "batch_stats", "opt_state")})


def _scalar_events(workdir: Path) -> list[tuple[int, str, float]]:
  """(step, tag, value) of every scalar in the run's TensorBoard event files (TFRecord framing: u64 length,
  u32 crc, payload, u32 crc; read by hand because tensorboard itself is not a dependency)."""
  scalars = []
  for path in workdir.glob("events.out.tfevents.*"):
    content, offset = path.read_bytes(), 0
    while offset < len(content):
      (length,) = struct.unpack("<Q", content[offset : offset + 8])
      event = event_pb2.Event.FromString(content[offset + 12 : offset + 12 + length])
      offset += 12 + length + 4
      scalars += [(event.step, value.tag, value.simple_value) for value in event.summary.value]
  return scalars


def _assert_nothing_trained(workdir: Path) -> None:
  assert not (workdir / "checkpoints").exists(), "a checkpoint was written before the error"
  assert not (workdir / "metrics.jsonl").exists(), "training steps ran before the error"


def _without_wall_time(results: dict) -> dict:
  return {key: value for key, value in results.items() if key != "wall_time_s"}


# ------------------------------------------------------------------------------------------------------------------
# Fixtures.


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory) -> Path:
  """An XDG cache home holding the smoke glyphs (generated once for the module, ~3 s)."""
  home = tmp_path_factory.mktemp("xdg_cache")
  config = _recipe("smoke")
  data.load_dataset("glyphs", data_dir=str(home / "metriclearn"), seed=config.seed, **dict(config.dataset.kwargs))
  return home


@pytest.fixture(scope="module")
def data_dir(cache_home) -> Path:
  return cache_home / "metriclearn"


@pytest.fixture(scope="module")
def reference_run(cache_home, tmp_path_factory) -> dict:
  """An uninterrupted 12-step run on 1 device in a subprocess: what the resumed and the 8-device runs must give."""
  workdir = tmp_path_factory.mktemp("reference")
  times = workdir / "step_times.json"
  start = time.perf_counter()
  _checked(_run([HELPER, *_COMPARED_RUN_FLAGS, f"--workdir={workdir}"],
                _subprocess_env(cache_home, 1, METRICLEARN_TEST_STEP_TIMES=str(times))))
  timing = json.loads(times.read_text())
  assert timing["num_devices"] == 1
  return {"workdir": workdir, "step_times": timing["step_times"],
          "wall_s": time.perf_counter() - start}


# ------------------------------------------------------------------------------------------------------------------
# 1. The program end to end, in process.


def test_train_and_evaluate_writes_results_logs_checkpoints_plots(data_dir, tmp_path):
  config = _config(data_dir, **{"num_steps": 4, "eval.baselines": True, "eval.plots": True,
                                "eval.clustering": True})
  workdir = tmp_path / "run"
  results = train.train_and_evaluate(config, str(workdir))

  metric_keys = (*_RETRIEVAL_KEYS, "nmi", "f1")
  saved = _read_json(workdir / "results.json")
  assert saved == json.loads(json.dumps(results))  # results.json holds what the function returned
  for row in (saved, saved["untrained"], saved["raw_pixels"]):
    for key in metric_keys:
      assert 0.0 <= row[key] <= 1.0, (key, row[key])
  assert saved["num_steps"] == 4 and saved["config_name"] == "glyphs"
  assert math.isfinite(saved["final_loss"]) and saved["final_loss"] > 0
  # Raw pixels do not depend on the network; the untrained network is a different embedding of the same images.
  assert saved["untrained"] != saved["raw_pixels"]

  records = _read_jsonl(workdir / "metrics.jsonl")
  loss_steps = [r["step"] for r in records if "loss" in r]
  assert loss_steps == [2, 4]  # log_every = 2
  assert [r["loss"] for r in records if r["step"] == 4 and "loss" in r] == [saved["final_loss"]]
  eval_steps = [r["step"] for r in records if "test/map@r" in r]
  assert eval_steps == [0, 2, 4]  # the untrained network, eval_every = 2, and the final evaluation
  step_0 = next(r for r in records if r["step"] == 0)
  assert step_0["test/recall@1"] == pytest.approx(saved["untrained"]["recall@1"], abs=1e-6)  # the same network
  assert [r["test/recall@1"] for r in records if r["step"] == 4 and "test/recall@1" in r] == [saved["recall@1"]]

  assert _checkpoint_steps(workdir) == {2, 4}  # checkpoint_every = 2, max_checkpoints = 2
  for name in ("loss.png", "recall.png", "embeddings.png"):
    assert (workdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
  scalars = _scalar_events(workdir)
  assert (4, "loss", pytest.approx(saved["final_loss"])) in scalars
  assert any(tag == "test/map_at_r" and step == 4 for step, tag, _ in scalars)


def test_train_step_and_embedding_compile_once(data_dir, tmp_path, caplog):
  # 4 steps, an evaluation at step 2 and one at the end: a step or an evaluation that recompiles (a weak type or a
  # sharding that changes after the first step, a Python scalar in the state) shows up as a second compilation of
  # the function that takes the batch. Identified by argument shape, not by name, so renaming does not hide it.
  config = _config(data_dir, num_steps=4)
  with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles(True):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  compiles = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Compiling ")]
  train_batch = f"float32[{config.batch_size},32,32,1]"
  eval_batch = f"float32[{config.eval.batch_size},32,32,1]"
  train_compiles = [m for m in compiles if train_batch in m]
  eval_compiles = [m for m in compiles if eval_batch in m]
  assert len(train_compiles) == 1, "\n".join(m[:200] for m in train_compiles)
  assert len(eval_compiles) == 1, "\n".join(m[:200] for m in eval_compiles)


# ------------------------------------------------------------------------------------------------------------------
# 2. The command line.


def test_cli_runs(cache_home, data_dir, tmp_path):
  # The data comes only through --config.dataset.data_dir (an override ml_collections refuses for a field whose
  # default is None): the cache home is empty, and a run that ignored the override would generate glyphs there.
  workdir, empty_cache = tmp_path / "cli", tmp_path / "empty_cache"
  env = _subprocess_env(cache_home)
  env["XDG_CACHE_HOME"] = str(empty_cache)
  _checked(_run(["-m", "metriclearn.main", f"--config={CONFIG_FILE}:smoke", f"--workdir={workdir}",
                 "--config.num_steps=2", f"--config.dataset.data_dir={data_dir}",
                 "--config.eval.baselines=False", "--config.eval.plots=False", "--config.eval.clustering=False"],
                env))
  results = _read_json(workdir / "results.json")
  assert results["num_steps"] == 2 and 0.0 <= results["recall@1"] <= 1.0
  assert _checkpoint_steps(workdir) == {2}
  assert not (empty_cache / "metriclearn").exists()


def test_cli_unknown_override_names_the_key(cache_home, tmp_path):
  process = _run(["-m", "metriclearn.main", f"--config={CONFIG_FILE}:smoke", f"--workdir={tmp_path / 'cli'}",
                  "--config.not_a_key=1"], _subprocess_env(cache_home))
  assert process.returncode != 0
  assert "not_a_key" in process.stderr
  assert not (tmp_path / "cli").exists()


# ------------------------------------------------------------------------------------------------------------------
# 3. Bad input: a clear error before anything is trained.


def test_unknown_top_level_key(data_dir, tmp_path):
  config = _config(data_dir)
  config.not_a_key = 1
  with pytest.raises(ValueError, match=r"unknown config key.*not_a_key.*valid top-level keys.*num_steps"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_unknown_key_in_model(data_dir, tmp_path):
  config = _config(data_dir)
  config.model.embeding_dim = 32  # misspelt
  with pytest.raises(ValueError, match=r"embeding_dim.*config\.model.*embedding_dim"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("section, valid_name", [
    ("loss", "multi_similarity"), ("model", "small_cnn"), ("dataset", "glyphs"), ("sampler", "m_per_class"),
    ("method", "baseline"),
])
def test_unknown_component_name_lists_valid_names(data_dir, tmp_path, section, valid_name):
  config = _config(data_dir, **{f"{section}.name": "not_a_component"})
  with pytest.raises(ValueError, match=rf"unknown {section} 'not_a_component'.*'{valid_name}'"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  _assert_nothing_trained(tmp_path / "run")


def test_batch_that_cannot_hold_p_times_m(data_dir, tmp_path):
  config = _config(data_dir, batch_size=30, **{"sampler.kwargs.m": 4})
  with pytest.raises(ValueError, match=r"batch_size 30 cannot hold P classes × M=4.*multiple of 4"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  _assert_nothing_trained(tmp_path / "run")


def test_class_with_fewer_than_m_samples_trains(data_dir, tmp_path):
  # The smoke glyphs have 6 images per class; M = 8 asks for more (batch 32 = 4 classes × 8): not an error (real SOP
  # has 2-image classes), the sampler draws such classes with replacement (DESIGN §9; tests/test_data.py).
  config = _config(data_dir, **{"sampler.kwargs.m": 8})
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["num_steps"] == config.num_steps and np.isfinite(results["final_loss"])


def test_unknown_loss_keyword(data_dir, tmp_path):
  config = _config(data_dir)
  config.loss.kwargs.not_a_kwarg = 1.0
  with pytest.raises(ValueError, match=r"unknown keyword.*'not_a_kwarg'.*multi_similarity.*accepted.*'alpha'"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  _assert_nothing_trained(tmp_path / "run")


def test_checkpoint_of_another_model_is_refused(data_dir, tmp_path):
  workdir = tmp_path / "run"
  train.train_and_evaluate(_config(data_dir, num_steps=2, **{"model.embedding_dim": 16}), str(workdir))
  assert _checkpoint_steps(workdir) == {2}
  before = (workdir / "metrics.jsonl").read_text()
  with pytest.raises(ValueError, match=r"checkpoint at step 2 .* is from another model"):
    train.train_and_evaluate(_config(data_dir, num_steps=4, **{"model.embedding_dim": 32}), str(workdir))
  assert _checkpoint_steps(workdir) == {2}
  assert (workdir / "metrics.jsonl").read_text() == before


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(data_dir, tmp_path, monkeypatch):
  config = _config(data_dir, num_steps=6, checkpoint_every=1, log_every=1, eval_every=100)
  # Batches are a pure function of (seed, step): find a class that step 3 draws and steps 1–2 do not, and make the
  # loss NaN exactly on batches that contain it (training step s uses sampler batch s − 1).
  labels = data.load_dataset("glyphs", data_dir=str(data_dir), seed=config.seed,
                             **dict(config.dataset.kwargs)).train.labels
  sampler = samplers.make_sampler("m_per_class", labels, config.batch_size, seed=config.seed, m=4)
  classes = [set(labels[sampler.batch_indices(index)].tolist()) for index in range(3)]
  trigger = min(classes[2] - classes[1] - classes[0])
  multi_similarity = losses.LOSSES["multi_similarity"]

  def nan_on_trigger_class(embeddings, labels, **kwargs):
    value = multi_similarity(embeddings, labels, **kwargs)
    return value + jnp.where(jnp.any(labels == trigger), jnp.nan, 0.0)

  monkeypatch.setitem(losses.LOSSES, "multi_similarity", nan_on_trigger_class)
  workdir = tmp_path / "run"
  with pytest.raises(FloatingPointError, match=r"at step 3\b.*last good checkpoint is step 2\b"):
    train.train_and_evaluate(config, str(workdir))
  assert _checkpoint_steps(workdir) == {1, 2}  # max_checkpoints = 2; nothing of step 3
  assert not any("tmp" in p.name for p in (workdir / "checkpoints").iterdir())
  assert [r["step"] for r in _read_jsonl(workdir / "metrics.jsonl")] == [0, 1, 2]  # 0: the untrained evaluation


def test_nan_parameters_stop_training_even_when_the_loss_stays_finite(data_dir, tmp_path):
  # A learning rate of 1e30 sends the weights to ±1e30 after step 1, and step 2's gradient and update are NaN. The
  # loss does not show it (measured: it stays at a finite constant, 1.107, while grad_norm is NaN and the saved
  # weights are NaN): training must stop at step 2 and keep the step-1 checkpoint rather than save NaN weights.
  config = _config(data_dir, num_steps=4, checkpoint_every=1, log_every=1, eval_every=100,
                   **{"optimizer.learning_rate": 1e30})
  workdir = tmp_path / "run"
  with pytest.raises(FloatingPointError, match=r"step 2\b"):
    train.train_and_evaluate(config, str(workdir))
  assert _checkpoint_steps(workdir) == {1}
  params = _restore_arrays(workdir, 1)["params"]
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))


# ------------------------------------------------------------------------------------------------------------------
# 4. Resume after SIGKILL.


def test_resume_after_sigkill_reproduces_the_uninterrupted_run(reference_run, cache_home, tmp_path):
  workdir = tmp_path / "resumed"
  flags = [HELPER, *_COMPARED_RUN_FLAGS, f"--workdir={workdir}"]
  # Steps after 4 sleep 0.5 s, so the kill lands after the step-4 checkpoint and well before step 8's.
  process = subprocess.Popen([sys.executable, *map(str, flags)], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True,
                             env=_subprocess_env(cache_home, 1, METRICLEARN_TEST_SLOW_AFTER="4:0.5"))
  deadline = time.monotonic() + 240
  while 4 not in _checkpoint_steps(workdir):
    assert process.poll() is None, f"the run ended before its step-4 checkpoint:\n{process.stderr.read()[-5000:]}"
    assert time.monotonic() < deadline, "no step-4 checkpoint after 240 s"
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  process.wait(timeout=60)
  process.stderr.close()
  assert process.returncode == -signal.SIGKILL
  assert _checkpoint_steps(workdir) == {4}
  assert not (workdir / "results.json").exists()

  times = workdir / "step_times.json"
  _checked(_run(flags, _subprocess_env(cache_home, 1, METRICLEARN_TEST_STEP_TIMES=str(times))))
  # Resumed at step 5: steps 5–11 are timed (the last step is not).
  assert len(json.loads(times.read_text())["step_times"]) == 12 - 4 - 1

  reference = reference_run["workdir"]
  # Same program, same machine, same device count: bit-for-bit equality, not a tolerance.
  assert _without_wall_time(_read_json(workdir / "results.json")) == _without_wall_time(
      _read_json(reference / "results.json"))
  assert _read_jsonl(workdir / "metrics.jsonl") == _read_jsonl(reference / "metrics.jsonl")
  resumed, uninterrupted = _restore_arrays(workdir, 12), _restore_arrays(reference, 12)
  jax.tree.map(np.testing.assert_array_equal, resumed, uninterrupted)
  # Not vacuous: the parameters moved after the restored step (SGD at lr 0.1 changes every step).
  step8 = _restore_arrays(reference, 8)
  assert not np.array_equal(step8["params"]["head"]["out"]["kernel"], uninterrupted["params"]["head"]["out"]["kernel"])


# ------------------------------------------------------------------------------------------------------------------
# 5. 8 simulated devices compute what 1 device computes.


def test_eight_devices_match_one_device(reference_run, cache_home, data_dir, tmp_path):
  workdir = tmp_path / "eight"
  times = workdir.parent / "step_times_8.json"
  start = time.perf_counter()
  _checked(_run([HELPER, *_COMPARED_RUN_FLAGS, f"--workdir={workdir}"],
                _subprocess_env(cache_home, 8, METRICLEARN_TEST_STEP_TIMES=str(times))))
  wall_8 = time.perf_counter() - start
  timing_8 = json.loads(times.read_text())
  assert timing_8["num_devices"] == 8
  reference = reference_run["workdir"]

  # Tolerances: CROSS_PROGRAM_* above (float32 reasoning there). The sharding bugs this guards against are far larger
  # at step 1 (measured on its batch): the loss averaged over per-device losses of 4 examples is 0.39 instead of 0.91,
  # BatchNorm statistics per device instead of over the global batch give 0.93 (2e-2 relative).
  one, eight = _read_jsonl(reference / "metrics.jsonl"), _read_jsonl(workdir / "metrics.jsonl")
  assert [sorted(r) for r in one] == [sorted(r) for r in eight]
  for a, b in zip(one, eight):
    for key in ("loss", "grad_norm"):
      if key in a:
        assert b[key] == pytest.approx(a[key], rel=CROSS_PROGRAM_RTOL), (a["step"], key)
  results_1, results_8 = _read_json(reference / "results.json"), _read_json(workdir / "results.json")
  assert results_8["final_loss"] == pytest.approx(results_1["final_loss"], rel=CROSS_PROGRAM_RTOL)
  num_test = len(data.load_dataset("glyphs", data_dir=str(data_dir), **dict(_recipe("smoke").dataset.kwargs)).test)
  assert CROSS_PROGRAM_METRIC_ATOL * num_test >= 1  # at least one query may flip
  for key in _RETRIEVAL_KEYS:
    assert results_8[key] == pytest.approx(results_1[key], abs=CROSS_PROGRAM_METRIC_ATOL), key
  params_1, params_8 = _restore_arrays(reference, 12), _restore_arrays(workdir, 12)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(y, x, **CROSS_PROGRAM_PARAM_TOL), params_1, params_8)

  # Timing is reported, not asserted: 8 simulated devices share the same 2 cores.
  step_1 = float(np.median(reference_run["step_times"][1:]))
  step_8 = float(np.median(timing_8["step_times"][1:]))
  print(f"\nmedian step time (after compilation), batch 32: 1 device {step_1 * 1e3:.1f} ms, "
        f"8 simulated devices {step_8 * 1e3:.1f} ms; first step (compile) 1 device "
        f"{reference_run['step_times'][0]:.2f} s, 8 devices {timing_8['step_times'][0]:.2f} s; "
        f"whole run {reference_run['wall_s']:.1f} s vs {wall_8:.1f} s")


# ------------------------------------------------------------------------------------------------------------------
# Pretrained backbones (`config.model.pretrained`).


def _initial_state(config):
  """`train.create_state` for `config` exactly as `train_and_evaluate` calls it (through `train.build`)."""
  built = train.build(config)
  return train.create_state(config, built.method, built.tx, built.sample_images, built.init_rng)


def _write_backbone(path: Path, config, seed: int) -> dict:
  from metriclearn import models
  from metriclearn.models import weights
  model = models.create_model(config.model.name, embedding_dim=config.model.embedding_dim)
  variables = model.init(jax.random.key(seed), jnp.zeros((1, 32, 32, 1)), train=False)
  state_dict = weights.to_state_dict(variables["params"]["backbone"], variables["batch_stats"]["backbone"])
  np.savez(path, **state_dict)
  return variables


def test_pretrained_backbone_replaces_the_initial_one_and_keeps_the_head(data_dir, tmp_path):
  config = _config(data_dir)
  source = _write_backbone(tmp_path / "backbone.npz", config, seed=7)
  scratch = _initial_state(config)
  config.model.pretrained = str(tmp_path / "backbone.npz")
  loaded = _initial_state(config)
  assert jax.tree.all(jax.tree.map(np.array_equal, loaded.params["backbone"], source["params"]["backbone"]))
  assert jax.tree.all(jax.tree.map(np.array_equal, loaded.batch_stats["backbone"], source["batch_stats"]["backbone"]))
  assert not np.array_equal(loaded.params["backbone"]["conv0_0"]["kernel"], scratch.params["backbone"]["conv0_0"]["kernel"])
  assert jax.tree.all(jax.tree.map(np.array_equal, loaded.params["head"], scratch.params["head"]))


def test_missing_pretrained_file_is_an_error_before_compute(data_dir, tmp_path):
  config = _config(data_dir, **{"model.pretrained": str(tmp_path / "nowhere.npz")})
  with pytest.raises(FileNotFoundError, match=r"pretrained weights not found: .*nowhere\.npz"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  _assert_nothing_trained(tmp_path / "run")


def test_pretrained_file_of_another_architecture_names_the_keys(data_dir, tmp_path):
  config = _config(data_dir)
  np.savez(tmp_path / "other.npz", **{"fc.weight": np.zeros((3, 4), np.float32)})
  config.model.pretrained = str(tmp_path / "other.npz")
  with pytest.raises(ValueError, match=r"does not fit small_cnn: 15 key\(s\) missing: bn0_0\.bias"):
    train.train_and_evaluate(config, str(tmp_path / "run"))


def test_load_trained_reproduces_the_final_evaluation(data_dir, tmp_path):
  from metriclearn import evaluate
  config = _config(data_dir, num_steps=3)
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  trained = train.load_trained(config, str(tmp_path / "run"))
  assert trained.step == 3
  embeddings = trained.embed(trained.dataset.test)
  metrics = evaluate.retrieval_metrics(embeddings, trained.dataset.test.labels, ks=tuple(config.eval.ks))
  assert metrics["map@r"] == pytest.approx(results["map@r"], abs=1e-6)
  assert metrics["recall@1"] == pytest.approx(results["recall@1"], abs=1e-6)
  with pytest.raises(FileNotFoundError, match=r"no checkpoint at step 7 .* train first"):
    train.load_trained(config, str(tmp_path / "run"), step=7)
