r"""Run configs for several seeds, one fresh process each, and tabulate mean ± std (95 % CI) of the test metrics.

  python benchmarks/seeds.py --seeds 5 configs/glyphs.py configs/glyphs_metrix.py [--workdir runs/seeds]
      [--override config.num_steps=300 ...] [--overrides-file runs/sweep_glyphs/best.json] [--baseline glyphs]

Each run writes `WORKDIR/<config>_seed<k>/results.json` (an existing one is reused, so an interrupted sweep
continues); the table also shows the untrained network and raw pixels of the first config, and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from metriclearn import tabulate


def run(config: str, seed: int, workdir: str, overrides: list[str], overrides_file: str | None = None) -> str:
  results = os.path.join(workdir, "results.json")
  if not os.path.exists(results):
    command = [sys.executable, "-m", "metriclearn.main", f"--config={config}", f"--workdir={workdir}",
               f"--config.seed={seed}", *[f"--{o}" for o in overrides]]
    if overrides_file:
      command.append(f"--overrides={overrides_file}")
    start = time.time()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    print(f"{config} seed {seed}: {time.time() - start:.1f} s", flush=True)
  return results


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("configs", nargs="+")
  parser.add_argument("--seeds", type=int, default=5)
  parser.add_argument("--workdir", default="runs/seeds")
  parser.add_argument("--override", action="append", default=[], help="e.g. config.num_steps=300")
  parser.add_argument("--overrides-file", default=None, help="a JSON file of config overrides for every run, e.g. a "
                      "sweep's best.json (metriclearn.sweep); --override flags win over it. Give the tuned runs "
                      "their own --workdir: an existing results.json is reused whatever its settings")
  parser.add_argument("--baseline", default=None, help="a config_name: also print every group's seed-paired "
                      "difference to it (metriclearn.tabulate.paired_differences)")
  args = parser.parse_args()
  paths = {}
  for config in args.configs:
    stem = os.path.basename(config).split(":")[0].removesuffix(".py") + config.partition(":")[2]
    paths[config] = [run(config, seed, os.path.join(args.workdir, f"{stem}_seed{seed}"), args.override,
                         args.overrides_file)
                     for seed in range(args.seeds)]
  groups = {}
  for config, files in paths.items():
    groups.update(tabulate.load_groups(files))
  first = paths[args.configs[0]]
  for section in ("untrained", "raw_pixels"):
    groups.update({f"{name} [{section}]": runs for name, runs in tabulate.load_groups(first, section=section).items()})
  print(tabulate.format_groups(groups, ("recall@1", "map@r", "nmi", "f1")))
  if args.baseline:
    print(tabulate.paired_differences({k: v for k, v in groups.items() if "[" not in k}, args.baseline))
  times = {config: [json.load(open(f))["wall_time_s"] for f in files] for config, files in paths.items()}
  for config, values in times.items():
    print(f"wall time {config}: " + ", ".join(f"{v:.0f} s" for v in values))


if __name__ == "__main__":
  main()
