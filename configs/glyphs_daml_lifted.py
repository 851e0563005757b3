r"""DAML (lifted: lifted structure J_m, eqs. 10–11) on glyphs: `configs/glyphs_daml.py:lifted`.

The recipe is explained in the docstring of configs/glyphs_daml.py.

  python -m metriclearn.main --config=configs/glyphs_daml_lifted.py --workdir=/tmp/glyphs_daml_lifted

Arguments (comma-separated): `code` (the released code's preset), `smoke` (seconds, for tests).
"""

from metriclearn import config_util


def get_config(arg: str | None = None):
  return config_util.sibling_config(__file__, "glyphs_daml.py", ",".join(["lifted", *([arg] if arg else [])]))
