r"""The ImageNet analogue for `glyphs`: the small CNN pre-trained as a classifier of the glyph pool.

  python -m metriclearn.pretrain --config=configs/glyphs_pretrain.py

The pool (`metriclearn/data/glyph_pool.py`): ~2,100 characters of the bundled fonts that are neither `glyphs`
characters nor look-alikes of them, 24 renderings each (20 train, 4 held out). Fine-tuning recipes name the result
`config.model.pretrained = "glyphs_pretrain"`; the training program pre-trains it on first use and caches it
(`metriclearn.pretrain.resolve`). Cost and held-out accuracy: benchmarks/RESULTS.md ("Glyph pre-training").

`:smoke` shrinks it to seconds for tests (40 classes, 4 steps).
"""

import ml_collections

RECIPE_ARGS = {"smoke": "40 pool classes, 4 steps: seconds, for tests"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.name = "glyphs_pretrain"
  config.seed = 0
  config.num_steps = 2500
  config.batch_size = 256
  config.log_every = 50
  config.eval_every = 500  # held-out accuracy (not a selection: the last step's weights are written)
  config.label_smoothing = 0.1

  # Generation settings of `glyph_pool.generate_pool` (augmentation as glyphs'), plus the held-out renderings.
  config.pool = dict(
      data_dir=ml_collections.config_dict.placeholder(str), images_per_class=24, held_out_per_class=4,
      max_classes=ml_collections.config_dict.placeholder(int), min_faces=8, duplicate_tolerance=0.021,
      lookalike_tolerance=0.05,
  )  # fmt: skip
  # The backbone the fine-tuning recipes load (same name and kwargs as theirs), pooled as theirs.
  config.model = dict(name="small_cnn", pooling="gap", kwargs={})
  config.optimizer = dict(learning_rate=2e-3, weight_decay=1e-4, warmup_steps=125)

  if arg == "smoke":
    config.num_steps = 4
    config.batch_size = 32
    config.log_every = 2
    config.eval_every = 2
    config.pool.images_per_class = 4
    config.pool.held_out_per_class = 1
    config.pool.max_classes = 40
    config.optimizer.warmup_steps = 1
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; valid: {', '.join(RECIPE_ARGS)} or none")
  return config
