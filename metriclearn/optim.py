"""Optimisers as optax chains: per-module learning rates, frozen-backbone warm-up, clipping, coupled L2, schedules.

`create_optimizer(config, params)` reads a config (`default_config()` lists every key) and returns one
`optax.GradientTransformation` for the whole parameter tree. Parameters are selected by their path, the tree keys
joined by "/" (e.g. `backbone/conv0_0/kernel`, `head/out/bias` for `variables["params"]` of an `Embedder`). A pattern
is a regular expression matched at the *start* of the path (`re.match`): `"head"` selects everything under `head/`,
`".*bias$"` every bias.

The chain, in the order the reference PyTorch code applies the same operations:

    clip by value → (clip by global norm) → coupled L2 (+ wd·θ)
      → per group: [moments → decoupled decay → × multiplier] → × −lr(step)

* Coupled L2 is torch's `Adam(weight_decay=…)` / `SGD(weight_decay=…)`: the decay enters the gradient before the
  moments (the Metrix code's optimiser; `papers/metrix.md` (h)). `name="adamw"` is decoupled, as `torch.optim.AdamW`.
* Warm-up (`frozen_warmup_steps > 0`): for the first steps only parameters matching `trainable_during_warmup` are
  updated. The others are wrapped in `optax.transforms.conditionally_mask`, so during warm-up their update is exactly
  zero *and* their optimiser state (Adam moments and step count) stays at its initial value; their Adam bias correction
  then starts when they start training, as torch's per-parameter state does for parameters that had no gradient.
* The learning-rate schedule is applied once, outside the per-group transforms, so it counts global steps even for
  groups held back by the warm-up. This is why the chain is built from optax's pieces instead of `optax.adam`.
* A learning-rate multiplier scales the whole update of its group (decoupled weight decay included), as a torch
  parameter group with `lr = multiplier · lr` does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
import optax

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "step", "cosine")

# A `weight_decay_exclude` value that leaves out every bias and every normalisation scale/shift (flax names BatchNorm
# and LayerNorm parameters `scale` and `bias`).
BIAS_AND_NORM_PATTERN = r".*(^|/)(bias|scale)$"

_DEFAULTS: dict[str, Any] = {
    "name": "adam",
    "learning_rate": 1e-4,
    "b1": 0.9,
    "b2": 0.999,
    "eps": 1e-8,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "coupled_weight_decay": True,
    "weight_decay_exclude": "",
    "clip_value": 0.0,
    "clip_global_norm": 0.0,
    "schedule": "constant",
    "decay_steps": 0,
    "boundaries": (),
    "gamma": 0.1,
    "warmup_cosine_steps": 0,
    "lr_multipliers": (),
    "loss_lr_multiplier": 1.0,
    "frozen_warmup_steps": 0,
    "trainable_during_warmup": "head",
    "frozen": "",
}


def default_config() -> ml_collections.ConfigDict:
  """Every optimizer config key with its default.

  Keys:
    name: "adam" | "adamw" | "sgd".
    learning_rate: base learning rate (the schedule's peak).
    b1, b2, eps: Adam's moment decays and denominator epsilon (torch defaults).
    momentum: SGD momentum (torch semantics: buf = momentum·buf + g; 0 = plain SGD).
    weight_decay: L2 / decay coefficient (0 = off).
    coupled_weight_decay: for "adam" and "sgd": add `weight_decay·θ` to the gradient before the moments (torch's
      `weight_decay`); False: decoupled, as AdamW. "adamw" is always decoupled.
    weight_decay_exclude: pattern of parameters without weight decay ("" = none; see `BIAS_AND_NORM_PATTERN`).
    clip_value: clip each gradient entry to [−v, v] (torch `clip_grad_value_`); 0 = off.
    clip_global_norm: rescale the gradient to at most this global norm (torch `clip_grad_norm_`); 0 = off.
    schedule: "constant" | "step" | "cosine".
    decay_steps: "step": the period of torch's StepLR (lr·gamma^⌊t/decay_steps⌋), used when `boundaries` is empty;
      "cosine": the schedule's total length including its linear warm-up (optax's convention).
    boundaries: "step": steps at which the lr is multiplied by `gamma` (torch's MultiStepLR).
    gamma: "step": decay factor.
    warmup_cosine_steps: "cosine": steps of linear warm-up from 0 to `learning_rate`.
    lr_multipliers: ((pattern, multiplier), ...) pairs or a {pattern: multiplier} dict; the first matching pattern
      wins, unmatched parameters get 1 (or `loss_lr_multiplier`). (Pairs, because ConfigDict keys cannot contain
      the dots of a regex.)
    loss_lr_multiplier: multiplier of a loss's own arrays (`params["loss"]`: proxies, class weights, SoftTriple
      centres, margin's β) when no `lr_multipliers` pattern matches them. Proxy losses are known to need ~100×
      the backbone's rate (the Proxy-Anchor code, the Reality Check's settings). No effect without such arrays.
    frozen_warmup_steps: steps during which only `trainable_during_warmup` parameters are updated.
    trainable_during_warmup: pattern of the parameters trained during the warm-up.
    frozen: pattern of parameters never updated ("" = none).
  """
  return ml_collections.ConfigDict(dict(_DEFAULTS))


def _resolve(config: Mapping[str, Any] | ml_collections.ConfigDict | None) -> dict[str, Any]:
  """Defaults overlaid with `config`; unknown keys are an error."""
  given = {} if config is None else dict(config.items())
  unknown = sorted(set(given) - set(_DEFAULTS))
  if unknown:
    raise ValueError(f"unknown optimizer config key(s) {unknown}; valid keys: {sorted(_DEFAULTS)}")
  resolved = dict(_DEFAULTS)
  resolved.update({key: value for key, value in given.items() if value is not None})
  multipliers = resolved["lr_multipliers"]
  pairs = list(multipliers.items()) if hasattr(multipliers, "items") else list(multipliers)
  if not all(isinstance(pair, (tuple, list)) and len(pair) == 2 for pair in pairs):
    raise ValueError(f"lr_multipliers must be (pattern, multiplier) pairs or a dict, got {multipliers!r}")
  resolved["lr_multipliers"] = [(str(pattern), float(value)) for pattern, value in pairs]
  return resolved


def _compile(pattern: str, what: str) -> re.Pattern[str]:
  try:
    return re.compile(pattern)
  except re.error as error:
    raise ValueError(f"{what} pattern {pattern!r} is not a valid regular expression: {error}") from None


def param_paths(params: Any) -> Any:
  """A tree like `params` whose leaves are the leaves' paths, keys joined by "/" (e.g. `head/out/kernel`)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: jax.tree_util.keystr(path, simple=True, separator="/"), params)


