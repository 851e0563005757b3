"""Deep AML: the confusion / distinguishment min–max of Chen et al. (IJCAI 2018) inside one jitted training step.

The paper's model is linear (an SPD Mahalanobis M; `metriclearn/linear_aml.py`, `papers/aml.md`); it states the idea
for any metric Dist(x, x′) = ‖φ(x) − φ(x′)‖² (aml.md b) but its deep form, if any, has not been read. This deep form is
**our design** where the paper is silent; it keeps the two stages of aml.md c.1 and the linear model's structure:

* **Confusion** (Figure 1(b): maximise L(Π) and −Dist(X, Π)): each image's pre-head feature f_i = pool(backbone(x_i))
  gets an adversarial copy π_i, found by K optax *ascent* steps from Π = X (the features) on

    C(Π) = L(φ(Π), y) − β·(1/B)·Σ_i ‖φ(π_i) − φ(x_i)‖²,

  where φ is the embedding head (+ L2 normalisation; `Embedder.embed_from_features`), L the configured pair loss over
  all pairs of the adversarial batch (labels: those of the originals), and the second term the closeness regulariser
  Dist(X, Π) measured with the metric itself, as the linear model's Dist_M(x, π) = ‖P(x − π)‖².
* **Distinguishment**: the network (backbone and head) takes one step of the configured optimiser on
  L(φ(X), y) + α·L(φ(Π), y), "the original training pairs and the adversarial pairs jointly" (aml.md a), all pairs
  of the batch as label matrices (`losses.batch_matrices`; any registered matrix-form loss, contrastive in
  `configs/glyphs_aml.py`).
* `through_confusion=False` (default): Π = X + stop_gradient(Π_K − X), i.e. the perturbation is frozen (alternating
  updates) but the adversarial points still move with the backbone's features. True: the gradient goes through the
  K unrolled confusion steps (bilevel, as the released linear code differentiates through its closed form).

Departure: adversarial points are per image, not per pair: the pair (a, x) gets (π_a, π_x), so the adversarial
  batch costs O(B) features instead of O(B²) (DESIGN §2: "columns/rows of adversarial points").
Departure: the closeness uses the embedding φ rather than the GMML loss of the linear model; maximising a hinge/
  log-sum-exp pair loss is bounded, so the opposite-label trick of aml.md c.3 is not needed.
Departure: the confusion step is scale-free (our choice): the ascent objective is B·C and the step size
  `confusion_learning_rate`·mean_i‖f_i‖², so that neither the batch size nor the feature scale changes what a
  learning rate means (φ is scale-invariant in f up to the head's bias, so C's curvature scales as 1/‖f‖²).

On glyphs (seed 0, 600 steps) every setting we tried trains a worse embedding than the same pair loss without
AML, the bilevel step most of all (benchmarks/RESULTS.md, "AML"). The defaults are the best of the six settings
tried.

The confusion optimiser's state is created afresh for every batch (Π starts at the new batch's features), so nothing
persists across steps and `method_state` is empty.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from metriclearn import distances
from metriclearn import labels as labels_lib
from metriclearn import losses
from metriclearn import registry
from metriclearn.methods.baseline import apply_gradients
from metriclearn.models.embedder import Embedder
from metriclearn.state import TrainState, model_params

# Method hyper-parameters (`config.method.kwargs`) and their defaults.
DEFAULTS = {
    "alpha": 0.3,                    # weight of the adversarial loss in the distinguishment stage
    "beta": 10.0,                    # weight of the closeness regulariser in the confusion stage
    "confusion_steps": 10,           # K
    "confusion_optimizer": "sgd",    # "sgd" or "adam" (fresh state per batch)
    "confusion_learning_rate": 0.01, # in units of the batch's mean squared feature norm (module docstring)
    "through_confusion": False,      # differentiate through the K confusion steps (bilevel)
}
CONFUSION_OPTIMIZERS = {"sgd": optax.sgd, "adam": optax.adam}
# Embedding-form keywords of a loss that the matrix form does not take: they choose how `s` is built.
_EMBEDDING_ONLY_KWARGS = ("squared", "normalize")


def make_pair_loss(name: str, kwargs: dict[str, Any]):
  """`loss(embeddings f[B, D], y f32[B, B], valid f32[B, B]) -> f32[]` from a registered matrix-form loss.

  Accepts the embedding form's keywords: `squared` (squared Euclidean distances) and `normalize` (L2-normalise the
  embeddings first) choose the matrix `s`; the rest go to `losses.MATRIX_LOSSES[name]`.
  """
  if name in losses.CLASS_ROW_LOSSES:
    raise ValueError(f"AML needs a pair loss over the batch; {name} compares with its own learned class rows. Choose "
                     "one of: " + ", ".join(sorted(set(losses.MATRIX_LOSSES) - set(losses.CLASS_ROW_LOSSES))))
  matrix_loss = registry.lookup(losses.MATRIX_LOSSES, name, "loss")
  kwargs = dict(kwargs)
  squared = bool(kwargs.pop("squared", False))
  normalize = bool(kwargs.pop("normalize", True))
  registry.check_kwargs(matrix_loss, kwargs, f"matrix form of loss {name!r}")
  metric = losses.MATRIX_METRIC[name]
  if squared:
    metric = "squared_euclidean"

  def pair_loss(embeddings: jax.Array, y: jax.Array, valid: jax.Array) -> jax.Array:
    if normalize:
      embeddings = distances.l2_normalize(embeddings)
    return matrix_loss(distances.pairwise(embeddings, metric=metric), y, valid, **kwargs)

  return pair_loss


def confuse(head, features: jax.Array, clean_embeddings: jax.Array, y: jax.Array, valid: jax.Array, pair_loss, *,
            beta: float, steps: int, optimizer: str, learning_rate: float) -> jax.Array:
  """The confusion stage: `steps` optax ascent steps on C(Π) (module docstring) from Π = `features`.

  Args:
    head: `f[B, c] -> f[B, D]`, the embedding of pre-head features (parameters closed over).
    features: `f[B, c]` the batch's pre-head features X.
    clean_embeddings: `f[B, D]` φ(X), the anchor of the closeness regulariser.
    y, valid: `f32[B, B]` pair labels and mask.
    pair_loss: `(embeddings, y, valid) -> f32[]` (`make_pair_loss`).

  Returns:
    `f[B, c]` adversarial features Π_K, differentiable with respect to everything `head` and `features` depend on.
  """
  batch_size = features.shape[0]
  scale = jax.lax.stop_gradient(jnp.mean(jnp.sum(jnp.square(features), axis=1)))
  tx = CONFUSION_OPTIMIZERS[optimizer](learning_rate * scale)

  def negative_objective(adversarial):
    embeddings = head(adversarial)
    closeness = jnp.mean(jnp.sum(jnp.square(embeddings - clean_embeddings), axis=1))
    return -batch_size * (pair_loss(embeddings, y, valid) - beta * closeness)

  def step(_, carry):
    adversarial, opt_state = carry
    updates, opt_state = tx.update(jax.grad(negative_objective)(adversarial), opt_state, adversarial)
    return optax.apply_updates(adversarial, updates), opt_state

  adversarial, _ = jax.lax.fori_loop(0, steps, step, (features, tx.init(features)))
  return adversarial


class AML:
  """Deep AML (module docstring): `config.method.kwargs` ⊂ `DEFAULTS`, `config.loss` the pair loss."""

  def __init__(self, config, model: nn.Module, num_classes: int):
    del num_classes  # no proxies
    kwargs = dict(config.method.get("kwargs", {}))
    unknown = sorted(set(kwargs) - set(DEFAULTS))
    if unknown:
      raise ValueError(f"unknown AML keyword(s) {unknown} in config.method.kwargs; valid: {sorted(DEFAULTS)}")
    self.hparams = {**DEFAULTS, **kwargs}
    if self.hparams["confusion_optimizer"] not in CONFUSION_OPTIMIZERS:
      raise ValueError(f"unknown confusion_optimizer {self.hparams['confusion_optimizer']!r}; valid: "
                       f"{', '.join(CONFUSION_OPTIMIZERS)}")
    if int(self.hparams["confusion_steps"]) < 0:
      raise ValueError(f"confusion_steps must be >= 0, got {self.hparams['confusion_steps']}")
    self.model = model
    self.pair_loss = make_pair_loss(config.loss.name, dict(config.loss.get("kwargs", {})))

  def init(self, rng: jax.Array, images: jax.Array):
    """`(params, batch_stats, method_state)`; AML keeps no state between steps (module docstring)."""
    variables = self.model.init(rng, images, train=False)
    return dict(variables["params"]), variables.get("batch_stats", {}), {}

  def _head(self, params, batch_stats, features: jax.Array) -> jax.Array:
    # The head in training mode; a head BatchNorm normalises the adversarial batch with its own statistics, and
    # those statistics are not kept (the running averages follow the real images only).
    embeddings, _ = self.model.apply({"params": model_params(params), "batch_stats": batch_stats}, features,
                                     train=True, method=Embedder.embed_from_features, mutable=["batch_stats"])
    return embeddings

  def loss(self, params, batch_stats, batch):
    """L(X) + α·L(Π) and `(batch_stats, metrics)`."""
    hp = self.hparams
    variables = {"params": model_params(params), "batch_stats": batch_stats}
    out, updates = self.model.apply(variables, batch["image"], train=True, return_intermediates=True,
                                    mutable=["batch_stats"])
    batch_stats = updates.get("batch_stats", batch_stats)
    features, embeddings = out["features"], out["embeddings"]
    y, valid = labels_lib.batch_matrices(batch["label"])

    bilevel = bool(hp["through_confusion"])
    confusion_params = params if bilevel else jax.lax.stop_gradient(params)
    start = features if bilevel else jax.lax.stop_gradient(features)
    anchor = embeddings if bilevel else jax.lax.stop_gradient(embeddings)
    adversarial = confuse(functools.partial(self._head, confusion_params, batch_stats), start, anchor, y, valid,
                          self.pair_loss, beta=hp["beta"], steps=int(hp["confusion_steps"]),
                          optimizer=hp["confusion_optimizer"], learning_rate=hp["confusion_learning_rate"])
    if not bilevel:
      adversarial = features + jax.lax.stop_gradient(adversarial - features)
    adversarial_embeddings = self._head(params, batch_stats, adversarial)

    clean_loss = self.pair_loss(embeddings, y, valid)
    adversarial_loss = self.pair_loss(adversarial_embeddings, y, valid)
    total = clean_loss + hp["alpha"] * adversarial_loss
    displacement = jnp.sqrt(jnp.sum(jnp.square(adversarial - features)) / jnp.sum(jnp.square(features)))
    metrics = {"clean_loss": clean_loss, "adversarial_loss": adversarial_loss,
               "closeness": jnp.mean(jnp.sum(jnp.square(adversarial_embeddings - embeddings), axis=1)),
               "relative_displacement": jax.lax.stop_gradient(displacement)}
    return total, (batch_stats, metrics)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], tx: optax.GradientTransformation,
                 phase: str = "train"):
    """One confusion stage and one distinguishment update, in one jitted function."""
    del phase  # one phase
    (loss, (batch_stats, metrics)), grads = jax.value_and_grad(self.loss, has_aux=True)(
        state.params, state.batch_stats, batch)
    state = apply_gradients(state, grads, tx, batch_stats=batch_stats)
    return state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}
