"""Checkpoints of the train state with orbax: every N steps and at the end, automatic resume (DESIGN §6, §9)."""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """An orbax `CheckpointManager` over `workdir/checkpoints` for one train-state pytree.

  Saves are asynchronous; `close()` waits for the last one. A save interrupted by SIGKILL leaves a temporary
  directory that `latest_step()` ignores, so a resumed run starts from the previous complete checkpoint.

  Multi-host: every process calls `save` and `restore` (orbax writes each process's shards and synchronises the
  processes), so the directory must be one that every host reaches at the same path.
  """

  def __init__(self, workdir: str, *, max_to_keep: int | None = 2):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    # Orbax names its cross-process barriers by step; two managers saving the same step at once (the latest and the
    # best checkpoint) would meet at one barrier and time out, so each prefixes its barriers with its directory.
    multiprocessing = ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=self.directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=True,
                                             multiprocessing_options=multiprocessing),
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any) -> None:
    self.manager.save(step, args=ocp.args.StandardSave(state))

  def restore(self, step: int, like: Any) -> Any:
    """The state saved at `step`, with the structure, shapes and shardings of `like`.

    Raises:
      ValueError: the checkpoint holds a different state (another model, loss or method).
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
      return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except (ValueError, KeyError, TypeError) as error:
      raise ValueError(
          f"the checkpoint at step {step} in {self.directory} is from another model (its parameters do not match "
          f"this config's): {error}\nUse a new --workdir for this config, or delete that directory to start over."
      ) from None

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
