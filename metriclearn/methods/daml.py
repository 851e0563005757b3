"""DAML: Deep Adversarial Metric Learning (Duan, Zheng, Lin, Lu, Zhou, CVPR 2018; `papers/daml.md`).

A generator G turns each observed (often easy) negative into a hard synthetic one, in feature space, and the metric
is trained on the synthetic negatives instead of the observed ones. One jitted step per phase:

* "pretrain" (steps < `pretrain_steps`; Algorithm 1, step 1): J_m on the observed tuples; the generator is not
  evaluated, and the optimizer holds it back (see `DAML.create_optimizer`).
* "joint": x̃⁻ = G(θ_g; x⁻, x, x⁺) and, in **one** `jax.value_and_grad` over backbone, head and generator together,
  J = J_gen + λ·J_m (eq. 7) with J_gen = J_hard + λ1·J_reg + λ2·J_adv (eq. 6). Each module then moves with its
  own learning rate (`optimizer.lr_multipliers` by path: the generator's parameters are `params["generator"]`).

Variants, chosen by `config.loss.name` (the loss DAML extends; its J_m is in `daml_losses`):

| loss | J_m | input (sampler) | synthetic negatives per anchor |
|---|---|---|---|
| contrastive | eq. 8 | pairs (`m_per_class`, m=2) | C−1: G(x_{c'}⁺, x_c, x_c), the anchor in the positive slot |
| triplet | eq. 9 | triplets (`triplets`) | 1: G(x⁻, x, x⁺) |
| lifted_structure | eqs. 10–11 (smooth) | pairs | C−1: G(x_{c'}⁺, x_c, x_c⁺), negatives of both x_c and x_c⁺ |
| npair | eq. 12 | pairs | C−1: G(x_{c'}⁺, x_c, x_c⁺) |

(The paper: batch 128 for pairwise input, 120 for triplet input. Pair batches hold C classes, anchor x_c at 2c and
positive x_c⁺ at 2c + 1; the observed negatives of anchor c are the other classes' positives, as N-pair's.)

Spaces (daml.md (g6)): `generator_space="features"` (the paper, default): G acts on the pooled pre-head features and
x̃⁻ goes through the *same* embedding head (`Embedder.embed_from_features`, shared weights); J_hard/J_reg in feature
space, J_adv/J_m on the embeddings. `"embeddings"` (the released code): G acts on the L2-normalised embedding h and
the metric is an extra identity-initialised MLP head (`metric_head_layers=2`, `params["metric_head"]`), whose
unnormalised output carries J_adv and J_m; pre-training uses h itself, as the code.

Gradient routing (daml.md (g5)): `routing="joint"` (default) is eq. (7) literally, as the released code: every
parameter receives ∇(J_gen + λJ_m), so θ_g also gets ∂(λJ_m)/∂θ_g and θ_f gets ∂J_adv/∂θ_f. `routing="gan"` (ablation):
θ_g ← J_gen only (metric and its inputs stop-gradiented), θ_f ← λJ_m only (x̃⁻ stop-gradiented). With joint routing
the generator also minimises λ·J_m, i.e. it is rewarded for *easy* negatives; on glyphs with λ = 50 it wins (N-pair's
synthetic negatives end up opposite their anchors; benchmarks/RESULTS.md, "DAML").

Departure: J_m, J_adv and the generator terms are means over tuples, not sums (`daml_losses`).
Departure: lifted and contrastive use the pair batch with one synthetic negative per other class (C−1 per anchor), as
N-pair's eq. 12 does; the paper does not say how many negatives those variants synthesise [I].
Departure: the observed negatives of pre-training are the ones the generator would later transform (for lifted:
the other classes' positives, not every other example of the batch).
With `generator_space="embeddings"` and a metric head the training program evaluates the metric head's output
(`DAML.embed`, which `train.py` calls when a method defines it), as the released code evaluates from epoch 20 on.

J_m settings (`DAMLOptions`; the paper's, the code's and the "recommended" values in `PRESETS`), measured without the
generator (`pretrain_steps = num_steps`) on glyphs, seed 0, 600 steps (R@1):
* cont, `contrastive_reducer`: "mean" (each part over all its pairs) 0.43; "pooled_mean" (eq. 8's sum) 0.59;
  "mean_nonzero" 0.775.
* tri, `triplet_negatives`: "tuple" (one negative per anchor, the code) 0.54; "batch" (all triplets of the batch) 0.70.
* lifted, `config.model.kwargs.normalize`: unit sphere 0.40 (every pair stays active, weights near-uniform);
  unnormalised 0.67.
* npair, `npair_scale`: 1 on unit embeddings 0.47 (the loss is floored at log(1 + 63e⁻²)); 16: 0.76; unnormalised
  with `embedding_l2_penalty` (Sohn) 0.66.
* joint step: with the paper's λ = 50 and eq. (7)'s routing the generator also minimises 50·J_m and makes the
  negatives easy (J_m 0.76 → 0.02 within 40 steps), while J_hard and J_reg move the backbone at full learning rate in
  raw feature space, nearly orthogonal to the metric's gradient; the authors ran λ = 1 with the backbone at lr/1000
  (`lambda_m`, `j_gen_backbone_factor`, `CODE_LR_MULTIPLIERS`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from metriclearn import optim
from metriclearn.methods import daml_losses
from metriclearn.methods.daml_networks import Generator, MetricHead
from metriclearn.methods.baseline import apply_gradients
from metriclearn.models.embedder import Embedder
from metriclearn.state import TrainState, model_params

ROUTINGS = ("joint", "gan")
GENERATOR_SPACES = ("features", "embeddings")
# config.loss.name -> tuple layout of the batch.
LAYOUTS = {"contrastive": "pairs", "triplet": "triplets", "lifted_structure": "pairs", "npair": "pairs"}
# Layout -> the sampler that produces it (name, kwargs).
SAMPLER_OF_LAYOUT = {"triplets": ("triplets", {}), "pairs": ("m_per_class", {"m": 2})}
# Fraction of training spent pre-training when `pretrain_steps` is None: the released code's 1,200 of 6,000.
DEFAULT_PRETRAIN_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class DAMLOptions:
  """`config.method.kwargs` of DAML; the defaults are the paper's ("paper" preset, daml.md (e), (g3) reading A).

  Attributes:
    lambda_reg: λ1, weight of J_reg in J_gen (1).
    lambda_adv: λ2, weight of J_adv in J_gen (1).
    lambda_m: λ, weight of J_m in J (50; the released code: 1).
    margin: γ of J_adv and of the hinge J_m (1).
    pretrain_steps: steps of phase "pretrain"; None: 20% of `config.num_steps` (the released code's ratio).
    routing: "joint" (eq. 7) or "gan" (ablation); see the module docstring.
    generator_space: "features" (paper) or "embeddings" (released code).
    generator_hidden_dims: hidden widths of G; None: one hidden layer as wide as the generator space, i.e. the
      paper's "3-layer" input–hidden–output network and the code's two Linear layers (1536→512→512).
    generator_output_relu: ReLU on G's output (the released code; its synthetic features are non-negative).
    generator_init_stddev: None: LeCun normal on the concatenated input (flax's Dense default); the code: 0.02.
    metric_head_layers: Dense layers of the metric head on h (`generator_space="embeddings"` only; the code: 2).
    hinge_scale: factor on J_adv and J_m (the released code divides each hinge mean by 2: 0.5).
    triplet_reducer: "mean" (eq. 9) or "mean_nonzero" (`losses.triplet_from_matrix`), triplet only.
    negatives_per_anchor: K for pair input (1 ≤ K ≤ C−1); None: C−1 (eq. 12).
    contrastive_reducer: J_m of cont (eq. 8), one of `daml_losses.CONTRASTIVE_REDUCERS`: "pooled_mean" (paper: eq. 8's
      sum ÷ the number of pairs), "mean" (each part averaged over its pairs; this library before), "mean_nonzero"
      (each part over its non-zero terms, as `losses.contrastive`; recommended). The released code has no cont.
    triplet_negatives: negatives of each triplet anchor: "tuple" (the tuple's own negative, eq. 9 and the released
      code: one per anchor) or "batch" (every other-class example of the triplet batch, 3T − 2 per anchor for T
      triplets, each turned into a synthetic negative in the joint phase; recommended).
    npair_scale: s multiplying N-pair's inner products in J_m (eq. 12: 1; recommended 16 on unit embeddings, see
      `daml_losses.j_m_npair`). J_adv keeps the unscaled inner product and its margin γ.
    embedding_l2_penalty: weight of Sohn's ¼(mean‖f_a‖² + mean‖f_p‖²) added to J_m (0; Sohn 2016 / TF's npairs_loss:
      0.002, with `config.model.kwargs.normalize=False`).
    j_gen_backbone_factor: factor on every gradient the generator path sends into θ_f, the embedder (through G's
      inputs, J_hard, J_reg and J_adv; J_m's own gradient on the real embeddings is untouched). Eq. (7) and the
      released code: 1 (the code then runs the whole backbone at lr/1000 in the joint phase, `CODE_LR_MULTIPLIERS`);
      0 keeps J_gen off the backbone (recommended). Value-preserving: f·x + (1−f)·stop_gradient(x).
    pretrain_lr_multipliers: None: `optimizer.lr_multipliers` hold in both phases. Otherwise ((pattern, multiplier),
      ...) for pre-training, and `optimizer.lr_multipliers` from the joint phase on (the code's backbone: lr, then
      lr/1000).
  """

  lambda_reg: float = 1.0
  lambda_adv: float = 1.0
  lambda_m: float = 50.0
  margin: float = 1.0
  pretrain_steps: int | None = None
  routing: str = "joint"
  generator_space: str = "features"
  generator_hidden_dims: Sequence[int] | None = None
  generator_output_relu: bool = False
  generator_init_stddev: float | None = None
  metric_head_layers: int = 0
  hinge_scale: float = 1.0
  triplet_reducer: str = "mean"
  negatives_per_anchor: int | None = None
  pretrain_lr_multipliers: Sequence[Sequence[Any]] | None = None
  contrastive_reducer: str = "pooled_mean"
  triplet_negatives: str = "tuple"
  npair_scale: float = 1.0
  embedding_l2_penalty: float = 0.0
  j_gen_backbone_factor: float = 1.0


TRIPLET_NEGATIVES = ("tuple", "batch")
# Method kwargs of the presets (daml.md (e)); the "code" preset also needs `CODE_LR_MULTIPLIERS` in the optimizer,
# "recommended" `RECOMMENDED_MODEL_KWARGS` in the model. "paper" and "code" keep J_m as published (the code has a
# triplet variant only; its other J_m are the paper's). "recommended" sets each J_m as the library's loss of the same
# family trains it (each J_m without the generator within 0.02 R@1 of that loss on glyphs, or the recipe docstring
# says measured why not) and the joint step of the released code's spirit: λ = 1 and no J_gen gradient into the
# backbone (with λ = 50 the generator, which also minimises λ·J_m under eq. 7, makes the negatives easy: J_m 0.76 →
# 0.02 within 40 steps on glyphs).
PRESETS = {
    "paper": dict(lambda_reg=1.0, lambda_adv=1.0, lambda_m=50.0, contrastive_reducer="pooled_mean",
                  triplet_negatives="tuple", triplet_reducer="mean", npair_scale=1.0),
    "code": dict(lambda_m=1.0, generator_space="embeddings", generator_output_relu=True, generator_init_stddev=0.02,
                 metric_head_layers=2, hinge_scale=0.5, pretrain_lr_multipliers=()),
    "recommended": dict(lambda_reg=1.0, lambda_adv=1.0, lambda_m=1.0, j_gen_backbone_factor=0.0,
                        contrastive_reducer="mean_nonzero", triplet_negatives="batch", triplet_reducer="mean_nonzero",
                        npair_scale=16.0),
}
# Model keywords of the "recommended" preset by variant: lifted structure on unnormalised embeddings (on the unit
# sphere with γ = 1 every pair stays active and the weights are near-uniform: 0.40 R@1 on glyphs, unnormalised 0.67).
RECOMMENDED_MODEL_KWARGS = {"lifted_structure": dict(normalize=False)}
# The released code's joint-phase learning rates: backbone + embedding lr/1000, generator lr/10, metric head lr.
CODE_LR_MULTIPLIERS = (("backbone", 1e-3), ("head", 1e-3), ("generator", 0.1))
PAPER_NUM_STEPS, CODE_NUM_STEPS, CODE_PRETRAIN_STEPS = 20_000, 6_000, 1_200


def _multiplier_pairs(multipliers) -> list[tuple[str, float]]:
  """((pattern, multiplier), ...) from pairs or a {pattern: multiplier} dict, as `optim` accepts them."""
  pairs = list(multipliers.items()) if hasattr(multipliers, "items") else list(multipliers)
  if not all(isinstance(pair, (tuple, list)) and len(pair) == 2 for pair in pairs):
    raise ValueError(f"learning-rate multipliers must be (pattern, multiplier) pairs or a dict, got {multipliers!r}")
  return [(str(pattern), float(value)) for pattern, value in pairs]


def resolve_options(kwargs: dict[str, Any], *, loss_name: str, num_steps: int, batch_size: int) -> DAMLOptions:
  """Checks `config.method.kwargs` and fills `pretrain_steps`; raises ValueError on anything invalid."""
  valid = [field.name for field in dataclasses.fields(DAMLOptions)]
  unknown = sorted(set(kwargs) - set(valid))
  if unknown:
    raise ValueError(f"unknown DAML keyword(s) {unknown} in config.method.kwargs; valid: {valid}")
  options = DAMLOptions(**kwargs)
  checks = [
      (options.routing in ROUTINGS, f"routing must be one of {ROUTINGS}, got {options.routing!r}"),
      (options.generator_space in GENERATOR_SPACES,
       f"generator_space must be one of {GENERATOR_SPACES}, got {options.generator_space!r}"),
      (options.metric_head_layers >= 0, f"metric_head_layers must be >= 0, got {options.metric_head_layers}"),
      (options.metric_head_layers == 0 or options.generator_space == "embeddings",
       "metric_head_layers > 0 needs generator_space='embeddings' (with 'features' the metric is the embedder's head)"),
      (min(options.lambda_reg, options.lambda_adv, options.lambda_m) >= 0,
       "lambda_reg, lambda_adv and lambda_m must be >= 0"),
      (options.hinge_scale > 0, f"hinge_scale must be positive, got {options.hinge_scale}"),
      (options.triplet_reducer in daml_losses.TRIPLET_REDUCERS,
       f"triplet_reducer must be one of {daml_losses.TRIPLET_REDUCERS}, got {options.triplet_reducer!r}"),
      (options.contrastive_reducer in daml_losses.CONTRASTIVE_REDUCERS,
       f"contrastive_reducer must be one of {daml_losses.CONTRASTIVE_REDUCERS}, got {options.contrastive_reducer!r}"),
      (options.triplet_negatives in TRIPLET_NEGATIVES,
       f"triplet_negatives must be one of {TRIPLET_NEGATIVES}, got {options.triplet_negatives!r}"),
      (options.npair_scale > 0, f"npair_scale must be positive, got {options.npair_scale}"),
      (options.embedding_l2_penalty >= 0, f"embedding_l2_penalty must be >= 0, got {options.embedding_l2_penalty}"),
      (0 <= options.j_gen_backbone_factor <= 1,
       f"j_gen_backbone_factor must lie in [0, 1], got {options.j_gen_backbone_factor}"),
  ]
  for ok, message in checks:
    if not ok:
      raise ValueError(message)
  pretrain_steps = options.pretrain_steps
  if pretrain_steps is None:
    pretrain_steps = int(round(DEFAULT_PRETRAIN_FRACTION * num_steps))
  if not 0 <= pretrain_steps <= num_steps:
    raise ValueError(f"pretrain_steps must lie in [0, num_steps = {num_steps}], got {pretrain_steps}")
  if options.negatives_per_anchor is not None:
    if LAYOUTS[loss_name] != "pairs":
      raise ValueError("negatives_per_anchor applies to pair input (contrastive, lifted_structure, npair); "
                       "triplet input has one negative per anchor")
    num_classes = batch_size // 2
    if not 1 <= options.negatives_per_anchor <= num_classes - 1:
      raise ValueError(f"negatives_per_anchor must lie in [1, C−1 = {num_classes - 1}] for a batch of {num_classes} "
                       f"pairs, got {options.negatives_per_anchor}")
  return dataclasses.replace(options, pretrain_steps=pretrain_steps)


def negative_index(layout: str, num_anchors: int, negatives_per_anchor: int | None,
                   triplet_negatives: str = "tuple") -> np.ndarray:
  """`i32[A, K]`: which observed negatives each anchor's tuples use (rows of the batch's negative sources).

  Triplets, "tuple": anchor t's own negative (K = 1). Triplets, "batch": every row of the batch but the anchor's and
  its positive's (3t, 3t + 1), K = 3A − 2 (the triplet sampler's 2A classes are distinct, so all are negatives).
  Pairs: the positives of the next K classes in batch order, (c + 1 + k) mod C, so every anchor meets every other
  class once when K = C − 1.
  """
  if layout == "triplets" and triplet_negatives == "batch":
    rows = np.arange(3 * num_anchors)[None, :]
    keep = (rows // 3 != np.arange(num_anchors)[:, None]) | (rows % 3 == 2)
    return np.nonzero(keep)[1].reshape(num_anchors, -1).astype(np.int32)
  if layout == "triplets":
    return np.arange(num_anchors, dtype=np.int32)[:, None]
  k = num_anchors - 1 if negatives_per_anchor is None else negatives_per_anchor
  return ((np.arange(num_anchors)[:, None] + 1 + np.arange(k)[None, :]) % num_anchors).astype(np.int32)


def split_tuples(x: jax.Array, layout: str, triplet_negatives: str = "tuple") -> tuple[jax.Array, jax.Array, jax.Array]:
  """`(anchor [A, ·], positive [A, ·], negative sources [S, ·])` of a batch in tuple layout (see `samplers`).

  Triplets with `triplet_negatives="batch"`: the sources are the whole batch (`negative_index` picks the rows).
  """
  if layout == "triplets":
    return x[0::3], x[1::3], (x if triplet_negatives == "batch" else x[2::3])
  return x[0::2], x[1::2], x[1::2]  # pairs: the other classes' positives are the negatives


class DAML:
  """DAML (module docstring): `config.loss.name` picks the variant, `config.method.kwargs` ⊂ `DAMLOptions`."""

  def __init__(self, config, model: nn.Module, num_classes: int):
    del num_classes  # no proxies
    self.model = model
    self.loss_name = config.loss.name
    if self.loss_name not in LAYOUTS:
      raise ValueError(f"DAML extends one of the losses {sorted(LAYOUTS)} (config.loss.name), got {self.loss_name!r}")
    if dict(config.loss.get("kwargs", {})):
      raise ValueError("DAML's J_m takes its hyper-parameters from config.method.kwargs (margin, triplet_reducer); "
                       f"config.loss.kwargs must be empty, got {dict(config.loss.kwargs)}")
    self.layout = LAYOUTS[self.loss_name]
    sampler_name, sampler_kwargs = SAMPLER_OF_LAYOUT[self.layout]
    if config.sampler.name != sampler_name or dict(config.sampler.get("kwargs", {})) != sampler_kwargs:
      raise ValueError(f"DAML with {self.loss_name} needs {self.layout} batches: set config.sampler = "
                       f"dict(name={sampler_name!r}, kwargs={sampler_kwargs}), got {config.sampler.name!r} "
                       f"with {dict(config.sampler.get('kwargs', {}))}")
    self.options = resolve_options(dict(config.method.get("kwargs", {})), loss_name=self.loss_name,
                                   num_steps=int(config.num_steps), batch_size=int(config.batch_size))
    self.pretrain_steps = int(self.options.pretrain_steps)
    opts = self.options
    j_m_kwargs = {"contrastive": dict(reducer=opts.contrastive_reducer), "triplet": dict(reducer=opts.triplet_reducer),
                  "npair": dict(scale=opts.npair_scale)}.get(self.loss_name, {})
    self._j_m_only = functools.partial(daml_losses.J_M[self.loss_name], **j_m_kwargs)

  def j_m(self, anchor, positive, negatives, *, margin: float) -> jax.Array:
    """J_m of the variant with its options, plus `embedding_l2_penalty` × Sohn's norm penalty on the real tuples."""
    value = self._j_m_only(anchor, positive, negatives, margin=margin)
    if self.options.embedding_l2_penalty:
      value = value + self.options.embedding_l2_penalty * daml_losses.embedding_l2_penalty(anchor, positive)
    return value

  # -------------------------------------------------------------------------------------------------- hooks

  def phase(self, step: int) -> str:
    """"pretrain" for the first `pretrain_steps` steps, then "joint"."""
    return "pretrain" if step < self.pretrain_steps else "joint"

  def generator(self, width: int) -> Generator:
    hidden = (width,) if self.options.generator_hidden_dims is None else tuple(self.options.generator_hidden_dims)
    return Generator(output_dim=width, hidden_dims=hidden, output_relu=self.options.generator_output_relu,
                     init_stddev=self.options.generator_init_stddev)

  def init(self, rng: jax.Array, images: jax.Array):
    """`(params, batch_stats, {})`: the embedder's parameters, `generator` and (code preset) `metric_head`.

    The generator is initialised here, with the model, and left untouched by pre-training (its gradient is zero and
    the optimizer masks it), so at the switch it holds its initial values: Algorithm 1's "initialise θ_g".
    """
    model_rng, generator_rng, head_rng = jax.random.split(rng, 3)
    variables = self.model.init(model_rng, images, train=False)
    out = self.model.apply(variables, images, train=False, return_intermediates=True)
    space = out["features"] if self.options.generator_space == "features" else out["embeddings"]
    width = space.shape[-1]
    sample = jnp.zeros((2, width), space.dtype)
    params = dict(variables["params"])
    params["generator"] = self.generator(width).init(generator_rng, sample, jnp.zeros((2, 1), jnp.int32), sample,
                                                     sample)["params"]
    if self.options.metric_head_layers:
      params["metric_head"] = MetricHead(self.options.metric_head_layers).init(head_rng, sample)["params"]
    return params, variables.get("batch_stats", {}), {}

  def create_optimizer(self, optimizer_config, params) -> optax.GradientTransformation:
    """`optim.create_optimizer`, with the generator (and metric head) held back during pre-training.

    The hold-back is optim's frozen warm-up (`frozen_warmup_steps = pretrain_steps`, everything but `generator/` and
    `metric_head/` trainable): their updates are exactly zero *and* their Adam moments and count stay at their
    initial values, so weight decay cannot move them and Adam's bias correction starts at the switch, as a
    separate optimizer created then would. (A zero gradient alone would let coupled weight decay move them.)
    With `pretrain_lr_multipliers`, the per-path multipliers switch at the phase boundary (the released code's
    backbone: lr in pre-training, lr/1000 after): a scale after the optimizer's update, which for Adam is exactly a
    change of its learning rate with the moments kept.
    """
    config = dict(optim.default_config())
    config.update(dict(optimizer_config or {}))
    pretrain = self.pretrain_steps
    if pretrain:
      if int(config["frozen_warmup_steps"]):
        raise ValueError("DAML holds the generator back during pre-training through the optimizer's frozen warm-up; "
                         f"config.optimizer.frozen_warmup_steps must be 0, got {config['frozen_warmup_steps']}")
      config["frozen_warmup_steps"] = pretrain
      config["trainable_during_warmup"] = r"(?!generator/|metric_head/)"
    if self.options.pretrain_lr_multipliers is None:
      return optim.create_optimizer(config, params)
    joint_pairs = _multiplier_pairs(config["lr_multipliers"])
    pretrain_pairs = _multiplier_pairs(self.options.pretrain_lr_multipliers)
    config["lr_multipliers"] = ()
    base = optim.create_optimizer(config, params)
    for pattern, _ in joint_pairs + pretrain_pairs:
      optim.path_mask(params, pattern, "lr_multipliers")  # a clear error for a pattern that selects nothing

    def multiplier(path: str, pairs) -> float:
      return next((value for pattern, value in pairs if re.match(pattern, path)), 1.0)

    labels = jax.tree.map(lambda path: f"{multiplier(path, pretrain_pairs)!r}>{multiplier(path, joint_pairs)!r}",
                          optim.param_paths(params))

    def phase_scale(label: str) -> optax.GradientTransformation:
      before, after = (float(v) for v in label.split(">"))
      return optax.scale_by_schedule(lambda count: jnp.where(count < pretrain, before, after))

    return optax.chain(base, optax.multi_transform(
        {label: phase_scale(label) for label in set(jax.tree.leaves(labels))}, labels))

  def embed(self, params, batch_stats, images: jax.Array) -> jax.Array:
    """Inference embeddings of the trained metric: the embedder's, or the metric head's on them (code preset)."""
    embeddings = self.model.apply({"params": model_params(params), "batch_stats": batch_stats}, images, train=False)
    if self.options.metric_head_layers:
      embeddings = MetricHead(self.options.metric_head_layers).apply({"params": params["metric_head"]}, embeddings)
    return embeddings

  # -------------------------------------------------------------------------------------------------- the step

  def _metric_of_synthetic(self, params, batch_stats, synthetic: jax.Array) -> jax.Array:
    """Metric-space embeddings `[A, K, d]` of generator-space points `[A, K, c]`, through the shared head."""
    flat = synthetic.reshape(-1, synthetic.shape[-1])
    if self.options.generator_space == "embeddings":
      if not self.options.metric_head_layers:
        return synthetic
      out = MetricHead(self.options.metric_head_layers).apply({"params": params["metric_head"]}, flat)
    else:
      # Training mode, as the real images' pass; a head BatchNorm normalises the synthetic batch with its own
      # statistics, which are not kept (the running averages follow the real images only).
      out, _ = self.model.apply({"params": model_params(params), "batch_stats": batch_stats}, flat, train=True,
                                method=Embedder.embed_from_features, mutable=["batch_stats"])
    return out.reshape(*synthetic.shape[:-1], out.shape[-1])

  def objective(self, params, batch_stats, batch, phase: str):
    """J_m ("pretrain") or J = J_gen + λ·J_m ("joint"), and `(batch_stats, metrics)`."""
    opts = self.options
    variables = {"params": model_params(params), "batch_stats": batch_stats}
    out, updates = self.model.apply(variables, batch["image"], train=True, return_intermediates=True,
                                    mutable=["batch_stats"])
    batch_stats = updates.get("batch_stats", batch_stats)
    joint = phase == "joint"
    space = out["features"] if opts.generator_space == "features" else out["embeddings"]
    embeddings = out["embeddings"]
    if joint and opts.metric_head_layers:
      embeddings = MetricHead(opts.metric_head_layers).apply({"params": params["metric_head"]}, embeddings)
    e_anchor, e_positive, e_sources = split_tuples(embeddings, self.layout, opts.triplet_negatives)
    index = negative_index(self.layout, e_anchor.shape[0], opts.negatives_per_anchor, opts.triplet_negatives)
    similarity = self.loss_name == "npair"
    pairwise = self.loss_name == "contrastive"  # pairwise input: the anchor fills the positive slot (daml.md (c))

    if not joint:
      j_m = self.j_m(e_anchor, e_positive, e_sources[index], margin=opts.margin)
      return opts.hinge_scale * j_m, (batch_stats, {"j_m": j_m})

    gan = opts.routing == "gan"
    factor = opts.j_gen_backbone_factor
    if gan:
      maybe_stop = jax.lax.stop_gradient
    elif factor == 1.0:
      maybe_stop = lambda tree: tree  # noqa: E731
    else:  # the generator path's gradient into θ_f scaled by `factor`; values unchanged
      maybe_stop = lambda tree: jax.tree.map(  # noqa: E731
          lambda t: factor * t + (1.0 - factor) * jax.lax.stop_gradient(t), tree)
    x_anchor, x_positive, x_sources = (maybe_stop(x) for x in split_tuples(space, self.layout, opts.triplet_negatives))
    x_positive_slot = x_anchor if pairwise else x_positive
    synthetic = self.generator(space.shape[-1]).apply({"params": params["generator"]}, x_sources, index, x_anchor,
                                                      x_positive_slot)
    j_hard = daml_losses.j_hard(synthetic, x_anchor)
    j_reg = daml_losses.j_reg(synthetic, x_sources[index])
    # J_adv sees the metric as fixed under "gan" (stop-gradient on its parameters and on the real embeddings), and
    # damped by `j_gen_backbone_factor` otherwise (the generator's own parameters are never damped).
    metric_params = {key: (value if key == "generator" else maybe_stop(value)) for key, value in params.items()}
    e_synthetic = self._metric_of_synthetic(metric_params, batch_stats, synthetic)
    adv_anchor = maybe_stop(e_anchor)
    adv_positive = adv_anchor if pairwise else maybe_stop(e_positive)
    j_adv = daml_losses.j_adv(adv_anchor, adv_positive, e_synthetic, margin=opts.margin, similarity=similarity)
    if gan:  # the metric learns from x̃⁻ as given: no gradient into the generator or through its inputs
      e_synthetic = self._metric_of_synthetic(params, batch_stats, jax.lax.stop_gradient(synthetic))
    elif factor != 1.0:  # J_m's gradient into the metric's parameters is not damped
      e_synthetic = self._metric_of_synthetic(params, batch_stats, synthetic)
    j_m = self.j_m(e_anchor, e_positive, e_synthetic, margin=opts.margin)
    j_gen = j_hard + opts.lambda_reg * j_reg + opts.lambda_adv * opts.hinge_scale * j_adv
    total = j_gen + opts.lambda_m * opts.hinge_scale * j_m

    # Diagnostic: the share of synthetic negatives the metric ranks above the anchor's real positive (J_adv's goal;
    # for cont too, whose J_adv puts the anchor in the positive slot, which no point can beat).
    if similarity:
      harder = (jnp.einsum("ad,akd->ak", e_anchor, e_synthetic)
                > jnp.sum(e_anchor * e_positive, axis=-1)[:, None])
    else:
      harder = (daml_losses.squared_distance_to_each(e_anchor, e_synthetic)
                < jnp.sum(jnp.square(e_anchor - e_positive), axis=-1)[:, None])
    metrics = {"j_hard": j_hard, "j_reg": j_reg, "j_adv": j_adv, "j_gen": j_gen, "j_m": j_m,
               "synthetic_harder_than_positive": jnp.mean(harder.astype(jnp.float32))}
    return total, (batch_stats, jax.lax.stop_gradient(metrics))

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], tx: optax.GradientTransformation,
                 phase: str = "joint"):
    """One optax update on J_m ("pretrain") or on J = J_gen + λ·J_m ("joint"), from one `value_and_grad`."""
    if phase not in ("pretrain", "joint"):
      raise ValueError(f"DAML phases are 'pretrain' and 'joint', got {phase!r}")
    (loss, (batch_stats, metrics)), grads = jax.value_and_grad(self.objective, has_aux=True)(
        state.params, state.batch_stats, batch, phase)
    state = apply_gradients(state, grads, tx, batch_stats=batch_stats)
    generator_norm = optax.tree.norm(grads["generator"])
    return state, {"loss": loss, "grad_norm": optax.tree.norm(grads), "generator_grad_norm": generator_norm,
                   **metrics}
