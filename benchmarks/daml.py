"""Step time of DAML (`metriclearn/methods/daml.py`) next to the baseline step: same model, same batch, same run.

Every step is the jitted `train_step` the training program runs, on the small CNN of `configs/glyphs.py` with the
batch of each `configs/glyphs_daml.py:<variant>` (126 = 42 triplets for `tri`, 128 = 64 pairs otherwise) of random
32×32 images. Per variant: the baseline method (`configs/glyphs.py`: multi-similarity) on that batch, DAML's
pre-training step (the variant's J_m on observed negatives) and its joint step (generator + J_gen + λ·J_m, one
`value_and_grad`). The steps run in turn, round after round, so all see the same load from other jobs; each figure is
the median over `--steps` rounds after one compiling call, blocking on the loss as the training loop does. "temp MB"
is XLA's compiled temporary-buffer size of the step (`memory_analysis`), where the backend reports it.

    python benchmarks/daml.py                       # the four variants, 20 rounds
    python benchmarks/daml.py --variants tri npair --steps 40
    python benchmarks/daml.py --preset code

Goal (issue): DAML joint step ≤ 1.3× the baseline step. Results and the machine: benchmarks/RESULTS.md ("DAML").
"""

from __future__ import annotations

import argparse
import os
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("cont", "tri", "lifted", "npair")


def load_config(name: str, arg: str | None = None):
  return config_util.load_config(os.path.join(ROOT, "configs", f"{name}.py"), arg)


class Step:
  """A method's jitted training step for one phase, with its own state, on a fixed batch."""

  def __init__(self, config, phase: str, batch):
    model = models.create_model(config.model.name, embedding_dim=config.model.embedding_dim,
                                pooling=config.model.pooling, **dict(config.model.kwargs))
    method = methods.create_method(config, model, num_classes=125)
    params, batch_stats, method_state = method.init(jax.random.key(1), batch["image"][:2])
    tx = getattr(method, "create_optimizer", optim.create_optimizer)(config.optimizer, params)
    self.state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                            opt_state=tx.init(params), rng=jax.random.key(2), method_state=method_state)
    self.batch, self.times = batch, []
    start = time.perf_counter()
    jitted = jax.jit(lambda s, b, p: method.train_step(s, b, tx, p), static_argnums=2)
    self.step = jitted.lower(self.state, batch, phase).compile()  # called without the static phase
    self.compile_seconds = time.perf_counter() - start
    try:
      self.temp_mb = self.step.memory_analysis().temp_size_in_bytes / 2**20
    except (AttributeError, NotImplementedError):
      self.temp_mb = float("nan")
    self()  # warm-up

  def __call__(self) -> float:
    start = time.perf_counter()
    self.state, metrics = self.step(self.state, self.batch)
    float(metrics["loss"])
    return time.perf_counter() - start


def make_batch(batch_size: int, layout: str):
  """Random images and labels in the variant's tuple layout (the labels matter only to the baseline's loss)."""
  images = jax.random.normal(jax.random.key(0), (batch_size, 32, 32, 1))
  if layout == "triplets":
    classes = np.arange(2 * (batch_size // 3)).reshape(2, -1)
    labels = np.stack([classes[0], classes[0], classes[1]], axis=1).reshape(-1)
  else:
    labels = np.repeat(np.arange(batch_size // 2), 2)
  return {"image": images, "label": jnp.asarray(labels, jnp.int32)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--preset", default="paper", choices=("paper", "code"))
  args = parser.parse_args()
  print(f"{jax.devices()[0].platform} ({jax.device_count()} device), small CNN (glyphs), preset {args.preset}, "
        f"median of {args.steps} interleaved rounds")
  print(f"| variant | batch | step | ms/step | × baseline | temp MB | compile s |")
  print(f"|---|---|---|---|---|---|---|")
  for variant in args.variants:
    daml_config = load_config("glyphs_daml", variant + (",code" if args.preset == "code" else ""))
    layout = "triplets" if variant == "tri" else "pairs"
    batch = make_batch(daml_config.batch_size, layout)
    baseline_config = load_config("glyphs")
    baseline_config.batch_size = daml_config.batch_size
    steps = {"baseline (multi-similarity)": Step(baseline_config, "train", batch),
             "DAML pre-training": Step(daml_config, "pretrain", batch),
             "DAML joint": Step(daml_config, "joint", batch)}
    for _ in range(args.steps):
      for step in steps.values():
        step.times.append(step())
    reference = statistics.median(steps["baseline (multi-similarity)"].times)
    for name, step in steps.items():
      median = statistics.median(step.times)
      print(f"| {variant} | {daml_config.batch_size} | {name} | {median * 1e3:.1f} | {median / reference:.2f} | "
            f"{step.temp_mb:.1f} | {step.compile_seconds:.1f} |", flush=True)


if __name__ == "__main__":
  main()
