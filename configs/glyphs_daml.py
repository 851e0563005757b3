r"""DAML (`metriclearn/methods/daml.py`) on `glyphs`: the small CNN of `configs/glyphs.py`, one of four variants.

  python -m metriclearn.main --config=configs/glyphs_daml.py:tri --workdir=/tmp/glyphs_daml_tri
  python -m metriclearn.main --config=configs/glyphs_daml.py:npair,code --workdir=/tmp/glyphs_daml_npair_code

Arguments (comma-separated): one variant, `cont` (contrastive, eq. 8), `tri` (triplet, eq. 9), `lifted` (lifted
structure, eqs. 10–11) or `npair` (eq. 12); optionally `code` for the released code's preset (λ1 = λ2 = λ = 1, halved
hinges, generator on the L2-normalised embedding with the 2-layer metric head, joint-phase learning rates backbone
and head ×1/1000, generator ×1/10) instead of the paper's (λ1 = 1, λ2 = 1, λ = 50; daml.md (e), (g3), (g6)); `smoke`
shrinks the run to seconds for tests. `configs/glyphs_daml_{cont,tri,lifted,npair}.py` are this file with the
variant fixed. The ablation of eq. (7)'s routing: `--config.method.kwargs.routing=gan`.

Everything else is the baseline's (`configs/glyphs.py`: model, optimiser, 600 steps, seed), except what DAML needs:
the tuple sampler (triplets: batch 126 = 42 triplets of 84 distinct classes, the paper's "120 for triplet input";
pairs: `m_per_class` with m = 2, batch 128 = 64 classes, the paper's "128 for pairwise input"), and the first 20%
of the steps pre-train without the generator (the released code's 1,200 of 6,000). The paper's 20k iterations and
GoogLeNet belong to the CUB/Cars/SOP recipes, not to this one. Results on a 2-core CPU: benchmarks/RESULTS.md ("DAML"):
with seed 0 no variant beats its own loss without the generator (`--config.method.kwargs.pretrain_steps=600`), e.g.
tri R@1 0.354 vs 0.550, against 0.770 for the baseline.
"""

import ml_collections

from metriclearn.methods import daml
from metriclearn import config_util

VARIANTS = {"cont": "contrastive", "tri": "triplet", "lifted": "lifted_structure", "npair": "npair"}
TRIPLET_BATCH = {"full": 126, "smoke": 30}
PAIR_BATCH = {"full": 128, "smoke": 32}


def _baseline_config(arg):
  return config_util.sibling_config(__file__, "glyphs.py", arg)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  parts = [part for part in (arg or "").split(",") if part]
  variants = [part for part in parts if part in VARIANTS]
  unknown = [part for part in parts if part not in (*VARIANTS, "code", "smoke")]
  if unknown or len(variants) != 1:
    raise ValueError(f"config argument {arg!r}: give exactly one variant of {list(VARIANTS)}, optionally with 'code' "
                     "and/or 'smoke' (comma-separated), e.g. 'tri' or 'npair,code,smoke'")
  smoke = "smoke" in parts
  preset = "code" if "code" in parts else "paper"
  config = _baseline_config("smoke" if smoke else None)
  loss = VARIANTS[variants[0]]
  config.name = f"glyphs_daml_{variants[0]}" + ("_code" if preset == "code" else "")
  config.loss = dict(name=loss, kwargs={})
  sampler_name, sampler_kwargs = daml.SAMPLER_OF_LAYOUT[daml.LAYOUTS[loss]]
  config.sampler = dict(name=sampler_name, kwargs=dict(sampler_kwargs))
  size = "smoke" if smoke else "full"
  config.batch_size = (TRIPLET_BATCH if daml.LAYOUTS[loss] == "triplets" else PAIR_BATCH)[size]
  config.method = dict(name="daml", kwargs=dict(
      margin=1.0,             # γ
      pretrain_steps=int(round(daml.DEFAULT_PRETRAIN_FRACTION * config.num_steps)),
      routing="joint",        # eq. (7); "gan" for the ablation
      **daml.PRESETS[preset],
  ))
  if preset == "code":
    config.optimizer.lr_multipliers = daml.CODE_LR_MULTIPLIERS
  return config
