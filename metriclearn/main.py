r"""Command line: `python -m metriclearn.main --config=configs/glyphs.py --workdir=/tmp/run [--config.key=value ...]`.

`--overrides=FILE` applies a JSON object of config overrides (a sweep's `best.json`, `metriclearn.sweep`) after the
config file and before the `--config.key=value` flags, which win.

Parses flags, starts JAX's distributed runtime when asked, and calls `train.train_and_evaluate(config, workdir)`;
nothing else (as the flax examples).

Multi-host (DESIGN §7; recipes in `launch/`): every host runs the same command with `--distributed`, and
`jax.distributed.initialize()` finds the coordinator, the number of processes and this process's id itself on a
Cloud TPU VM pod, under SLURM (`srun`), Open MPI and Kubernetes. Elsewhere (or to override what it detects) name them:

  python -m metriclearn.main ... --coordinator_address=HOST0:PORT --num_processes=2 --process_id=0   # on host 0
  python -m metriclearn.main ... --coordinator_address=HOST0:PORT --num_processes=2 --process_id=1   # on host 1

`--coordinator_address` implies `--distributed`; the environment variables JAX reads itself (JAX_COORDINATOR_ADDRESS,
JAX_COORDINATOR_PORT, JAX_LOCAL_DEVICE_IDS) apply as well. On CPU the processes exchange collectives through gloo
(jax's default `jax_cpu_collectives_implementation`). Without these flags the run is a single process and the
distributed runtime is never started.
"""

from __future__ import annotations

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from metriclearn import search_space
from metriclearn import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training recipe: configs/<name>.py[:arg].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, plots and results.json; "
                               "a run on a non-empty workdir resumes from its latest checkpoint. Multi-host: one "
                               "directory that every host reaches under this path (a shared filesystem).")
flags.mark_flags_as_required(["config", "workdir"])
_OVERRIDES = flags.DEFINE_string(
    "overrides", None, "A JSON file of config overrides, {\"optimizer.learning_rate\": 0.001, ...} (a sweep's "
    "best.json): applied after the config file; --config.key=value flags still win over it.")

_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Multi-host: call jax.distributed.initialize() before any JAX computation. With no other "
    "flag JAX detects the cluster (Cloud TPU VM pod, SLURM, Open MPI, Kubernetes).")
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "host:port of the coordinator, which process 0 starts (implies --distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (implies --distributed).",
                                      lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's id in 0..num_processes-1 (implies "
                                   "--distributed).", lower_bound=0)


def initialize_distributed() -> bool:
  """Starts JAX's distributed runtime if a flag asks for it; returns whether it did.

  Must run before any JAX computation: the backends read the runtime when they start.
  """
  explicit = {"coordinator_address": _COORDINATOR_ADDRESS.value, "num_processes": _NUM_PROCESSES.value,
              "process_id": _PROCESS_ID.value}
  if not _DISTRIBUTED.value and all(value is None for value in explicit.values()):
    return False
  jax.distributed.initialize(**{key: value for key, value in explicit.items() if value is not None})
  logging.info("JAX distributed runtime: process %d of %d, %d local of %d devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO; --verbosity=0 shows it
  initialize_distributed()
  train.train_and_evaluate(config_with_overrides(), _WORKDIR.value)


def config_with_overrides():
  """The recipe, then `--overrides` (if given), then the `--config.` flags again so that the command line wins."""
  config = _CONFIG.value
  if _OVERRIDES.value:
    config = search_space.apply_overrides(config, search_space.load_overrides(_OVERRIDES.value))
    config = search_space.apply_overrides(config, config_flags.get_override_values(flags.FLAGS["config"]))
  return config


if __name__ == "__main__":
  app.run(main)
