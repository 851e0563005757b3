r"""Tabulate `results.json` files of repeated runs: mean ± std and a 95 % confidence interval per metric.

  python -m metriclearn.tabulate runs/glyphs_seed*/results.json runs/glyphs_metrix_seed*/results.json

Runs are grouped by their `config_name`; the interval is the Student-t interval of the mean over seeds, as the fair
protocol of Musgrave et al. 2020 reports it.
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


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("results", nargs="+", help="results.json files")
  parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS))
  parser.add_argument("--section", default=None, help="a nested block, e.g. raw_pixels or untrained")
  args = parser.parse_args(argv)
  print(format_groups(load_groups(args.results, section=args.section), args.metrics.split(",")))


if __name__ == "__main__":
  main()
