"""Step time of deep AML (`metriclearn/methods/aml.py`) next to the baseline step, same model, batch and loss.

Both steps are the jitted `train_step` that the training program runs, on the small CNN of `configs/glyphs.py`
(batch 128 = 32 classes × 4 random 32×32 images) with the contrastive loss of `configs/glyphs_aml.py`. Time per
step after compilation (one warm-up step), median over `--steps` steps, blocking on each step's loss as the training
loop does; the variants take turns step by step, so that a shared machine's load falls on all of them alike. AML variants: the recipe's settings, K = 0 (no confusion, adversarial pass only), and the bilevel step
(`through_confusion=True`).

    python benchmarks/aml.py                # 30 steps each
    python benchmarks/aml.py --steps 50

Results and the machine they came from: benchmarks/RESULTS.md ("AML").
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp

from metriclearn import config_util
from metriclearn import methods
from metriclearn import models
from metriclearn import optim
from metriclearn.state import TrainState

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str):
  return config_util.load_config(os.path.join(ROOT, "configs", f"{name}.py"))


def build_step(config):
  """The configured method's jitted step, its initial state and a batch; compiled by one warm-up call.

  Returns:
    `(run, compile_seconds)`: `run()` takes one step (blocking on its loss) and returns its seconds.
  """
  model = models.create_model(config.model.name, embedding_dim=config.model.embedding_dim,
                              pooling=config.model.pooling, **dict(config.model.kwargs))
  method = methods.create_method(config, model, num_classes=100)
  images = jax.random.normal(jax.random.key(0), (config.batch_size, 32, 32, 1))
  batch = {"image": images, "label": jnp.repeat(jnp.arange(config.batch_size // 4), 4)}
  params, batch_stats, method_state = method.init(jax.random.key(1), images[:2])
  tx = optim.create_optimizer(config.optimizer, params)
  holder = [TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                       opt_state=tx.init(params), rng=jax.random.key(2), method_state=method_state)]
  step = jax.jit(lambda s, b: method.train_step(s, b, tx, "train"))

  def run() -> float:
    start = time.perf_counter()
    holder[0], metrics = step(holder[0], batch)
    float(metrics["loss"])
    return time.perf_counter() - start

  compile_seconds = run()
  return run, compile_seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=30)
  args = parser.parse_args()
  aml_config = load_config("glyphs_aml")
  baseline = load_config("glyphs")
  baseline.loss = aml_config.loss  # the same pair loss, so the difference is the method
  kwargs = dict(aml_config.method.kwargs)
  variants = {"baseline (contrastive)": baseline}
  for name, change in ((f"AML (K = {kwargs['confusion_steps']})", {}),
                       ("AML (K = 0)", {"confusion_steps": 0}),
                       (f"AML bilevel (K = {kwargs['confusion_steps']})", {"through_confusion": True})):
    config = load_config("glyphs_aml")
    config.method.kwargs.update(change)
    variants[name] = config
  print(f"{jax.devices()[0].platform} ({jax.device_count()} device), batch {baseline.batch_size}, small CNN, "
        f"median of {args.steps} steps")
  steps = {name: build_step(config) for name, config in variants.items()}
  # Round-robin, one step of each variant in turn, so that load from other processes falls on all alike.
  times = {name: [] for name in variants}
  for _ in range(args.steps):
    for name, (run, _) in steps.items():
      times[name].append(run())
  print(f"{'step':28s}{'median ms':>10s}{'min ms':>9s}{'× baseline':>12s}{'compile s':>11s}")
  reference = statistics.median(times["baseline (contrastive)"])
  for name, (_, compile_seconds) in steps.items():
    median = statistics.median(times[name])
    print(f"{name:28s}{median * 1e3:10.1f}{min(times[name]) * 1e3:9.1f}{median / reference:12.2f}"
          f"{compile_seconds:11.1f}")


if __name__ == "__main__":
  main()
