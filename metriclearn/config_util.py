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
