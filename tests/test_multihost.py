"""Multi-host training on JAX's distributed runtime (DESIGN §7), with two CPU processes on the loopback interface.

Two processes of `python -m metriclearn.main`, 2 simulated CPU devices each, connected through a coordinator on
127.0.0.1 (`--coordinator_address/--num_processes/--process_id`; collectives over gloo), train the `glyphs` smoke recipe
in one shared workdir. Each loads only its half of every global batch. They must compute what one process with the
same 4 devices computes on the same global batch, write logs and results once (process 0), and checkpoint
collectively: the two-process run stops at step 3 and a second launch resumes it from that checkpoint. The runs use
the fair protocol (a validation fold, the best checkpoint kept beside the latest), so the processes also agree on
which steps to keep and save two checkpoints of the same step at once.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import test_train  # the glyph recipe, the subprocess environment and the file readers of the single-host tests
from metriclearn import data
from metriclearn.data import Split
from metriclearn.data import eval_batches

pytestmark = pytest.mark.slow

NUM_PROCESSES = 2
LOCAL_DEVICES = 2
# SGD, as in test_train's 1-vs-8-device comparison (its comment says why Adam cannot be compared tightly).
_RUN_FLAGS = (
    "--config=configs/glyphs.py:smoke",
    "--config.checkpoint_every=3",
    "--config.eval_every=3",
    "--config.log_every=1",
    "--config.optimizer.name=sgd",
    "--config.optimizer.learning_rate=0.1",
    "--config.optimizer.momentum=0.9",
    "--config.optimizer.schedule=constant",  # a run stopped at step 3 follows the 6-step run's schedule
    "--config.eval.baselines=False",
    "--config.eval.plots=False",
    "--config.eval.clustering=False",
    "--config.dataset.kwargs={'images_per_class': 6, 'val_fold': 0}",  # the smoke glyphs with a validation fold
)


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory) -> Path:
  """An XDG cache home holding the smoke glyphs, generated once here instead of by each process."""
  home = tmp_path_factory.mktemp("xdg_cache")
  config = test_train._recipe("smoke")
  data.load_dataset("glyphs", data_dir=str(home / "metriclearn"), seed=config.seed, **dict(config.dataset.kwargs))
  return home


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def _run_processes(flags, env, logs: Path, *, timeout: float = 240) -> list[str]:
  """Runs `metriclearn.main` as NUM_PROCESSES processes of one distributed job; returns each one's stdout."""
  logs.mkdir(parents=True, exist_ok=True)
  address = f"127.0.0.1:{_free_port()}"
  processes, outputs = [], []
  for process_id in range(NUM_PROCESSES):
    stdout, stderr = logs / f"stdout_{process_id}.txt", logs / f"stderr_{process_id}.txt"
    with open(stdout, "w") as out, open(stderr, "w") as err:
      processes.append(subprocess.Popen(
          [sys.executable, "-m", "metriclearn.main", *flags, f"--coordinator_address={address}",
           f"--num_processes={NUM_PROCESSES}", f"--process_id={process_id}"],
          cwd=test_train.ROOT, env=env, stdout=out, stderr=err, text=True))
    outputs.append((stdout, stderr))
  deadline = time.monotonic() + timeout
  try:
    for process in processes:
      process.wait(timeout=max(1.0, deadline - time.monotonic()))
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
        process.wait()
  for process_id, (process, (stdout, stderr)) in enumerate(zip(processes, outputs)):
    assert process.returncode == 0, (f"process {process_id} exited with {process.returncode}\n"
                                     f"{stdout.read_text()[-3000:]}\n{stderr.read_text()[-5000:]}")
  return [stdout.read_text() for stdout, _ in outputs]


def test_eval_batch_shares_make_up_the_single_process_batches():
  # 23 images in batches of 8: the last batch holds 7 images and a padded row, which falls in the last share.
  images = np.random.default_rng(0).integers(0, 256, size=(23, 6, 6, 1), dtype=np.uint8)
  split = Split(images, np.arange(23, dtype=np.int32) % 5, [str(c) for c in range(5)])
  whole = list(eval_batches(split, 8))
  shares = [list(eval_batches(split, 8, process_index=i, process_count=4)) for i in range(4)]
  assert [len(s) for s in shares] == [len(whole)] * 4
  for b, batch in enumerate(whole):
    for key in ("image", "label", "mask"):
      np.testing.assert_array_equal(np.concatenate([s[b][key] for s in shares]), batch[key])
  assert [int(s[-1]["mask"].sum()) for s in shares] == [2, 2, 2, 1]
  with pytest.raises(ValueError, match="multiple of 3"):
    eval_batches(split, 8, process_index=0, process_count=3)


