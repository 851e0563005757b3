r"""The method comparison in one command: equal-budget sweeps, seeds on test, the paired table.

  python benchmarks/methods.py [--workdir runs/methods] [--trials 20] [--seeds 5] [--folds 4] [--steps N]
      [--batch-size B] [--only NAME ...] [--smoke]

For every row of `COMPARISONS` below (a method recipe and the recipe of its baseline):
1. **Sweep** each recipe with the same number of trials (`python -m metriclearn.sweep --trials=T`, the recipe's own
   `config.sweep` space, mean validation MAP@R over class-disjoint folds of the train classes; the test split is
   never read). A baseline shared by several rows is swept once.
2. **Seeds**: `--seeds` runs of each recipe's best setting (`python -m metriclearn.main --overrides=...`, in
   `WORKDIR/<recipe>/tuned_<hash of the setting>/seed_<s>`), seed s
   with validation fold s mod `sweep.num_folds`: training on the other folds' classes, the checkpoint selected on
   that fold's validation MAP@R, the test split evaluated once at the selected checkpoint.
   Why a validation fold and not all train classes: it is the protocol the sweep tuned under (the same amount of
   training data, the same selection), and selecting a checkpoint needs classes the model does not train on;
   transferring a step count to a longer run on all classes would be a setting the sweep never measured. Rotating
   the fold with the seed spreads the comparison over every fold, and a method and its baseline with the same
   seed share the fold, data and initialisation (the pairing).
3. **Table**: per row, method − baseline over seeds (mean, 95 % t-interval, paired t-test p;
   `metriclearn.tabulate.paired_stats`) of test MAP@R and R@1, as Markdown (`WORKDIR/methods.md`, also printed) and
   a PNG (`WORKDIR/methods.png`), with each recipe's tuned settings.

Everything resumes: a sweep resumes its study, a seed run whose results.json exists is reused and an interrupted
one resumes from its checkpoints, so rerunning the same command continues where it stopped. Scale it down with
`--trials`, `--seeds`, `--folds` (folds validated per trial, the recipes' `sweep.folds`), `--steps`
(`config.num_steps` of every run), `--only NAME` (rows) and `--smoke` (each recipe's `:smoke` variant, for tests).
`--batch-size B` sets `config.batch_size` of every run, sweeps included (the whole table at another batch size: give
it its own `--workdir`, since a study refuses to resume under other settings).

Cost, measured (benchmarks/RESULTS.md, "The methods in the fair regime"): on one H200 with 16 CPU cores and
`--jobs 20`, 170 runs (4 trials on one fold and up to 5 seeds for 20 recipes) took 12.5 minutes, 22–88 s a run (the
runs are CPU-bound at this size). On an idle 2-core CPU one fine-tuning run takes ~105 s, so the full table (28
recipes × (4 + 5) runs with `--trials 4 --folds 1`) is about 7 hours there; the defaults (20 trials × 4 folds) are
for a cluster. Every run's `wall_time_s` is in its results.json; the table reports their mean. `--jobs N` runs N
recipes' pipelines at once; `--report` tabulates what exists without training (after an interruption).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run as a script from a checkout: `python benchmarks/methods.py`

from metriclearn import config_util  # noqa: E402
from metriclearn import tabulate  # noqa: E402

# The comparison: row name -> (method recipe, baseline recipe), each `configs/<file>.py[:arg]`, all in the fair regime
# (`:finetune`: configs/glyphs_finetune.py's pre-trained backbone, validation fold and checkpoint selection). Every
# recipe is swept with its own `config.sweep`: the shared keys (learning rate, the loss's margins / scales) over the
# same ranges, plus the method's own dimension where it has one (Metrix w, APFS λ, AML α, XBM warm-up). Metrix with
# contrastive and AML compare with the same contrastive loss without the method; DAML with its J_m alone (the
# "recommended" J_m, the strongest of each variant, so the paper and code presets face the strongest baseline).
FINETUNE = "configs/glyphs_finetune.py"
CONTRASTIVE = "configs/glyphs_aml.py:baseline,finetune"
COMPARISONS = {
    "metrix_embed": ("configs/glyphs_metrix.py:embed,finetune", FINETUNE),
    "metrix_feature": ("configs/glyphs_metrix.py:feature,finetune", FINETUNE),
    "metrix_input": ("configs/glyphs_metrix.py:input,finetune", FINETUNE),
    "metrix_embed_contrastive": ("configs/glyphs_metrix.py:embed,contrastive,finetune", CONTRASTIVE),
    "metrix_feature_contrastive": ("configs/glyphs_metrix.py:feature,contrastive,finetune", CONTRASTIVE),
    "metrix_input_contrastive": ("configs/glyphs_metrix.py:input,contrastive,finetune", CONTRASTIVE),
    "apfs": ("configs/glyphs_apfs.py:finetune", FINETUNE),
    "apfs_no_mining": ("configs/glyphs_apfs.py:no_mining,finetune", FINETUNE),
    "aml": ("configs/glyphs_aml.py:finetune", CONTRASTIVE),
    "xbm": ("configs/glyphs_xbm.py:finetune", FINETUNE),
    "metrix_xbm": ("configs/glyphs_metrix.py:embed,finetune,xbm", FINETUNE),
    "apfs_xbm": ("configs/glyphs_apfs.py:finetune,xbm", FINETUNE),
    **{f"daml_{variant}_{preset}": (f"configs/glyphs_daml.py:{variant},{preset},finetune",
                                    f"configs/glyphs_daml.py:{variant},recommended,no_generator,finetune")
       for preset in ("recommended", "paper", "code") for variant in ("cont", "tri", "lifted", "npair")},
}
# The losses (the Reality Check's set, `--rows losses`): every loss recipe in the fair regime against the
# multi-similarity baseline, each tuned with the same trials over its own margins / scales (search_space.LOSS_SPACES).
LOSS_ROWS = {
    "contrastive": (CONTRASTIVE, FINETUNE),
    **{loss: (f"configs/glyphs_pair.py:{loss},finetune", FINETUNE)
       for loss in ("ntxent", "supcon", "margin", "fastap", "snr_contrastive", "circle")},
    **{loss: (f"configs/glyphs_proxy.py:{loss},finetune", FINETUNE)
       for loss in ("proxy_nca", "normalized_softmax", "cosface", "arcface", "soft_triple", "proxy_anchor")},
}
ROW_SETS = {"methods": COMPARISONS, "losses": LOSS_ROWS}
METRICS = (("map@r", "MAP@R"), ("recall@1", "R@1"))


def with_smoke(spec: str) -> str:
  path, _, arg = spec.partition(":")
  return f"{path}:{arg},smoke" if arg else f"{path}:smoke"


def slug(spec: str) -> str:
  """`configs/glyphs_metrix.py:feature` -> `glyphs_metrix-feature` (one directory per recipe)."""
  path, _, arg = spec.partition(":")
  return os.path.basename(path).removesuffix(".py") + ("-" + arg.replace(",", "-") if arg else "")


def _run(command: list[str], log_path: str) -> None:
  start = time.time()
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "a") as log:
    process = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  if process.returncode:
    raise SystemExit(f"failed (exit {process.returncode}): {' '.join(command)}\n  see {log_path}")
  print(f"  {time.time() - start:6.0f} s  {' '.join(command[2:])}", flush=True)


def sweep(spec: str, directory: str, args) -> dict:
  """Runs (or resumes) the recipe's sweep; returns its best overrides."""
  command = [sys.executable, "-m", "metriclearn.sweep", f"--config={spec}", f"--workdir={directory}",
             f"--trials={args.trials}", *_run_flags(args)]
  if args.folds:
    command.append(f"--config.sweep.folds={args.folds}")
  _run(command, directory + ".log")
  with open(os.path.join(directory, "best.json")) as f:
    return json.load(f)


