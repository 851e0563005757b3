"""Tests of the hyper-parameter search (`metriclearn.sweep`, `metriclearn.search_space`) and of
`benchmarks/methods.py`.

The sweeps run the `glyphs` recipe at its `:smoke` size, cut further (2 steps, one evaluation at the end, one
validation fold) so that each trial is one short training run; the glyphs are generated once per module into a
temporary cache, reached in process through `config.dataset.data_dir` and by subprocesses through `XDG_CACHE_HOME`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import optuna
import pytest

from metriclearn import config_util
from metriclearn import data
from metriclearn import search_space
from metriclearn import sweep
from metriclearn import train

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "glyphs.py"
# Two steps, evaluated (and selected on validation) once at the end; one validation fold of two.
FAST = {"num_steps": 2, "eval_every": 2, "checkpoint_every": 2, "log_every": 1, "eval.clustering": False,
        "sweep.folds": 1}
FAST_FLAGS = [f"--config.{key}={value}" for key, value in FAST.items()]


def _recipe(data_dir: Path | None = None, **overrides) -> ml_collections.ConfigDict:
  config = config_util.load_config(str(RECIPE), "smoke")
  if data_dir is not None:
    config.dataset.data_dir = str(data_dir)
  config.update_from_flattened_dict({**FAST, **overrides})
  return config


def _env(cache_home: Path) -> dict[str, str]:
  env = dict(os.environ)
  env.update(XDG_CACHE_HOME=str(cache_home), MPLCONFIGDIR=str(cache_home / "matplotlib"), JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
  return env


def _checked(process: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
  assert process.returncode == 0, f"exit {process.returncode}\n{process.stdout[-3000:]}\n{process.stderr[-5000:]}"
  return process


def _trials(workdir: Path, name: str = "glyphs") -> list[optuna.trial.FrozenTrial]:
  study = optuna.load_study(study_name=name, storage=f"sqlite:///{workdir}/study.db")
  return study.get_trials(deepcopy=False)


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory) -> Path:
  home = tmp_path_factory.mktemp("xdg_cache")
  config = _recipe()
  data.load_dataset("glyphs", data_dir=str(home / "metriclearn"), seed=config.seed, **dict(config.dataset.kwargs))
  return home


@pytest.fixture(scope="module")
def data_dir(cache_home) -> Path:
  return cache_home / "metriclearn"


# ------------------------------------------------------------------------------------------------------------------
# The search space (no training).


def test_space_resolves_shared_keys_from_the_recipes_loss():
  config = _recipe()
  assert search_space.resolve(config) == {**search_space.LEARNING_RATE, **search_space.LOSS_SPACES["multi_similarity"]}
  config.loss = dict(name="contrastive", kwargs={})  # a recipe built on glyphs.py that changes its loss
  assert search_space.resolve(config) == {**search_space.LEARNING_RATE, **search_space.LOSS_SPACES["contrastive"]}


def test_space_is_overridable_and_validated():
  config = _recipe()
  config.sweep.space = search_space.nest({"optimizer.learning_rate": "loguniform(1e-5, 1e-3)",
                                          "loss.kwargs.base": "fixed", "batch_size": "choice(16, 32)"})
  dims = search_space.resolve(config)
  assert dims["optimizer.learning_rate"] == "loguniform(1e-5, 1e-3)"  # the recipe's entry replaces the shared one
  assert "loss.kwargs.base" not in dims and dims["batch_size"] == "choice(16, 32)"
  for bad, message in [({"optimizer.learnin_rate": "uniform(0, 1)"}, "no 'optimizer.learnin_rate'"),
                       ({"num_steps": "uniform(1, 0)"}, "exceeds the high end"),
                       ({"num_steps": "normal(0, 1)"}, "unknown distribution 'normal'"),
                       ({"optimizer.learning_rate": "loguniform(0, 1)"}, "positive low end"),
                       ({"optimizer.learning_rate": "loguniform(1e-4"}, "cannot read")]:
    config.sweep.space = search_space.nest(bad)
    with pytest.raises(ValueError, match=message):
      search_space.resolve(config)
  config.sweep.space = {}
  config.sweep.shared = "learning_rate,margins"
  with pytest.raises(ValueError, match="unknown shared space 'margins'.*valid: \\['learning_rate', 'loss'\\]"):
    search_space.resolve(config)


def test_suggest_draws_every_kind_of_distribution():
  dims = {"a": "uniform(0.5, 1.5)", "b": "loguniform(1e-4, 1e-2)", "c": "int(2, 8, step=2)", "d": "logint(1, 64)",
          "e": "choice('x', 'y')"}
  study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
  for _ in range(20):
    values = search_space.suggest(study.ask(), dims)
    assert 0.5 <= values["a"] <= 1.5 and 1e-4 <= values["b"] <= 1e-2
    assert values["c"] in (2, 4, 6, 8) and 1 <= values["d"] <= 64 and values["e"] in ("x", "y")


def test_apply_overrides_sets_values_follows_references_and_refuses_unknown_paths():
  config = _recipe()
  config.lock()
  tuned = search_space.apply_overrides(config, {"optimizer.learning_rate": 0.003, "num_steps": 7,
                                                "dataset.kwargs.val_fold": 1})
  assert tuned.optimizer.learning_rate == 0.003 and tuned.dataset.kwargs.val_fold == 1
  assert tuned.optimizer.decay_steps == 7  # `get_ref("num_steps")` follows, as with --config.num_steps
  assert config.num_steps == FAST["num_steps"] and "val_fold" not in config.dataset.kwargs  # a copy
  with pytest.raises(ValueError, match="no 'optimizer.lr'"):
    search_space.apply_overrides(config, {"optimizer.lr": 0.1})
  with pytest.raises(ValueError, match="wrong type"):
    search_space.apply_overrides(config, {"num_steps": "many"})


def test_training_accepts_the_sweep_section_and_refuses_unknown_keys_in_it():
  config = _recipe()
  train.validate_config(config)
  config.sweep.trails = 3
  with pytest.raises(ValueError, match="unknown key.*'trails'.*config.sweep"):
    train.validate_config(config)


def test_sampler_is_seeded_per_trial_number():
  """A resumed study (a fresh sampler object) and a second worker draw what one uninterrupted worker draws."""
  def draws(numbers_per_study):
    storage = optuna.storages.InMemoryStorage()
    values = []
    for count in numbers_per_study:  # each a new process: a new sampler on the same storage
      study = optuna.create_study(storage=storage, study_name="s", load_if_exists=True,
                                  sampler=sweep.make_sampler("random()", 0))
      for _ in range(count):
        trial = study.ask()
        values.append(trial.suggest_float("x", 0.0, 1.0))
        study.tell(trial, 0.0)
    return values

  whole, resumed = draws([4]), draws([2, 2])
  assert whole == resumed and len(set(whole)) == 4


# ------------------------------------------------------------------------------------------------------------------
# Sweeps, in process.


class _TestImages:
  """Stands in for the test split's images: any read fails the test (and is recorded, in case it is caught)."""

  reads: list[str] = []

  def __init__(self, images: np.ndarray):
    self.shape, self.dtype, self.ndim = images.shape, images.dtype, images.ndim

  def __len__(self):
    return self.shape[0]

  def _read(self, *args, **kwargs):
    _TestImages.reads.append("read")
    raise AssertionError("the test split's images were read during a sweep")

  __getitem__ = __array__ = _read

  def __getattr__(self, name):  # anything else: `take`, `transformed` (file-backed photos), `reshape`, ...
    return self._read()


