"""What a new user meets first: `--help`, the recipe list, user errors in one line, Ctrl-C / SIGTERM, a finished
workdir.

The command-line runs are subprocesses of `python -m metriclearn.main` (or `tests/train_subprocess.py`, the same
command line with a slowdown hook) on the smoke glyphs of `tests/test_train.py`'s fixtures.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import test_train
from test_train import cache_home  # noqa: F401  (fixtures shared with the training tests)
from test_train import data_dir  # noqa: F401
from test_train import reference_run  # noqa: F401
from metriclearn import methods
from metriclearn import recipes
from metriclearn import train

ROOT = test_train.ROOT
CONFIGS = ROOT / "configs"


def _main(args, env) -> subprocess.CompletedProcess:
  return test_train._run(["-m", "metriclearn.main", *map(str, args)], env, timeout=240)


def _error_line(process: subprocess.CompletedProcess) -> str:
  """The one line a user error prints (stderr may also hold library warnings, e.g. from absl, before it)."""
  assert "Traceback" not in process.stderr, process.stderr[-3000:]
  lines = [line for line in process.stderr.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1, process.stderr[-3000:]
  return lines[0]


# ------------------------------------------------------------------------------------------------------------------
# --help and the recipe list.


def test_help_exits_0_and_names_the_methods_families_and_the_recipe_list(cache_home, tmp_path):
  process = _main(["--help"], test_train._subprocess_env(cache_home))
  assert process.returncode == 0, process.stderr[-3000:]
  for name in methods.METHODS:
    assert name in process.stdout, name
  for family in ("glyphs", "cub", "cars", "sop", "inshop"):
    assert f"{family} (" in process.stdout, family
  assert "python -m metriclearn.recipes" in process.stdout
  assert str(cache_home / "metriclearn") in process.stdout  # the glyph cache, under $XDG_CACHE_HOME
  assert "--workdir" in process.stdout and "--verbose" in process.stdout


def test_recipes_lists_every_config_file_with_its_docstring():
  listed = recipes.list_recipes()
  assert Path(recipes.default_directory()) == CONFIGS
  assert sorted(r.name + ".py" for r in listed) == sorted(p.name for p in CONFIGS.glob("*.py"))
  for recipe in listed:
    assert recipe.summary and recipe.summary != "(no docstring)", recipe.path
  glyphs = next(r for r in listed if r.name == "glyphs")
  assert glyphs.summary.startswith("The embedded default")


def test_recipes_lists_arguments_from_recipe_args(tmp_path):
  (tmp_path / "alpha.py").write_text('"""Alpha recipe.\n\nMore text."""\n'
                                     'RECIPE_ARGS = {"smoke": "seconds, for tests", "big": "the\\n  large one"}\n')
  (tmp_path / "beta_code.py").write_text('"""Beta, arguments built by code."""\n'
                                         'RECIPE_ARGS = {name: f"variant {name}" for name in ("x", "y")}\n'
                                         'def get_config(arg=None):\n  return None\n')
  (tmp_path / "gamma.py").write_text("X = 1\n")
  listed = {r.name: r for r in recipes.list_recipes(str(tmp_path))}
  assert listed["alpha"].summary == "Alpha recipe."
  assert listed["alpha"].args == {"smoke": "seconds, for tests", "big": "the large one"}
  assert listed["beta_code"].args == {"x": "variant x", "y": "variant y"}
  assert listed["gamma"].summary == "(no docstring)" and listed["gamma"].args == {}
  assert recipes.families(list(listed.values())) == {"alpha": 1, "beta": 1, "gamma": 1}

  process = test_train._run(["-m", "metriclearn.recipes", tmp_path], test_train._subprocess_env(tmp_path))
  assert process.returncode == 0, process.stderr
  assert "3 recipes in" in process.stdout
  assert "alpha.py" in process.stdout and "Alpha recipe." in process.stdout and ":smoke  seconds, for tests" in (
      process.stdout)
  missing = test_train._run(["-m", "metriclearn.recipes", tmp_path / "nowhere"], test_train._subprocess_env(tmp_path))
  assert missing.returncode == 2 and missing.stderr.startswith("error: no recipe directory")


def test_recipes_from_another_directory_finds_the_repository_configs(tmp_path):
  env = test_train._subprocess_env(tmp_path)
  process = subprocess.run([sys.executable, "-m", "metriclearn.recipes"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120)
  assert process.returncode == 0, process.stderr
  assert f"{len(list(CONFIGS.glob('*.py')))} recipes in {CONFIGS}" in process.stdout


# ------------------------------------------------------------------------------------------------------------------
# User errors: one line, exit status 2, nothing left behind.


@pytest.mark.parametrize("args, expected", [
    (["--config.num_stpes=10"], r"unknown config key --config.num_stpes.*did you mean --config.num_steps\?.*"
                                r"valid keys of config: \[.*'num_steps'"),
    (["--config.model.kwargs.pretrained=/w.pth"], r"did you mean --config.model.pretrained\?"),
    (["--config.model.pretrained=/nowhere/w.npz"], r"pretrained weights not found: /nowhere/w.npz.*"
                                                   r"--config.model.pretrained=/path/to/file"),
    (["--config.loss.name=not_a_loss"], r"unknown loss 'not_a_loss'.*'multi_similarity'"),
    (["--config.sampler.kwargs.m=5"], r"cannot hold P classes × M=5"),  # a data check: batch 32 is no multiple of 5
], ids=["misspelt_key", "key_in_the_wrong_section", "missing_weights", "unknown_loss", "data_check"])
def test_user_error_is_one_line_and_leaves_nothing(cache_home, data_dir, tmp_path, args, expected):
  workdir = tmp_path / "run"
  process = _main([f"--config={CONFIGS / 'glyphs.py'}:smoke", f"--workdir={workdir}",
                   f"--config.dataset.data_dir={data_dir}", *args], test_train._subprocess_env(cache_home))
  assert process.returncode == 2
  assert re.search(expected, _error_line(process)), _error_line(process)
  assert not workdir.exists()


def test_missing_recipe_file_and_workdir_that_is_a_file(cache_home, tmp_path):
  env = test_train._subprocess_env(cache_home)
  process = _main([f"--config={CONFIGS / 'no_such_recipe.py'}", f"--workdir={tmp_path / 'run'}"], env)
  assert process.returncode == 2
  assert "no recipe file" in _error_line(process) and "python -m metriclearn.recipes" in _error_line(process)
  a_file = tmp_path / "a_file"
  a_file.write_text("not a directory")
  process = _main([f"--config={CONFIGS / 'glyphs.py'}:smoke", f"--workdir={a_file}"], env)
  assert process.returncode == 2
  assert f"--workdir {a_file} is a file, not a directory" in _error_line(process)
  assert a_file.read_text() == "not a directory"


def test_traceback_on_request(cache_home, tmp_path):
  args = [f"--config={CONFIGS / 'glyphs.py'}:smoke", f"--workdir={tmp_path / 'run'}", "--config.num_stpes=10"]
  shown = _main(args, test_train._subprocess_env(cache_home, METRICLEARN_TRACEBACK="1"))
  assert shown.returncode != 0 and "Traceback" in shown.stderr


def test_failed_data_check_in_process_leaves_no_workdir(data_dir, tmp_path):
  config = test_train._config(data_dir, **{"sampler.kwargs.m": 5})
  with pytest.raises(ValueError, match="M=5"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------------------------
# A finished workdir.


def test_finished_workdir_prints_its_results_and_writes_nothing(data_dir, tmp_path, capsys):
  config = test_train._config(data_dir, num_steps=2, **{"eval.baselines": True})
  workdir = tmp_path / "run"
  results = train.train_and_evaluate(config, str(workdir))
  files = {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()}
  assert "config.json" in files and "results.json" in files
  capsys.readouterr()

  again = train.train_and_evaluate(config, str(workdir))
  printed = capsys.readouterr().out
  assert "already finished" in printed
  assert "untrained" in printed and "raw_pixels" in printed and f"{results['recall@1']:.4f}" in printed
  assert again == json.loads(json.dumps(results))
  assert {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()} == files  # no new events file either

  # The same workdir with more steps is not finished: it resumes from step 2 and appends.
  longer = train.train_and_evaluate(test_train._config(data_dir, num_steps=3, **{"eval.baselines": True}),
                                    str(workdir))
  assert longer["num_steps"] == 3
  assert test_train._checkpoint_steps(workdir) == {2, 3}


# ------------------------------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM.


def _wait_for(condition, process, what: str, timeout: float = 240) -> None:
  deadline = time.monotonic() + timeout
  while not condition():
    assert process.poll() is None, f"the run ended before {what}:\n{process.stderr.read()[-5000:]}"
    assert time.monotonic() < deadline, f"no {what} after {timeout} s"
    time.sleep(0.02)


def _logged_steps(workdir: Path) -> set[int]:
  """Steps with a training record in metrics.jsonl so far (a line being written is skipped)."""
  path, steps = workdir / "metrics.jsonl", set()
  for line in path.read_text().splitlines() if path.exists() else []:
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if "loss" in record:
      steps.add(record["step"])
  return steps


def _interrupt(flags, env, signum, condition, what: str) -> tuple[int, str]:
  """Starts the run, sends `signum` once `condition()` holds; returns (exit status, stderr)."""
  process = subprocess.Popen([sys.executable, *map(str, flags)], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=env)
  _wait_for(condition, process, what)
  process.send_signal(signum)
  _, stderr = process.communicate(timeout=120)
  return process.returncode, stderr


def test_sigint_then_sigterm_save_the_current_step_and_the_resumed_run_reproduces(reference_run, cache_home, tmp_path):
  workdir = tmp_path / "interrupted"
  flags = [test_train.HELPER, *test_train._COMPARED_RUN_FLAGS, f"--workdir={workdir}"]
  # Steps after 4 sleep 0.5 s, so the signal lands mid-run, well before step 12.
  env = test_train._subprocess_env(cache_home, 1, METRICLEARN_TEST_SLOW_AFTER="4:0.5")
  code, stderr = _interrupt(flags, env, signal.SIGINT, lambda: 4 in test_train._checkpoint_steps(workdir),
                            "the step-4 checkpoint")
  assert code == 130, stderr[-3000:]
  assert "Traceback" not in stderr
  first = max(test_train._checkpoint_steps(workdir))
  assert 5 <= first < 12  # a checkpoint of the step the signal ended, not only the periodic one (step 4)
  assert f"interrupted (SIGINT) at step {first}; checkpoint saved in" in stderr
  assert "rerun the same command to resume" in stderr.strip().splitlines()[-1]
  assert max(_logged_steps(workdir)) == first and not (workdir / "results.json").exists()

  code, stderr = _interrupt(flags, env, signal.SIGTERM, lambda: max(_logged_steps(workdir), default=0) > first,
                            f"a step after {first}")
  assert code == 143, stderr[-3000:]
  second = max(test_train._checkpoint_steps(workdir))
  assert first < second < 12 and f"interrupted (SIGTERM) at step {second}" in stderr

  test_train._checked(test_train._run(flags, test_train._subprocess_env(cache_home, 1)))
  reference = reference_run["workdir"]
  # Same program, same machine, same device count: bit-for-bit equality with the uninterrupted run.
  assert test_train._without_wall_time(test_train._read_json(workdir / "results.json")) == (
      test_train._without_wall_time(test_train._read_json(reference / "results.json")))
  assert test_train._read_jsonl(workdir / "metrics.jsonl") == test_train._read_jsonl(reference / "metrics.jsonl")
  jax.tree.map(np.testing.assert_array_equal, test_train._restore_arrays(workdir, 12),
               test_train._restore_arrays(reference, 12))