def test_two_processes_match_one_process_with_the_same_global_batch(cache_home, tmp_path):
  num_devices = NUM_PROCESSES * LOCAL_DEVICES
  reference, workdir = tmp_path / "one_process", tmp_path / "two_processes"
  test_train._checked(test_train._run(
      ["-m", "metriclearn.main", *_RUN_FLAGS, "--config.num_steps=6", f"--workdir={reference}"],
      test_train._subprocess_env(cache_home, num_devices)))

  env = test_train._subprocess_env(cache_home, LOCAL_DEVICES)
  _run_processes([*_RUN_FLAGS, "--config.num_steps=3", f"--workdir={workdir}"], env, tmp_path / "logs_first")
  assert test_train._checkpoint_steps(workdir) == {3}
  assert len(list(workdir.glob("events.out.tfevents.*"))) == 1  # TensorBoard: one writer per launch, process 0's
  stdouts = _run_processes([*_RUN_FLAGS, "--config.num_steps=6", f"--workdir={workdir}"], env,
                           tmp_path / "logs_resumed")
  assert test_train._checkpoint_steps(workdir) == {3, 6}  # the resumed run saved too: checkpoints are collective
  assert test_train._checkpoint_steps(workdir / "best") == test_train._checkpoint_steps(reference / "best")

  # Logs and results written once, by process 0: one more TensorBoard file, one results table, and (below) one line
  # per record in metrics.jsonl, which process 1 read on resume but did not rewrite.
  assert len(list(workdir.glob("events.out.tfevents.*"))) == 2
  assert "Test split of glyphs" in stdouts[0] and "Test split of glyphs" not in stdouts[1]

  # Tolerances: test_train.CROSS_PROGRAM_* (float32 reasoning there: two processes add the 4 shards' gradients in
  # another order than one process, and other CPUs pick other kernels; measured 3e-7 relative here, 1.2e-4 on another
  # x86-64 CPU). A batch assembled wrongly changes the step-1 loss far more (both processes loading the first half of
  # the batch: 1.18 instead of 0.91).
  one, two = test_train._read_jsonl(reference / "metrics.jsonl"), test_train._read_jsonl(workdir / "metrics.jsonl")
  two = [r for r in two if not (r["step"] == 3 and "test/map@r" in r)]  # the final evaluation of the 3-step launch
  assert [(r["step"], sorted(r)) for r in one] == [(r["step"], sorted(r)) for r in two]
  for a, b in zip(one, two):
    for key in ("loss", "grad_norm"):
      if key in a:
        assert b[key] == pytest.approx(a[key], rel=test_train.CROSS_PROGRAM_RTOL), (a["step"], key)
  results_1, results_2 = (test_train._read_json(reference / "results.json"),
                          test_train._read_json(workdir / "results.json"))
  assert results_2["final_loss"] == pytest.approx(results_1["final_loss"], rel=test_train.CROSS_PROGRAM_RTOL)
  assert results_2["num_steps"] == 6
  assert results_2["protocol"] == results_1["protocol"] == "fair (selected on val map@r)"
  assert results_2["selected_step"] == results_1["selected_step"]
  config = test_train._recipe("smoke")
  glyphs = data.load_dataset("glyphs", data_dir=str(cache_home / "metriclearn"), seed=config.seed, val_fold=0,
                             **dict(config.dataset.kwargs))
  for key in test_train._RETRIEVAL_KEYS:
    assert results_2[key] == pytest.approx(results_1[key], abs=test_train.CROSS_PROGRAM_METRIC_ATOL), key
    # The validation fold is a quarter of the training classes: one flipped query may be more than 1 % of it.
    val_tolerance = max(test_train.CROSS_PROGRAM_METRIC_ATOL, 1.0 / len(glyphs.val) + 1e-6)
    assert results_2[f"val/{key}"] == pytest.approx(results_1[f"val/{key}"], abs=val_tolerance), key
