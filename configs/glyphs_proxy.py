r"""The classification / proxy family on `glyphs`: one learnable row (or K) per training class, trained with the
small CNN of `configs/glyphs.py`.

  python -m metriclearn.main --config=configs/glyphs_proxy.py:arcface --workdir=/tmp/glyphs_arcface

Arguments (comma-separated): one loss of `RECIPE_ARGS`, optionally `smoke` (seconds, for tests). Each loss has
PML 2.9's default settings (`metriclearn/proxy_losses.py`; proxy anchor: `losses.proxy_anchor`). Everything else is
the baseline's (`configs/glyphs.py`: model, m-per-class batches of 128, Adam 1e-3 with a cosine schedule, 600 steps,
seed), except the learning rate of the loss's own arrays (`params["loss"]`: proxies, class weights, centres):
proxy losses are known to need ~100× the backbone's rate (the Proxy-Anchor code trains its proxies at 100× and the
Reality Check (Musgrave et al. 2020) tunes them apart), so `optimizer.loss_lr_multiplier = 100`; override it with
`--config.optimizer.loss_lr_multiplier=1`. On glyphs this multiplier is the published convention, not tuned here.
"""

import ml_collections

from metriclearn import config_util

RECIPE_ARGS = {
    "proxy_nca": "ProxyNCA (Movshovitz-Attias et al. 2017): softmax over −‖x̂ − p̂‖², one proxy per class",
    "normalized_softmax": "normalised softmax (Zhai & Wu 2019): cosine logits over temperature 0.05",
    "cosface": "CosFace (Wang et al. 2018): scale 64, additive cosine margin 0.35",
    "arcface": "ArcFace (Deng et al. 2019): scale 64, additive angular margin 28.6°",
    "soft_triple": "SoftTriple (Qian et al. 2019): 10 centres per class, λ 20, γ 0.1, δ 0.01",
    "proxy_anchor": "proxy anchor (Kim et al. 2020): margin 0.1, α 32",
    "finetune": "build on configs/glyphs_finetune.py (the fair regime) instead of configs/glyphs.py",
    "smoke": "with one of the above: a seconds-long run for tests",
}
LOSSES = tuple(name for name in RECIPE_ARGS if name not in ("smoke", "finetune"))
# PML 2.9's defaults, spelt out so that each is overridable (`--config.loss.kwargs.scale=30`).
LOSS_KWARGS = {
    "proxy_nca": dict(softmax_scale=1.0),
    "normalized_softmax": dict(temperature=0.05),
    "cosface": dict(margin=0.35, scale=64.0),
    "arcface": dict(margin=28.6, scale=64.0),
    "soft_triple": dict(centers_per_class=10, la=20.0, gamma=0.1, margin=0.01),
    "proxy_anchor": dict(margin=0.1, alpha=32.0),
}
LOSS_LR_MULTIPLIER = 100.0


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  parts = [part for part in (arg or "").split(",") if part]
  chosen = [part for part in parts if part in LOSSES]
  unknown = [part for part in parts if part not in RECIPE_ARGS]
  if unknown or len(chosen) != 1:
    raise ValueError(f"config argument {arg!r}: give exactly one loss of {list(LOSSES)}, optionally with 'smoke' "
                     "(comma-separated), e.g. 'arcface' or 'soft_triple,smoke'")
  config = config_util.glyph_base_config(__file__, parts)
  config.name = f"glyphs_{chosen[0]}" + ("_finetune" if "finetune" in parts else "")
  config.loss = dict(name=chosen[0], kwargs=dict(LOSS_KWARGS[chosen[0]]))
  config.optimizer.loss_lr_multiplier = LOSS_LR_MULTIPLIER
  return config
