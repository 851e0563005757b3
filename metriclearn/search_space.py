r"""Search spaces in recipes (`config.sweep`) and config overrides (`best.json`); `metriclearn.sweep` runs them.

A recipe declares what a hyper-parameter search varies in a `config.sweep` section, built by `sweep_config`:

  config.sweep = search_space.sweep_config(
      shared="learning_rate,loss",   # the common spaces of `SHARED`, resolved from the recipe's own loss
      space={"method.kwargs.mix_lambda": "uniform(0.1, 0.9)"},   # the recipe's own dimensions
  )

* `space` mirrors the config tree, so that ConfigDict keys (which cannot hold dots) stay overridable: the entry for
  `method.kwargs.mix_lambda` is `config.sweep.space.method.kwargs.mix_lambda`, and
  `--config.sweep.space.optimizer.learning_rate="loguniform(1e-4, 1e-3)"` replaces a range on the command line.
  `sweep_config` takes the readable flat form with dotted paths. A value is a distribution:
  `uniform(lo, hi)`, `loguniform(lo, hi)`, `int(lo, hi)`, `logint(lo, hi)`, `uniform(lo, hi, step=s)`,
  `int(lo, hi, step=s)`, `choice(a, b, ...)`, or `fixed` (not searched: drops a shared or inherited dimension).
  A path must exist in the config, except a new key in a `kwargs` dict (the component checks its own keywords).
* `shared` names entries of `SHARED`, comma-separated: `learning_rate` (`optimizer.learning_rate`), `loss` (the
  margins and scales of the recipe's loss, `LOSS_SPACES[config.loss.name]`). They are resolved when the sweep starts,
  so a recipe that inherits this section and changes its loss searches its own loss's keys, and every recipe searches
  a shared key over the same range. An entry of `space` with the same path replaces the shared one.
* `num_folds`: the train classes are cut into this many class-disjoint folds (4 in Musgrave et al. 2020, "A Metric
  Learning Reality Check"); `folds`: how many of them (the first) each trial trains and validates on, fewer for CPU
  budgets; the objective is the mean validation MAP@R over them.
* `sampler`, `pruner`: Optuna's, written like a distribution: `tpe(n_startup_trials=8)`, `random()`;
  `median(n_startup_trials=4, n_warmup_steps=0)`, `percentile(percentile=25.0)`, `threshold(lower=0.1)`,
  `hyperband()`, `successive_halving()`, `none()`. `seed` seeds the sampler (per trial: see `metriclearn.sweep`).

Overrides (`best.json`, `--overrides=FILE` of `metriclearn.main`) are a flat JSON object of dotted config paths,
`{"optimizer.learning_rate": 0.0012, "loss.kwargs.beta": 41.3}`, applied by `apply_overrides`.

This module imports no Optuna: recipes and `metriclearn.main` load it; `suggest` only calls the trial it is given.
"""

from __future__ import annotations

import ast
import copy
import json
import math
from collections.abc import Mapping
from typing import Any

import ml_collections

# Common spaces, so that every recipe searches a shared key the same way. Ranges follow the Reality Check's search
# (Musgrave et al. 2020, supplementary), narrowed to what trains at all on the embedded recipes.
LEARNING_RATE = {"optimizer.learning_rate": "loguniform(1e-4, 1e-2)"}
LOSS_SPACES = {
    "multi_similarity": {"loss.kwargs.alpha": "loguniform(0.5, 50.0)", "loss.kwargs.beta": "loguniform(5.0, 100.0)",
                         "loss.kwargs.base": "uniform(0.0, 1.0)"},
    "contrastive": {"loss.kwargs.pos_margin": "uniform(0.0, 0.5)", "loss.kwargs.neg_margin": "uniform(0.3, 1.5)"},
    "triplet": {"loss.kwargs.margin": "uniform(0.01, 0.5)"},
    "lifted_structure": {"loss.kwargs.pos_margin": "uniform(0.0, 0.5)", "loss.kwargs.neg_margin": "uniform(0.2, 1.5)"},
    "generalized_lifted_structure": {"loss.kwargs.pos_margin": "uniform(0.0, 0.5)",
                                     "loss.kwargs.neg_margin": "uniform(0.2, 1.5)"},
    "proxy_anchor": {"loss.kwargs.margin": "uniform(0.0, 0.5)", "loss.kwargs.alpha": "loguniform(4.0, 64.0)"},
    "npair": {},  # no hyper-parameter
    # The Reality Check's other losses (issue 19): ranges around PML's defaults, each loss's margins / scales /
    # temperatures (not the paper's exact ranges; its supplementary lists them per loss).
    "ntxent": {"loss.kwargs.temperature": "loguniform(0.01, 1.0)"},
    "supcon": {"loss.kwargs.temperature": "loguniform(0.01, 1.0)"},
    "margin": {"loss.kwargs.margin": "uniform(0.0, 0.5)", "loss.kwargs.beta": "uniform(0.5, 1.5)"},
    "fastap": {"loss.kwargs.num_bins": "int(5, 50)"},
    "snr_contrastive": {"loss.kwargs.pos_margin": "uniform(0.0, 0.5)", "loss.kwargs.neg_margin": "uniform(0.3, 1.5)",
                        "loss.kwargs.regularizer_weight": "loguniform(1e-3, 1.0)"},
    "circle": {"loss.kwargs.m": "uniform(0.1, 0.5)", "loss.kwargs.gamma": "loguniform(16.0, 256.0)"},
    "proxy_nca": {"loss.kwargs.softmax_scale": "loguniform(1.0, 64.0)"},
    "normalized_softmax": {"loss.kwargs.temperature": "loguniform(0.01, 1.0)"},
    "cosface": {"loss.kwargs.margin": "uniform(0.1, 0.5)", "loss.kwargs.scale": "loguniform(16.0, 128.0)"},
    "arcface": {"loss.kwargs.margin": "uniform(10.0, 60.0)", "loss.kwargs.scale": "loguniform(16.0, 128.0)"},
    "soft_triple": {"loss.kwargs.la": "loguniform(1.0, 50.0)", "loss.kwargs.gamma": "loguniform(0.01, 0.2)",
                    "loss.kwargs.margin": "uniform(0.0, 0.1)"},
}
SHARED = ("learning_rate", "loss")
DISTRIBUTIONS = ("uniform", "loguniform", "int", "logint", "choice", "fixed")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "percentile", "threshold", "hyperband", "successive_halving", "none")


