r"""Tabulate `results.json` files of repeated runs: mean ± std and a 95 % confidence interval per metric.

  python -m metriclearn.tabulate runs/glyphs_seed*/results.json runs/glyphs_metrix_seed*/results.json
  python -m metriclearn.tabulate runs/*/results.json --baseline glyphs

Runs are grouped by their `config_name`; the interval is the Student-t interval of the mean over seeds, as the fair
protocol of Musgrave et al. 2020 reports it. `--baseline NAME` adds, for every other group, the difference to that
group over the seeds both ran (paired by `seed`): mean ± std, its 95 % t-interval and the paired t-test's p-value.
With seed-matched runs (same data split, same initialisation) this separates a method's effect from the spread
between seeds, which is often larger.
"""

from __future__ import annotations

import argparse
import collections
import json
import math

import numpy as np
from scipy import stats

DEFAULT_METRICS = ("recall@1", "map@r", "nmi", "f1")


def summarize(values) -> dict[str, float]:
  """Mean, sample standard deviation and the half-width of the 95 % t-interval of the mean."""
  values = np.asarray(values, dtype=np.float64)
  n = len(values)
  std = float(values.std(ddof=1)) if n > 1 else 0.0
  half_width = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else float("nan")
  return {"mean": float(values.mean()), "std": std, "ci95": half_width, "n": n}


def load_groups(paths, *, section: str | None = None) -> dict[str, list[dict]]:
  """`{config_name: [metrics, ...]}`; `section` picks a nested block such as `raw_pixels` or `untrained`."""
  groups = collections.defaultdict(list)
  for path in paths:
    with open(path) as f:
      results = json.load(f)
    name = results.get("config_name", path)
    groups[name].append(results[section] if section else results)
  return dict(groups)


def format_groups(groups: dict[str, list[dict]], metrics=DEFAULT_METRICS) -> str:
  lines = [f"{'config':28s} {'n':>3s} " + " ".join(f"{m + ' (mean ± std) [95% CI]':>34s}" for m in metrics)]
  for name, runs in groups.items():
    cells = []
    for metric in metrics:
      present = [r[metric] for r in runs if metric in r]
      if not present:
        cells.append(f"{'—':>34s}")
        continue
      s = summarize(present)
      cells.append(f"{s['mean']:.4f} ± {s['std']:.4f} [±{s['ci95']:.4f}]".rjust(34))
    lines.append(f"{name:28s} {len(runs):3d} " + " ".join(cells))
  return "\n".join(lines)


def paired_stats(ours, theirs) -> dict[str, float]:
  """`ours − theirs` over paired runs: `summarize` of the differences and the paired t-test's p-value (NaN when the
  differences do not vary)."""
  ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
  s = summarize(ours - theirs)
  s["p"] = float(stats.ttest_rel(ours, theirs).pvalue) if s["n"] > 1 and s["std"] > 0 else float("nan")
  return s


def paired_differences(groups: dict[str, list[dict]], baseline: str, metrics=DEFAULT_METRICS) -> str:
  """Per group: method − baseline over the seeds both groups ran, mean ± std [95 % CI] (paired t-test p)."""
  if baseline not in groups:
    raise ValueError(f"baseline {baseline!r} is not among the groups {sorted(groups)}")
  by_seed = {r["seed"]: r for r in groups[baseline] if "seed" in r}
  lines = [f"difference to {baseline} (paired by seed)"]
  lines.append(f"{'config':28s} {'n':>3s} " + " ".join(f"{'Δ ' + m + ' [95% CI] (p)':>36s}" for m in metrics))
  for name, runs in groups.items():
    if name == baseline:
      continue
    pairs = [(r, by_seed[r["seed"]]) for r in runs if r.get("seed") in by_seed]
    cells = []
    for metric in metrics:
      both = [(r[metric], b[metric]) for r, b in pairs if metric in r and metric in b]
      if len(both) < 2:
        cells.append(f"{'—':>36s}")
        continue
      s = paired_stats(*np.asarray(both, dtype=np.float64).T)
      cells.append(f"{s['mean']:+.4f} ± {s['std']:.4f} [±{s['ci95']:.4f}] ({s['p']:.2f})".rjust(36))
    lines.append(f"{name:28s} {len(pairs):3d} " + " ".join(cells))
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("results", nargs="+", help="results.json files")
  parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS))
  parser.add_argument("--section", default=None, help="a nested block, e.g. raw_pixels or untrained")
  parser.add_argument("--baseline", default=None, help="a config_name to compare every other group with, by seed")
  args = parser.parse_args(argv)
  groups = load_groups(args.results, section=args.section)
  metrics = args.metrics.split(",")
  print(format_groups(groups, metrics))
  if args.baseline:
    print()
    print(paired_differences(groups, args.baseline, metrics))


if __name__ == "__main__":
  main()
