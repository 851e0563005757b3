"""APFS: deep metric learning with alternating projections onto feasible sets (Can, Gürbüz & Alatan, ICIP 2021).

The paper body is unread (`papers/apfs.md`, status note): what follows implements the spec's reading, tagged as there —
[L] the authors' dormant PROFS code path, [F] their follow-up (CCP) code, [I] our reconstruction.

Idea (spec (c)). The feasible set Θ* of the proximity constraints is the intersection of relaxed sets Θ_R, one per
representative set R (one sample per class): Θ_R = {θ : d(x_i, r_{y_i}) ≤ α_in ∀i; d(x_i, r_c) ≥ β_out ∀i, c ≠ y_i}.
Alternating projections θ_{k+1} = P_{Θ_{R_k}}(θ_k) are taken in penalty form [I]

    θ_{k+1} ≈ argmin_θ Σ_i ℓ_{R_k}(θ; x_i) + (λ/2)‖θ − θ_k‖²,

by T stochastic-gradient steps from θ_k ("stage" k = steps [kT, (k+1)T)). The three parts:

* **Batches** (`metriclearn.data.apfs_sampler.APFSSampler`, [L]): P classes × M slots, the first P slots hold the
  stage's representatives, then M−1 ordinary samples per class; the batch size stays P·M ("no additional cost").
* **Restricted loss** ℓ_{R_k} (`representative_pair_loss`, reading (A) [L]): any registered pair loss evaluated
  only on (sample, representative) pairs through its `valid` matrix; samples are the anchors by default
  (`anchors="representatives"` is [L]'s `proxy_anchor=True`). Contrastive then sees P(M−1) positive and
  P(M−1)(P−1) negative pairs. `pair_restriction="full"` is reading (B), the base loss on every pair of the batch,
  kept as an ablation only.
* **Proximal term** (`proximal_regularizer`, [F] `DistanceRegularizer`): an optax transform chained *before* the
  optimiser adds λ(θ − θ_anchor), the gradient of (λ/2)‖θ − θ_anchor‖² (coupled, not decoupled). θ_anchor lives in
  `method_state["anchor_params"]` and reaches the transform as an optax *extra argument* at update time
  (`tx.update(grads, opt_state, params, proximal_anchor=…, proximal_weight=…)`), so the optimiser state holds no copy
  of the weights and a stage boundary is a plain replacement in the train state. θ_anchor ← θ at the first step of
  every stage, inside the jitted step (a `where` on `step % T == 0`); λ = 0 in stage 0, then `proximal_weight`.
  The transform covers trainable model parameters and leaves out BatchNorm scale/shift and any loss parameters.
* **Hard class mining** ([V] idea, our rule [I]; `class_selection="hard"`): once per stage, the C representatives
  are embedded in inference mode in one batched pass (the evaluation embedding), and each batch is a seed class plus
  its P−1 nearest classes by representative distance (`apfs_sampler.mine_class_neighbors`). The plan `i32[C, P−1]`
  is stored in `method_state["class_plan"]` (so a checkpoint holds it) and handed to the sampler in `host_update`.

Unverified (spec (e), (g); the recommendations of (h), all configurable through `APFSOptions`): T defaults to the
steps per epoch ⌊N / batch_size⌋; λ = 2e-4 [F] with λ = 0 in stage 0 [F]; the explicit coupled proximal gradient [F];
θ_anchor = the weights at the stage boundary (PROFS-like fixed T, not CCP's best-on-validation); the mining rule.

Measured on glyphs (seed 0, 600 steps, `configs/glyphs_apfs.py` against `configs/glyphs.py`; issue 16): APFS trails
its baseline by ≈ 0.06 R@1. The measured cause is the pair count: with P × M = 32 × 4 the restricted loss sees
96 sample anchors × (1 positive + 31 negative representatives) per step, the baseline 128 anchors × (3 + 124) pairs,
4–5× more; the gap halves at twice the steps. The proximal term is inert at λ = 2e-4: λ(θ − θ_anchor) is about 1e-4
of the loss gradient, so `proximal_weight` is exposed for sweeps
(the framework's workable range [1e-5, 1e-1], [F]) rather than trusted at its [F] default.

Departure: the class plan of stage k is mined in `host_update` of the *last step of stage k−1*, i.e. with the
weights one step before the boundary, so that the loader (which prefetches batches in a thread, and which the
training program reads before calling `host_update`) can build the first batch of stage k without waiting for a step
that has not been taken. Stage 0 is never mined (its representatives would be embedded by the untrained network).
Departure: BatchNorm scale/shift are left out of the proximal term (as the framework's weight decay leaves out BN
variables; [F]'s `DistanceRegularizer` left out only proxies): `proximal_include_batchnorm=True` restores that.
Note: a run resumed in the middle of a mined stage hands the restored plan to the sampler in `host_update` of its
first step, so the training loop must call `host_update(step)` before it takes the batch of `step` from the loader;
otherwise the loader raises a TimeoutError after `plan_wait_timeout_s`. Fresh runs and `class_selection="random"` work
with either order.
Note: [L]'s multi-similarity forces samples as anchors; here `anchors` applies to every loss.
Cross-batch memory (`metriclearn.memory`; our design [I]): the queue holds past embeddings of what the anchors are
paired with in the restricted loss, and they are extra columns of every anchor row: with samples as anchors, the
representatives, so a sample also meets the representatives of classes outside its batch (Θ_R constrains all C
classes, a batch holds P); with representatives as anchors, the samples; under `pair_restriction="full"`, the whole
batch (plain XBM).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from metriclearn import data
from metriclearn import distances
from metriclearn import labels as labels_lib
from metriclearn import losses
from metriclearn import memory
from metriclearn import optim
from metriclearn import registry
from metriclearn.data.apfs_sampler import CLASS_SELECTIONS, APFSSampler, mine_class_neighbors
from metriclearn.methods.baseline import Baseline, apply_model
from metriclearn.state import TrainState

PAIR_RESTRICTIONS = ("restricted", "full")
ANCHORS = ("samples", "representatives")
# Pair losses; losses with their own arrays (proxy anchor, the classification losses) compare with those instead.
SUPPORTED_LOSSES = tuple(name for name in losses.MATRIX_LOSSES if name not in losses.CLASS_ROW_LOSSES)


@dataclasses.dataclass(frozen=True)
class APFSOptions:
  """`config.method.kwargs` of APFS. The batch shape P × M comes from `config.sampler` (m_per_class, `m` = M).

  Attributes:
    representative_lifetime: T, steps per representative set (stage). None (recipes: an unset int placeholder,
      `--config.method.kwargs.representative_lifetime=50` sets it): ⌊N / batch_size⌋, the steps per epoch, so stage
      ends align with epoch ends as in [L] (unverified; sweep {25, 50, 100, 250}).
    class_selection: "hard" (mining [I]) or "random" (the m-per-class class stream, [L]).
    pair_restriction: "restricted" ((sample, representative) pairs, [L]) or "full" (every pair; ablation).
    anchors: "samples" (rows are the P(M−1) samples, [F] default) or "representatives" (rows are the P
      representatives).
    representative_pairs: with `anchors="representatives"`, also the (representative, representative) pairs
      ([L]'s `use_intra_proxy_pairs`).
    proximal_weight: λ of (λ/2)‖θ − θ_anchor‖² from stage 1 on (stage 0: 0) [F]; 0 turns the term off. At the
      [F] value 2e-4 the term is ~1e-4 of the loss gradient on glyphs (inert); [F]'s workable range is [1e-5, 1e-1].
    proximal_include_batchnorm: also pull BatchNorm scale/shift towards the anchor.
    proximal_exclude: regular expression (matched at the start of paths like `head/out/kernel`) of further
      parameters without the proximal term ("" = none).
    augment_representatives: representatives get the train augmentation (False: test-time preprocessing, [L]).
    plan_wait_timeout_s: how long the loader's thread waits for a stage's class plan before raising; the wait can
      span the steps, evaluations and checkpoints the training loop runs meanwhile.
  """

  representative_lifetime: int | None = None
  class_selection: str = "hard"
  pair_restriction: str = "restricted"
  anchors: str = "samples"
  representative_pairs: bool = False
  proximal_weight: float = 2e-4
  proximal_include_batchnorm: bool = False
  proximal_exclude: str = ""
  augment_representatives: bool = False
  plan_wait_timeout_s: float = 1800.0


# ----------------------------------------------------------------------------------------------------------------
# The restricted loss (reading (A), [L] `GenericPairBasedLoss` with `use_ref_samples=True`).


def representative_pair_matrices(
    embeddings: jax.Array, labels: jax.Array, num_representatives: int, *, anchors: str = "samples",
    representative_pairs: bool = False, metric: str = "euclidean", normalize: bool = True,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`(s, y, valid)` of the APFS restricted loss for a batch whose first P rows are the representatives.

  Rows are the anchors; columns are `[anchors; the rest of the batch]` (the anchors first, as the lifted-structure
  matrix form expects). `valid` keeps only (sample, representative) pairs: with samples as anchors, the
  representative columns; with representatives as anchors, the sample columns (and, with `representative_pairs`,
  the other representatives). Distances come from the batch's own `[B, B]` matrix, whose self form gives exactly 0
  (and a zero gradient) when a representative duplicates one of its class's samples.

  Args:
    embeddings: `f[B, D]`, rows `[:P]` the representatives; labels: `i[B]`.
    num_representatives: P.
    anchors: "samples" or "representatives".
    representative_pairs: include (representative, representative) pairs (representatives as anchors only).
    metric: one of `distances.METRICS`; normalize: L2-normalise the rows first.

  Returns:
    `f32[A, B]` each, A = B − P (samples as anchors) or P.
  """
  batch, num_reps = embeddings.shape[0], num_representatives
  if not 0 < num_reps < batch:
    raise ValueError(f"num_representatives must lie in 1..{batch - 1} for a batch of {batch}, got {num_reps}")
  if anchors not in ANCHORS:
    raise ValueError(f"unknown anchors {anchors!r}; valid: {list(ANCHORS)}")
  if representative_pairs and anchors != "representatives":
    raise ValueError("representative_pairs needs anchors='representatives' (the pairs have a representative row)")
  if normalize:
    embeddings = distances.l2_normalize(embeddings)
  s, y = distances.pairwise(embeddings, metric=metric), labels_lib.pair_labels(labels)
  index = np.arange(batch)
  is_rep = index < num_reps
  if anchors == "samples":
    rows, columns = index[num_reps:], np.concatenate([index[num_reps:], index[:num_reps]])
    valid = np.broadcast_to(is_rep[columns], (len(rows), batch))
  else:
    rows, columns = index[:num_reps], index
    valid = ~is_rep[None, :] | (representative_pairs & (rows[:, None] != columns[None, :]))
    valid = np.broadcast_to(valid, (len(rows), batch))
  take = (rows[:, None], columns[None, :])
  return s[take], y[take], jnp.asarray(valid, jnp.float32)


def representative_pair_loss(
    loss_name: str, embeddings: jax.Array, labels: jax.Array, num_representatives: int, *,
    pair_restriction: str = "restricted", anchors: str = "samples", representative_pairs: bool = False,
    ref: memory.Reference | None = None, **loss_kwargs,
) -> jax.Array:
  """ℓ_{R_k} of one batch: the registered loss `loss_name` on (sample, representative) pairs only ([L], reading (A)).

  `pair_restriction="full"` is reading (B), the registered loss on every pair of the batch (an ablation).
  `loss_kwargs` are the embedding form's keywords (`config.loss.kwargs`): `squared` and `normalize` choose the
  matrix, the rest go to `losses.<loss>_from_matrix`. `ref` (a cross-batch memory's entries) adds reference
  columns to every anchor row.

  Returns:
    `f32[]`.
  """
  if loss_name not in SUPPORTED_LOSSES:
    raise ValueError(f"APFS supports the pair losses {list(SUPPORTED_LOSSES)}, got {loss_name!r}")
  if pair_restriction == "full":
    return memory.pair_loss(loss_name, loss_kwargs, embeddings, labels, ref)
  if pair_restriction != "restricted":
    raise ValueError(f"unknown pair_restriction {pair_restriction!r}; valid: {list(PAIR_RESTRICTIONS)}")
  metric, normalize, matrix_kwargs = losses.matrix_form(loss_name, loss_kwargs)
  s, y, valid = representative_pair_matrices(embeddings, labels, num_representatives, anchors=anchors,
                                             representative_pairs=representative_pairs, metric=metric,
                                             normalize=normalize)
  if ref is not None:
    rows = slice(num_representatives, None) if anchors == "samples" else slice(0, num_representatives)
    s, y, valid = memory.with_reference(s, y, valid, embeddings[rows], labels[rows], ref, metric=metric,
                                        normalize=normalize)
  return losses.MATRIX_LOSSES[loss_name](s, y, valid, **matrix_kwargs)


# ----------------------------------------------------------------------------------------------------------------
# The proximal term (λ/2)‖θ − θ_anchor‖² as a gradient transformation ([F] `DistanceRegularizer`).


def batchnorm_modules(batch_stats: Any) -> frozenset[str]:
  """Paths (e.g. `backbone/bn0_0`) of the modules that keep BatchNorm running statistics."""
  return frozenset(path.rsplit("/", 1)[0] for path in jax.tree.leaves(optim.param_paths(batch_stats)))


def proximal_mask(params: Any, batchnorm: frozenset[str] = frozenset(), exclude: str = "") -> Any:
  """A tree of bools like `params`: True where the proximal term applies (model parameters, not the `loss` subtree,
  not the modules in `batchnorm`, not those matching the `exclude` pattern)."""
  excluded = optim.path_mask(params, exclude, "proximal_exclude") if exclude else jax.tree.map(lambda _: False, params)

  def applies(path: str, is_excluded: bool) -> bool:
    return not (is_excluded or path.split("/")[0] == "loss" or path.rsplit("/", 1)[0] in batchnorm)

  return jax.tree.map(applies, optim.param_paths(params), excluded)


def proximal_regularizer(mask: Any) -> optax.GradientTransformationExtraArgs:
  """Adds λ(θ − θ_anchor) to the gradients of the masked parameters: the gradient of (λ/2)‖θ − θ_anchor‖².

  Chain it *before* the optimiser (coupled, as [F]); after Adam it would be a different, decoupled update.
  `update(grads, state, params, *, proximal_anchor, proximal_weight)` takes θ_anchor (a tree like `params`) and λ (a
  scalar) as optax extra arguments; `optax.chain` hands them through. (optax's `add_decayed_weights` is the case
  θ_anchor = 0 only, hence this transform.)

  Args:
    mask: a tree of Python bools like the parameters (`proximal_mask`).
  """

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, *, proximal_anchor=None, proximal_weight=None, **extra_args):
    del extra_args  # meant for other transforms of the chain
    if params is None or proximal_anchor is None or proximal_weight is None:
      raise ValueError("the proximal regulariser needs update(grads, state, params, proximal_anchor=θ_anchor, "
                       "proximal_weight=λ)")

    def add(gradient, param, anchor, applies):
      return gradient + (proximal_weight * (param - anchor)).astype(gradient.dtype) if applies else gradient

    return jax.tree.map(add, updates, params, proximal_anchor, mask), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ----------------------------------------------------------------------------------------------------------------