def _run_flags(args) -> list[str]:
  """The flags every sweep trial and seed run gets: `--steps` and `--batch-size` where given."""
  return (([f"--config.num_steps={args.steps}"] if args.steps else [])
          + ([f"--config.batch_size={args.batch_size}"] if args.batch_size else []))


def seed_runs(spec: str, directory: str, best: dict, num_folds: int, args, *, run: bool = True) -> list[str]:
  """`--seeds` test runs of the best setting (see the module docstring); returns their results.json paths (with
  `run=False`, only those that exist: nothing is trained)."""
  # The runs of one setting live together: a sweep resumed to more trials may find a better one, whose runs must not
  # be confused with the old ones.
  # (batch_size only where given, so the directories of runs made before the flag existed keep their names)
  setting = json.dumps({"best": best, "steps": args.steps,
                        **({"batch_size": args.batch_size} if args.batch_size else {})}, sort_keys=True)
  tuned = os.path.join(directory, "tuned_" + hashlib.sha256(setting.encode()).hexdigest()[:8])
  paths = []
  for seed in range(args.seeds):
    workdir = os.path.join(tuned, f"seed_{seed}")
    results = os.path.join(workdir, "results.json")
    if not os.path.exists(results):
      if not run:
        continue
      os.makedirs(workdir, exist_ok=True)
      overrides = os.path.join(workdir, "overrides.json")
      with open(overrides, "w") as f:
        # Without the untrained / raw-pixel rows and the plots: they cost time and change no number of the table.
        json.dump({**best, "seed": seed, "dataset.kwargs.val_fold": seed % num_folds,
                   "dataset.kwargs.num_folds": num_folds, "eval.baselines": False, "eval.plots": False}, f, indent=2)
      _run([sys.executable, "-m", "metriclearn.main", f"--config={spec}", f"--workdir={workdir}",
            f"--overrides={overrides}", *_run_flags(args)], workdir + ".log")
    paths.append(results)
  return paths


