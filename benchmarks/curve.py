r"""Validation curves of finished runs: the MAP@R and R@1 of every evaluation in each workdir's `metrics.jsonl`.

  python benchmarks/curve.py runs/curve_ft runs/curve_ft_noshift [--split val] [--png runs/curve.png]

Prints a Markdown table (one row per evaluated step, one column pair per run) and the step of each run's best MAP@R;
with `--png`, plots MAP@R against the step. Used to choose a recipe's `num_steps` on the validation split (the fair
protocol's `val/` records), never on test.
"""

from __future__ import annotations

import argparse
import json
import os


def read_curve(workdir: str, split: str) -> dict[int, dict[str, float]]:
  """step → {"map@r", "recall@1"} of the `split/` evaluations logged in `workdir/metrics.jsonl`."""
  curve = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      record = json.loads(line)
      if f"{split}/map@r" in record:
        curve[record["step"]] = {"map@r": record[f"{split}/map@r"], "recall@1": record[f"{split}/recall@1"]}
  return curve


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("workdirs", nargs="+")
  parser.add_argument("--split", default="val")
  parser.add_argument("--png", default=None)
  args = parser.parse_args()
  curves = {os.path.basename(os.path.normpath(w)): read_curve(w, args.split) for w in args.workdirs}
  steps = sorted({step for curve in curves.values() for step in curve})
  print("| step | " + " | ".join(f"{name} R@1 | {name} MAP@R" for name in curves) + " |")
  print("|---" * (1 + 2 * len(curves)) + "|")
  for step in steps:
    cells = [f"{c[step]['recall@1']:.3f} | {c[step]['map@r']:.3f}" if step in c else " | " for c in curves.values()]
    print(f"| {step} | " + " | ".join(cells) + " |")
  for name, curve in curves.items():
    best = max(curve, key=lambda step: curve[step]["map@r"])
    print(f"{name}: best {args.split} MAP@R {curve[best]['map@r']:.4f} at step {best}")
  if args.png:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
      axis.plot(sorted(curve), [curve[s]["map@r"] for s in sorted(curve)], marker=".", label=name)
    axis.set_xlabel("step")
    axis.set_ylabel(f"{args.split} MAP@R")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(args.png, dpi=120)


if __name__ == "__main__":
  main()
