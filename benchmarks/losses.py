"""Speed of every loss, forward + backward: `metriclearn.losses` (jitted) next to pytorch-metric-learning (torch CPU).

Same inputs for both: B random d = 512 rows, labels with 4 samples per class (the usual DML batch; also one
random-label set at the largest B). Ours is `jax.jit(jax.value_and_grad(loss))` timed after compilation; PML is
`loss(embeddings, labels)` then `.backward()`. PML and ours are timed in alternating blocks of back-to-back calls,
each after a short untimed warm-up, so both see the same load from other jobs and run as in a training loop.
Each figure is the median of up to `--repeats` runs (fewer, but at least 3, once PML has spent `--budget` seconds:
its lifted structure takes ~10 s a call at B = 512), every run blocked until its result is ready; the best run is
printed too, the steadier figure when other jobs share the machine. Threads: XLA's CPU client uses one intra-op thread per core (it has no thread-count option); PML is
timed with each torch thread count in `--threads` (default 1 and 2) and compared at its faster one: on a machine that
other jobs share, torch's 2-thread parallel regions wait for a descheduled thread and become 10–100× slower, while
1 thread stays fast, so the faster count is the fair (and conservative) PML figure.

    python benchmarks/losses.py                               # B = 128, 256, 512
    python benchmarks/losses.py --batch-sizes 512 --repeats 20 --losses triplet npair
    python benchmarks/losses.py --batch-sizes 512 --losses proxy_nca normalized_softmax cosface arcface soft_triple \
        proxy_nca/sop normalized_softmax/sop cosface/sop arcface/sop soft_triple/sop
    python benchmarks/losses.py --batch-sizes 512 --floor --losses normalized_softmax soft_triple   # + matmul floor

The classification / proxy losses run with PML's default settings and C = 100 classes (labels mod C); `<loss>/sop`
with SOP's C = 11,318 (SoftTriple: 10 centres each, a [B, 113,180] similarity matrix on both sides).

Prints a Markdown table (milliseconds, and the ratio PML / ours) and the geometric mean of the ratios at the largest
B. Results and the machine they came from: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import functools
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
# The classification / proxy losses (`metriclearn.proxy_losses`): PML's attribute holding the class rows and whether
# PML stores it as [D, rows] (ours: [rows, D]). Rows with C = 100 classes (labels taken mod C), and `<loss>/sop` with
# SOP's C = 11,318 training classes.
CLASS_ROWS = {"proxy_nca": ("proxies", False), "normalized_softmax": ("W", True), "cosface": ("W", True),
              "arcface": ("W", True), "soft_triple": ("fc", True)}
NUM_CLASSES = {"": 100, "sop": 11_318}
PML_PAIR_LOSSES = {
    "ntxent": pml_losses.NTXentLoss,
    "supcon": pml_losses.SupConLoss,
    "margin": pml_losses.MarginLoss,
    "fastap": pml_losses.FastAPLoss,
    "snr_contrastive": pml_losses.SignalToNoiseRatioContrastiveLoss,
    "circle": pml_losses.CircleLoss,
}


def pml_loss(name: str) -> torch.nn.Module:
  """PML's loss with our defaults (DESIGN §3), so both sides compute the same number."""
  if name.split("/")[0] in CLASS_ROWS:  # PML's default settings, seeded class rows
    base, _, setting = name.partition("/")
    torch.manual_seed(0)
    cls = {"proxy_nca": pml_losses.ProxyNCALoss, "normalized_softmax": pml_losses.NormalizedSoftmaxLoss,
           "cosface": pml_losses.CosFaceLoss, "arcface": pml_losses.ArcFaceLoss,
           "soft_triple": pml_losses.SoftTripleLoss}[base]
    return cls(num_classes=NUM_CLASSES[setting], embedding_size=DIM)
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
  if name in PML_PAIR_LOSSES:  # metriclearn/pair_losses.py: PML's defaults are ours
    return PML_PAIR_LOSSES[name]()
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


