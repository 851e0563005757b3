r"""DAML (npair: N-pair J_m, eq. 12) on glyphs: `configs/glyphs_daml.py:npair`.

The recipe is explained in the docstring of configs/glyphs_daml.py.

  python -m metriclearn.main --config=configs/glyphs_daml_npair.py --workdir=/tmp/glyphs_daml_npair

Arguments (comma-separated): `code` (the released code's preset), `smoke` (seconds, for tests).
"""

import importlib.util
import os


def get_config(arg: str | None = None):
  path = os.path.join(os.path.dirname(__file__), "glyphs_daml.py")
  spec = importlib.util.spec_from_file_location("glyphs_daml", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(",".join(["npair", *([arg] if arg else [])]))
