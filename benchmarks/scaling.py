r"""Data-parallel scaling of the training step: step time of one recipe at 1, 2, 4 and 8 devices, global batch fixed.

    python benchmarks/scaling.py                                       # configs/glyphs.py, simulated CPU devices
    python benchmarks/scaling.py --config=configs/glyphs.py --config.batch_size=256 --steps=30
    python benchmarks/scaling.py --real --devices=1,2,4,8              # a machine with several GPUs / TPU cores

The step is the one `metriclearn/train.py` jits for the recipe (its method, model, loss and optimizer; the global
batch on mesh axis "data", the state replicated and donated), fed the recipe's own batches 0, 1, 2, ... (loaded and
placed on the devices before the clock starts, so the input pipeline is not timed). A method's host-side
`host_update` is not run. Reported per device count: compile (the first step), the median step time over `--steps`
steps blocking on each loss as the training loop does, steps/s and images/s, and the relative difference of the
losses from the fewest-device run's: at the first step (the same parameters and batch; only float32 sums are taken in
another order), which must stay within `--rtol_first`, and the largest over all steps, within `--rtol` (an optimizer
such as Adam, which divides each gradient entry by its own magnitude, lets that rounding grow to ~2e-4 over 20 steps
of the glyphs recipe). Sharding mistakes are larger: a loss averaged over per-device losses, or BatchNorm statistics
per device, move the first loss by 1e-2 to 1 (tests/test_train.py).

Without `--real` each device count runs in its own process with that many simulated CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=N`). They share the machine's cores, so this checks correctness and
shows the cost of the collectives, not a speed-up. With `--real` one process times the first N of its real devices.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags

from metriclearn import data
from metriclearn import methods
from metriclearn import models
from metriclearn import optim
from metriclearn import train
from metriclearn.data import loader as loader_lib
from metriclearn.data import samplers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CONFIG = config_flags.DEFINE_config_file("config", os.path.join(ROOT, "configs", "glyphs.py"),
                                          "Training recipe: configs/<name>.py[:arg]; --config.key=value overrides.")
_DEVICES = flags.DEFINE_list("devices", ["1", "2", "4", "8"], "Device counts to time.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps after the first (compiling) one.")
_RTOL_FIRST = flags.DEFINE_float("rtol_first", 1e-5, "Largest relative difference of the first step's loss from "
                                 "the fewest-device run's.")
_RTOL = flags.DEFINE_float("rtol", 1e-3, "Largest relative difference of any step's loss from the fewest-device run's.")
_REAL = flags.DEFINE_bool("real", False, "Time the first N real devices of this process (GPU/TPU) instead of N "
                          "simulated CPU devices in a subprocess each.")
_WORKER = flags.DEFINE_integer("worker", None, "Internal: time this many devices and print the result as JSON.")


def time_steps(config, devices: list, num_steps: int) -> dict:
  """Compiles and times the recipe's training step on a mesh over `devices`, as `train.train_and_evaluate` builds it."""
  if config.batch_size % len(devices):
    raise ValueError(f"batch_size {config.batch_size} is not divisible by {len(devices)} devices")
  dataset = data.load_dataset(config.dataset.name, data_dir=config.dataset.get("data_dir"), seed=config.seed,
                              **dict(config.dataset.get("kwargs", {})))
  model = models.create_model(config.model.name, embedding_dim=config.model.embedding_dim,
                              pooling=config.model.pooling, freeze_bn=config.model.freeze_bn,
                              **dict(config.model.get("kwargs", {})))
  method = methods.create_method(config, model, dataset.train.num_classes)
  if hasattr(method, "make_sampler"):
    sampler = method.make_sampler(dataset.train.labels, config.batch_size, config.seed)
  else:
    sampler = samplers.make_sampler(config.sampler.name, dataset.train.labels, config.batch_size, seed=config.seed,
                                    **dict(config.sampler.get("kwargs", {})))
  loader = loader_lib.Loader(dataset.train, sampler, seed=config.seed, transform=dataset.train_transform,
                             mean=dataset.mean, std=dataset.std)
  mesh = jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  sample_images = jnp.asarray(loader.batch(0)["image"][:2])
  rng = jax.random.key(config.seed)
  create_optimizer = getattr(method, "create_optimizer", optim.create_optimizer)
  tx = create_optimizer(config.optimizer, jax.eval_shape(lambda: method.init(rng, sample_images)[0]))
  state = train.replicate(train.create_state(config, method, tx, sample_images, rng), replicated)
  phase_of = getattr(method, "phase", lambda step: "train")
  step_fn = jax.jit(lambda s, b, phase: method.train_step(s, b, tx, phase), static_argnums=2,
                    in_shardings=(replicated, sharded), out_shardings=(replicated, replicated), donate_argnums=0)
  batches = [jax.device_put(loader.batch(step), sharded) for step in range(num_steps + 1)]

  times, losses = [], []
  for step, batch in enumerate(batches):
    start = time.perf_counter()
    state, metrics = step_fn(state, batch, phase_of(step))
    losses.append(float(metrics["loss"]))  # blocks, as the training loop does every step
    times.append(time.perf_counter() - start)
  return {"devices": len(devices), "platform": devices[0].platform, "device_kind": devices[0].device_kind,
          "compile_s": times[0], "step_s": times[1:], "losses": losses}


