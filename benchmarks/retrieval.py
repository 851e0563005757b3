"""Speed and memory of exact retrieval metrics: `metriclearn.evaluate.retrieval_metrics` next to faiss + NumPy.

Self-retrieval of N random unit vectors (d = 512) with SOP-like labels (classes of 2-12 items), Recall@{1,10,100}
and MAP@R. Each (method, N) runs in a fresh subprocess so that its peak resident memory (`ru_maxrss`) is its own;
the table gives the peak and its growth over the process's state just before the call (interpreter, libraries and
the embeddings already loaded). The machine's float32 matmul rate is measured in the same run (a jitted matmul, best
of several shapes) and exact kNN is counted as 2·N²·d flops, per wall-clock second and per CPU second (all threads;
steadier than wall time when other processes share the machine).

    python benchmarks/retrieval.py                      # N = 10,000 and 60,502 (SOP test set)
    python benchmarks/retrieval.py --sizes 10000 --repeats 3
    python benchmarks/retrieval.py --sizes 60502 --methods metriclearn-numpy faiss+numpy metriclearn-xla

Results and the machine they came from: benchmarks/RESULTS.md.
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

KS = (1, 10, 100)
DIM = 512
# metriclearn: retrieval_metrics with backend "auto" (numpy on a CPU), "-numpy" or "-xla".
METHODS = ("metriclearn", "metriclearn-numpy", "metriclearn-xla", "faiss+numpy")


def sop_like_data(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  sizes = rng.integers(2, 13, n // 2 + 1)
  labels = np.repeat(np.arange(len(sizes)), sizes)[:n]
  if np.sum(labels == labels[-1]) == 1:  # keep every class at >= 2 items, as in SOP
    labels[-1] = labels[-2]
  emb = rng.standard_normal((n, dim), dtype=np.float32)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  return emb, rng.permutation(labels)


def faiss_numpy_metrics(emb: np.ndarray, labels: np.ndarray, ks=KS) -> dict[str, float]:
  """faiss exact inner-product search, the query's own row removed by index, metrics in NumPy."""
  import faiss  # pylint: disable=import-outside-toplevel

  n = len(labels)
  _, codes = np.unique(labels, return_inverse=True)
  r = np.bincount(codes)[codes] - 1
  k = max(max(ks), int(r.max()))
  index = faiss.IndexFlatIP(emb.shape[1])
  index.add(emb)
  _, neighbours = index.search(emb, k + 1)
  keep = neighbours != np.arange(n)[:, None]
  keep[keep.all(axis=1), -1] = False  # the query was not among its k + 1 nearest (ties): drop the last instead
  neighbours = neighbours[keep].reshape(n, k)
  relevant = codes[neighbours] == codes[:, None]
  rank = np.arange(1, k + 1)
  within_r = rank[None, :] <= r[:, None]
  counted = r > 0
  result = {f"recall@{kk}": relevant[:, :kk].any(axis=1) for kk in ks}
  result["precision@1"] = relevant[:, 0]
  result["r_precision"] = (relevant & within_r).sum(axis=1) / np.maximum(r, 1)
  result["map@r"] = ((np.cumsum(relevant, axis=1) / rank) * (relevant & within_r)).sum(axis=1) / np.maximum(r, 1)
  return {name: float(np.mean(value[counted])) for name, value in result.items()}


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def child(method: str, n: int, chunk_size: int | None) -> dict:
  emb, labels = sop_like_data(n, DIM)
  if method.startswith("metriclearn"):
    from metriclearn import evaluate  # pylint: disable=import-outside-toplevel
    kwargs = {} if chunk_size is None else {"chunk_size": chunk_size}
    kwargs["backend"] = method.partition("-")[2] or "auto"
    run = lambda: evaluate.retrieval_metrics(emb, labels, ks=KS, metric="cosine", **kwargs)
  else:
    import faiss  # pylint: disable=import-outside-toplevel,unused-import
    run = lambda: faiss_numpy_metrics(emb, labels)
  before = peak_rss_mib()
  calls = []
  for _ in range(2):  # metriclearn's first call includes jit compilation
    start, cpu_before = time.perf_counter(), cpu_seconds()
    metrics = run()
    calls.append({"seconds": time.perf_counter() - start, "cpu_seconds": cpu_seconds() - cpu_before})
  peak = peak_rss_mib()
  # Calls that count for speed: both for faiss (nothing to compile), the second for metriclearn.
  warm = calls[1:] if method.startswith("metriclearn") else calls
  return {"first_seconds": calls[0]["seconds"], "seconds": min(c["seconds"] for c in warm),
          "cpu_seconds": min(c["cpu_seconds"] for c in warm), "peak_mib": peak, "growth_mib": peak - before,
          "metrics": metrics}


