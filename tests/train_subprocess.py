"""The command line `metriclearn.main`, with two hooks for tests/test_train.py that run it in a subprocess.

  python tests/train_subprocess.py --config=configs/glyphs.py:smoke --workdir=DIR [--config.x=...]

Environment variables (both optional; neither changes what is computed):
  METRICLEARN_TEST_STEP_TIMES=PATH: write `{"num_devices": N, "step_times": [seconds, ...]}` as JSON. A step's time
    runs from handing its batch to the training loop until the loop asks for the next one (the loop blocks on each
    step's loss, so it is the whole step, including its logging, evaluation and checkpointing).
  METRICLEARN_TEST_SLOW_AFTER=STEP:SECONDS: sleep SECONDS before every step after STEP, so that a test can kill the
    run between two checkpoints at a known place instead of racing a fast run.
"""

from __future__ import annotations

import json
import os
import time

import jax
from absl import app

from metriclearn import main
from metriclearn.data import loader as loader_lib


def _instrument_loader(times_path: str | None, slow_after: str | None) -> None:
  """Wraps `Loader.iterate` to time the steps and/or sleep before the late ones."""
  after_step, pause = (int(slow_after.split(":")[0]), float(slow_after.split(":")[1])) if slow_after else (None, 0.0)
  original_iterate = loader_lib.Loader.iterate

  def iterate(self, start_step: int = 0, num_steps: int | None = None):
    times: list[float] = []
    step = start_step + 1  # batch index i feeds training step i + 1
    try:
      for batch in original_iterate(self, start_step, num_steps):
        if after_step is not None and step > after_step:
          time.sleep(pause)
        handed_out = time.perf_counter()
        yield batch  # resumes when the loop asks for the next batch, i.e. when this step is done
        times.append(time.perf_counter() - handed_out)
        step += 1
    finally:
      if times_path:
        with open(times_path, "w") as f:
          json.dump({"num_devices": jax.device_count(), "step_times": times}, f)

  loader_lib.Loader.iterate = iterate


if __name__ == "__main__":
  _instrument_loader(os.environ.get("METRICLEARN_TEST_STEP_TIMES"), os.environ.get("METRICLEARN_TEST_SLOW_AFTER"))
  app.run(main.main, flags_parser=main.parse_flags)
