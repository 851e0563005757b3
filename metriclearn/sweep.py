r"""Hyper-parameter search on Optuna: the recipe's `config.sweep` space, validation MAP@R over class-disjoint folds.

  python -m metriclearn.sweep --config=configs/glyphs.py --workdir=runs/sweep_glyphs --trials=20
      [--storage=URL] [--study_name=NAME] [--config.key=value ...]

* **Space** (`metriclearn.search_space`): declared in the recipe's `config.sweep`; every `--config.` flag applies
  to it and to the trained settings alike (`--config.num_steps=300`, `--config.sweep.folds=2`).
* **Objective**: for each of the first `sweep.folds` of `sweep.num_folds` class-disjoint folds of the train classes,
  train with `dataset.kwargs.val_fold=k` (the fair protocol: the checkpoint is selected on that fold's validation
  MAP@R) and take the selected checkpoint's validation MAP@R; the trial's value is their mean. The test split is
  never embedded or read (`train.train_and_evaluate(..., evaluate_test=False)`).
* **Pruning**: every evaluation during training is reported to Optuna at step `k * num_steps + step`, and the
  recipe's pruner (`sweep.pruner`) stops hopeless trials. A trial whose loss turns non-finite is pruned as well
  (user attribute `diverged`): a learning rate that diverges is a result, not an error.
* **Resume**: the study lives in `--storage` (default `sqlite:///WORKDIR/study.db`); rerunning the command resumes
  it, and `--trials` is the total of finished (complete or pruned) trials it reaches. Each trial trains in
  `WORKDIR/trial_<n>/fold_<k>`; a trial cut off (Ctrl-C, SIGTERM, or a killed process whose heartbeat stopped) is
  marked failed and retried with the same parameters in the same directories, so its training resumes from its
  checkpoints (Optuna's `RetryHeartbeatStaleTrialCallback`, at most `--max_retry` times).
* **Several workers**: processes given the same storage share the study; each claims trials until the total is
  reached, and one that finds every remaining trial running elsewhere waits for them (a finished command means a
  finished study). A trial claimed beyond `--trials` by a race between workers is failed at once (user attribute
  `surplus`), before any parameter is drawn.
* **Outputs** (rewritten by every worker at its end): `best.json` (the best trial's overrides, for
  `python -m metriclearn.main --overrides=WORKDIR/best.json` and `benchmarks/seeds.py --overrides-file`),
  `summary.json`, `trials.csv` (every trial: parameters, per-fold MAP@R, state), `history.png` and
  `importances.png` (Optuna's matplotlib visualisation: optimisation history, fANOVA parameter importances).

Storage. SQLite (the default, one machine): Optuna's `RDBStorage` with a 60 s busy timeout, so that concurrent
workers queue for the write lock instead of failing with "database is locked"; trials write a few rows a minute, so
the wait is negligible. The RDB storage also records heartbeats, which is how a killed worker's trial is found and
retried. SQLite's locks do not hold on network file systems: for many machines use a PostgreSQL / MySQL URL
(`postgresql://user:password@host/db`, heartbeats included) or `journal:/shared/path/study.log`, Optuna's journal file
storage with its open-file lock, which works on NFS (it has no heartbeat: a trial of a hard-killed worker stays
`RUNNING`; `--retry_running` fails and retries such trials when no worker is alive). Recipes in `launch/`.

Sampler seeding: the recipe's sampler is rebuilt for every trial, seeded from (`sweep.seed`, trial number). One
worker's study is therefore reproducible, a resumed study does not redraw its first trials' parameters, and two
workers never draw the same random start-up points.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import signal
import time
import warnings
from typing import Any

import numpy as np
import optuna
from absl import app
from absl import flags
from absl import logging
from matplotlib import pyplot
from ml_collections import config_flags

from metriclearn import search_space
from metriclearn import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe with a `sweep` section: configs/<name>.py[:arg].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the study: trial_<n>/fold_<k> runs, best.json, "
                               "trials.csv, history.png (and study.db with the default storage).")
_TRIALS = flags.DEFINE_integer("trials", None, "Total number of finished (complete or pruned) trials to reach.",
                               lower_bound=1)
_STORAGE = flags.DEFINE_string("storage", None, "sqlite:///PATH, postgresql://..., mysql://... or journal:PATH "
                               "(default sqlite:///WORKDIR/study.db).")
_STUDY_NAME = flags.DEFINE_string("study_name", None, "Name of the study in the storage (default: config.name).")
_HEARTBEAT = flags.DEFINE_integer("heartbeat", 60, "Seconds between a running trial's heartbeats (RDB storages); a "
                                  "trial silent for twice as long is failed and retried.", lower_bound=1)
_MAX_RETRY = flags.DEFINE_integer("max_retry", 2, "How often a cut-off trial is retried.", lower_bound=0)
_RETRY_RUNNING = flags.DEFINE_bool("retry_running", False, "Journal storage: fail and retry the trials left "
                                   "RUNNING by hard-killed workers. Only when no other worker is alive.")
flags.mark_flags_as_required(["config", "workdir", "trials"])

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
_SQLITE_TIMEOUT_S = 60


class _Surplus(Exception):
  """A trial claimed after the study reached its total (a race between workers)."""


# ----------------------------------------------------------------------------------------------------------------
# Storage, sampler, pruner.


def make_storage(url: str, *, heartbeat_s: int = 60, max_retry: int = 2) -> optuna.storages.BaseStorage:
  """Optuna storage for `url` (see the module docstring): an RDB URL, or `journal:PATH`."""
  if url.startswith("journal:"):
    path = url.removeprefix("journal:").removeprefix("//")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    backend = optuna.storages.journal.JournalFileBackend(path, lock_obj=optuna.storages.journal.JournalFileOpenLock(path))
    return optuna.storages.JournalStorage(backend)
  engine_kwargs = {"connect_args": {"timeout": _SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {
      "pool_pre_ping": True}
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s,
                                      grace_period=2 * heartbeat_s,
                                      heartbeat_stale_trial_callback=_retry_callback(max_retry))


def _retry_callback(max_retry: int):
  """Queues a copy of a failed trial (same parameters, `failed_trial` = the first one's number) as WAITING."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)


class PerTrialSeedSampler(optuna.samplers.BaseSampler):
  """A sampler rebuilt before every trial, seeded from (seed, trial number); every call is delegated to it.

  Optuna's samplers hold one random stream per process, so a resumed study (or a second worker) seeded like the
  first would redraw the same start-up points; a fresh stream per trial number keeps the study reproducible and
  its workers apart.
  """

  def __init__(self, make, seed: int):
    self._make, self._seed = make, seed
    self._inner = make(seed)

  def before_trial(self, study, trial):
    self._inner = self._make(int(np.random.SeedSequence([self._seed, trial.number]).generate_state(1)[0]))
    self._inner.before_trial(study, trial)

  def infer_relative_search_space(self, study, trial):
    return self._inner.infer_relative_search_space(study, trial)

  def sample_relative(self, study, trial, search_space):
    return self._inner.sample_relative(study, trial, search_space)

  def sample_independent(self, study, trial, param_name, param_distribution):
    return self._inner.sample_independent(study, trial, param_name, param_distribution)

  def after_trial(self, study, trial, state, values):
    self._inner.after_trial(study, trial, state, values)

  def reseed_rng(self):
    self._inner.reseed_rng()


def make_sampler(spec: str, seed: int) -> optuna.samplers.BaseSampler:
  name, args, kwargs = search_space.parse_call(spec, search_space.SAMPLERS, "sampler")
  cls = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}[name]
  return PerTrialSeedSampler(lambda trial_seed: cls(*args, seed=trial_seed, **kwargs), seed)


