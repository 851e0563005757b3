r"""DAML (`metriclearn/methods/daml.py`) on `glyphs`: the small CNN of `configs/glyphs.py`, one of four variants.

  python -m metriclearn.main --config=configs/glyphs_daml.py:tri --workdir=/tmp/glyphs_daml_tri
  python -m metriclearn.main --config=configs/glyphs_daml.py:npair,code --workdir=/tmp/glyphs_daml_npair_code
  python -m metriclearn.main --config=configs/glyphs_daml.py:cont,recommended --workdir=/tmp/glyphs_daml_cont_rec

Arguments (comma-separated; `RECIPE_ARGS`): one variant, `cont` (contrastive, eq. 8), `tri` (triplet, eq. 9),
`lifted` (lifted structure, eqs. 10–11) or `npair` (eq. 12); at most one preset, `paper` (default: λ1 = 1, λ2 = 1,
λ = 50, J_m as published), `code` (the released code's: λ1 = λ2 = λ = 1, halved hinges, generator on the
L2-normalised embedding with the 2-layer metric head, joint-phase learning rates backbone and head ×1/1000,
generator ×1/10; daml.md (e), (g3), (g6)) or `recommended` (each J_m as the library's loss of its family trains it,
λ = 1 and no J_gen gradient into the backbone: `daml.PRESETS`, `daml.RECOMMENDED_MODEL_KWARGS`); `smoke` shrinks the
run to seconds for tests. Every option of `daml.DAMLOptions` is a key of `config.method.kwargs` (unset ones as typed
placeholders), e.g. `--config.method.kwargs.routing=gan` (the ablation of eq. (7)'s routing),
`--config.method.kwargs.contrastive_reducer=mean_nonzero`, `--config.method.kwargs.pretrain_steps=600` (J_m alone,
the matched "without DAML" row of the paper's tables).

Everything else is the baseline's (`configs/glyphs.py`: model, optimiser, 600 steps, seed), except what DAML needs:
the tuple sampler (triplets: batch 126 = 42 triplets of 84 distinct classes, the paper's "120 for triplet input";
pairs: `m_per_class` with m = 2, batch 128 = 64 classes, the paper's "128 for pairwise input"), and the first 20%
of the steps pre-train without the generator (the released code's 1,200 of 6,000). The paper's 20k iterations and
GoogLeNet belong to the photo recipes (`configs/photos_daml.py`), not to this one.

`finetune` builds on configs/glyphs_finetune.py (the fair regime); `no_generator` trains J_m alone for the whole run
(the comparison). In the fair regime (benchmarks/methods.py, 4 trials on validation fold 0 over the learning rate
and γ for each recipe; one H200, 2026-12-04), the `recommended` preset with the generator is *worse* than its J_m
alone on validation (MAP@R cont 0.674 vs 0.703, tri 0.674 vs 0.715, lifted 0.693 vs 0.733, npair 0.682 vs 0.727)
and on test (5 paired seeds, the last ones finished on a 2-core CPU, Δ MAP@R cont −0.047 [−0.077, −0.017], tri
−0.055 [−0.065, −0.044], lifted −0.036 [−0.041, −0.030], npair −0.037 [−0.053, −0.021]);
benchmarks/RESULTS.md, "The methods in the fair regime". Measured cause ("Ablations in the fair regime"): the joint
phase drops validation MAP@R at once (tri, seed 0: 0.669 at step 200, 0.546 at 300) under either routing, because
the metric then learns from synthetic negatives in place of the real ones and they are easier (J_m 0.04 on them vs
0.19 on the real ones at the switch); selection falls back to a pre-generator checkpoint in 15 of 16 runs.
The `paper` and `code` presets (same protocol, 2-core CPU, 5 paired seeds against the same J_m alone), Δ test
MAP@R: cont −0.025 [−0.059, +0.008] / −0.048 [−0.080, −0.015], tri −0.078 / −0.119, lifted −0.159 / −0.164, npair
−0.128 / −0.118 (paper / code; every interval but cont paper's below 0). `paper` collapses at the switch (λ = 50 and
J_gen into the backbone at the full rate; tri seed 0: validation 0.606 at step 200, 0.375 at 300) and selection
takes step ≤ 200 in all 20 runs (for cont that early J_m tests close to J_m alone);
`code` does not collapse but hardly trains after it (backbone at 1/1000 of the rate), and the published lifted and
N-pair J_m are weak before the generator starts (N-pair, seed 0, step 200: 0.559 vs 0.677 for the recommended J_m).

Each J_m without the generator (`:<variant>,recommended --config.method.kwargs.pretrain_steps=600`), seed 0, 600
steps, 2-core CPU, against the library's loss of the same family (`configs/glyphs.py --config.loss.name=<loss>`,
`loss.kwargs={}`), R@1: cont 0.774 vs contrastive 0.794 (−0.020: DAML's pair batches of m = 2 and squared distances
with γ = 1 against the library's m = 4 batches and unsquared distances with margin 0.5); tri 0.698 vs triplet 0.798
(−0.10, not within 0.02: the triplet batches hold one positive per anchor and squared distances with γ = 1, the
library's m = 4 batches three positives and margin 0.1; not isolated further); lifted 0.674 vs lifted structure
0.421 (unit sphere) / 0.415 (unnormalised); npair 0.769 vs N-pair 0.449 (unscaled cosine). Earlier results (paper
preset: no variant beats its own loss without the generator): benchmarks/RESULTS.md ("DAML").
"""

