"""Cross-batch memory (XBM; Wang, Zhang, Huang & Scott, CVPR 2020, "Cross-Batch Memory for Embedding Learning").

A pair loss sees only the pairs of its batch. XBM keeps the embeddings and labels of the last S examples in a FIFO
queue and adds them as extra candidate columns of the loss matrices (DESIGN §2): the current batch's embeddings are
the anchors (rows, with gradients), the queue entries are references (columns, constants), so each anchor meets
positives and negatives from many past batches at the cost of one [B, S] block. It works because embeddings drift
slowly once training has settled ("slow drift"), so recent past embeddings stand in for current ones.

The pieces here are pure and jittable:

* the queue: a ring buffer pytree `{"embeddings": f32[S, D], "labels": i32[S], "count": i32[], "pointer": i32[]}`
  (`init`), written with the newest entries by `enqueue` (stop-gradient; the oldest are overwritten);
* `reference(queue, step, warmup_steps=…)`: what a loss call needs, a `Reference` of the entries with a `valid`
  mask that is all False during the warm-up and for slots never written;
* `with_reference` appends the reference columns to any `(s, y, valid)` and `pair_loss` is a registered loss on
  `[batch; memory]` columns: the shared helper through which Baseline, Metrix (clean loss) and APFS take a memory;
* `CrossBatchMemory` wraps such a method: it adds the queue to `method_state["memory"]` in `init`, hands the
  method the step's `Reference`, and enqueues the entries the method returns after the step.
  `methods.create_method` applies it when `config.memory.size > 0`.

Choices of the paper and its code (github.com/msight-tech/research-xbm) that we follow: a FIFO queue of the
embeddings and labels of past mini-batches, detached; stored as the network produced them in the training step
(training mode, before that step's update); used as reference columns of the same pair loss, with weight 1 (the
code's `XBM.WEIGHT = 1.0`); a warm-up without memory at the start of training ("start memory after 1k iterations";
the code's `START_ITERATION`, 1000 in its sample config): the memory enters the loss at step index
`warmup_steps` (0-based), i.e. after `warmup_steps` steps without it; the size S is a setting (55,000 for SOP in the
code's sample config, close to the training set).

Departure (from the code): there the current batch is enqueued *before* the loss and the loss is
L(batch, batch) + w·L(batch, memory ∋ batch), self-pairs dropped by a `similarity < 1 − 1e-5` filter. Here it is one
loss over the columns [batch; memory of the earlier steps] and the batch is enqueued *after* it (DESIGN §2's reference
columns): every pair counts once, the batch columns keep their gradient, no
similarity-threshold filter is needed, and one reduction (e.g. multi-similarity's per-anchor log-sum-exp) spans all
candidates. For losses that sum over pairs the two differ only in the code counting the batch's pairs twice.
Departure: the queue is a true ring modulo S. The code writes a batch that does not fit to the last B slots and
resets its pointer to 0, overwriting some entries early when B does not divide S; the two agree when it does.
Our design: the queue is written from the first step and only masked during the warm-up (the code starts writing
at the end of the warm-up, from empty), so at its first use it already holds the last S/B batches, as fresh as in
any later step. Under data parallelism the queue is replicated and holds *global*-batch entries (the step is one
`jax.jit` over the global batch, DESIGN §7), so a run does not depend on the device count.
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from metriclearn import distances
from metriclearn import labels as labels_lib
from metriclearn import losses

# Losses with a reference-column form: those whose embedding form takes `ref_embeddings` (not proxy anchor, whose
# anchors are the proxies, nor N-pair, whose one-positive-per-class cross-entropy has no extra columns). A loss with
# arrays of its own under `params["loss"]` (e.g. a learned β) is refused by the method at its first step.
SUPPORTED_LOSSES = tuple(name for name, fn in losses.LOSSES.items()
                         if "ref_embeddings" in inspect.signature(fn).parameters)


class Reference(NamedTuple):
  """The memory as a loss call sees it: `S` candidate columns and which of them exist.

  Attributes:
    embeddings: `f32[S, D]`, constants (no gradient flows into the memory).
    labels: `i32[S]`.
    valid: `bool[S]`; False for slots never written and for every slot during the warm-up.
  """

  embeddings: jax.Array
  labels: jax.Array
  valid: jax.Array


# ----------------------------------------------------------------------------------------------------------------
# The queue.


def init(size: int, embedding_dim: int) -> dict[str, jax.Array]:
  """An empty queue of `size` slots for `embedding_dim`-dimensional embeddings."""
  if size < 1 or embedding_dim < 1:
    raise ValueError(f"a memory needs size ≥ 1 and embedding_dim ≥ 1, got {size} and {embedding_dim}")
  return {
      "embeddings": jnp.zeros((size, embedding_dim), jnp.float32),
      "labels": jnp.full((size,), -1, jnp.int32),
      "count": jnp.zeros((), jnp.int32),  # slots written so far (≤ size); they are slots [0, count)
      "pointer": jnp.zeros((), jnp.int32),  # the slot the next entry goes to (the oldest entry once full)
  }


def enqueue(queue: dict[str, jax.Array], embeddings: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
  """The queue after writing `E` new entries, in order, over the `E` oldest (slots pointer, pointer+1, … mod S).

  Args:
    queue: from `init` or a previous `enqueue`.
    embeddings: `f[E, D]` (stored as float32, without gradient); labels: `i[E]`. E ≤ S.
  """
  size, dim = queue["embeddings"].shape
  num_new = embeddings.shape[0]
  if embeddings.ndim != 2 or embeddings.shape[1] != dim or labels.shape != (num_new,):
    raise ValueError(f"enqueue expects embeddings [E, {dim}] and labels [E], got {embeddings.shape} and {labels.shape}")
  if num_new > size:
    raise ValueError(f"cannot enqueue {num_new} entries into a memory of {size} slots: make the memory at least as "
                     "large as the number of entries written per step (the global batch)")
  slots = (queue["pointer"] + jnp.arange(num_new)) % size
  return {
      "embeddings": queue["embeddings"].at[slots].set(jax.lax.stop_gradient(embeddings).astype(jnp.float32)),
      "labels": queue["labels"].at[slots].set(labels.astype(jnp.int32)),
      "count": jnp.minimum(queue["count"] + num_new, size),
      "pointer": (queue["pointer"] + num_new) % size,
  }


def reference(queue: dict[str, jax.Array], step: jax.Array, *, warmup_steps: int = 0) -> Reference:
  """The queue's entries as reference columns for the step with index `step` (0-based, `TrainState.step`).

  Slots never written are invalid, and all are before step `warmup_steps` (the memory enters the loss at the step
  with index `warmup_steps`).
  """
  size = queue["labels"].shape[0]
  valid = (jnp.arange(size) < queue["count"]) & (step >= warmup_steps)
  return Reference(embeddings=jax.lax.stop_gradient(queue["embeddings"]), labels=queue["labels"], valid=valid)


# ----------------------------------------------------------------------------------------------------------------
# Reference columns in the losses.


def with_reference(s: jax.Array, y: jax.Array, valid: jax.Array, anchors: jax.Array, anchor_labels: jax.Array,
                   ref: Reference, *, metric: str, normalize: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`(s, y, valid)` of the anchors against their candidates, followed by the `S` reference columns.

  Args:
    s, y, valid: `f[A, C]` matrices of the anchors (rows) against their own candidates.
    anchors: `f[A, D]` the row embeddings; anchor_labels: `i[A]`.
    ref: the memory's `Reference`; its invalid slots get `valid = 0` in every row.
    metric: the metric of `s` (one of `distances.METRICS`); normalize: L2-normalise anchors and references first.

  Returns:
    `f32[A, C + S]` each.
  """
  ref_embeddings = ref.embeddings
  if normalize:
    anchors, ref_embeddings = distances.l2_normalize(anchors), distances.l2_normalize(ref_embeddings)
  ref_s = distances.pairwise(anchors, ref_embeddings, metric=metric)
  ref_y = labels_lib.pair_labels(anchor_labels, ref.labels.astype(anchor_labels.dtype))
  ref_valid = jnp.broadcast_to(ref.valid.astype(jnp.float32)[None, :], ref_y.shape)
  return (jnp.concatenate([s, ref_s], axis=1), jnp.concatenate([y.astype(jnp.float32), ref_y], axis=1),
          jnp.concatenate([valid.astype(jnp.float32), ref_valid], axis=1))


