"""Linear AML against the field on scikit-learn's embedded data sets: k-NN error and pair-verification AUC.

For each data set (recipe: `configs/linear_aml_<dataset>.py`) and each of its random stratified train/test splits,
the features are standardised on the training part (features constant there are dropped) and every method learns a
Mahalanobis matrix M on the training part:

* Euclidean (M = I); GMML, the closed form A⁻¹ ♯ B (Zadeh et al. 2016: linear AML with α = 0);
* linear AML: "AML" is the released solver (`linear_aml.fit_backtracking`: bilevel closed form, Armijo
  backtracking, GMML special point) on the recipe's objective (official dissimilar term); "AML gmml-cons" the same
  with `dissimilar_term="gmml_consistent"`; "AML min-max" the optax min–max with explicit adversarial pairs
  (`linear_aml.fit_minmax`, settings in the recipe's `minmax`);
* metric-learn 0.7.0's LMNN, ITML (`ITML_Supervised`) and NCA. metric-learn 0.7.0 fails with scikit-learn ≥ 1.8, so
  they run in their own virtual environment (metric-learn 0.7.0, scikit-learn 1.5.2), created on first use in
  `benchmarks/.venv/metric-learn-0.7.0` (git-ignored), in a subprocess that reads the same standardised splits
  from a temporary .npz and returns the learned matrices. `--no-metric-learn` skips them.

Scores on the test part: k-NN classification error (k from the recipe, neighbours from the training part) and the
ROC AUC of −Dist_M for "same class" over all test pairs. Table: mean ± std over the splits.

    python benchmarks/aml_linear.py                                # the four data sets, 10 splits each
    python benchmarks/aml_linear.py --datasets wine iris --splits 3
    python benchmarks/aml_linear.py --config_arg smoke --no-metric-learn

Results and the machine they came from: benchmarks/RESULTS.md ("Linear AML").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

# Before numpy loads its BLAS: a multithreaded OpenBLAS spin-waits on a busy machine, and made each 60 × 60
# triangular solve (Cholesky solves, ITML, LMNN) 40 ms instead of 0.07 ms on the shared 2-core CPU.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # pylint: disable=wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = ("wine", "iris", "breast_cancer", "digits")
VENV = os.path.join(ROOT, "benchmarks", ".venv", "metric-learn-0.7.0")
VENV_REQUIREMENTS = ("metric-learn==0.7.0", "scikit-learn==1.5.2", "numpy")
METRIC_LEARN_METHODS = ("LMNN", "ITML", "NCA")


# ----------------------------------------------------------------------------------------------------------------
# The metric-learn side: runs inside the separate virtual environment (numpy and metric_learn only).


def metric_learn_child(in_path: str, out_path: str) -> None:
  """Fits LMNN, ITML and NCA on every split in `in_path` and saves their Mahalanobis matrices to `out_path`."""
  import json  # pylint: disable=import-outside-toplevel
  import metric_learn  # pylint: disable=import-outside-toplevel

  data = np.load(in_path)
  settings = json.loads(str(data["settings"]))
  results, seconds = {}, {name: 0.0 for name in METRIC_LEARN_METHODS}
  for split in range(int(data["num_splits"])):
    x, y, seed = data[f"x_train_{split}"], data[f"y_train_{split}"], settings["seed"] + split
    learners = {
        "LMNN": metric_learn.LMNN(n_neighbors=settings["knn_k"], random_state=seed, **settings["lmnn"]),
        "ITML": metric_learn.ITML_Supervised(random_state=seed, **settings["itml"]),
        "NCA": metric_learn.NCA(random_state=seed, **settings["nca"]),
    }
    for name, learner in learners.items():
      start = time.perf_counter()
      learner.fit(x, y)
      seconds[name] += time.perf_counter() - start
      results[f"{name}_{split}"] = learner.get_mahalanobis_matrix()
  np.savez(out_path, seconds=json.dumps(seconds), **results)


def venv_python(create: bool) -> str | None:
  """The metric-learn environment's interpreter, created with `python3 -m venv` + pip on first use."""
  python = os.path.join(VENV, "bin", "python")
  if not os.path.exists(python):
    if not create:
      return None
    print(f"creating {VENV} ({', '.join(VENV_REQUIREMENTS)}) ...", flush=True)
    subprocess.run(["python3", "-m", "venv", VENV], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", *VENV_REQUIREMENTS], check=True)
  return python


def run_metric_learn(python: str, splits: list[dict], config) -> tuple[dict[str, list[np.ndarray]], dict]:
  """LMNN / ITML / NCA matrices for every split, fitted in the metric-learn environment."""
  import json  # pylint: disable=import-outside-toplevel

  settings = {"seed": int(config.seed), "knn_k": int(config.knn_k), **{k: dict(v) for k, v in
                                                                         config.metric_learn.items()}}
  with tempfile.TemporaryDirectory() as tmp:
    in_path, out_path = os.path.join(tmp, "splits.npz"), os.path.join(tmp, "matrices.npz")
    arrays = {}
    for i, split in enumerate(splits):
      arrays[f"x_train_{i}"], arrays[f"y_train_{i}"] = split["x_train"], split["y_train"]
    np.savez(in_path, num_splits=len(splits), settings=json.dumps(settings), **arrays)
    subprocess.run([python, os.path.abspath(__file__), "--metric-learn-child", in_path, out_path], check=True)
    out = np.load(out_path)
    matrices = {name: [out[f"{name}_{i}"] for i in range(len(splits))] for name in METRIC_LEARN_METHODS}
    return matrices, json.loads(str(out["seconds"]))


# ----------------------------------------------------------------------------------------------------------------
# The main environment: data, our methods, scores.


def load_config(dataset: str, arg: str | None):
  path = os.path.join(ROOT, "configs", f"linear_aml_{dataset}.py")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no recipe {path}; valid data sets: {', '.join(DATASETS)}")
  from metriclearn import config_util  # pylint: disable=import-outside-toplevel (the metric-learn child has no jax)
  return config_util.load_config(path, arg)


def make_splits(config) -> list[dict]:
  """Stratified splits, standardised on the training part (constant training features dropped)."""
  from sklearn import datasets, model_selection, preprocessing  # pylint: disable=import-outside-toplevel

  x, y = getattr(datasets, f"load_{config.dataset}")(return_X_y=True)
  splits = []
  for i in range(config.num_splits):
    train, test = model_selection.train_test_split(np.arange(len(y)), test_size=config.test_fraction,
                                                   stratify=y, random_state=config.seed + i)
    keep = np.std(x[train], axis=0) > 0
    scaler = preprocessing.StandardScaler().fit(x[train][:, keep])
    splits.append({"x_train": scaler.transform(x[train][:, keep]), "y_train": y[train],
                   "x_test": scaler.transform(x[test][:, keep]), "y_test": y[test]})
  return splits


def fit_ours(split: dict, config, seed: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
  """Euclidean, GMML closed form, linear AML (released solver, optax min–max): name -> M, name -> seconds."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel

  from metriclearn import linear_aml  # pylint: disable=import-outside-toplevel

  x, labels = split["x_train"], split["y_train"]
  first, second, y = linear_aml.sample_pairs(labels, config.num_pairs, seed)
  matrices, seconds = {"Euclidean": np.eye(x.shape[1])}, {}
  with jax.enable_x64(True):
    a, b = linear_aml.pair_scatter(jnp.asarray(x[first] - x[second]), jnp.asarray(y), ridge=config.ridge)
    start = time.perf_counter()
    matrices["GMML"] = np.asarray(linear_aml.gmml_closed_form(a, b))
    seconds["GMML"] = time.perf_counter() - start
  for name, dissimilar_term in (("AML", config.aml.dissimilar_term), ("AML gmml-cons", "gmml_consistent")):
    start = time.perf_counter()
    matrices[name] = linear_aml.fit_backtracking(a, b, config.num_pairs, **{**config.aml, "dissimilar_term":
                                                                            dissimilar_term}, **config.backtracking).metric
    seconds[name] = time.perf_counter() - start
  minmax = dict(config.minmax)
  start = time.perf_counter()
  matrices["AML min-max"] = linear_aml.fit_minmax(
      np.stack([x[first], x[second]], axis=1), y, **config.aml, ridge=config.ridge,
      optimizer=optax.adam(minmax.pop("learning_rate")), **minmax).metric
  seconds["AML min-max"] = time.perf_counter() - start
  return matrices, seconds


def scores(metric: np.ndarray, split: dict, k: int) -> tuple[float, float]:
  """(k-NN error, pair-verification AUC) on the test part under Dist_M."""
  from sklearn import metrics, neighbors  # pylint: disable=import-outside-toplevel

  # x ↦ Lᵀx with M = LLᵀ turns Dist_M into the Euclidean distance; eigh rather than Cholesky because metric-learn's
  # matrices may be only positive semi-definite (ITML, LMNN with rank loss).
  eigenvalues, eigenvectors = np.linalg.eigh((metric + metric.T) / 2)
  transform = eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))
  train, test = split["x_train"] @ transform, split["x_test"] @ transform
  knn = neighbors.KNeighborsClassifier(n_neighbors=k).fit(train, split["y_train"])
  error = float(np.mean(knn.predict(test) != split["y_test"]))
  i, j = np.triu_indices(len(test), 1)
  distance = np.sum((test[i] - test[j]) ** 2, axis=1)
  auc = float(metrics.roc_auc_score(split["y_test"][i] == split["y_test"][j], -distance))
  return error, auc


def run_dataset(dataset: str, args) -> tuple[dict, dict]:
  config = load_config(dataset, args.config_arg)
  if args.splits:
    config.num_splits = args.splits
  splits = make_splits(config)
  per_method: dict[str, list[tuple[float, float]]] = {}
  seconds: dict[str, float] = {}
  for i, split in enumerate(splits):
    matrices, times = fit_ours(split, config, config.seed + 1000 + i)
    for name, metric in matrices.items():
      per_method.setdefault(name, []).append(scores(metric, split, config.knn_k))
    for name, value in times.items():
      seconds[name] = seconds.get(name, 0.0) + value
  python = None if args.no_metric_learn else venv_python(create=True)
  if python is not None:
    matrices, times = run_metric_learn(python, splits, config)
    for name, metric_list in matrices.items():
      per_method[name] = [scores(metric, split, config.knn_k) for metric, split in zip(metric_list, splits)]
    seconds.update(times)
  x_dim = splits[0]["x_train"].shape[1]
  info = {"n_train": len(splits[0]["y_train"]), "n_test": len(splits[0]["y_test"]), "dim": x_dim,
          "splits": config.num_splits, "k": config.knn_k, "pairs": config.num_pairs, "ridge": config.ridge}
  return {name: np.asarray(values) for name, values in per_method.items()}, {"info": info, "seconds": seconds}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
  parser.add_argument("--splits", type=int, default=0, help="override the recipes' num_splits")
  parser.add_argument("--config_arg", default=None, help="argument passed to get_config (e.g. smoke)")
  parser.add_argument("--no-metric-learn", action="store_true", help="skip LMNN / ITML / NCA (no venv needed)")
  parser.add_argument("--metric-learn-child", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.metric_learn_child:
    metric_learn_child(*args.metric_learn_child)
    return
  print("LMNN, ITML (ITML_Supervised), NCA: metric-learn 0.7.0 in its own venv (scikit-learn 1.5.2), same splits"
        if not args.no_metric_learn else "metric-learn baselines skipped (--no-metric-learn)")
  for dataset in args.datasets:
    start = time.perf_counter()
    results, extra = run_dataset(dataset, args)
    info = extra["info"]
    print(f"\n{dataset}: {info['n_train']} train / {info['n_test']} test, d = {info['dim']}, {info['splits']} splits, "
          f"k-NN k = {info['k']}, {info['pairs']} pairs, ridge {info['ridge']} ({time.perf_counter() - start:.0f} s)")
    print(f"{'method':14s}{'k-NN error (%)':>18s}{'pair AUC':>18s}{'fit s/split':>14s}")
    for name, values in results.items():
      error, auc = values[:, 0] * 100, values[:, 1]
      fit_seconds = extra["seconds"].get(name, 0.0) / info["splits"]
      print(f"{name:14s}{error.mean():10.2f} ± {error.std():5.2f}{auc.mean():11.4f} ± {auc.std():.4f}"
            f"{fit_seconds:14.2f}", flush=True)


if __name__ == "__main__":
  main()
