r"""The pair and tuple losses of `metriclearn/pair_losses.py` on `glyphs`: the baseline recipe with another loss.

  python -m metriclearn.main --config=configs/glyphs_pair.py:ntxent --workdir=/tmp/glyphs_ntxent
  python -m metriclearn.main --config=configs/glyphs_pair.py:circle,smoke --workdir=/tmp/glyphs_circle_smoke

Arguments (comma-separated): one loss of `RECIPE_ARGS`, optionally `smoke` (seconds, for tests). Everything else is
`configs/glyphs.py`'s (small CNN, 64-d embeddings, Adam 1e-3 with a cosine schedule, 600 steps, m-per-class batches of
32 classes × 4, seed 0), so `configs/glyphs.py` (multi-similarity) with the same seed is the comparison. The loss
settings are where a researcher would start: PML's defaults, which are the papers' suggested values (NT-Xent τ = 0.07,
SupCon τ = 0.1, circle m = 0.4 and γ = 80 for fine-grained retrieval, FastAP's 10 bins, the margin loss's α = 0.2,
β = 1.2), plus the SNR loss's zero-mean regulariser at weight 0.1 (PML ≤ 0.9's default; PML 2.9 leaves it off).
None was tuned, on test or otherwise. The margin loss runs with a fixed β here; its learnable β (`learn_beta=True`,
per class with `num_classes`) is a loss-owned array that the training program must hold (`pair_losses.init_margin_beta`).
"""

import ml_collections

from metriclearn import config_util

# argument -> (loss name, its keyword arguments)
LOSS_OF_ARG = {
    "ntxent": ("ntxent", dict(temperature=0.07)),
    "supcon": ("supcon", dict(temperature=0.1)),
    "margin": ("margin", dict(margin=0.2, nu=0.0, beta=1.2)),
    "fastap": ("fastap", dict(num_bins=10)),
    "snr_contrastive": ("snr_contrastive", dict(pos_margin=0.0, neg_margin=1.0, regularizer_weight=0.1)),
    "circle": ("circle", dict(m=0.4, gamma=80.0)),
}

RECIPE_ARGS = {
    "ntxent": "NT-Xent (Chen et al. 2020), temperature 0.07",
    "supcon": "supervised contrastive (Khosla et al. 2020), temperature 0.1",
    "margin": "margin loss (Wu et al. 2017), α = 0.2, fixed β = 1.2, all triplets",
    "fastap": "FastAP (Cakir et al. 2019), 10 histogram bins",
    "snr_contrastive": "SNR contrastive (Yuan et al. 2019), margins 0 / 1, zero-mean regulariser 0.1",
    "circle": "circle loss (Sun et al. 2020), m = 0.4, γ = 80",
    "finetune": "build on configs/glyphs_finetune.py (the fair regime) instead of configs/glyphs.py",
    "smoke": "shrink the run to seconds (tests); combine with a loss, e.g. 'ntxent,smoke'",
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  parts = [part for part in (arg or "").split(",") if part]
  chosen = [part for part in parts if part in LOSS_OF_ARG]
  unknown = [part for part in parts if part not in RECIPE_ARGS]
  if unknown or len(chosen) != 1:
    raise ValueError(f"config argument {arg!r}: give exactly one loss of {list(LOSS_OF_ARG)}, optionally with "
                     "'smoke' (comma-separated), e.g. 'ntxent' or 'circle,smoke'")
  smoke = "smoke" in parts
  config = config_util.glyph_base_config(__file__, parts)
  name, kwargs = LOSS_OF_ARG[chosen[0]]
  config.name = f"glyphs_{chosen[0]}" + ("_finetune" if "finetune" in parts else "")
  config.loss = dict(name=name, kwargs=dict(kwargs))
  return config