def sweep_config(*, shared: str = "learning_rate,loss", space: Mapping[str, str] | None = None, num_folds: int = 4,
                 folds: int = 4, sampler: str = "tpe(n_startup_trials=8)",
                 pruner: str = "median(n_startup_trials=4, n_warmup_steps=0)", seed: int = 0) -> dict:
  """A recipe's `config.sweep` section (see the module docstring); `space` in the flat form with dotted paths."""
  return dict(shared=shared, space=nest(space or {}), num_folds=num_folds, folds=folds, sampler=sampler,
              pruner=pruner, seed=seed)


def nest(flat: Mapping[str, Any]) -> dict:
  """`{"a.b": 1}` -> `{"a": {"b": 1}}`."""
  tree: dict = {}
  for path, value in flat.items():
    *parents, leaf = path.split(".")
    node = tree
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return tree


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """`{"a": {"b": 1}}` -> `{"a.b": 1}` (ConfigDicts and dicts alike)."""
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, (Mapping, ml_collections.ConfigDict)):
      flat.update(flatten(value, path + "."))
    else:
      flat[path] = value
  return flat


def parse_call(spec: str, valid: tuple[str, ...], what: str) -> tuple[str, list, dict]:
  """`"name(1, 2, step=3)"` -> `("name", [1, 2], {"step": 3})`; literal arguments only."""
  try:
    node = ast.parse(spec.strip(), mode="eval").body
    if isinstance(node, ast.Name):  # a bare name: `fixed`, `tpe`
      node = ast.Call(func=node, args=[], keywords=[])
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
      raise ValueError
    args = [ast.literal_eval(arg) for arg in node.args]
    kwargs = {keyword.arg: ast.literal_eval(keyword.value) for keyword in node.keywords}
  except (SyntaxError, ValueError):
    raise ValueError(f"cannot read the {what} {spec!r}: write name(arguments) with literal arguments, e.g. "
                     f"{'loguniform(1e-4, 1e-2)' if what == 'distribution' else valid[0] + '()'}; valid names: "
                     f"{list(valid)}") from None
  if node.func.id not in valid:
    raise ValueError(f"unknown {what} {node.func.id!r} in {spec!r}; valid: {list(valid)}")
  return node.func.id, args, kwargs


def _check_distribution(path: str, spec: str) -> None:
  name, args, kwargs = parse_call(spec, DISTRIBUTIONS, "distribution")
  where = f"config.sweep.space.{path} = {spec!r}"
  if name == "fixed":
    if args or kwargs:
      raise ValueError(f"{where}: `fixed` takes no arguments")
  elif name == "choice":
    if not args or kwargs:
      raise ValueError(f"{where}: choice(a, b, ...) needs at least one value and no keywords")
  else:
    if len(args) != 2 or set(kwargs) - {"step"} or not all(isinstance(a, (int, float)) for a in args):
      raise ValueError(f"{where}: {name}(lo, hi) takes two numbers (and `step=` for uniform and int)")
    lo, hi = args
    if not lo <= hi:
      raise ValueError(f"{where}: the low end {lo} exceeds the high end {hi}")
    if name in ("loguniform", "logint") and lo <= 0:
      raise ValueError(f"{where}: a log scale needs a positive low end, got {lo}")
    if name in ("int", "logint") and not all(float(a).is_integer() for a in args):
      raise ValueError(f"{where}: int ranges take whole numbers")