def _simulated(num_devices: int) -> dict:
  """`time_steps` in a fresh process with `num_devices` simulated CPU devices (this command line, plus --worker)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}")
  process = subprocess.run([sys.executable, os.path.abspath(__file__), *sys.argv[1:], f"--worker={num_devices}"],
                           env=env, capture_output=True, text=True, check=False)
  if process.returncode:
    raise RuntimeError(f"{num_devices} simulated devices: exit {process.returncode}\n{process.stderr[-4000:]}")
  return json.loads(process.stdout.strip().splitlines()[-1])


def loss_deviations(run: dict, reference: dict) -> tuple[float, float]:
  """Relative differences of `run`'s losses from `reference`'s: at the first step, and the largest over all steps."""
  losses, reference_losses = np.asarray(run["losses"]), np.asarray(reference["losses"])
  relative = np.abs(losses - reference_losses) / np.abs(reference_losses)
  return float(relative[0]), float(relative.max())


def losses_agree(run: dict, reference: dict) -> bool:
  first, largest = loss_deviations(run, reference)
  return first <= _RTOL_FIRST.value and largest <= _RTOL.value


def format_table(runs: list[dict], batch_size: int) -> str:
  lines = ["| devices | batch / device | compile s | ms / step | steps / s | images / s | rel. Δloss step 1 | "
           "max rel. Δloss | losses |", "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
  for run in runs:
    step_s = float(np.median(run["step_s"]))
    first, largest = loss_deviations(run, runs[0])
    lines.append(f"| {run['devices']} | {batch_size // run['devices']} | {run['compile_s']:.1f} | "
                 f"{step_s * 1e3:.1f} | {1 / step_s:.2f} | {batch_size / step_s:.0f} | {first:.1e} | {largest:.1e} | "
                 f"{'agree' if losses_agree(run, runs[0]) else 'DIFFER'} |")
  return "\n".join(lines)


def main(argv):
  del argv  # the flags; a simulated run hands sys.argv on to its worker process
  config = _CONFIG.value
  if _WORKER.value is not None:
    print(json.dumps(time_steps(config, jax.devices()[:_WORKER.value], _STEPS.value)))
    return
  counts = [int(n) for n in _DEVICES.value]
  if _REAL.value:
    available = jax.devices()
    if max(counts) > len(available):
      raise app.UsageError(f"--devices asks for {max(counts)} devices; this process has {len(available)}")
    runs = [time_steps(config, available[:n], _STEPS.value) for n in counts]
  else:
    runs = [_simulated(n) for n in counts]
  mode = "this process's devices" if _REAL.value else "simulated, one process per count"
  kind = f"{runs[0]['device_kind']} ({runs[0]['platform']}; {mode})"
  machine = f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
  print(f"# {config.name}: global batch {config.batch_size}, {_STEPS.value} timed steps; {kind}; {machine}; "
        f"jax {jax.__version__}")
  print(format_table(runs, config.batch_size))
  if not all(losses_agree(run, runs[0]) for run in runs):
    sys.exit(f"the losses differ from the {counts[0]}-device run's by more than --rtol_first={_RTOL_FIRST.value} "
             f"(step 1) or --rtol={_RTOL.value}")


if __name__ == "__main__":
  app.run(main)
