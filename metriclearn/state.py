"""The train state: one pytree that a checkpoint saves and a jitted step maps to the next (DESIGN §6)."""

from __future__ import annotations

from typing import Any

import flax
import jax


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes.

  Attributes:
    step: `i32[]` number of steps taken.
    params: trainable parameters: the model's (`backbone`, `head`, …) and, under `loss`, a loss's own (proxies).
    batch_stats: BatchNorm running statistics (empty dict for models without BatchNorm).
    opt_state: the optax state of `params`.
    rng: the run's base PRNG key; a step uses `fold_in(rng, step)`, so any step can be replayed.
    method_state: what a method carries between steps (APFS representatives, a cross-batch memory, …).
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  method_state: Any


def model_params(params: Any) -> Any:
  """The model's part of `params` (everything but a loss's own parameters under `loss`)."""
  return {key: value for key, value in params.items() if key != "loss"}
