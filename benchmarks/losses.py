"""Speed of every loss, forward + backward: `metriclearn.losses` (jitted) next to pytorch-metric-learning (torch CPU).

Same inputs for both: B random d = 512 rows, labels with 4 samples per class (the usual DML batch; also one
random-label set at the largest B). Ours is `jax.jit(jax.value_and_grad(loss))` timed after compilation; PML is
`loss(embeddings, labels)` then `.backward()`. Each figure is the median of `--repeats` runs, every run blocked until
its result is ready. Threads: torch is set to `--threads`; XLA's CPU client uses one intra-op thread per core (it has
no thread-count option), so run this on a machine with `--threads` cores for a fair comparison.

    python benchmarks/losses.py                               # B = 128, 256, 512
    python benchmarks/losses.py --batch-sizes 512 --repeats 20 --losses triplet npair

Prints a Markdown table (milliseconds, and the ratio PML / ours) and the geometric mean of the ratios at the largest
B. Results and the machine they came from: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from pytorch_metric_learning import losses as pml_losses

from metriclearn import losses

DIM = 512
NUM_PROXIES = 256  # proxy anchor: one proxy per training class; enough for the 128 classes of a B = 512 batch


def pml_loss(name: str) -> torch.nn.Module:
  """PML's loss with our defaults (DESIGN §3), so both sides compute the same number."""
  if name == "contrastive":
    return pml_losses.ContrastiveLoss(pos_margin=0.0, neg_margin=0.5)
  if name == "triplet":
    return pml_losses.TripletMarginLoss(margin=0.1)
  if name == "multi_similarity":
    return pml_losses.MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5)
  if name == "proxy_anchor":
    torch.manual_seed(0)
    return pml_losses.ProxyAnchorLoss(num_classes=NUM_PROXIES, embedding_size=DIM, margin=0.1, alpha=32.0)
  if name == "npair":
    return pml_losses.NPairsLoss()
  if name == "lifted_structure":
    return pml_losses.LiftedStructureLoss(neg_margin=1.0, pos_margin=0.0)
  if name == "generalized_lifted_structure":
    return pml_losses.GeneralizedLiftedStructureLoss(neg_margin=1.0, pos_margin=0.0)
  raise ValueError(f"unknown loss {name!r}; valid losses: {sorted(losses.LOSSES)}")


def batch(batch_size: int, labelling: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Random rows and labels: `m4` = batch_size/4 classes (of NUM_PROXIES) × 4 samples, `random` = uniform labels."""
  rng = np.random.default_rng(seed)
  embeddings = rng.standard_normal((batch_size, DIM), dtype=np.float32)
  if labelling == "m4":
    labels = np.repeat(rng.choice(NUM_PROXIES, batch_size // 4, replace=False), 4)
  else:  # as many classes as a m4 batch, but uneven: singletons and larger classes
    labels = rng.integers(0, batch_size // 4, batch_size)
  return embeddings, rng.permutation(labels).astype(np.int64)


def median_ms(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def time_ours(name: str, embeddings: np.ndarray, labels: np.ndarray, proxies: np.ndarray, repeats: int):
  if name == "proxy_anchor":
    step = jax.jit(jax.value_and_grad(losses.proxy_anchor, argnums=(0, 2)))
    args = (jnp.asarray(embeddings), jnp.asarray(labels), jnp.asarray(proxies))
  else:
    step = jax.jit(jax.value_and_grad(losses.LOSSES[name]))
    args = (jnp.asarray(embeddings), jnp.asarray(labels))
  value = float(jax.block_until_ready(step(*args))[0])  # compiles
  jax.block_until_ready(step(*args))
  return median_ms(lambda: jax.block_until_ready(step(*args)), repeats), value


def time_pml(name: str, embeddings: np.ndarray, labels: np.ndarray, repeats: int):
  loss_fn = pml_loss(name)
  embeddings_t = torch.tensor(embeddings, requires_grad=True)
  labels_t = torch.tensor(labels)

  def step():
    embeddings_t.grad = None
    loss_fn.zero_grad(set_to_none=True)
    value = loss_fn(embeddings_t, labels_t)
    value.backward()
    return value

  value = float(step().item())
  return median_ms(step, repeats), value, loss_fn


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256, 512])
  parser.add_argument("--losses", nargs="+", default=list(losses.LOSSES), choices=list(losses.LOSSES))
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--no-random-labels", action="store_true", help="skip the random-label rows at the largest B")
  args = parser.parse_args()

  torch.set_num_threads(args.threads)
  print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; torch {torch.__version__} threads "
        f"{torch.get_num_threads()}; jax {jax.__version__} on {jax.devices()[0].platform} (XLA: one thread per core)")
  print(f"d = {DIM}, median of {args.repeats} runs, forward + backward\n")
  print("| loss | B | labels | PML (ms) | ours (ms) | PML / ours |")
  print("|---|---:|---|---:|---:|---:|")
  largest = max(args.batch_sizes)
  settings = [(b, "m4") for b in sorted(args.batch_sizes)]
  if not args.no_random_labels:
    settings.append((largest, "random"))
  ratios_at_largest = {}
  for name in args.losses:
    for batch_size, labelling in settings:
      embeddings, labels = batch(batch_size, labelling)
      pml_ms, pml_value, pml_fn = time_pml(name, embeddings, labels, args.repeats)
      proxies = pml_fn.proxies.detach().numpy() if name == "proxy_anchor" else None
      ours_ms, value = time_ours(name, embeddings, labels, proxies, args.repeats)
      # Same inputs, same loss: a benchmark of a wrong answer is worthless.
      assert math.isclose(value, pml_value, rel_tol=1e-4, abs_tol=1e-5), (name, batch_size, value, pml_value)
      ratio = pml_ms / ours_ms
      if batch_size == largest and labelling == "m4":
        ratios_at_largest[name] = ratio
      print(f"| {name} | {batch_size} | {labelling} | {pml_ms:.2f} | {ours_ms:.2f} | {ratio:.1f}× |", flush=True)
  geometric_mean = math.exp(statistics.fmean(math.log(r) for r in ratios_at_largest.values()))
  print(f"\ngeometric mean of PML / ours at B = {largest} (4 per class): {geometric_mean:.2f}×")


if __name__ == "__main__":
  main()