# The method.


class APFS:
  """APFS on top of a registered pair loss (`config.loss`); batches P × M from `config.sampler` (m_per_class)."""

  def __init__(self, config, model: nn.Module, num_classes: int):
    kwargs = dict(config.method.get("kwargs", {}))
    registry.check_kwargs(APFSOptions, kwargs, "method 'apfs'")
    self.options = options = APFSOptions(**kwargs)
    for value, valid, name in ((options.class_selection, CLASS_SELECTIONS, "class_selection"),
                               (options.pair_restriction, PAIR_RESTRICTIONS, "pair_restriction"),
                               (options.anchors, ANCHORS, "anchors")):
      if value not in valid:
        raise ValueError(f"unknown APFS {name} {value!r}; valid: {list(valid)}")
    if options.representative_pairs and options.anchors != "representatives":
      raise ValueError("representative_pairs=True needs anchors='representatives'")
    if options.representative_lifetime is not None and int(options.representative_lifetime) < 1:
      raise ValueError(f"representative_lifetime must be a positive number of steps, got "
                       f"{options.representative_lifetime}")
    if not options.proximal_weight >= 0:
      raise ValueError(f"proximal_weight must be ≥ 0, got {options.proximal_weight}")
    if config.loss.name not in SUPPORTED_LOSSES:
      raise ValueError(f"APFS supports config.loss.name in {list(SUPPORTED_LOSSES)}, got {config.loss.name!r}")
    if config.sampler.name != "m_per_class":
      raise ValueError("APFS builds batches of P classes × M slots: set config.sampler = dict(name='m_per_class', "
                       f"kwargs=dict(m=M)) (M ≥ 2), got sampler {config.sampler.name!r}")
    self.m = int(dict(config.sampler.get("kwargs", {})).get("m", 4))
    if self.m < 2 or config.batch_size % self.m:
      raise ValueError(f"APFS needs M = config.sampler.kwargs.m ≥ 2 dividing batch_size {config.batch_size}, "
                       f"got m={self.m}")
    self.classes_per_batch = config.batch_size // self.m
    self.baseline = Baseline(config, model, num_classes)  # loss keyword checks and the baseline's initialisation
    self.model, self.num_classes = model, num_classes
    self.loss_name, self.loss_kwargs = config.loss.name, dict(config.loss.get("kwargs", {}))
    self.representative_lifetime = options.representative_lifetime
    self.sampler: APFSSampler | None = None
    self._batchnorm: frozenset[str] | None = None

  # -- hooks called by the training program -----------------------------------------------------------------------

  def make_sampler(self, train_labels: np.ndarray, batch_size: int, seed: int) -> APFSSampler:
    """The APFS sampler of the training split (and T, resolved from the split size when not configured)."""
    if batch_size != self.classes_per_batch * self.m:
      raise ValueError(f"the sampler's batch_size {batch_size} differs from config.batch_size "
                       f"{self.classes_per_batch * self.m}")
    if self.representative_lifetime is None:
      self.representative_lifetime = max(1, len(train_labels) // batch_size)
    self.sampler = APFSSampler(train_labels, batch_size, seed, m=self.m,
                               representative_lifetime=int(self.representative_lifetime),
                               class_selection=self.options.class_selection,
                               augment_representatives=self.options.augment_representatives,
                               plan_wait_timeout_s=self.options.plan_wait_timeout_s)
    return self.sampler

  def init(self, rng: jax.Array, images: jax.Array):
    """`(params, batch_stats, method_state)`: the baseline's model (same seed, same weights) and θ_anchor = θ_0,
    plus an empty class plan `i32[C, P−1]` for hard mining."""
    params, batch_stats, _ = self.baseline.init(rng, images)
    self._batchnorm = frozenset() if self.options.proximal_include_batchnorm else batchnorm_modules(batch_stats)
    method_state = {"anchor_params": jax.tree.map(jnp.copy, params)}  # copies: the state must not alias buffers
    if self.options.class_selection == "hard":
      method_state["class_plan"] = jnp.zeros((self.num_classes, self.classes_per_batch - 1), jnp.int32)
      method_state["class_plan_stage"] = jnp.array(-1, jnp.int32)
    return params, batch_stats, method_state

  def create_optimizer(self, optimizer_config, params: Any) -> optax.GradientTransformation:
    """`proximal_regularizer` chained in front of `optim.create_optimizer(optimizer_config, params)`."""
    return optax.chain(proximal_regularizer(self.proximal_mask(params)),
                       optim.create_optimizer(optimizer_config, params))

  def host_update(self, step: int, state: TrainState, context) -> TrainState:
    """Stage-boundary work on the host before `step` (hard mining only): hands the running stage's plan to the
    sampler after a restore, and at the last step of a stage mines the next stage's plan."""
    sampler = self.sampler
    if sampler is None or self.options.class_selection != "hard":
      return state
    stage = sampler.stage(step)
    if sampler.uses_class_plan(stage) and not sampler.has_class_plan(stage):  # resumed from a checkpoint
      stored = int(state.method_state["class_plan_stage"])
      assert stored == stage, f"the checkpoint holds the class plan of stage {stored}, step {step} is in stage {stage}"
      sampler.set_class_plan(stage, np.asarray(state.method_state["class_plan"]))
    next_stage = sampler.stage(step + 1)
    if next_stage > stage and step + 1 < context.config.num_steps and sampler.uses_class_plan(next_stage):
      plan = self.mine_class_plan(state, context.train_split, context.embed, next_stage)
      method_state = dict(state.method_state)
      method_state["class_plan"] = jax.device_put(plan, state.step.sharding)
      method_state["class_plan_stage"] = jax.device_put(np.int32(next_stage), state.step.sharding)
      state = state.replace(method_state=method_state)
      sampler.set_class_plan(next_stage, plan)
    return state

  # -- the step ---------------------------------------------------------------------------------------------------

  def proximal_mask(self, params: Any) -> Any:
    assert self._batchnorm is not None, "APFS.init must run first: it finds the BatchNorm modules"
    return proximal_mask(params, self._batchnorm, self.options.proximal_exclude)

  def mine_class_plan(self, state: TrainState, train_split: data.Split, embed, stage: int) -> np.ndarray:
    """`i32[C, P−1]`: the representatives of `stage` embedded in inference mode (one batched pass), then each
    class's P−1 nearest classes."""
    representatives = self.sampler.representatives(stage)
    # A file-backed split (photos) stays lazy: its view is decoded batch by batch with the test transform.
    images = (train_split.images[representatives] if train_split.in_memory
              else train_split.images.take(representatives))
    split = data.Split(images=images, labels=train_split.labels[representatives], class_names=train_split.class_names)
    embeddings = embed(state.params, state.batch_stats, split)
    return mine_class_neighbors(np.asarray(embeddings), self.classes_per_batch - 1)

  def loss(self, params, batch_stats, batch, ref: memory.Reference | None = None):
    """ℓ_{R_k} of one batch (`representative_pair_loss`, with a memory's `ref` columns if given) and
    `(new BatchNorm statistics, embeddings)`."""
    embeddings, batch_stats = apply_model(self.model, params, batch_stats, batch["image"], train=True)
    value = representative_pair_loss(self.loss_name, embeddings, batch["label"], self.classes_per_batch,
                                     pair_restriction=self.options.pair_restriction, anchors=self.options.anchors,
                                     representative_pairs=self.options.representative_pairs, ref=ref,
                                     **self.loss_kwargs)
    return value, (batch_stats, embeddings)

  def memory_entries(self, embeddings: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The rows of a batch that a cross-batch memory stores: what the anchors are paired with (module docstring)."""
    if self.options.pair_restriction == "full":
      return embeddings, labels
    num_reps = self.classes_per_batch
    rows = slice(0, num_reps) if self.options.anchors == "samples" else slice(num_reps, None)
    return embeddings[rows], labels[rows]

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], tx: optax.GradientTransformation,
                 phase: str = "train"):
    """One step of stage k = ⌊step / T⌋: θ_anchor ← θ at the stage's first step, the gradient of ℓ_{R_k}, then
    `tx` (built by `create_optimizer`) adds λ_k(θ − θ_anchor) before the optimiser."""
    state, metrics, _ = self.train_step_with_reference(state, batch, tx, phase, None)
    return state, metrics

  def train_step_with_reference(self, state: TrainState, batch: dict[str, jax.Array],
                                tx: optax.GradientTransformation, phase: str, ref: memory.Reference | None):
    """`train_step` with a memory's `ref` as extra loss columns; also returns the entries to enqueue
    (`memory_entries`)."""
    del phase  # one phase
    if self.representative_lifetime is None:
      raise ValueError("APFS needs T: set config.method.kwargs.representative_lifetime or build the sampler first "
                       "(make_sampler resolves T from the training split)")
    lifetime = int(self.representative_lifetime)
    step = state.step
    stage_starts = step % lifetime == 0
    anchor = jax.tree.map(lambda a, p: jnp.where(stage_starts, p, a), state.method_state["anchor_params"],
                          state.params)
    weight = jnp.where(step >= lifetime, self.options.proximal_weight, 0.0).astype(jnp.float32)
    (pair_loss, (batch_stats, embeddings)), grads = jax.value_and_grad(self.loss, has_aux=True)(
        state.params, state.batch_stats, batch, ref)
    updates, opt_state = tx.update(grads, state.opt_state, state.params, proximal_anchor=anchor,
                                   proximal_weight=weight)
    mask = self.proximal_mask(state.params)
    squared_distance = sum(jnp.sum(jnp.square(p - a)) for p, a, applies in zip(
        jax.tree.leaves(state.params), jax.tree.leaves(anchor), jax.tree.leaves(mask)) if applies)
    proximal_term = 0.5 * weight * squared_distance
    state = state.replace(step=step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state,
                          batch_stats=batch_stats, method_state={**state.method_state, "anchor_params": anchor})
    metrics = {"loss": pair_loss + proximal_term, "pair_loss": pair_loss, "proximal_term": proximal_term,
               "grad_norm": optax.tree.norm(grads), "stage": (step // lifetime).astype(jnp.float32)}
    return state, metrics, self.memory_entries(embeddings, batch["label"])


__all__ = ["ANCHORS", "APFS", "APFSOptions", "PAIR_RESTRICTIONS", "SUPPORTED_LOSSES", "batchnorm_modules",
           "proximal_mask", "proximal_regularizer", "representative_pair_loss", "representative_pair_matrices"]
