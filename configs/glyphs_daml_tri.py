r"""DAML (tri: triplet J_m, eq. 9) on glyphs: `configs/glyphs_daml.py:tri`.

The recipe is explained in the docstring of configs/glyphs_daml.py.

  python -m metriclearn.main --config=configs/glyphs_daml_tri.py --workdir=/tmp/glyphs_daml_tri

Arguments (comma-separated): `code` (the released code's preset), `smoke` (seconds, for tests).
"""

from metriclearn import config_util


def get_config(arg: str | None = None):
  return config_util.sibling_config(__file__, "glyphs_daml.py", ",".join(["tri", *([arg] if arg else [])]))