@pytest.fixture
def no_test_reads(monkeypatch):
  original = data.load_dataset

  def load_dataset(*args, **kwargs):
    dataset = original(*args, **kwargs)
    test = dataset.test
    return dataclasses.replace(dataset, test=data.Split(_TestImages(test.images), test.labels, test.class_names))

  _TestImages.reads.clear()
  monkeypatch.setattr(data, "load_dataset", load_dataset)
  yield
  assert not _TestImages.reads


def test_guard_catches_a_test_read(data_dir, no_test_reads, tmp_path):
  """The guard is effective: an ordinary run (which evaluates on test) trips it."""
  config = _recipe(data_dir, **{"eval.baselines": False, "eval.plots": False})
  with pytest.raises(AssertionError, match="test split's images were read"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  _TestImages.reads.clear()


def test_sweep_resumes_to_the_total_and_never_reads_the_test_split(data_dir, no_test_reads, tmp_path):
  config = _recipe(data_dir)
  sweep.run(config, str(tmp_path), trials=2)
  assert [t.state for t in _trials(tmp_path)] == [optuna.trial.TrialState.COMPLETE] * 2
  sweep.run(config, str(tmp_path), trials=3)  # the same command with a larger total resumes the study
  trials = _trials(tmp_path)
  assert [t.number for t in trials] == [0, 1, 2]
  assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
  assert len({t.params["optimizer.learning_rate"] for t in trials}) == 3  # no trial redrawn on resume
  for t in trials:  # the objective is the validation MAP@R of the selected checkpoint, from results.json
    results = json.loads((tmp_path / f"trial_{t.number}" / "fold_0" / "results.json").read_text())
    assert results["test_evaluated"] is False and "map@r" not in results and "untrained" not in results
    assert results["val_fold"] == 0 and results["num_folds"] == 2
    assert t.value == pytest.approx(results["val/map@r"], rel=0, abs=0)
  best = max(trials, key=lambda t: t.value)
  assert json.loads((tmp_path / "best.json").read_text()) == best.params
  with open(tmp_path / "trials.csv") as f:
    rows = list(csv.DictReader(f))
  assert [float(r["value"]) for r in rows] == [t.value for t in trials]
  assert "user_attrs_fold_0_map@r" in rows[0]
  assert (tmp_path / "history.png").stat().st_size > 0 and (tmp_path / "importances.png").stat().st_size > 0
  sweep.run(config, str(tmp_path), trials=3)  # reached: nothing more is trained
  assert len(_trials(tmp_path)) == 3
  with pytest.raises(ValueError, match="made with other settings.*num_steps"):
    sweep.run(_recipe(data_dir, num_steps=4), str(tmp_path), trials=3)


def test_interrupted_trial_is_retried_in_its_own_directory(data_dir, monkeypatch, tmp_path):
  config = _recipe(data_dir)
  original = train.train_and_evaluate

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(train, "train_and_evaluate", interrupted)
  with pytest.raises(KeyboardInterrupt):
    sweep.run(config, str(tmp_path), trials=1)
  monkeypatch.setattr(train, "train_and_evaluate", original)
  sweep.run(config, str(tmp_path), trials=1)
  first, retry = _trials(tmp_path)
  assert first.state == optuna.trial.TrialState.FAIL and retry.state == optuna.trial.TrialState.COMPLETE
  assert retry.params == first.params and retry.system_attrs["failed_trial"] == 0
  assert (tmp_path / "trial_0" / "fold_0" / "results.json").exists() and not (tmp_path / "trial_1").exists()


def test_pruned_trial_stops_at_its_first_evaluation(data_dir, tmp_path):
  # Validation MAP@R is below 1 after two steps, so a threshold pruner at 1.0 prunes at the first report.
  config = _recipe(data_dir, **{"num_steps": 4, "sweep.pruner": "threshold(lower=1.0)"})
  sweep.run(config, str(tmp_path), trials=1)
  (trial,) = _trials(tmp_path)
  assert trial.state == optuna.trial.TrialState.PRUNED and trial.user_attrs["pruned_at"] == "fold 0, step 2"
  assert list(trial.intermediate_values) == [2]
  records = [json.loads(line) for line in (tmp_path / "trial_0" / "fold_0" / "metrics.jsonl").read_text().splitlines()]
  assert max(r["step"] for r in records) == 2  # training stopped there
  assert not (tmp_path / "best.json").exists()  # no complete trial, no best setting


# ------------------------------------------------------------------------------------------------------------------
# Command lines, in subprocesses.


def test_two_workers_share_one_study_and_best_json_round_trips_into_main(cache_home, tmp_path):
  workdir = tmp_path / "sweep"
  command = [sys.executable, "-m", "metriclearn.sweep", "--config=configs/glyphs.py:smoke", f"--workdir={workdir}",
             "--trials=3", *FAST_FLAGS]
  workers = [subprocess.Popen(command, cwd=ROOT, env=_env(cache_home), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
  for worker in workers:
    stdout, stderr = worker.communicate(timeout=900)
    assert worker.returncode == 0, stderr[-5000:]
  trials = _trials(workdir)
  finished = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
  assert len(finished) == 3
  # Anything else is a claim beyond the total by a race, failed before drawing parameters.
  assert all(t.user_attrs.get("surplus") and not t.params for t in trials if t not in finished)
  dirs = [t.user_attrs["trial_dir"] for t in finished]
  assert len(set(dirs)) == 3 and len({t.params["optimizer.learning_rate"] for t in finished}) == 3

  # The best setting in `main` trains exactly the best trial's fold-0 run: the same selected validation MAP@R.
  best = max(finished, key=lambda t: t.value)
  overrides = tmp_path / "overrides.json"
  overrides.write_text(json.dumps({**json.loads((workdir / "best.json").read_text()),
                                   "dataset.kwargs.val_fold": 0, "dataset.kwargs.num_folds": 2}))
  run_dir = tmp_path / "main"
  _checked(subprocess.run([sys.executable, "-m", "metriclearn.main", "--config=configs/glyphs.py:smoke",
                           f"--workdir={run_dir}", f"--overrides={overrides}", *FAST_FLAGS[:-1],
                           "--config.eval.baselines=False", "--config.eval.plots=False"],
                          cwd=ROOT, env=_env(cache_home), capture_output=True, text=True, timeout=600))
  results = json.loads((run_dir / "results.json").read_text())
  # The same computation on the same machine: bit-identical, so exact equality.
  assert results["val/map@r"] == best.user_attrs["fold_0_map@r"]
  assert results["selected_step"] == best.user_attrs["fold_0_selected_step"] and "map@r" in results


def test_main_applies_overrides_between_the_recipe_and_its_flags(tmp_path):
  overrides = tmp_path / "best.json"
  overrides.write_text(json.dumps({"optimizer.learning_rate": 0.00123, "loss.kwargs.beta": 33.0,
                                   "dataset.kwargs.val_fold": 1}))
  script = ("import json, sys\nfrom absl import flags\nfrom metriclearn import main\nflags.FLAGS(sys.argv)\n"
            "c = main.config_with_overrides()\nprint(json.dumps({'lr': c.optimizer.learning_rate, "
            "'beta': c.loss.kwargs.beta, 'fold': c.dataset.kwargs.val_fold, 'alpha': c.loss.kwargs.alpha}))")
  process = _checked(subprocess.run(
      [sys.executable, "-c", script, "--config=configs/glyphs.py:smoke", "--workdir=unused",
       f"--overrides={overrides}", "--config.loss.kwargs.beta=20.0", "--config.loss.kwargs.alpha=3.0"],
      cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=300))
  assert json.loads(process.stdout.strip().splitlines()[-1]) == {"lr": 0.00123, "beta": 20.0, "fold": 1,
                                                                 "alpha": 3.0}
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"optimizer.lr": 0.1}))
  process = subprocess.run([sys.executable, "-m", "metriclearn.main", "--config=configs/glyphs.py:smoke",
                            f"--workdir={tmp_path / 'run'}", f"--overrides={bad}"], cwd=ROOT, env=_env(tmp_path),
                           capture_output=True, text=True, timeout=300)
  assert process.returncode != 0 and "no 'optimizer.lr'" in process.stderr
  assert not (tmp_path / "run").exists()