def path_mask(params: Any, pattern: str, what: str = "parameter") -> Any:
  """A tree of bools like `params`: True where the leaf's path matches `pattern` (`re.match`, anchored at the start).

  Raises:
    ValueError: the pattern is not a regular expression, or it matches no parameter (most likely a typo); the
      message lists the top-level names.
  """
  compiled = _compile(pattern, what)
  mask = jax.tree.map(lambda path: compiled.match(path) is not None, param_paths(params))
  if not any(jax.tree.leaves(mask)):
    top = sorted({path.split("/")[0] for path in jax.tree.leaves(param_paths(params))})
    raise ValueError(f"{what} pattern {pattern!r} matches no parameter path; top-level names: {top} "
                     "(patterns are regular expressions matched at the start of paths like 'head/out/kernel')")
  return mask


def _path_mask_fn(pattern: str) -> Callable[[Any], Any]:
  """`path_mask` as a function of the tree it is given, for transforms inside `optax.multi_transform`.

  Those see the parameter tree with other groups' leaves replaced by empty `MaskedNode`s, so a mask computed in
  advance would not match their structure; the paths of the remaining leaves are unchanged.
  """
  compiled = re.compile(pattern)
  return lambda tree: jax.tree.map(lambda path: compiled.match(path) is not None, param_paths(tree))


def create_schedule(config: Mapping[str, Any] | ml_collections.ConfigDict | None) -> optax.Schedule:
  """The learning-rate schedule `step -> lr` of an optimizer config (see `default_config`)."""
  config = _resolve(config)
  learning_rate, name = float(config["learning_rate"]), config["schedule"]
  if name == "constant":
    return optax.constant_schedule(learning_rate)
  if name == "step":
    boundaries = [int(b) for b in config["boundaries"]]
    if boundaries:
      if any(b <= 0 for b in boundaries) or sorted(set(boundaries)) != boundaries:
        raise ValueError(f"boundaries must be strictly increasing positive steps, got {boundaries}")
      return optax.piecewise_constant_schedule(learning_rate, {b: float(config["gamma"]) for b in boundaries})
    if int(config["decay_steps"]) <= 0:
      raise ValueError("schedule 'step' needs `boundaries` (steps) or `decay_steps` (a period > 0)")
    return optax.exponential_decay(learning_rate, transition_steps=int(config["decay_steps"]),
                                   decay_rate=float(config["gamma"]), staircase=True)
  if name == "cosine":
    decay_steps, warmup_steps = int(config["decay_steps"]), int(config["warmup_cosine_steps"])
    if decay_steps <= warmup_steps:
      raise ValueError(f"schedule 'cosine' needs decay_steps (total length, {decay_steps}) > warmup_cosine_steps "
                       f"({warmup_steps}); set decay_steps to the number of training steps")
    if warmup_steps == 0:
      return optax.cosine_decay_schedule(learning_rate, decay_steps)
    return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps, decay_steps)
  raise ValueError(f"unknown learning-rate schedule {name!r}; valid: {', '.join(SCHEDULES)}")


