"""The baseline method: a registered loss (DESIGN §3) on the embeddings of the batch, one optax update per step.

With a cross-batch memory (`metriclearn.memory`), the loss also takes the memory's entries as reference columns.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import optax

from metriclearn import losses
from metriclearn import memory
from metriclearn import registry
from metriclearn.state import TrainState, model_params


def apply_model(model: nn.Module, params: Any, batch_stats: Any, images: jax.Array, *, train: bool, **kwargs):
  """Runs `model` on `images`; in training returns `(output, new_batch_stats)`, else the output alone."""
  variables = {"params": model_params(params), "batch_stats": batch_stats}
  if not train:
    return model.apply(variables, images, train=False, **kwargs)
  output, updates = model.apply(variables, images, train=True, mutable=["batch_stats"], **kwargs)
  return output, updates.get("batch_stats", batch_stats)


def init_loss_params(loss_name: str, rng: jax.Array, num_classes: int, embedding_dim: int,
                     loss_kwargs: dict[str, Any]) -> dict[str, jax.Array] | None:
  """The arrays loss `loss_name` owns (`losses.LOSS_PARAMS`), for `params["loss"]`; None if it owns none (no init,
  or an init that returns no array for these `loss_kwargs`, e.g. a margin loss with a fixed β)."""
  init = losses.LOSS_PARAMS.get(loss_name)
  arrays = {} if init is None else dict(init(rng, num_classes, embedding_dim, **loss_kwargs))
  return arrays or None


def apply_gradients(state: TrainState, grads: Any, tx: optax.GradientTransformation, **changes) -> TrainState:
  """One optax update of `state.params`; `changes` replace other fields (batch_stats, method_state)."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state, **changes)


class Baseline:
  """Any registered loss on the batch embeddings: `config.loss = {name, kwargs}`. A loss that owns arrays
  (`losses.LOSS_PARAMS`: proxies, class weights, centres) has them under `params["loss"]`, passed to it by name."""

  def __init__(self, config, model: nn.Module, num_classes: int):
    self.model = model
    self.num_classes = num_classes
    self.loss_name = config.loss.name
    loss_fn = registry.lookup(losses.LOSSES, self.loss_name, "loss")
    self.loss_kwargs = dict(config.loss.get("kwargs", {}))
    registry.check_kwargs(loss_fn, self.loss_kwargs, f"loss {self.loss_name!r}")
    fn_kwargs = dict(self.loss_kwargs)
    if config.method.name == "baseline" and config.sampler.name == "m_per_class":
      # An m-per-class batch holds exactly B / m classes of m: B / m (anchor, positive) slots hold every N-pair, and
      # every anchor has m − 1 positives, so both losses are unchanged on smaller matrices (and the triplet loss
      # needs no sort).
      m = int(config.sampler.kwargs.m)
      if self.loss_name == "npair":
        fn_kwargs.setdefault("max_pairs", int(config.batch_size) // m)
      elif self.loss_name == "triplet":
        fn_kwargs.setdefault("max_positives", m - 1)
    self.loss_fn = functools.partial(loss_fn, **fn_kwargs)

  def init(self, rng: jax.Array, images: jax.Array):
    """`(params, batch_stats, method_state)` for a model that sees batches like `images`."""
    model_rng, proxy_rng = jax.random.split(rng)
    variables = self.model.init(model_rng, images, train=False)
    params = dict(variables["params"])
    loss_params = init_loss_params(self.loss_name, proxy_rng, self.num_classes, self.model.embedding_dim,
                                   self.loss_kwargs)
    if loss_params is not None:
      params["loss"] = loss_params
    return params, variables.get("batch_stats", {}), {}

  def loss_with_own_arrays(self, params, embeddings: jax.Array, labels: jax.Array,
                           ref: memory.Reference | None = None) -> jax.Array:
    """The loss with its arrays `params["loss"]` passed by name (the `losses.LOSS_PARAMS` convention)."""
    if ref is not None:
      raise ValueError("a cross-batch memory cannot be combined with a loss that owns arrays under params['loss'] "
                       f"({sorted(params['loss'])}); set config.memory.size=0")
    return self.loss_fn(embeddings, labels, **params["loss"])

  def loss(self, params, batch_stats, batch, rng, ref: memory.Reference | None = None):
    """The loss of one batch (with `ref`: and the memory's columns) and `(new BatchNorm statistics, embeddings)`."""
    del rng  # the baseline is deterministic given the batch
    embeddings, batch_stats = apply_model(self.model, params, batch_stats, batch["image"], train=True)
    if "loss" in params:  # the loss's own arrays, by name (the `LOSS_PARAMS` convention)
      value = self.loss_with_own_arrays(params, embeddings, batch["label"], ref)
    else:
      value = memory.pair_loss(self.loss_name, self.loss_kwargs, embeddings, batch["label"], ref)
    return value, (batch_stats, embeddings)

  def train_step_with_reference(self, state: TrainState, batch: dict[str, jax.Array],
                                tx: optax.GradientTransformation, phase: str, ref: memory.Reference | None):
    """`train_step` with the memory's `ref` as extra loss columns; also returns the entries to enqueue (the batch)."""
    del phase  # one phase
    rng = jax.random.fold_in(state.rng, state.step)
    (loss, (batch_stats, embeddings)), grads = jax.value_and_grad(self.loss, has_aux=True)(
        state.params, state.batch_stats, batch, rng, ref)
    state = apply_gradients(state, grads, tx, batch_stats=batch_stats)
    return state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}, (embeddings, batch["label"])

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], tx: optax.GradientTransformation,
                 phase: str = "train"):
    state, metrics, _ = self.train_step_with_reference(state, batch, tx, phase, None)
    return state, metrics