def recipe(spec: str, workdir: str, args, *, run: bool = True) -> dict | None:
  """One recipe's sweep, then its seed runs (`run=False`: what exists of them; None where its sweep has not ended
  or no seed run has)."""
  directory = os.path.join(workdir, slug(spec))
  if run:
    print(f"{spec}:", flush=True)
    best = sweep(spec, os.path.join(directory, "sweep"), args)
  else:
    try:
      with open(os.path.join(directory, "sweep", "best.json")) as f:
        best = json.load(f)
    except FileNotFoundError:
      return None
  num_folds = int(config_util.load_config(os.path.join(ROOT, spec)).sweep.num_folds)
  runs = _load(seed_runs(spec, directory, best, num_folds, args, run=run))
  if not runs:
    return None
  with open(os.path.join(directory, "sweep", "summary.json")) as f:
    summary = json.load(f)
  return {"best": best, "runs": runs, "summary": summary, "wall_s": float(np.mean([r["wall_time_s"] for r in runs]))}


def _load(paths: list[str]) -> list[dict]:
  runs = []
  for path in paths:
    with open(path) as f:
      runs.append(json.load(f))
  return runs


def markdown(rows: dict, recipes: dict, args) -> str:
  """The paired table and each recipe's tuned settings."""
  head = ["comparison", "method", "baseline", "seeds"]
  for _, label in METRICS:
    head += [f"method {label}", f"baseline {label}", f"Δ {label} [95 % CI]", "p"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, row in rows.items():
    cells = [name, f"`{row['method']}`", f"`{row['baseline']}`", str(row["n"])]
    for metric, _ in METRICS:
      d = row[metric]
      cells += [f"{row['method_' + metric]['mean']:.4f} ± {row['method_' + metric]['std']:.4f}",
                f"{row['baseline_' + metric]['mean']:.4f} ± {row['baseline_' + metric]['std']:.4f}",
                f"{d['mean']:+.4f} [{d['mean'] - d['ci95']:+.4f}, {d['mean'] + d['ci95']:+.4f}]", f"{d['p']:.3f}"]
    lines.append("| " + " | ".join(cells) + " |")
  # The counts as found on disk (the same line whether this run trained or only reports).
  lines += ["", "Each recipe: the trials counted below on validation, then the seeds counted above, of its best "
            "setting, on the test split" + (f", {args.steps} steps a run" if args.steps else "")
            + (f", batch {args.batch_size}" if args.batch_size else "") + ".", "",
            "| recipe | best mean val MAP@R | trials (complete / pruned) | best setting | mean run time |",
            "|---|---|---|---|---|"]
  for spec, info in recipes.items():
    summary = info["summary"]
    setting = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info["best"].items())
    lines.append(f"| `{spec}` | {summary.get('best_value', float('nan')):.4f} | {summary['complete']} / "
                 f"{summary['pruned']} | {setting} | {info['wall_s']:.0f} s |")
  return "\n".join(lines) + "\n"