import dataclasses

import ml_collections

from metriclearn import config_util
from metriclearn.methods import daml

VARIANTS = {"cont": "contrastive", "tri": "triplet", "lifted": "lifted_structure", "npair": "npair"}
PRESET_NAMES = ("paper", "code", "recommended")
TRIPLET_BATCH = {"full": 126, "smoke": 30}
PAIR_BATCH = {"full": 128, "smoke": 32}

RECIPE_ARGS = {
    "cont": "DAML (cont): contrastive J_m, eq. 8, pair batches",
    "tri": "DAML (tri): triplet J_m, eq. 9, triplet batches",
    "lifted": "DAML (lifted): lifted-structure J_m, eqs. 10-11, pair batches",
    "npair": "DAML (N-pair): N-pair J_m, eq. 12, pair batches",
    "paper": "preset (default): the paper's lambda1 = lambda2 = 1, lambda = 50, J_m as published",
    "code": "preset: the released Chainer code's (lambda = 1, metric head on the embedding, lr/1000 backbone)",
    "recommended": "preset: each J_m as strong as the library's loss of its family; lambda = 1, J_gen off the backbone",
    "no_generator": "the comparison: J_m alone for the whole run (the paper's 'without DAML' row); same everything",
    "finetune": "build on configs/glyphs_finetune.py (the fair regime) instead of configs/glyphs.py",
    "smoke": "a few steps on tiny data, for tests",
}
EXTRA_ARGS = ("no_generator", "finetune")


def method_kwargs(preset: str, num_steps: int) -> dict:
  """Every `DAMLOptions` field: the preset's values, the rest at their defaults (None ones as typed placeholders)."""
  placeholder = ml_collections.config_dict.placeholder
  kwargs = dict(
      lambda_reg=1.0, lambda_adv=1.0, lambda_m=50.0,
      margin=1.0,  # γ
      pretrain_steps=int(round(daml.DEFAULT_PRETRAIN_FRACTION * num_steps)),
      routing="joint",  # eq. (7); "gan" for the ablation
      generator_space="features", generator_hidden_dims=placeholder(tuple), generator_output_relu=False,
      generator_init_stddev=placeholder(float), metric_head_layers=0, hinge_scale=1.0, triplet_reducer="mean",
      negatives_per_anchor=placeholder(int), pretrain_lr_multipliers=placeholder(tuple),
      contrastive_reducer="pooled_mean", triplet_negatives="tuple", npair_scale=1.0, embedding_l2_penalty=0.0,
      j_gen_backbone_factor=1.0)
  kwargs.update(daml.PRESETS[preset])
  missing = sorted({field.name for field in dataclasses.fields(daml.DAMLOptions)} - set(kwargs))
  assert not missing, f"recipe lacks DAML options {missing}"
  return kwargs


def parse(arg: str | None, extra: tuple[str, ...] = ()) -> tuple[str, str, list[str]]:
  """`(variant, preset, parts)` of a comma-separated argument; raises ValueError listing the valid words."""
  parts = [part for part in (arg or "").split(",") if part]
  variants = [part for part in parts if part in VARIANTS]
  presets = [part for part in parts if part in PRESET_NAMES]
  unknown = [part for part in parts if part not in (*VARIANTS, *PRESET_NAMES, "smoke", *extra)]
  if unknown or len(variants) != 1 or len(presets) > 1:
    raise ValueError(f"config argument {arg!r}: give exactly one variant of {list(VARIANTS)}, optionally one preset "
                     f"of {list(PRESET_NAMES)} and/or {[*extra, 'smoke']} (comma-separated), e.g. 'tri' or "
                     "'npair,recommended,smoke'")
  return variants[0], (presets[0] if presets else "paper"), parts


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant, preset, parts = parse(arg, EXTRA_ARGS)
  smoke = "smoke" in parts
  config = config_util.glyph_base_config(__file__, parts)
  loss = VARIANTS[variant]
  config.name = "_".join([f"glyphs_daml_{variant}"] + ([] if preset == "paper" else [preset])
                         + [part for part in parts if part in EXTRA_ARGS])
  config.loss = dict(name=loss, kwargs={})
  sampler_name, sampler_kwargs = daml.SAMPLER_OF_LAYOUT[daml.LAYOUTS[loss]]
  config.sampler = dict(name=sampler_name, kwargs=dict(sampler_kwargs))
  size = "smoke" if smoke else "full"
  config.batch_size = (TRIPLET_BATCH if daml.LAYOUTS[loss] == "triplets" else PAIR_BATCH)[size]
  config.model.kwargs = dict(normalize=True)
  if preset == "recommended":
    config.model.kwargs.update(daml.RECOMMENDED_MODEL_KWARGS.get(loss, {}))
  config.method = dict(name="daml", kwargs=method_kwargs(preset, config.num_steps))
  if preset == "code":
    config.optimizer.lr_multipliers = daml.CODE_LR_MULTIPLIERS
  if "no_generator" in parts:
    config.method.kwargs.pretrain_steps = config.num_steps
  # A sweep searches the learning rate and J_m's margin γ (DAML takes no config.loss.kwargs: its J_m has its own).
  config.sweep.shared = "learning_rate"
  config.sweep.space.method = dict(kwargs=dict(margin="uniform(0.2, 2.0)"))
  return config
