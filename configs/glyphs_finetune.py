r"""The paper-like regime on `glyphs`: a pre-trained backbone fine-tuned on the fixed train set, selected on validation.

  python -m metriclearn.main --config=configs/glyphs_finetune.py --workdir=/tmp/glyphs_ft

As the papers fine-tune an ImageNet backbone on CUB / Cars / SOP, this fine-tunes the small CNN pre-trained on the
glyph pool (`configs/glyphs_pretrain.py`: ~2,100 other characters of the same fonts, none of them a `glyphs` character
or a look-alike; built and cached on first use, a few minutes) on the `glyphs` train classes (~30 renderings each).
The loss, model and optimiser are those of `configs/glyphs.py` (multi-similarity, the baseline); what differs:

* `model.pretrained = "glyphs_pretrain"`: the backbone starts from the pre-trained weights, the head from scratch;
* the fair protocol (Musgrave et al. 2020): fold `val_fold` of `num_folds` class-disjoint folds of the train classes
  validates, and the checkpoint with the best validation MAP@R is the one tested (the test split is read once);
* train-time augmentation: every training image shifted by up to `train_shift` pixels at every step (the random
  crop's analogue; no flip, which would turn b into d: `glyphs.random_shift`);
* `num_steps`: long enough that the validation MAP@R has plateaued (curve in benchmarks/RESULTS.md).

Results (5 seeds, fine-tuned vs from scratch): benchmarks/RESULTS.md ("Paper-like regime"). Arguments:
`:smoke` (seconds, for tests), `:scratch` (the same regime from random weights, the control), combinable
(`:scratch,smoke`).
"""

import ml_collections

from metriclearn import config_util

RECIPE_ARGS = {
    "smoke": "seconds, for tests (the pre-trained backbone is glyphs_pretrain:smoke)",
    "scratch": "the same regime from random weights: the control for the pre-training's effect",
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = set(arg.split(",")) if arg else set()
  unknown = args - set(RECIPE_ARGS)
  if unknown:
    raise ValueError(f"unknown config argument(s) {sorted(unknown)}; valid: {', '.join(RECIPE_ARGS)} "
                     "(comma-separated) or none")
  config = config_util.sibling_config(__file__, "glyphs.py", "smoke" if "smoke" in args else None)
  config.name = "glyphs_finetune"
  config.model.pretrained = "glyphs_pretrain"
  config.dataset.kwargs.val_fold = 0
  config.dataset.kwargs.num_folds = 4
  config.dataset.kwargs.train_shift = 2
  config.num_steps = 1200
  config.eval_every = 100  # validation MAP@R: the checkpoint selection's resolution
  config.checkpoint_every = 400
  config.log_every = 50

  if "smoke" in args:
    config.model.pretrained = "glyphs_pretrain:smoke"
    config.num_steps = 4
    config.eval_every = 2
    config.checkpoint_every = 2
    config.log_every = 2
  if "scratch" in args:
    config.name = "glyphs_finetune_scratch"
    config.model.pretrained = ml_collections.config_dict.placeholder(str)
  return config