def resolve(config: ml_collections.ConfigDict) -> dict[str, str]:
  """The searched dimensions of `config`: `{dotted path: distribution}`, shared spaces first, `fixed` ones dropped.

  Raises:
    ValueError: a malformed section, an unknown shared space or distribution, or a path the config lacks.
  """
  if "sweep" not in config:
    raise ValueError(f"config {config.get('name')!r} has no `sweep` section; add one to the recipe with "
                     "`config.sweep = search_space.sweep_config()` (metriclearn/search_space.py explains the format)")
  sweep = config.sweep
  dims: dict[str, str] = {}
  for name in [part.strip() for part in str(sweep.shared).split(",") if part.strip()]:
    if name == "learning_rate":
      dims.update(LEARNING_RATE)
    elif name == "loss":
      if config.loss.name not in LOSS_SPACES:
        raise ValueError(f"no shared space for loss {config.loss.name!r} (known: {sorted(LOSS_SPACES)}); declare its "
                         "keys in config.sweep.space, or drop `loss` from config.sweep.shared")
      dims.update(LOSS_SPACES[config.loss.name])
    else:
      raise ValueError(f"unknown shared space {name!r} in config.sweep.shared={sweep.shared!r}; valid: {list(SHARED)}")
  dims.update(flatten(sweep.space))
  for path, spec in dims.items():
    if not isinstance(spec, str):
      raise ValueError(f"config.sweep.space.{path} must be a string such as 'uniform(0, 1)', got {spec!r}")
    _check_distribution(path, spec)
    _check_path(config, path, "config.sweep.space")
  if int(sweep.num_folds) < 2 or not 1 <= int(sweep.folds) <= int(sweep.num_folds):
    raise ValueError(f"config.sweep needs num_folds >= 2 and 1 <= folds <= num_folds, got num_folds="
                     f"{sweep.num_folds}, folds={sweep.folds}")
  parse_call(sweep.sampler, SAMPLERS, "sampler")
  parse_call(sweep.pruner, PRUNERS, "pruner")
  return {path: spec for path, spec in dims.items() if spec.strip() != "fixed"}


def suggest(trial, dims: Mapping[str, str]) -> dict[str, Any]:
  """The trial's overrides: one `trial.suggest_*` per dimension, the dotted path as Optuna's parameter name."""
  values = {}
  for path, spec in dims.items():
    name, args, kwargs = parse_call(spec, DISTRIBUTIONS, "distribution")
    if name == "choice":
      values[path] = trial.suggest_categorical(path, args)
    elif name in ("int", "logint"):
      values[path] = trial.suggest_int(path, int(args[0]), int(args[1]), log=name == "logint", **kwargs)
    else:
      values[path] = trial.suggest_float(path, float(args[0]), float(args[1]), log=name == "loguniform", **kwargs)
  return values


def _check_path(config: ml_collections.ConfigDict, path: str, where: str, *, section_ok: bool = False) -> None:
  """A path must name a config leaf (or a section, where `section_ok`), or a new key of a `kwargs` dict."""
  *parents, leaf = path.split(".")
  node = config
  for i, key in enumerate(parents):
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
      raise ValueError(f"{where}: {path!r} is not in the config (no {'.'.join(parents[: i + 1])!r}); valid keys "
                       f"there: {sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []}")
    node = node[key]
  if not isinstance(node, ml_collections.ConfigDict):
    raise ValueError(f"{where}: {path!r} is not in the config ({'.'.join(parents)!r} is not a section)")
  if leaf not in node and parents[-1:] != ["kwargs"]:
    raise ValueError(f"{where}: the config has no {path!r}; valid keys there: {sorted(node.keys())}")
  if leaf in node and isinstance(node[leaf], ml_collections.ConfigDict) and not section_ok:
    raise ValueError(f"{where}: {path!r} is a section, not a value")


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with `{dotted path: value}` set (a new key only inside a `kwargs` dict); references such as
  `optimizer.decay_steps = get_ref("num_steps")` follow, as they do for `--config.` flags.

  Raises:
    ValueError: a path the config lacks, or a value of the wrong type.
  """
  config = copy.deepcopy(config)  # a deep copy keeps the copy's field references linked among themselves
  for path, value in overrides.items():
    _check_path(config, path, "override", section_ok=isinstance(value, (Mapping, ml_collections.ConfigDict)))
  try:
    with config.unlocked():
      config.update_from_flattened_dict(dict(overrides))
  except TypeError as error:
    raise ValueError(f"an override has the wrong type for its config key: {error}") from None
  return config


def load_overrides(path: str) -> dict[str, Any]:
  """The flat `{dotted path: value}` object in the JSON file `path` (e.g. a sweep's `best.json`)."""
  try:
    with open(path) as f:
      overrides = json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f"no overrides file {path}; a sweep writes WORKDIR/best.json when a trial completed "
                            "(python -m metriclearn.sweep --config=... --workdir=WORKDIR)") from None
  except json.JSONDecodeError as error:
    raise ValueError(f"{path} is not JSON: {error}") from None
  if not isinstance(overrides, dict) or not all(isinstance(key, str) for key in overrides):
    raise ValueError(f"{path} must hold one JSON object of dotted config paths, e.g. "
                     '{"optimizer.learning_rate": 0.001}')
  bad = [key for key, value in overrides.items() if isinstance(value, float) and not math.isfinite(value)]
  if bad:
    raise ValueError(f"{path}: non-finite value(s) for {bad}")
  return overrides