def pair_loss(loss_name: str, loss_kwargs: dict[str, Any], embeddings: jax.Array, labels: jax.Array,
              ref: Reference | None = None) -> jax.Array:
  """The registered loss `loss_name` over the pairs of the batch and, with `ref`, the memory's columns.

  Without `ref` this is `losses.LOSSES[loss_name](embeddings, labels, **loss_kwargs)`. With it, the candidates are
  `[batch; memory]` (the loss's `ref_embeddings` form) and the memory's invalid slots are masked out, so during the
  warm-up the value equals the batch loss.
  """
  if ref is None:
    return losses.LOSSES[loss_name](embeddings, labels, **loss_kwargs)
  if loss_name not in SUPPORTED_LOSSES:
    raise ValueError(f"a cross-batch memory works with the losses {list(SUPPORTED_LOSSES)}, got {loss_name!r}")
  metric, normalize, matrix_kwargs = losses.matrix_form(loss_name, loss_kwargs)
  s, y, valid = losses.batch_matrices(embeddings, labels, metric=metric, normalize=normalize)
  s, y, valid = with_reference(s, y, valid, embeddings, labels, ref, metric=metric, normalize=normalize)
  return losses.MATRIX_LOSSES[loss_name](s, y, valid, **matrix_kwargs)


# ----------------------------------------------------------------------------------------------------------------
# The wrapper around a method.