def param_labels(config: Mapping[str, Any] | ml_collections.ConfigDict | None, params: Any) -> Any:
  """The optimiser group of each parameter: `"frozen"` or `"<when>*<multiplier>"`.

  `<when>` is `"always"` or `"after_warmup"` (held back during the frozen warm-up).
  """
  config = _resolve(config)
  paths = param_paths(params)
  for pattern, _ in config["lr_multipliers"]:  # each pattern must select something
    path_mask(params, pattern, "lr_multipliers")
  compiled = [(_compile(pattern, "lr_multipliers"), value) for pattern, value in config["lr_multipliers"]]
  frozen = path_mask(params, config["frozen"], "frozen") if config["frozen"] else jax.tree.map(lambda _: False, paths)
  if int(config["frozen_warmup_steps"]) > 0:
    held_back = jax.tree.map(lambda m: not m,
                             path_mask(params, config["trainable_during_warmup"], "trainable_during_warmup"))
  else:
    held_back = jax.tree.map(lambda _: False, paths)

  def label(path: str, is_frozen: bool, is_held_back: bool) -> str:
    if is_frozen:
      return "frozen"
    default = float(config["loss_lr_multiplier"]) if path.split("/")[0] == "loss" else 1.0
    multiplier = next((value for pattern, value in compiled if pattern.match(path)), default)
    return f"{'after_warmup' if is_held_back else 'always'}*{multiplier!r}"

  return jax.tree.map(label, paths, frozen, held_back)


def _moments(config: dict[str, Any]) -> optax.GradientTransformation:
  """The optimiser's per-parameter direction, before decoupled decay and the learning rate."""
  name = config["name"]
  if name in ("adam", "adamw"):
    return optax.scale_by_adam(b1=config["b1"], b2=config["b2"], eps=config["eps"])
  if name == "sgd":
    # optax.trace is torch's momentum buffer (buf = momentum·buf + g, dampening 0).
    return optax.trace(decay=config["momentum"]) if config["momentum"] else optax.identity()
  raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


def create_optimizer(config: Mapping[str, Any] | ml_collections.ConfigDict | None,
                     params: Any) -> optax.GradientTransformation:
  """One optax transformation for the whole parameter tree, from an optimizer config (see `default_config`).

  Args:
    config: an `ml_collections.ConfigDict` or dict; missing keys take the defaults, unknown keys raise.
    params: the parameter tree the optimizer will update (used to assign groups by path and to check that every
      pattern selects something). Its `init` and `update` need a tree of the same structure.

  Returns:
    An `optax.GradientTransformation`; call `update(grads, state, params)` (params are required for weight decay).

  Raises:
    ValueError: unknown key, optimizer or schedule name; a pattern that is not a regular expression or matches no
      parameter; an incomplete schedule.
  """
  config = _resolve(config)
  if config["name"] not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {config['name']!r}; valid: {', '.join(OPTIMIZERS)}")
  schedule = create_schedule(config)
  labels = param_labels(config, params)
  warmup_steps = int(config["frozen_warmup_steps"])
  weight_decay = float(config["weight_decay"])
  coupled = config["coupled_weight_decay"] and config["name"] != "adamw"
  exclude = config["weight_decay_exclude"]
  if exclude:
    path_mask(params, exclude, "weight_decay_exclude")  # validates the pattern
    excluded = _path_mask_fn(exclude)
    decay_mask = lambda tree: jax.tree.map(lambda e: not e, excluded(tree))
  else:
    decay_mask = None

  def after_warmup(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    # Zero updates and an untouched inner state (moments, count) while step < warmup_steps.
    return optax.transforms.conditionally_mask(inner, lambda step: step >= warmup_steps)

  def group(label: str) -> optax.GradientTransformation:
    if label == "frozen":
      return optax.set_to_zero()
    when, multiplier = label.split("*")
    parts = [_moments(config)]
    if weight_decay and not coupled:
      parts.append(optax.add_decayed_weights(weight_decay, mask=decay_mask))
    if float(multiplier) != 1.0:
      parts.append(optax.scale(float(multiplier)))
    inner = optax.chain(*parts)
    return after_warmup(inner) if when == "after_warmup" else inner

  chain = []
  if config["clip_value"]:
    chain.append(optax.clip(float(config["clip_value"])))
  if config["clip_global_norm"]:
    # Leaves without an update must not count in the norm, as torch's clip_grad_norm_ sees no gradient for them.
    chain.append(optax.multi_transform(
        {label: (optax.set_to_zero() if label == "frozen" else
                 after_warmup(optax.identity()) if label.startswith("after_warmup") else optax.identity())
         for label in sorted(set(jax.tree.leaves(labels)))}, labels))
    chain.append(optax.clip_by_global_norm(float(config["clip_global_norm"])))
  if weight_decay and coupled:
    chain.append(optax.add_decayed_weights(weight_decay, mask=decay_mask))
  chain.append(optax.multi_transform({label: group(label) for label in sorted(set(jax.tree.leaves(labels)))}, labels))
  chain.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*chain)
