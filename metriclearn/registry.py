"""Name lookup for the component registries (`LOSSES`, `METHODS`, `MODELS`, `DATASETS`, `SAMPLERS`).

Registries are plain dicts from a name to a constructor (DESIGN §4). Configs name components as `{name, kwargs}`;
these two helpers turn a misspelt name or keyword into an error that lists what is valid, before any compute.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def lookup(registry: Mapping[str, T], name: str, kind: str) -> T:
  """Returns `registry[name]`, or raises a ValueError that lists the valid names.

  Args:
    registry: a dict from component name to constructor.
    name: the requested name.
    kind: what the registry holds, for the message ("dataset", "loss", "sampler" ...).
  """
  try:
    return registry[name]
  except (KeyError, TypeError):
    valid = ", ".join(repr(key) for key in sorted(registry))
    raise ValueError(f"unknown {kind} {name!r}; valid {kind} names are: {valid}") from None


def check_kwargs(fn: Callable[..., Any], kwargs: Mapping[str, Any], kind: str) -> None:
  """Raises a ValueError naming the accepted keywords if `fn` does not accept every key of `kwargs`.

  A plain `TypeError: unexpected keyword argument` would say the same but not what the valid keys are.
  """
  parameters = inspect.signature(fn).parameters.values()
  if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
    return
  accepted = [p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"]
  unknown = sorted(set(kwargs) - set(accepted))
  if unknown:
    raise ValueError(
        f"unknown keyword(s) {', '.join(map(repr, unknown))} for {kind}; accepted: {', '.join(map(repr, accepted))}"
    )