class CrossBatchMemory:
  """A method with a cross-batch memory of `config.memory.size` entries after `config.memory.warmup_steps` steps.

  The wrapped method provides `train_step_with_reference(state, batch, tx, phase, ref) -> (state, metrics,
  (embeddings, labels))`: its step with the memory's `Reference` as extra loss columns, and the entries to enqueue
  (Baseline and Metrix: the clean batch; APFS: the batch rows its anchors pair with). Every other attribute
  (the optional hooks `phase`, `host_update`, `make_sampler`, `create_optimizer`, `embed`) is the method's.
  """

  def __init__(self, method, config, embedding_dim: int):
    size, warmup_steps = int(config.memory.get("size", 0)), int(config.memory.get("warmup_steps", 0))
    if size < int(config.batch_size):
      raise ValueError(f"config.memory.size ({size}) must be at least config.batch_size ({config.batch_size}): "
                       "each step writes its global batch into the memory")
    if warmup_steps < 0:
      raise ValueError(f"config.memory.warmup_steps must be ≥ 0, got {warmup_steps}")
    if config.loss.name not in SUPPORTED_LOSSES:
      reason = (" (its anchors are the learned proxies, one per class, which already span every class: a memory of "
                "past embeddings has no use there)" if config.loss.name in losses.CLASS_ROW_LOSSES else "")
      raise ValueError(f"a cross-batch memory (config.memory.size > 0) needs a pair loss with reference columns, "
                       f"one of {list(SUPPORTED_LOSSES)}; got config.loss.name={config.loss.name!r}{reason}. "
                       "Set config.memory.size=0 to train without it.")
    self.method = method
    self.size, self.warmup_steps, self.embedding_dim = size, warmup_steps, int(embedding_dim)

  def __getattr__(self, name: str):
    if name == "method":  # not yet set (during unpickling): avoid recursing into ourselves
      raise AttributeError(name)
    return getattr(self.method, name)

  def init(self, rng: jax.Array, images: jax.Array):
    """The method's `(params, batch_stats, method_state)` with an empty queue under `method_state["memory"]`."""
    params, batch_stats, method_state = self.method.init(rng, images)
    return params, batch_stats, {**method_state, "memory": init(self.size, self.embedding_dim)}

  def train_step(self, state, batch: dict[str, jax.Array], tx: optax.GradientTransformation, phase: str = "train"):
    """The method's step with the memory as reference columns, then the step's entries enqueued."""
    queue = state.method_state["memory"]
    ref = reference(queue, state.step, warmup_steps=self.warmup_steps)
    state, metrics, (embeddings, labels) = self.method.train_step_with_reference(state, batch, tx, phase, ref)
    queue = enqueue(queue, embeddings, labels)
    metrics = {**metrics, "memory_columns": jnp.sum(ref.valid.astype(jnp.float32))}
    return state.replace(method_state={**state.method_state, "memory": queue}), metrics


__all__ = ["SUPPORTED_LOSSES", "CrossBatchMemory", "Reference", "enqueue", "init", "pair_loss",
           "reference", "with_reference"]