def matmul_rate() -> dict[str, float]:
  """Best float32 rate of a jitted matmul over a few large shapes (square, and the retrieval chunk's).

  Returns GFLOP per wall-clock second and GFLOP per CPU second (all threads); the second is the steadier one on a
  machine shared with other processes.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  best = {"gflops": 0.0, "gflop_per_cpu_s": 0.0, "numpy_gflops": 0.0}
  for m, k, n in [(4096, 4096, 4096), (2048, 2048, 2048), (1024, 512, 60502), (2048, 512, 60502)]:
    a, b = jnp.ones((m, k), jnp.float32), jnp.ones((k, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    gflop = 2 * m * k * n / 1e9
    for _ in range(3):
      start, cpu_start = time.perf_counter(), cpu_seconds()
      matmul(a, b).block_until_ready()
      best["gflops"] = max(best["gflops"], gflop / (time.perf_counter() - start))
      best["gflop_per_cpu_s"] = max(best["gflop_per_cpu_s"], gflop / max(cpu_seconds() - cpu_start, 1e-9))
    a, b = np.asarray(a), np.asarray(b)
    for _ in range(3):  # NumPy's BLAS (the numpy backend's GEMM)
      start = time.perf_counter()
      np.matmul(a, b)
      best["numpy_gflops"] = max(best["numpy_gflops"], gflop / (time.perf_counter() - start))
  return best


def run_child(*args: str) -> dict:
  here = os.path.dirname(os.path.abspath(__file__))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(here), os.environ.get("PYTHONPATH", "")]))
  out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *args], env=env, check=True,
                       capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 60_502])
  parser.add_argument("--repeats", type=int, default=1, help="fresh processes per row; the fastest counts")
  parser.add_argument("--chunk-size", type=int, default=None, help="retrieval_metrics chunk_size (default: its own)")
  parser.add_argument("--methods", nargs="+", default=["metriclearn-numpy", "faiss+numpy"],
                      choices=METHODS)
  parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    if args.child[0] == "matmul":
      print(json.dumps(matmul_rate()))
    else:
      print(json.dumps(child(args.child[0], int(args.child[1]), args.chunk_size)))
    return

  chunk_args = [] if args.chunk_size is None else ["--chunk-size", str(args.chunk_size)]
  # Methods alternate within each repeat, so that load from other processes on a shared machine hits both alike; the
  # fastest run of each counts, and the matmul peak is re-measured every repeat (its best counts too).
  runs = {(n, method): [] for n in args.sizes for method in args.methods}
  peak = {"gflops": 0.0, "gflop_per_cpu_s": 0.0, "numpy_gflops": 0.0}
  load_before = os.getloadavg()[0]

  def measure_peak():
    for key, value in run_child("matmul").items():
      peak[key] = max(peak[key], value)

  for _ in range(args.repeats):
    measure_peak()
    for n in args.sizes:
      for method in args.methods:
        runs[n, method].append(run_child(method, str(n), *chunk_args))
  measure_peak()

  print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, 1-minute load average {load_before:.1f} at the start "
        f"and {os.getloadavg()[0]:.1f} at the end")
  print(f"jitted float32 matmul peak (best of {args.repeats + 1} measurements): {peak['gflops']:.0f} GFLOP/s, "
        f"{peak['gflop_per_cpu_s']:.0f} GFLOP per CPU second; NumPy (BLAS) float32 matmul peak "
        f"{peak['numpy_gflops']:.0f} GFLOP/s")
  print(f"self-retrieval, d = {DIM}, ks = {KS} + MAP@R, random unit vectors, SOP-like labels; fastest of "
        f"{args.repeats} fresh process(es) per row, each calling twice; '1st call' includes metriclearn's jit "
        f"compilation, 'time s' and 'CPU s' are the fastest calls without it (faiss: either call, metriclearn: the "
        f"second); flops counted as 2·N²·d (the numpy backend computes half of them for self-retrieval, so its "
        f"'% peak' can pass 100%)\n")
  header = (f"| {'N':>6} | {'method':<17} | {'1st call s':>10} | {'time s':>6} | {'GFLOP/s':>7} | {'% peak':>6} | "
            f"{'CPU s':>6} | {'GFLOP/CPU s':>11} | {'% peak':>6} | {'peak RSS MiB':>12} | {'RSS growth MiB':>14} | {'R@1':>6} | "
            f"{'MAP@R':>7} |")
  print(header)
  print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|")
  for n in args.sizes:
    for method in args.methods:
      best = min(runs[n, method], key=lambda r: r["seconds"])
      cpu = min(r["cpu_seconds"] for r in runs[n, method])
      first = min(r["first_seconds"] for r in runs[n, method])
      peak_rss = max(r["peak_mib"] for r in runs[n, method])
      growth = max(r["growth_mib"] for r in runs[n, method])
      gflop = 2 * n * n * DIM / 1e9
      print(f"| {n:>6} | {method:<17} | {first:>10.1f} | {best['seconds']:>6.1f} | {gflop / best['seconds']:>7.0f} | "
            f"{100 * gflop / best['seconds'] / peak['gflops']:>5.0f}% | {cpu:>6.1f} | {gflop / cpu:>11.0f} | "
            f"{100 * gflop / cpu / peak['gflop_per_cpu_s']:>5.0f}% | {peak_rss:>12.0f} | {growth:>14.0f} | "
            f"{best['metrics']['recall@1']:>6.4f} | {best['metrics']['map@r']:>7.5f} |")
    first = runs[n, args.methods[0]][0]["metrics"]
    for method in args.methods[1:]:
      other = runs[n, method][0]["metrics"]
      difference = max(abs(first[name] - other[name]) for name in first)
      assert difference < 1e-4, f"N = {n}: {method}'s metrics differ from {args.methods[0]}'s by {difference}"
  if len(args.methods) > 1:
    print("\nat every N the methods' metrics agree (max |difference| < 1e-4)")


if __name__ == "__main__":
  main()