def test_methods_runs_end_to_end_and_writes_the_paired_table(cache_home, tmp_path):
  workdir = tmp_path / "methods"
  command = [sys.executable, "benchmarks/methods.py", "--smoke", "--only", "xbm", "--trials", "1", "--seeds", "2",
             "--folds", "1", "--steps", "2", "--batch-size", "16", "--workdir", str(workdir), "--jobs", "2"]
  process = _checked(subprocess.run(command, cwd=ROOT, env=_env(cache_home), capture_output=True, text=True,
                                    timeout=1500))
  table = (workdir / "methods.md").read_text()
  assert table in process.stdout and "2 steps a run, batch 16." in table
  # --steps and --batch-size reach every run: the sweeps' command lines, and the seed runs' written configs.
  sweeps = [line for line in process.stdout.splitlines() if "metriclearn.sweep" in line]
  assert len(sweeps) == 2 and all("--config.num_steps=2 --config.batch_size=16" in line for line in sweeps)
  configs = [json.loads(p.read_text()) for p in workdir.glob("*/tuned_*/seed_*/config.json")]
  assert len(configs) == 2 * 2 and {(c["num_steps"], c["batch_size"]) for c in configs} == {(2, 16)}
  (row,) = [line for line in table.splitlines() if line.startswith("| xbm |")]
  assert "`configs/glyphs_xbm.py:finetune,smoke`" in row and "`configs/glyphs_finetune.py:smoke`" in row
  # --report trains nothing and tabulates the same runs.
  report = _checked(subprocess.run([*command, "--report"], cwd=ROOT, env=_env(cache_home), capture_output=True,
                                   text=True, timeout=300))
  assert table in report.stdout and (workdir / "methods.md").read_text() == table
  rows = json.loads((workdir / "methods.json").read_text())
  for recipe, name in (("glyphs_xbm-finetune-smoke", "method_map@r"), ("glyphs_finetune-smoke", "baseline_map@r")):
    runs = [json.loads(p.read_text()) for p in sorted((workdir / recipe).glob("tuned_*/seed_*/results.json"))]
    assert [r["seed"] for r in runs] == [0, 1] and [r["val_fold"] for r in runs] == [0, 1]
    assert rows["xbm"][name]["mean"] == pytest.approx(np.mean([r["map@r"] for r in runs]), abs=1e-12)
  assert (workdir / "methods.png").stat().st_size > 0
  outputs = {p: p.stat().st_mtime_ns for p in workdir.glob("*/**/results.json")}
  assert len(outputs) == 2 * (1 + 2)  # per recipe: one trial of one fold, two seeds
  _checked(subprocess.run(command, cwd=ROOT, env=_env(cache_home), capture_output=True, text=True, timeout=600))
  assert {p: p.stat().st_mtime_ns for p in workdir.glob("*/**/results.json")} == outputs  # resumed: nothing retrained


