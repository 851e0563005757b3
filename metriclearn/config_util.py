"""Loading one recipe from another: `configs/` holds plain files, not a package (as ml_collections' config_flags
reads them), so a recipe that extends a sibling loads it by path. One helper here keeps that in one place."""

from __future__ import annotations

import importlib.util
import os

import ml_collections


def sibling_module(this_file: str, name: str):
  """The recipe file `name` (e.g. "photos.py") in the directory of `this_file`, as a module (its tables, helpers)."""
  path = os.path.join(os.path.dirname(os.path.abspath(this_file)), name)
  spec = importlib.util.spec_from_file_location(f"metriclearn_recipe_{name.removesuffix('.py')}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the recipe file at `path`, as `--config=path:arg` loads it; `path` may carry the
  argument itself (`"configs/glyphs_daml.py:tri,smoke"`)."""
  if arg is None and ":" in os.path.basename(path):
    path, _, arg = path.rpartition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no recipe file {path}")
  return sibling_config(path, os.path.basename(path), arg or None)


def sibling_config(this_file: str, name: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the recipe `name` (e.g. "glyphs.py") in the directory of `this_file`."""
  return sibling_module(this_file, name).get_config(arg)


# The two regimes a glyph method recipe can build on (recipe argument `finetune`): the quick from-scratch default and
# the paper-like fine-tuning regime in which methods are compared (`benchmarks/methods.py`).
GLYPH_REGIMES = {"scratch": "glyphs.py", "finetune": "glyphs_finetune.py"}


def glyph_base_config(this_file: str, parts) -> ml_collections.ConfigDict:
  """The baseline a glyph method recipe extends: `configs/glyphs_finetune.py` (a pre-trained backbone fine-tuned,
  checkpoint selected on a class-disjoint validation fold) when `"finetune"` is among the recipe's `parts`, else
  `configs/glyphs.py` (from scratch, 600 steps); `"smoke"` among them shrinks either to seconds."""
  name = GLYPH_REGIMES["finetune" if "finetune" in parts else "scratch"]
  return sibling_config(this_file, name, "smoke" if "smoke" in parts else None)