def make_pruner(spec: str) -> optuna.pruners.BasePruner:
  name, args, kwargs = search_space.parse_call(spec, search_space.PRUNERS, "pruner")
  return {"median": optuna.pruners.MedianPruner, "percentile": optuna.pruners.PercentilePruner,
          "threshold": optuna.pruners.ThresholdPruner, "hyperband": optuna.pruners.HyperbandPruner,
          "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
          "none": optuna.pruners.NopPruner}[name](*args, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# The objective.


def fold_config(config, overrides: dict[str, Any], fold: int, num_folds: int):
  """The trial's training config for validation fold `fold`: the overrides, the fair protocol, no test extras."""
  return search_space.apply_overrides(config, {
      **overrides, "dataset.kwargs.val_fold": fold, "dataset.kwargs.num_folds": num_folds,
      "eval.baselines": False, "eval.plots": False})


def _config_fingerprint(config) -> dict[str, str]:
  """The settings a study was made with (paths that may differ between machines left out), to refuse mixing."""
  flat = search_space.flatten(config.to_dict())
  return {key: repr(value) for key, value in sorted(flat.items())
          if not key.endswith(("data_dir", "pretrained"))}


@contextlib.contextmanager
def _file_lock(path: str):
  """An exclusive lock on `path` (local workers creating one SQLite study at the same moment)."""
  with open(path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def open_study(config, workdir: str, *, storage: str | None = None, study_name: str | None = None,
               heartbeat_s: int = 60, max_retry: int = 2, pruner=None) -> optuna.Study:
  """Creates or loads the study of `config` (refusing one made with other settings)."""
  os.makedirs(workdir, exist_ok=True)
  url = storage or f"sqlite:///{os.path.abspath(workdir)}/study.db"
  sweep = config.sweep
  with _file_lock(os.path.join(workdir, ".study.lock")):
    study = optuna.create_study(
        storage=make_storage(url, heartbeat_s=heartbeat_s, max_retry=max_retry), study_name=study_name or config.name,
        direction="maximize", sampler=make_sampler(sweep.sampler, int(sweep.seed)),
        pruner=pruner or make_pruner(sweep.pruner), load_if_exists=True)
    fingerprint = _config_fingerprint(config)
    if "config" not in study.user_attrs:
      study.set_user_attr("config", fingerprint)
  stored = study.user_attrs["config"]
  differ = sorted(key for key in set(stored) | set(fingerprint) if stored.get(key) != fingerprint.get(key))
  if differ:
    raise ValueError(f"the study {study.study_name!r} in {url} was made with other settings ({differ[:8]}"
                     f"{' ...' if len(differ) > 8 else ''}); resume it with the same config and flags, or start "
                     "another with a new --workdir (or --study_name)")
  return study


def _frozen(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
  return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def make_objective(config, workdir: str, target: int, study: optuna.Study, current: dict):
  """`objective(trial) -> mean validation MAP@R` over the recipe's folds (see the module docstring)."""
  dims = search_space.resolve(config)
  num_folds, folds, num_steps = int(config.sweep.num_folds), int(config.sweep.folds), int(config.num_steps)

  def objective(trial: optuna.Trial) -> float:
    current["number"] = trial.number
    others = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
    if sum(t.state in (*FINISHED, optuna.trial.TrialState.RUNNING) for t in others) >= target:
      trial.set_user_attr("surplus", f"claimed after the study reached --trials={target}")
      raise _Surplus
    root = _frozen(study, trial.number).system_attrs.get("failed_trial", trial.number)  # a retry trains in place
    overrides = search_space.suggest(trial, dims)
    trial_dir = os.path.join(workdir, f"trial_{root}")
    trial.set_user_attr("trial_dir", trial_dir)
    scores = []
    for fold in range(folds):
      fold_dir = os.path.join(trial_dir, f"fold_{fold}")
      results_path = os.path.join(fold_dir, "results.json")
      if os.path.exists(results_path):  # a retried trial: this fold finished before the cut
        with open(results_path) as f:
          results = json.load(f)
      else:
        def report(step, metrics, fold=fold):
          trial.report(metrics["val/map@r"], fold * num_steps + step)
          if trial.should_prune():
            trial.set_user_attr("pruned_at", f"fold {fold}, step {step}")
            raise optuna.TrialPruned(f"fold {fold} step {step}: val MAP@R {metrics['val/map@r']:.4f}")

        try:
          results = train.train_and_evaluate(fold_config(config, overrides, fold, num_folds), fold_dir,
                                             evaluate_test=False, on_evaluation=report)
        except FloatingPointError as error:
          trial.set_user_attr("diverged", str(error).split(";")[0])
          raise optuna.TrialPruned(f"fold {fold}: {error}") from None
      scores.append(float(results["val/map@r"]))
      trial.set_user_attr(f"fold_{fold}_map@r", scores[-1])
      trial.set_user_attr(f"fold_{fold}_selected_step", int(results["selected_step"]))
    return float(np.mean(scores))

  return objective


# ----------------------------------------------------------------------------------------------------------------
# The study loop and its outputs.


def run(config, workdir: str, *, trials: int, storage: str | None = None, study_name: str | None = None,
        heartbeat_s: int = 60, max_retry: int = 2, retry_running: bool = False, pruner=None) -> optuna.Study:
  """Runs (or resumes) the sweep of `config` in `workdir` until `trials` trials have finished; writes the outputs.

  Raises:
    ValueError: a bad `sweep` section, a space the config cannot take, or a study made with other settings.
  """
  dims = search_space.resolve(config)
  lows = {path: search_space.parse_call(spec, search_space.DISTRIBUTIONS, "distribution")[1][0]
          for path, spec in dims.items()}
  train.validate_config(fold_config(config, lows, 0, int(config.sweep.num_folds)))  # errors before any training
  study = open_study(config, workdir, storage=storage, study_name=study_name, heartbeat_s=heartbeat_s,
                     max_retry=max_retry, pruner=pruner)
  retry = _retry_callback(max_retry)
  if retry_running:
    for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
      study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
      retry(study, _frozen(study, trial.number))
  current: dict = {}
  objective = make_objective(config, workdir, trials, study, current)
  heartbeat = not (storage or "").startswith("journal:")  # RDB storages record heartbeats (make_storage)
  while True:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
      optuna.storages.fail_stale_trials(study)  # a killed worker's trials: failed, and retried through `retry`
    states = [t.state for t in study.get_trials(deepcopy=False)]
    finished, running = sum(s in FINISHED for s in states), states.count(optuna.trial.TrialState.RUNNING)
    waiting = states.count(optuna.trial.TrialState.WAITING)
    if finished >= trials:
      break
    if not waiting and finished + running >= trials:
      if not heartbeat:
        logging.warning("%d trial(s) run elsewhere; this worker stops (journal storages cannot tell a dead worker "
                        "from a live one: see --retry_running)", running)
        break
      logging.warning("%d of %d trials finished, %d running elsewhere: waiting for them", finished, trials, running)
      time.sleep(min(heartbeat_s, 10))
      continue
    current.clear()
    try:
      study.optimize(objective, n_trials=1, gc_after_trial=True)
    except _Surplus:
      continue
    except BaseException:  # Ctrl-C, SIGTERM, a crash: the trial is failed (by Optuna); queue its retry
      if "number" in current:
        trial = _frozen(study, current["number"])
        if trial.state == optuna.trial.TrialState.FAIL and "surplus" not in trial.user_attrs:
          retry(study, trial)
      raise
  write_outputs(study, workdir)
  return study


def _write_atomically(path: str, write) -> None:
  """`write(temporary_path)`, then a rename: a reader (another worker, methods.py) never sees half a file."""
  temporary = f"{path}.tmp{os.getpid()}"
  write(temporary)
  os.replace(temporary, path)


def _write_json(path: str, value) -> None:
  def write(temporary):
    with open(temporary, "w") as f:
      json.dump(value, f, indent=2)
  _write_atomically(path, write)


def write_outputs(study: optuna.Study, workdir: str) -> None:
  """best.json, summary.json, trials.csv, history.png and importances.png of the study, in `workdir`."""
  trials = study.get_trials(deepcopy=False)
  complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
  summary = {"study": study.study_name, "objective": "mean validation MAP@R over class-disjoint folds",
             **{state.name.lower(): sum(t.state == state for t in trials) for state in optuna.trial.TrialState}}
  if complete:
    best = study.best_trial
    _write_json(os.path.join(workdir, "best.json"), best.params)
    summary.update(best_trial=best.number, best_value=best.value, best_params=best.params,
                   best_user_attrs=best.user_attrs)
  _write_json(os.path.join(workdir, "summary.json"), summary)
  _write_atomically(os.path.join(workdir, "trials.csv"), lambda p: _write_csv(trials, p))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    if complete:
      _save_axes(optuna.visualization.matplotlib.plot_optimization_history(study),
                 os.path.join(workdir, "history.png"))
    if len(complete) >= 2 and complete[0].params:
      _save_axes(optuna.visualization.matplotlib.plot_param_importances(study),
                 os.path.join(workdir, "importances.png"))


def _write_csv(trials: list[optuna.trial.FrozenTrial], path: str) -> None:
  """One row per trial: number, state, value, start/end, parameters, user attributes (per-fold MAP@R, ...).

  The columns of `study.trials_dataframe()`, written with the csv module: that method needs pandas, which nothing
  else here does.
  """
  params = sorted({key for t in trials for key in t.params})
  attrs = sorted({key for t in trials for key in t.user_attrs})
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["number", "state", "value", "datetime_start", "datetime_complete", "duration_s",
                     *[f"params_{key}" for key in params], *[f"user_attrs_{key}" for key in attrs]])
    for t in trials:
      duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and \
          t.datetime_start else ""
      writer.writerow([t.number, t.state.name, "" if t.value is None else t.value, t.datetime_start or "",
                       t.datetime_complete or "", duration, *[t.params.get(key, "") for key in params],
                       *[t.user_attrs.get(key, "") for key in attrs]])


def _save_axes(ax, path: str) -> None:
  """Saves an Optuna matplotlib plot (it draws through pyplot) and closes its figure."""
  figure = ax.figure
  figure.set_size_inches(7, 4.5)
  figure.tight_layout()
  _write_atomically(path, lambda p: figure.savefig(p, dpi=110, format="png", bbox_inches="tight"))
  pyplot.close(figure)


def _interrupt(signum, frame):
  raise KeyboardInterrupt(f"signal {signum}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  optuna.logging.set_verbosity(optuna.logging.INFO)
  signal.signal(signal.SIGTERM, _interrupt)  # SLURM preemption: the running trial is failed and queued for retry
  study = run(_CONFIG.value, _WORKDIR.value, trials=_TRIALS.value, storage=_STORAGE.value,
              study_name=_STUDY_NAME.value, heartbeat_s=_HEARTBEAT.value, max_retry=_MAX_RETRY.value,
              retry_running=_RETRY_RUNNING.value)
  summary = json.load(open(os.path.join(_WORKDIR.value, "summary.json")))
  print(f"\nstudy {study.study_name}: {summary['complete']} complete, {summary['pruned']} pruned, "
        f"{summary['fail']} failed trials")
  if "best_value" in summary:
    print(f"best trial {summary['best_trial']}: mean val MAP@R {summary['best_value']:.4f} with "
          f"{json.dumps(summary['best_params'])}\nwritten to {os.path.join(_WORKDIR.value, 'best.json')}")


if __name__ == "__main__":
  app.run(main)
