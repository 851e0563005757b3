"""APFS step time next to the baseline step (same model, batch and process), and the cost of hard class mining.

The glyphs recipe (`configs/glyphs.py`: small CNN, 32×32×1 glyphs, 64-d embeddings, multi-similarity, Adam,
P × M = 32 × 4) on batches of the real glyphs train split: the baseline's from the m-per-class sampler, APFS's from
its sampler (representatives first). Each step is the whole jitted `train_step` (forward, backward, optimizer update;
for APFS also the restricted pair matrices, the anchor refresh and the proximal gradient). Times are medians over
`--steps` steps after compilation, measured in interleaved rounds (each variant runs a few steps in turn) so that load
from other jobs hits all variants alike. The paper's claim is "no additional computational cost": goal ≤ 1.05×.

Mining cost per stage: `APFS.host_update` at the last step of a stage (draw the next representative set, embed the
C = 125 representatives in inference mode in one batched pass, nearest classes by scikit-learn), median over
`--mining-repeats` calls after compilation; also the nearest-class search alone for an SOP-sized C = 11,318 (random
128-d unit vectors), and the host time of one batch's indices for both samplers.

    python benchmarks/apfs.py
    python benchmarks/apfs.py --steps 40 --batch-size 256

Results and the machine they came from: benchmarks/RESULTS.md ("APFS").
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
from metriclearn import data
from metriclearn import methods
from metriclearn import models
from metriclearn import optim
from metriclearn import train
from metriclearn.data import apfs_sampler
from metriclearn.methods.baseline import apply_model
from metriclearn.state import TrainState

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (label, APFS method kwargs); None = the baseline.
VARIANTS = (
    ("baseline (multi-similarity, all pairs)", None),
    ("APFS (restricted pairs, proximal term)", dict(class_selection="random")),
    ("APFS, λ = 0", dict(class_selection="random", proximal_weight=0.0)),
    ("APFS, full pairs (ablation)", dict(class_selection="random", pair_restriction="full")),
)


def glyphs_config(batch_size: int):
  config = config_util.load_config(os.path.join(REPO, "configs", "glyphs.py"))
  config.batch_size = batch_size
  return config


def make_variant(kwargs, config, split: data.Split):
  """`(jitted step, state, loader, method)` of one variant."""
  config = config.copy_and_resolve_references()
  if kwargs is not None:
    config.method = dict(name="apfs", kwargs=dict(representative_lifetime=29, **kwargs))
  model = models.create_model(config.model.name, embedding_dim=config.model.embedding_dim,
                              pooling=config.model.pooling, freeze_bn=config.model.freeze_bn)
  method = methods.create_method(config, model, split.num_classes)
  if kwargs is None:
    sampler = data.make_sampler("m_per_class", split.labels, config.batch_size, seed=0, m=4)
  else:
    sampler = method.make_sampler(split.labels, config.batch_size, 0)
  loader = data.Loader(split, sampler)
  images = jnp.asarray(loader.batch(0)["image"][:2])
  params, batch_stats, method_state = method.init(jax.random.key(0), images)
  tx = getattr(method, "create_optimizer", optim.create_optimizer)(config.optimizer, params)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                     opt_state=tx.init(params), rng=jax.random.key(1), method_state=method_state)
  step = jax.jit(lambda s, b: method.train_step(s, b, tx), donate_argnums=0)
  return step, state, loader, method


def time_steps(variants, steps: int, rounds: int):
  """Median seconds per step of each variant, interleaved in `rounds` rounds."""
  per_round = max(1, steps // rounds)
  times = {label: [] for label in variants}
  states = {label: v[1] for label, v in variants.items()}
  batches = {label: [v[2].batch(i) for i in range(per_round)] for label, v in variants.items()}
  for label, (step, *_) in variants.items():  # compile and warm up
    for _ in range(2):
      states[label], metrics = step(states[label], batches[label][0])
      jax.block_until_ready(metrics["loss"])
  for _ in range(rounds):
    for label, (step, *_) in variants.items():
      for batch in batches[label]:
        start = time.perf_counter()
        states[label], metrics = step(states[label], batch)
        jax.block_until_ready((states[label].params, metrics["loss"]))
        times[label].append(time.perf_counter() - start)
  return {label: statistics.median(t) for label, t in times.items()}, {label: len(t) for label, t in times.items()}


def time_mining(config, split: data.Split, repeats: int):
  """Seconds of `host_update` at stage ends (mining the next stage), and of its parts, one entry per repeat."""
  _, state, _, method = make_variant(dict(class_selection="hard"), config, split)
  model = method.model

  @jax.jit
  def embed_fn(params, batch_stats, images):
    return apply_model(model, params, batch_stats, images, train=False)

  sharded = jax.sharding.NamedSharding(train.create_mesh(), jax.sharding.PartitionSpec("data"))
  context = train.StepContext(config=config, train_split=split, embed=lambda params, batch_stats, s: train.embed_split(
      lambda images: embed_fn(params, batch_stats, images), s, config.eval.batch_size, sharded))
  lifetime = method.representative_lifetime
  state = method.host_update(lifetime - 1, state, context)  # mines stage 1; compiles the embedding
  totals, draws, embeds, searches = [], [], [], []
  for stage in range(2, repeats + 2):
    start = time.perf_counter()
    state = method.host_update(stage * lifetime - 1, state, context)  # the last step of stage − 1
    jax.block_until_ready(state.method_state["class_plan"])
    totals.append(time.perf_counter() - start)
    start = time.perf_counter()  # the parts, on a stage not drawn yet
    reps = method.sampler.representatives(stage + 1000)
    draws.append(time.perf_counter() - start)
    subset = data.Split(images=split.images[reps], labels=split.labels[reps], class_names=split.class_names)
    start = time.perf_counter()
    embeddings = context.embed(state.params, state.batch_stats, subset)
    embeds.append(time.perf_counter() - start)
    start = time.perf_counter()
    apfs_sampler.mine_class_neighbors(embeddings, method.classes_per_batch - 1)
    searches.append(time.perf_counter() - start)
  return {"host_update at a stage end (all below)": totals, "  draw the representatives": draws,
          "  embed the C representatives": embeds, "  nearest classes (scikit-learn)": searches}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=40, help="timed steps per variant (after compilation)")
  parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds the steps are split into")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--mining-repeats", type=int, default=5)
  args = parser.parse_args()

  config = glyphs_config(args.batch_size)
  split = data.load_dataset("glyphs", seed=0).train
  variants = {label: make_variant(kwargs, config, split) for label, kwargs in VARIANTS}
  medians, counts = time_steps(variants, args.steps, args.rounds)
  device = jax.devices()[0]
  print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, JAX {jax.__version__} on {device.platform} "
        f"({device.device_kind}); glyphs train split C = {split.num_classes}, batch {args.batch_size} (P × M = "
        f"{args.batch_size // 4} × 4)\n")
  base = medians[VARIANTS[0][0]]
  print(f"{'step':42s}{'ms / step':>12s}{'× baseline':>12s}{'steps':>8s}")
  for label, median in medians.items():
    print(f"{label:42s}{1e3 * median:12.2f}{median / base:12.3f}{counts[label]:8d}")

  print(f"\n{'mining (once per stage)':42s}{'ms':>12s}{'per step, T=29':>16s}")
  for label, values in time_mining(config, split, args.mining_repeats).items():
    median = statistics.median(values)
    print(f"{label:42s}{1e3 * median:12.2f}{1e3 * median / 29:16.3f}")
  sop = np.random.default_rng(0).normal(size=(11318, 128)).astype(np.float32)
  sop /= np.linalg.norm(sop, axis=1, keepdims=True)
  start = time.perf_counter()
  apfs_sampler.mine_class_neighbors(sop, 31)
  print(f"{'nearest classes, C = 11318 (SOP), P = 32':42s}{1e3 * (time.perf_counter() - start):12.1f}")

  print(f"\n{'host: one batch of indices':42s}{'ms':>12s}")
  for label, variant in (("m-per-class sampler", VARIANTS[0][0]), ("APFS sampler", VARIANTS[1][0])):
    sampler = variants[variant][2].sampler
    values = []
    for step in range(200):
      start = time.perf_counter()
      sampler.batch_indices(step)
      values.append(time.perf_counter() - start)
    print(f"{label:42s}{1e3 * statistics.median(values):12.3f}")


if __name__ == "__main__":
  main()
