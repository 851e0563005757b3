r"""Cross-batch memory on the embedded default: `configs/glyphs.py` (small CNN, multi-similarity, m-per-class M=4)
with a memory of the last 1,024 embeddings (8 batches of 128) from step 100 on.

  python -m metriclearn.main --config=configs/glyphs_xbm.py --workdir=/tmp/glyphs_xbm

`:smoke` shrinks the run to seconds for tests (a memory of 64 = 2 batches of 32 from step 1, so it wraps around).
Everything else is the baseline's, so `configs/glyphs.py` with the same seed is the comparison. The memory composes
with Metrix and APFS (`--config.method.name=metrix` with their kwargs, or `config.memory` added to their recipes);
`--config.memory.size=0` turns it off. Method: `metriclearn.memory` (Wang et al. 2020; the paper's code starts
the memory after 1,000 iterations, here 100 of 600 steps, when the embedding has settled).
"""

import ml_collections

from metriclearn import config_util


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "", "smoke"):
    raise ValueError(f"unknown config argument {arg!r}; valid: 'smoke' or none")
  config = config_util.sibling_config(__file__, "glyphs.py", arg or None)
  config.name = "glyphs_xbm"
  smoke = arg == "smoke"
  config.memory = dict(size=64 if smoke else 1024, warmup_steps=1 if smoke else 100)
  return config
