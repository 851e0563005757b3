"""Training methods: each builds its state additions and its jitted step (DESIGN §4).

A method is a class constructed as `Method(config, model, num_classes)` with
`init(rng, images) -> (params, batch_stats, method_state)` and
`train_step(state, batch, tx, phase) -> (state, metrics)`, a pure function that the training program jits once per
phase. Optional hooks (`phase`, `host_update`, `create_optimizer`, `make_sampler`) are listed in `train.py`.
"""

from __future__ import annotations

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


def create_method(config, model, num_classes: int):
  """The method named by `config.method.name`, built for `model` and a training set of `num_classes` classes."""
  method_cls = registry.lookup(METHODS, config.method.name, "method")
  return method_cls(config, model, num_classes)