def alternating_block_times_ms(pml_step, ours_step, repeats: int, budget_s: float, threads: tuple[int, ...],
                               block: int = 5, warmup_s: float = 0.1):
  """Wall-clock ms of PML (once per torch thread count in `threads`) and of ours, in alternating blocks of calls.

  Each block is `warmup_s` seconds of untimed calls (at least one) and then `block` timed calls back to back, as a
  training loop makes them; blocks alternate between the libraries, so both see the same machine load. Warm-up
  matters here: after 0.1 s without work, our next ~5 calls of multi-similarity at B = 512 took 6.3-6.8 ms against
  3.9 ms back to back (measured; XLA's worker threads had gone idle), so a call timed right after the other
  library's turn measures the wake-up, not the loss. Stops after `repeats` timed calls per library, or early (after
  ≥ 3) once PML has spent `budget_s`. Returns `({threads: PML times}, our times)`.
  """
  pml_times, ours_times = {n: [] for n in threads}, []

  def timed_block(step, times):
    start = time.perf_counter()
    step()
    while time.perf_counter() - start < warmup_s:
      step()
    for _ in range(min(block, repeats - len(times))):
      start = time.perf_counter()
      step()
      times.append(1e3 * (time.perf_counter() - start))

  while len(ours_times) < repeats and (
      len(ours_times) < 3 or sum(sum(t) for t in pml_times.values()) < 1e3 * budget_s
  ):
    for num_threads in threads:
      torch.set_num_threads(num_threads)
      timed_block(pml_step, pml_times[num_threads])
    timed_block(ours_step, ours_times)
  return pml_times, ours_times


