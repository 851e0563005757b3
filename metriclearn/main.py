r"""Command line: `python -m metriclearn.main --config=configs/glyphs.py --workdir=/tmp/run [--config.key=value ...]`.

Parses flags and calls `train.train_and_evaluate(config, workdir)`; nothing else (as the flax examples).
"""

from __future__ import annotations

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from metriclearn import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training recipe: configs/<name>.py[:arg].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, plots and results.json; "
                               "a run on a non-empty workdir resumes from its latest checkpoint.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO; --verbosity=0 shows it
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
