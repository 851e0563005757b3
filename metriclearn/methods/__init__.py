"""Training methods: each builds its state additions and its jitted step (DESIGN §4).

A method is a class constructed as `Method(config, model, num_classes)` with
`init(rng, images) -> (params, batch_stats, method_state)` and
`train_step(state, batch, tx, phase) -> (state, metrics)`, a pure function that the training program jits once per
phase. Optional hooks (`phase`, `host_update`, `create_optimizer`, `make_sampler`) are listed in `train.py`.

A method that also provides `train_step_with_reference(state, batch, tx, phase, ref) -> (state, metrics, entries)`
takes a cross-batch memory (`metriclearn.memory`): with `config.memory.size > 0`, `create_method` wraps it in
`memory.CrossBatchMemory`.
"""

from __future__ import annotations

from metriclearn import memory
from metriclearn import registry
from metriclearn.methods.aml import AML
from metriclearn.methods.apfs import APFS
from metriclearn.methods.baseline import Baseline
from metriclearn.methods.daml import DAML
from metriclearn.methods.metrix import Metrix

METHODS = {
    "aml": AML,
    "apfs": APFS,
    "baseline": Baseline,
    "daml": DAML,
    "metrix": Metrix,
}

# The methods whose step takes a cross-batch memory's reference columns.
MEMORY_METHODS = tuple(sorted(name for name, cls in METHODS.items() if hasattr(cls, "train_step_with_reference")))


def create_method(config, model, num_classes: int):
  """The method named by `config.method.name`, built for `model` and a training set of `num_classes` classes, with a
  cross-batch memory when `config.memory.size > 0`."""
  method_cls = registry.lookup(METHODS, config.method.name, "method")
  memory_size = int(config.memory.get("size", 0)) if config.get("memory") is not None else 0
  if memory_size < 0:
    raise ValueError(f"config.memory.size must be ≥ 0 (0 = no memory), got {memory_size}")
  use_memory = memory_size > 0
  if use_memory and config.method.name not in MEMORY_METHODS:
    raise ValueError(f"a cross-batch memory (config.memory.size > 0) works with the methods {list(MEMORY_METHODS)}, "
                     f"not {config.method.name!r}; set config.memory.size=0 to train {config.method.name!r}")
  method = method_cls(config, model, num_classes)
  return memory.CrossBatchMemory(method, config, model.embedding_dim) if use_memory else method
