r"""Command line: `python -m metriclearn.main --config=configs/glyphs.py --workdir=/tmp/run [--config.key=value ...]`.

Parses flags, starts JAX's distributed runtime when asked, and calls `train.train_and_evaluate(config, workdir)`
(as the flax examples). What it adds for a person at a terminal: `--help` (exit 0) with the methods and recipe
families; a user error (a misspelt `--config.KEY`, a missing file, a bad name or value) as one line `error: ...` with
exit status 2 instead of a traceback (`--verbose` or METRICLEARN_TRACEBACK=1 shows it); Ctrl-C / SIGTERM as one line
after the checkpoint of the current step is saved (exit 130 / 143; `metriclearn/interrupt.py`).

`--overrides=FILE` applies a JSON object of config overrides (a sweep's `best.json`, `metriclearn.sweep`) after the
config file and before the `--config.key=value` flags, which win.

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

import difflib
import os
import re
import sys

import jax
import ml_collections
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from metriclearn import config_util
from metriclearn import interrupt
from metriclearn import methods
from metriclearn import recipes
from metriclearn import search_space
from metriclearn import train
from metriclearn.data import splits

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
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the Python traceback of an error (also: METRICLEARN_TRACEBACK=1); "
                             "without it a user error is one line.")


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
    _exit_with_error(f"unexpected arguments {argv[1:]} — flags are written --name=value; see --help")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO; --verbosity=0 shows it
  verbose = _VERBOSE.value or _traceback_requested()
  try:
    initialize_distributed()
    train.train_and_evaluate(config_with_overrides(), _WORKDIR.value)
  except interrupt.Interrupted as stopped:
    print(stopped, file=sys.stderr)
    sys.exit(stopped.exit_code)
  except KeyboardInterrupt:
    if verbose:
      raise
    print("interrupted outside the training steps (loading, compiling or the final evaluation); the checkpoints "
          "saved so far are kept: rerun the same command to resume", file=sys.stderr)
    sys.exit(130)
  except USER_ERRORS as error:
    if verbose:
      raise
    _exit_with_error(str(error))


# ----------------------------------------------------------------------------------------------------------------
# User errors in one line, and --help. The library raises ValueError / FileNotFoundError / ... with what was wrong,
# what to do and the valid names (STYLE.md rule 9); the command line prints that message alone, without a traceback.

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError, FloatingPointError)
EXIT_USER_ERROR = 2  # as argparse and absl's usage errors


def _traceback_requested() -> bool:
  return os.environ.get("METRICLEARN_TRACEBACK", "") not in ("", "0") or any(
      arg in ("--verbose", "--verbose=true", "--verbose=True", "--verbose=1") for arg in sys.argv[1:])


def _exit_with_error(message: str) -> None:
  lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
  print(f"error: {' '.join(lines) or '(no message)'} [--verbose shows the traceback]", file=sys.stderr)
  sys.exit(EXIT_USER_ERROR)


def _flag_value(argv, name: str) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _dotted_keys(node, prefix: str = "config") -> list[str]:
  keys = []
  for key in node.keys():
    keys.append(f"{prefix}.{key}")
    if isinstance(node[key], (ml_collections.ConfigDict, dict)):
      keys += _dotted_keys(node[key], f"{prefix}.{key}")
  return keys


def unknown_override(config: ml_collections.ConfigDict, argv) -> str | None:
  """The message for the first `--config.KEY=...` of `argv` whose KEY is not in `config`: the key, a close match and
  the valid keys at the level where it failed; None when every override names a key."""
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    key = arg[len("--config."):].split("=", 1)[0]
    node, path = config, "config"
    for part in key.split("."):
      if isinstance(node, (ml_collections.ConfigDict, dict)) and part in node:
        node, path = node[part], f"{path}.{part}"
        continue
      if not isinstance(node, (ml_collections.ConfigDict, dict)):
        return f"--config.{key}: {path} is a value ({type(node).__name__}), it has no key {part!r}"
      valid = sorted(node.keys())
      close = [f"{path}.{name}" for name in difflib.get_close_matches(part, valid, n=1)]
      # A key that exists elsewhere in the tree (`config.model.kwargs.pretrained` for `config.model.pretrained`).
      close = close or difflib.get_close_matches(f"config.{key}", _dotted_keys(config), n=1, cutoff=0.75)
      hint = f"did you mean --{close[0]}? " if close else ""
      return (f"unknown config key --config.{key}: {path} has no key {part!r} — {hint}valid keys of {path}: "
              f"{valid}")
  return None


def _flag_error_message(error: BaseException, argv) -> str:
  """One line for an error raised while parsing the command line."""
  text = str(error)
  config_path = _flag_value(argv, "config")
  if config_path and any(arg.startswith("--config.") for arg in argv):
    try:
      config = config_util.load_config(os.path.expanduser(config_path))
    except Exception:  # the config file itself is the problem: reported below
      config = None
    if config is not None:
      message = unknown_override(config, argv)
      if message:
        return message
  if "Error whilst parsing config file" in text or "Failed loading config file" in text:
    # ml_collections embeds the loader's traceback; its last line is the error itself.
    last = [line.strip() for line in text.splitlines() if line.strip()][-1]
    return f"cannot load --config={config_path}: {last} — see `python -m metriclearn.recipes` for the recipes"
  if isinstance(error, flags.IllegalFlagValueError) and "must have a value other than None" in text:
    missing = re.findall(r"--(\w+)", text)
    return (f"--{missing[0] if missing else 'config'} is required — python -m metriclearn.main "
            "--config=configs/glyphs.py --workdir=runs/glyphs (see --help)")
  return text


def help_text() -> str:
  """What `--help` prints: usage, the methods, the recipe families, the data cache, then the flags."""
  directory = recipes.default_directory()
  try:
    families = recipes.families(recipes.list_recipes(directory))
    family_line = ", ".join(f"{name} ({count})" for name, count in families.items())
  except NotADirectoryError:
    family_line = f"(no configs/ directory found at {directory})"
  shown = directory if os.path.relpath(directory).startswith("..") else os.path.relpath(directory)
  return f"""Train a metric-learning recipe and evaluate it on unseen classes.