def test_launch_recipes_run_a_journal_study_and_their_command_lines_parse(cache_home, tmp_path):
  for script in ("launch/sweep_slurm.sbatch", "launch/sweep_tpu_vm.sh"):
    _checked(subprocess.run(["bash", "-n", script], cwd=ROOT, capture_output=True, text=True))
  # The SLURM task's command, run here as one worker (no SLURM variables): a study in the journal file storage.
  workdir = tmp_path / "slurm"
  env = {**_env(cache_home), "PYTHON": sys.executable, "WORKDIR": str(workdir), "TRIALS": "1", "REPO": str(ROOT)}
  _checked(subprocess.run(["bash", "launch/sweep_slurm.sbatch", "--config=configs/glyphs.py:smoke", *FAST_FLAGS],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600))
  storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(workdir / "study.log")))
  (trial,) = optuna.load_study(study_name="glyphs", storage=storage).get_trials()
  assert trial.state == optuna.trial.TrialState.COMPLETE and (workdir / "best.json").exists()
  # The TPU VM loop's command (printed, not run): every flag and the recipe parse as the sweep's command line.
  env = {**_env(cache_home), "DRY_RUN": "1", "WORKDIR": str(tmp_path / "tpu"), "PYTHON": sys.executable}
  printed = _checked(subprocess.run(["bash", "launch/sweep_tpu_vm.sh", "loop", "--config=configs/glyphs.py:smoke",
                                     "--config.sweep.pruner=median(n_startup_trials=2)"],
                                    cwd=ROOT, env=env, capture_output=True, text=True)).stdout
  argv = shlex.split(printed)
  assert argv[1:3] == ["-m", "metriclearn.sweep"]
  script = ("import sys\nfrom absl import flags\nfrom metriclearn import sweep\nflags.FLAGS(sys.argv)\n"
            "print(sweep._STORAGE.value, sweep._TRIALS.value, sweep._CONFIG.value.sweep.pruner)")
  parsed = _checked(subprocess.run([sys.executable, "-c", script, *argv[3:]], cwd=ROOT, env=_env(cache_home),
                                   capture_output=True, text=True, timeout=300)).stdout.split()
  assert parsed == [f"journal:{tmp_path / 'tpu'}/study.log", "20", "median(n_startup_trials=2)"]


def test_every_loss_space_names_keywords_of_its_loss_and_every_loss_row_resolves():
  """A shared loss space must search keywords the loss takes (a typo would only fail inside a sweep's first trial),
  and every row of `benchmarks/methods.py --rows losses` must build and resolve its space."""
  import inspect
  from metriclearn import losses
  for name, space in search_space.LOSS_SPACES.items():
    keywords = inspect.signature(losses.LOSSES[name]).parameters
    for path in space:
      assert path.startswith("loss.kwargs.") and path.removeprefix("loss.kwargs.") in keywords, (name, path)
  sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
  try:
    import methods
  finally:
    sys.path.pop(0)
  for rows in methods.ROW_SETS.values():
    for spec in {spec for pair in rows.values() for spec in pair}:
      config = config_util.load_config(os.path.join(ROOT, spec))
      assert config.model.pretrained == "glyphs_pretrain", spec  # every row is in the fine-tuning regime
      search_space.resolve(config)
