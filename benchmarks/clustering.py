"""Speed and memory of k-means at SOP scale: `metriclearn.kmeans` next to faiss's `Kmeans`, the same iterations.

N points (default 60,502 × 512, the SOP test set) in K classes (default 11,316, SOP's), each point its class centre
plus Gaussian noise, L2-normalised. Both methods start from K random points and run the same number of Lloyd
iterations, then assign every point to its nearest final centroid (faiss: `index.search`, as pytorch-metric-learning's
`FaissKMeans`); the table gives wall and CPU seconds (all threads; steadier than wall time when other processes share
the machine), peak resident memory and its growth over the process's state before the call, and the NMI and pairwise
F1 of the clustering (`evaluate.cluster_scores`). Each method runs in a fresh subprocess. `--methods` can add
`metriclearn-k-means++` (scikit-learn's greedy initialisation, the library's default; minutes at K = 11,316) and
`metriclearn-xla` (the accelerator backend, here on the CPU).

    python benchmarks/clustering.py                                   # 60,502 × 512, K = 11,316, 25 iterations
    python benchmarks/clustering.py --points 6000 --clusters 1100 --iterations 5     # a quick check

faiss-cpu is a reference here only, never a dependency of the library. Results: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

METHODS = ("metriclearn", "faiss", "metriclearn-k-means++", "metriclearn-xla")


def clustered_data(n: int, k: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(n) % k)
  centres = rng.standard_normal((k, dim), dtype=np.float32)
  emb = centres[labels] + 0.6 * rng.standard_normal((n, dim), dtype=np.float32)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  return emb, labels


def cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def child(method: str, n: int, k: int, dim: int, iterations: int) -> dict:
  emb, labels = clustered_data(n, k, dim)
  from metriclearn import evaluate  # pylint: disable=import-outside-toplevel
  from metriclearn import kmeans  # pylint: disable=import-outside-toplevel
  if method == "faiss":
    import faiss  # pylint: disable=import-outside-toplevel

    def run():
      model = faiss.Kmeans(dim, k, niter=iterations, seed=1234)
      model.train(emb)
      return model.index.search(emb, 1)[1][:, 0]
  else:
    init = "k-means++" if method.endswith("k-means++") else "random"
    backend = "xla" if method.endswith("xla") else "numpy"
    run = lambda: kmeans.kmeans(emb, k, iterations=iterations, init=init, backend=backend)[1]
  before = peak_rss_mib()
  start, cpu_start = time.perf_counter(), cpu_seconds()
  assignments = run()
  seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
  return {"seconds": seconds, "cpu_seconds": cpu, "peak_mib": peak_rss_mib(), "growth_mib": peak_rss_mib() - before,
          **evaluate.cluster_scores(labels, assignments)}


def run_child(*args: str) -> dict:
  here = os.path.dirname(os.path.abspath(__file__))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(here), os.environ.get("PYTHONPATH", "")]))
  out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *args], env=env, check=True,
                       capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--points", type=int, default=60_502)
  parser.add_argument("--clusters", type=int, default=11_316)
  parser.add_argument("--dim", type=int, default=512)
  parser.add_argument("--iterations", type=int, default=25, help="Lloyd iterations (faiss's default niter: 25)")
  parser.add_argument("--methods", nargs="+", default=["metriclearn", "faiss"], choices=METHODS)
  parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args.child[0], args.points, args.clusters, args.dim, args.iterations)))
    return
  load_before = os.getloadavg()[0]
  common = ["--points", str(args.points), "--clusters", str(args.clusters), "--dim", str(args.dim),
            "--iterations", str(args.iterations)]
  results = {method: run_child(method, *common) for method in args.methods}
  gflop = 2 * args.points * args.clusters * args.dim * (args.iterations + 1) / 1e9  # assignments' GEMMs
  print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, 1-minute load average {load_before:.1f} at the start "
        f"and {os.getloadavg()[0]:.1f} at the end")
  print(f"k-means of {args.points} × {args.dim} (L2-normalised class centres + noise) into K = {args.clusters}, "
        f"{args.iterations} Lloyd iterations + the final assignment ({gflop:.0f} GFLOP of GEMM), one fresh process "
        f"per method; 'metriclearn' starts from random points as faiss does\n")
  header = (f"| {'method':<21} | {'time s':>7} | {'CPU s':>7} | {'GEMM GFLOP/s':>12} | {'peak RSS MiB':>12} | "
            f"{'RSS growth MiB':>14} | {'NMI':>6} | {'F1':>6} |")
  print(header)
  print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|")
  for method, r in results.items():
    print(f"| {method:<21} | {r['seconds']:>7.1f} | {r['cpu_seconds']:>7.1f} | {gflop / r['seconds']:>12.0f} | "
          f"{r['peak_mib']:>12.0f} | {r['growth_mib']:>14.0f} | {r['nmi']:>6.4f} | {r['f1']:>6.4f} |")


if __name__ == "__main__":
  main()