usage: python -m metriclearn.main --config=configs/NAME.py[:ARG] --workdir=DIR [--config.KEY=VALUE ...]
  e.g. python -m metriclearn.main --config=configs/glyphs.py --workdir=runs/glyphs --config.num_steps=1000

methods (config.method.name): {", ".join(sorted(methods.METHODS))}
recipe families in {shown}/: {family_line}
  every recipe with its one-line description: python -m metriclearn.recipes
generated data (glyphs) is cached in {splits.default_cache_dir()} ($XDG_CACHE_HOME/metriclearn, else
  ~/.cache/metriclearn); real data sets and weights are never downloaded: pass --config.dataset.data_dir and
  --config.model.pretrained.
a run on a workdir with checkpoints resumes; Ctrl-C or SIGTERM saves a checkpoint at the current step first; a
  finished workdir prints its stored results. Errors are one line (--verbose or METRICLEARN_TRACEBACK=1: traceback).

flags:
{flags.FLAGS.module_help(__name__).strip().split(chr(10), 1)[-1]}
"""


def parse_flags(argv):
  """absl's flag parsing, with `--help` that exits 0 and parse errors in one line (`app.run(flags_parser=...)`)."""
  if any(arg in ("-h", "--help", "-?", "--helpshort") for arg in argv[1:]):
    print(help_text())
    sys.exit(0)
  config_path = _flag_value(argv[1:], "config")
  if config_path and not os.path.isfile(os.path.expanduser(config_path.rsplit(":", 1)[0] if ":" in os.path.basename(
      config_path) else config_path)):
    _exit_with_error(f"no recipe file {config_path!r} — `python -m metriclearn.recipes` lists the recipes")
  try:
    return flags.FLAGS(argv)
  except Exception as error:  # absl's flag errors, and what ml_collections raises for a bad --config.KEY
    if _traceback_requested():
      raise
    _exit_with_error(_flag_error_message(error, argv))


def run() -> None:
  app.run(main, flags_parser=parse_flags)


def config_with_overrides():
  """The recipe, then `--overrides` (if given), then the `--config.` flags again so that the command line wins."""
  config = _CONFIG.value
  if _OVERRIDES.value:
    config = search_space.apply_overrides(config, search_space.load_overrides(_OVERRIDES.value))
    config = search_space.apply_overrides(config, config_flags.get_override_values(flags.FLAGS["config"]))
  return config


if __name__ == "__main__":
  run()
