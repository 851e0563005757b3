"""Step time and compiled memory of Metrix in each space next to the baseline step (same model, batch and process).

The glyphs recipe's model (small CNN, 32×32×1 inputs, 64-d embeddings, multi-similarity) and optimizer on a synthetic
m-per-class batch (M = 4). Each step is the whole jitted `train_step` (forward, backward, Adam update). Times are
medians over `--steps` steps after compilation, measured in interleaved rounds (every variant runs a few steps in
turn) so that load from other jobs on a shared machine hits all variants alike. Memory is XLA's compiled memory
analysis of the step (`jax.jit(f).lower(...).compile().memory_analysis()`): temporaries and their sum with arguments
and outputs, for the timed batch and, compile-only, for batches of 100 and 512.

    python benchmarks/metrix.py                       # batch 128, memory also at 100 and 512
    python benchmarks/metrix.py --steps 40 --memory-batches 100 512

Results and the machine they came from: benchmarks/RESULTS.md ("Metrix").
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from metriclearn import config_util
from metriclearn import methods
from metriclearn import models
from metriclearn import optim
from metriclearn.state import TrainState

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (label, method kwargs); None = the baseline. Defaults are the official code's pair sets per space.
VARIANTS = (
    ("baseline", None),
    ("embed", dict(space="embed")),
    ("feature", dict(space="feature")),  # GAP pooling: the pooled features are mixed (exact)
    ("feature (mix maps)", dict(space="feature", pool_before_mixing=False)),
    ("feature (maps, T=8)", dict(space="feature", pool_before_mixing=False, negatives_per_anchor=8)),
    ("input", dict(space="input")),
    ("input (1st positive)", dict(space="input", first_positive_only=True)),
)


def glyphs_config():
  return config_util.load_config(os.path.join(REPO, "configs", "glyphs.py"))


def make_step(kwargs, batch_size: int):
  """A jitted train step and its initial state for one variant."""
  config = glyphs_config()
  config.batch_size = batch_size
  if kwargs is not None:
    config.method = dict(name="metrix", kwargs=kwargs)
  model = models.create_model(config.model.name, embedding_dim=config.model.embedding_dim,
                              pooling=config.model.pooling, freeze_bn=config.model.freeze_bn)
  method = methods.create_method(config, model, num_classes=200)
  sample = jnp.zeros((2, 32, 32, 1), jnp.float32)
  params, batch_stats, method_state = method.init(jax.random.key(0), sample)
  tx = optim.create_optimizer(config.optimizer, params)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                     opt_state=tx.init(params), rng=jax.random.key(1), method_state=method_state)
  step = jax.jit(lambda s, b: method.train_step(s, b, tx), donate_argnums=0)
  return step, state, built_per_step(method, batch_size)


def built_per_step(method, batch_size: int) -> int:
  """Mixed examples a step builds and embeds (B·K'·T; 0 in embedding space, where only similarities are formed)."""
  if getattr(method, "options", None) is None or method.options.space == "embed":
    return 0
  distinct = 1 if method.first_positive_only else min(method.max_positives, batch_size - 1)
  return batch_size * distinct * (method.negatives_per_anchor or batch_size)


def make_batch(batch_size: int, m: int = 4, seed: int = 0):
  rng = np.random.default_rng(seed)
  return {"image": jnp.asarray(rng.random((batch_size, 32, 32, 1), np.float32)),
          "label": jnp.asarray(np.repeat(np.arange(batch_size // m), m).astype(np.int32))}


def memory(step, state, batch) -> tuple[float, float]:
  """(temporaries, temporaries + arguments + outputs − aliased) in MB from XLA's compiled memory analysis."""
  analysis = step.lower(state, batch).compile().memory_analysis()
  temp = analysis.temp_size_in_bytes
  total = temp + analysis.argument_size_in_bytes + analysis.output_size_in_bytes - analysis.alias_size_in_bytes
  return temp / 2**20, total / 2**20


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--steps", type=int, default=30, help="timed steps per variant (median reported)")
  parser.add_argument("--round", type=int, default=5, help="consecutive steps of one variant per round")
  parser.add_argument("--memory-batches", type=int, nargs="*", default=[100, 512])
  args = parser.parse_args()

  print(f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__} on {jax.devices()[0].platform}")
  batch = make_batch(args.batch)
  runs = {}
  for label, kwargs in VARIANTS:
    step, state, built = make_step(kwargs, args.batch)
    temp, total = memory(step, state, batch)
    state, metrics = step(state, batch)  # compile and warm up
    jax.block_until_ready(metrics["loss"])
    runs[label] = dict(step=step, state=state, times=[], temp=temp, total=total, built=built,
                       mixed=float(metrics.get("mixed_pairs", 0.0)))
  while min(len(run["times"]) for run in runs.values()) < args.steps:
    for run in runs.values():
      for _ in range(args.round):
        start = time.perf_counter()
        run["state"], metrics = run["step"](run["state"], batch)
        jax.block_until_ready(metrics["loss"])
        run["times"].append(time.perf_counter() - start)

  base_time = statistics.median(runs["baseline"]["times"])
  base_total = runs["baseline"]["total"]
  print(f"\nbatch {args.batch} (m-per-class M=4), median of {args.steps}+ steps after compilation:")
  print("(pairs: valid (anchor, mixed example) pairs in the mixed loss; built: mixed examples embedded)")
  print(f"{'variant':22s}{'pairs':>8s}{'built':>8s}{'ms/step':>10s}{'× base':>8s}{'temp MB':>10s}{'peak MB':>10s}"
        f"{'× base':>8s}")
  for label, run in runs.items():
    median = statistics.median(run["times"]) * 1e3
    print(f"{label:22s}{run['mixed']:8.0f}{run['built']:8d}{median:10.1f}{median / base_time / 1e3:8.2f}"
          f"{run['temp']:10.1f}{run['total']:10.1f}{run['total'] / base_total:8.2f}")

  for batch_size in args.memory_batches:
    print(f"\ncompiled memory at batch {batch_size} (compile only):")
    print(f"{'variant':22s}{'temp MB':>10s}{'peak MB':>10s}{'× base':>8s}")
    mem_batch = make_batch(batch_size)
    base = None
    for label, kwargs in VARIANTS:
      step, state, _ = make_step(kwargs, batch_size)
      temp, total = memory(step, state, mem_batch)
      base = total if base is None else base
      print(f"{label:22s}{temp:10.1f}{total:10.1f}{total / base:8.2f}")


if __name__ == "__main__":
  main()