def plot(rows: dict, path: str) -> None:
  """Δ (method − baseline) with its 95 % interval per row, one panel per metric."""
  fig = Figure(figsize=(5 * len(METRICS), 0.5 * len(rows) + 1.5))
  names = list(rows)
  for i, (metric, label) in enumerate(METRICS):
    ax = fig.add_subplot(1, len(METRICS), i + 1)
    means = [rows[n][metric]["mean"] for n in names]
    errors = [rows[n][metric]["ci95"] if np.isfinite(rows[n][metric]["ci95"]) else 0.0 for n in names]
    ax.errorbar(means, range(len(names)), xerr=errors, fmt="o", capsize=3)
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_yticks(range(len(names)), names if i == 0 else [""] * len(names))
    ax.invert_yaxis()
    ax.set_xlabel(f"Δ test {label} (method − baseline), 95 % CI")
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.grid(alpha=0.3, axis="x")
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv=None, comparisons=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--rows", choices=list(ROW_SETS), default="methods",
                      help="which table: the methods against their baselines, or every loss against multi-similarity")
  known, _ = parser.parse_known_args(argv)
  comparisons = ROW_SETS[known.rows] if comparisons is None else comparisons
  parser.add_argument("--workdir", default="runs/methods")
  parser.add_argument("--trials", type=int, default=20, help="trials per recipe (the same for every recipe)")
  parser.add_argument("--seeds", type=int, default=5, help="test runs of each best setting (≥ 2 for an interval)")
  parser.add_argument("--folds", type=int, default=None, help="validation folds per trial (default: the recipe's)")
  parser.add_argument("--steps", type=int, default=None, help="config.num_steps of every run (default: the recipe's)")
  parser.add_argument("--batch-size", type=int, default=None,
                      help="config.batch_size of every run, sweeps included (default: each recipe's)")
  parser.add_argument("--only", action="append", default=[], help=f"a row, repeatable; rows: {list(comparisons)}")
  parser.add_argument("--smoke", action="store_true", help="each recipe's :smoke variant (seconds a run, for tests)")
  parser.add_argument("--jobs", type=int, default=1,
                      help="recipes run in parallel (each its sweep, then its seeds); for a machine with many cores or "
                           "an accelerator that several small runs share")
  parser.add_argument("--report", action="store_true",
                      help="train nothing: tabulate the finished seed runs in WORKDIR (e.g. of an interrupted run)")
  args = parser.parse_args(argv)
  unknown = sorted(set(args.only) - set(comparisons))
  if unknown:
    parser.error(f"unknown row(s) {unknown}; rows: {list(comparisons)}")
  rows_wanted = {name: pair for name, pair in comparisons.items() if not args.only or name in args.only}
  if args.smoke:
    rows_wanted = {name: tuple(map(with_smoke, pair)) for name, pair in rows_wanted.items()}
  workdir = os.path.abspath(args.workdir)
  os.makedirs(workdir, exist_ok=True)

  specs = list(dict.fromkeys(spec for pair in rows_wanted.values() for spec in pair))  # each recipe once, in order
  run = not args.report
  if args.jobs == 1:
    recipes = {spec: recipe(spec, workdir, args, run=run) for spec in specs}
  else:  # each recipe's pipeline (sweep, then seeds) in its own thread; the training runs are subprocesses
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
      futures = {spec: pool.submit(recipe, spec, workdir, args, run=run) for spec in specs}
      recipes = {}
      for spec, future in futures.items():
        try:
          recipes[spec] = future.result()
        except SystemExit as failure:  # one recipe's failed run leaves the others' results standing
          print(f"{spec}: {failure}", flush=True)
          recipes[spec] = None
  missing = [spec for spec, info in recipes.items() if info is None]
  recipes = {spec: info for spec, info in recipes.items() if info is not None}

  rows = {}
  for name, (method, baseline) in rows_wanted.items():
    if method not in recipes or baseline not in recipes:
      continue
    ours = {r["seed"]: r for r in recipes[method]["runs"]}
    theirs = {r["seed"]: r for r in recipes[baseline]["runs"]}
    seeds = sorted(set(ours) & set(theirs))
    if not seeds:
      continue
    row = {"method": method, "baseline": baseline, "n": len(seeds)}
    for metric, _ in METRICS:
      row[metric] = tabulate.paired_stats([ours[s][metric] for s in seeds], [theirs[s][metric] for s in seeds])
      row["method_" + metric] = tabulate.summarize([ours[s][metric] for s in seeds])
      row["baseline_" + metric] = tabulate.summarize([theirs[s][metric] for s in seeds])
    rows[name] = row
  if missing:
    print(f"not (or not fully) run, left out of the table: {missing}", flush=True)
  table = markdown(rows, recipes, args)
  with open(os.path.join(workdir, "methods.md"), "w") as f:
    f.write(table)
  with open(os.path.join(workdir, "methods.json"), "w") as f:
    json.dump(rows, f, indent=2)
  plot(rows, os.path.join(workdir, "methods.png"))
  print("\n" + table + f"\nwritten to {workdir}/methods.md, methods.json and methods.png")


if __name__ == "__main__":
  main()