def make_ours_step(name: str, embeddings: np.ndarray, labels: np.ndarray, proxies: np.ndarray | None):
  """The jitted forward + backward, compiled and warmed up, and its loss value. `npair/m4` and `triplet/m4` are the
  settings the training program passes for m-per-class batches (m = 4): N-pair with `max_pairs = B / 4` slots, the
  triplet loss over the `max_positives = 3` positives of each anchor (the same losses there, computed smaller)."""
  if name in ("npair/m4", "triplet/m4"):
    fixed = {"npair/m4": dict(max_pairs=len(labels) // 4), "triplet/m4": dict(max_positives=3)}[name]
    step = jax.jit(jax.value_and_grad(functools.partial(losses.LOSSES[name.split("/")[0]], **fixed)))
    args = (jnp.asarray(embeddings), jnp.asarray(labels))
  elif name == "proxy_anchor" or name.split("/")[0] in CLASS_ROWS:
    step = jax.jit(jax.value_and_grad(losses.LOSSES[name.split("/")[0]], argnums=(0, 2)))
    args = (jnp.asarray(embeddings), jnp.asarray(labels), jnp.asarray(proxies))
  else:
    step = jax.jit(jax.value_and_grad(losses.LOSSES[name]))
    args = (jnp.asarray(embeddings), jnp.asarray(labels))
  value = float(jax.block_until_ready(step(*args))[0])  # compiles
  return (lambda: jax.block_until_ready(step(*args))), value


def make_products_step(embeddings: np.ndarray, rows: np.ndarray):
  """The matmul floor of a class-row loss: `x·Wᵀ` and its two backward products (∂/∂x, ∂/∂W) for a fixed [B, R]
  cotangent, jitted and warmed up. Every class-row loss computes these three products (both libraries), so
  PML / floor bounds the speed-up any implementation can reach on this machine."""
  cotangent = jnp.asarray(np.random.default_rng(1).standard_normal((len(embeddings), len(rows)), dtype=np.float32))
  step = jax.jit(jax.value_and_grad(lambda x, w: jnp.vdot(jnp.matmul(x, w.T), cotangent), argnums=(0, 1)))
  args = (jnp.asarray(embeddings), jnp.asarray(rows))
  jax.block_until_ready(step(*args))
  return lambda: jax.block_until_ready(step(*args))


def make_pml_step(name: str, embeddings: np.ndarray, labels: np.ndarray):
  """PML's forward + backward, warmed up, its loss value and the loss module (which holds proxy anchor's proxies)."""
  loss_fn = pml_loss(name)
  embeddings_t = torch.tensor(embeddings, requires_grad=True)
  labels_t = torch.tensor(labels)

  def step():
    embeddings_t.grad = None
    loss_fn.zero_grad(set_to_none=True)
    value = loss_fn(embeddings_t, labels_t)
    value.backward()
    return value

  return step, float(step().item()), loss_fn


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256, 512])
  names = [*losses.LOSSES, "npair/m4", "triplet/m4", *(f"{name}/sop" for name in CLASS_ROWS)]
  parser.add_argument("--losses", nargs="+", default=names, choices=names)
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--budget", type=float, default=10.0, help="seconds of PML time per row before stopping early")
  parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time PML with")
  parser.add_argument("--no-random-labels", action="store_true", help="skip the random-label rows at the largest B")
  parser.add_argument("--floor", action="store_true",
                      help="class-row losses: also time their three [B, D]×[D, R] products alone (the matmul floor) "
                           "and print PML / floor, the largest speed-up possible")
  args = parser.parse_args()

  threads = tuple(args.threads)
  print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"torch {torch.__version__} with {threads} threads; jax {jax.__version__} on {jax.devices()[0].platform} "
        "(XLA's CPU client: one thread per core)")
  print(f"d = {DIM}, forward + backward; median of up to {args.repeats} runs (≥ 3, ≤ ~{args.budget:g} s of PML time "
        "per row); PML / ours uses PML's faster thread count\n")
  pml_columns = " | ".join(f"PML {n} thr (ms)" for n in threads)
  floor_header, floor_rule = (" products alone (ms) | PML / products |", "---:|---:|") if args.floor else ("", "")
  print(f"| loss | B | labels | {pml_columns} | ours (ms) | PML / ours | best runs: PML / ours |{floor_header}")
  print("|---|---:|---|" + "---:|" * len(threads) + "---:|---:|---:|" + floor_rule)
  largest = max(args.batch_sizes)
  settings = [(b, "m4") for b in sorted(args.batch_sizes)]
  if not args.no_random_labels:
    settings.append((largest, "random"))
  ratios_at_largest, best_ratios_at_largest = {}, {}
  for name in args.losses:
    for batch_size, labelling in settings:
      if name.endswith("/m4") and labelling != "m4":
        continue  # these settings hold for 4-per-class batches only
      embeddings, labels = batch(batch_size, labelling)
      torch.set_num_threads(max(threads))
      if name.split("/")[0] in CLASS_ROWS:
        labels = labels % NUM_CLASSES[name.partition("/")[2]]
        pml_step, pml_value, pml_fn = make_pml_step(name, embeddings, labels)
        attribute, transposed = CLASS_ROWS[name.split("/")[0]]
        proxies = getattr(pml_fn, attribute).detach().numpy()
        proxies = np.ascontiguousarray(proxies.T if transposed else proxies)
      else:
        pml_step, pml_value, pml_fn = make_pml_step(name.split("/")[0], embeddings, labels)
        proxies = pml_fn.proxies.detach().numpy() if name == "proxy_anchor" else None
      ours_step, value = make_ours_step(name, embeddings, labels, proxies)
      # Same inputs, same loss: a benchmark of a wrong answer is worthless.
      assert math.isclose(value, pml_value, rel_tol=1e-4, abs_tol=1e-5), (name, batch_size, value, pml_value)
      pml_times, ours_times = alternating_block_times_ms(pml_step, ours_step, args.repeats, args.budget, threads)
      pml_medians = {n: statistics.median(t) for n, t in pml_times.items()}
      ours_ms = statistics.median(ours_times)
      ratio = min(pml_medians.values()) / ours_ms
      best_ratio = min(min(t) for t in pml_times.values()) / min(ours_times)
      if batch_size == largest and labelling == "m4":
        ratios_at_largest[name], best_ratios_at_largest[name] = ratio, best_ratio
      pml_cells = " | ".join(f"{pml_medians[n]:.2f}" for n in threads)
      floor_cells = ""
      if args.floor:
        floor_cells = " – | – |"
        if name.split("/")[0] in CLASS_ROWS:
          # Timed in alternating blocks with ours, as PML is (the same load on both; the torch thread count is moot).
          floor_times, _ = alternating_block_times_ms(make_products_step(embeddings, proxies), ours_step,
                                                      args.repeats, args.budget, (max(threads),))
          floor_ms = statistics.median(floor_times[max(threads)])
          floor_cells = f" {floor_ms:.2f} | {min(pml_medians.values()) / floor_ms:.1f}× |"
      print(f"| {name} | {batch_size} | {labelling} | {pml_cells} | {ours_ms:.2f} | {ratio:.1f}× | {best_ratio:.1f}× |"
            f"{floor_cells}", flush=True)
  print()
  for kind, ratios in (("medians", ratios_at_largest), ("best runs", best_ratios_at_largest)):
    defaults = {name: r for name, r in ratios.items() if "/" not in name}
    # As the training program runs them on m-per-class batches: the /m4 setting where one was timed.
    program = {**defaults, **{name.split("/")[0]: r for name, r in ratios.items() if name.endswith("/m4")}}
    for label, chosen in (("default settings", defaults), ("training-program settings, m = 4", program)):
      if chosen:
        geometric_mean = math.exp(statistics.fmean(math.log(r) for r in chosen.values()))
        print(f"geometric mean of PML / ours ({kind}, {label}) at B = {largest}, 4 per class: {geometric_mean:.2f}×; "
              f"smallest {min(chosen.values()):.2f}× ({min(chosen, key=chosen.get)})")


if __name__ == "__main__":
  main()
