r"""Metrix on the embedded default: `configs/glyphs.py` (small CNN, multi-similarity, m-per-class M=4) + mixup.

  python -m metriclearn.main --config=configs/glyphs_metrix.py --workdir=/tmp/glyphs_metrix
  python -m metriclearn.main --config=configs/glyphs_metrix.py:input --workdir=/tmp/glyphs_metrix_input

Arguments (combinable with commas, e.g. `:feature,smoke`): `input`, `feature`, `embed` choose the mixing space
(default: `embed`, the space that did best on glyphs, see benchmarks/RESULTS.md "Metrix"); `smoke` shrinks the run
to seconds for tests. Everything else is the baseline's, so `configs/glyphs.py` with the same seed is the comparison;
`eval.utilization` is on (c.8: logged at every evaluation and written to results.json).
Method options (`--config.method.kwargs.<key>=`): see `metriclearn.methods.metrix.MetrixOptions`.
"""

import importlib.util
import os

import ml_collections

SPACES = ("input", "feature", "embed")
DEFAULT_SPACE = "embed"


def _baseline_config(arg: str | None) -> ml_collections.ConfigDict:
  # configs/ is not a package: load the sibling baseline recipe by path, so the two can never drift apart.
  spec = importlib.util.spec_from_file_location("glyphs_baseline", os.path.join(os.path.dirname(__file__), "glyphs.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  parts = [part for part in (arg or "").split(",") if part]
  unknown = [part for part in parts if part not in SPACES + ("smoke",)]
  spaces = [part for part in parts if part in SPACES]
  if unknown or len(spaces) > 1:
    raise ValueError(f"unknown config argument {arg!r}; valid: at most one of {list(SPACES)}, and/or 'smoke' "
                     "(comma-separated)")
  config = _baseline_config("smoke" if "smoke" in parts else None)
  space = spaces[0] if spaces else DEFAULT_SPACE
  config.name = f"glyphs_metrix_{space}"
  # Every option is present (None-valued ones as typed placeholders), so each can be set with
  # --config.method.kwargs.<key>=...; the values are MetrixOptions' defaults (the official code's).
  placeholder = ml_collections.config_dict.placeholder
  config.method = dict(name="metrix", kwargs=dict(
      space=space, mixup_weight=0.4, beta_alpha=2.0, branches="coin", positive_negative_probability=0.5,
      fallback_to_other_branch=True, first_positive_only=placeholder(bool), max_positives=placeholder(int),
      negatives_per_anchor="1" if space == "input" else "all", pool_before_mixing=placeholder(bool)))
  config.eval.utilization = True
  return config
