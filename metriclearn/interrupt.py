"""Ctrl-C (SIGINT) and SIGTERM during training: finish the current step, save a checkpoint there, stop.

`train.train_and_evaluate` installs `StopRequests` around its step loop. The first signal only sets a flag; at the end
of the step the loop saves a checkpoint of that step (orbax, waited for) and raises `Interrupted`, which the command
line turns into one line and exit status 128 + signal (130 for Ctrl-C, 143 for SIGTERM). Rerunning the same command
resumes from that checkpoint and reproduces the uninterrupted run (batches and randomness are functions of the step).
A second signal gets the previous handler back: Ctrl-C twice stops at once, as before, losing the steps since the
last checkpoint.

Multi-host: a signal may reach one process only (Ctrl-C on host 0) or all of them at slightly different steps
(SIGTERM from a scheduler); checkpoints are collective, so every step the processes share their flags
(`process_allgather`, one small collective) and all stop at the same step.
"""

from __future__ import annotations

import signal
import sys
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
  """Training stopped by a signal after saving a checkpoint at `step` (a KeyboardInterrupt, so `except Exception`
  does not swallow it)."""

  def __init__(self, step: int, signum: int, checkpoint_dir: str):
    self.step, self.signum, self.checkpoint_dir = step, signum, checkpoint_dir
    super().__init__(f"interrupted ({signal.Signals(signum).name}) at step {step}; checkpoint saved in "
                     f"{checkpoint_dir}; rerun the same command to resume")

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


class StopRequests:
  """While installed, SIGINT and SIGTERM ask the training loop to stop at the end of its step.

  Handlers can only be installed from the main thread; elsewhere (a loop run from a worker thread) nothing is
  installed and signals keep their usual effect.
  """

  def __init__(self):
    self.signum = 0
    self._previous: dict[int, object] = {}

  def install(self) -> None:
    if threading.current_thread() is not threading.main_thread():
      return
    for signum in SIGNALS:
      self._previous[signum] = signal.signal(signum, self._handle)

  def restore(self) -> None:
    """Puts the previous handlers back (idempotent)."""
    while self._previous:
      signum, handler = self._previous.popitem()
      signal.signal(signum, handler)

  def _handle(self, signum, frame) -> None:
    del frame
    self.signum = signum
    self.restore()  # a second signal acts as it did before: stop at once
    sys.stderr.write(f"\n{signal.Signals(signum).name}: saving a checkpoint at the end of this step, then stopping "
                     "(send it again to stop at once, without saving)\n")

  def requested(self) -> int:
    """The signal that asked to stop (0: none). Multi-process: any process's, so all stop at the same step."""
    if jax.process_count() == 1:
      return self.signum
    return int(np.max(multihost_utils.process_allgather(np.int32(self.signum))))
