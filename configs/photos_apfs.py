r"""APFS (`metriclearn/methods/apfs.py`) on CUB-200-2011, Cars196 and SOP.

  python -m metriclearn.main --config=configs/photos_apfs.py:sop --workdir=runs/sop_apfs \
      --config.dataset.data_dir=~/data/Stanford_Online_Products \
      --config.model.pretrained=~/weights/bn_inception-239d2248.pth

Arguments (comma-separated; `RECIPE_ARGS`): one data set (`cub`, `cars`, `sop`), optionally `no_mining` (random
classes per batch instead of hard class mining) and `smoke`. No published APFS number exists for any row
(`../shared/papers/apfs.md` (f)):

  row    published R@1   compare with
  cub    none            this recipe under --config.method.name=baseline, or configs/cub.py:ms
  cars   none            likewise, configs/cars.py:ms
  sop    none            likewise, configs/sop.py:ms

The APFS paper's training setting is unknown (`../shared/papers/apfs.md` (e): every value "[?]"; (f): no published
number). This recipe takes the closest surviving settings, the authors' later framework's "conventional" protocol
(apfs.md (e) [F]): BN-Inception (Cadene weights), GAP+GMP, 512-d, 32 classes × 4 per batch, Adam 1e-5, coupled weight
decay 1e-4 without biases and normalisation parameters, gradient clipping by norm 10 and by value 10, the
multi-similarity loss with α = 2, β = 40, base 0.5, 60 epochs; and the APFS options of `configs/glyphs_apfs.py`
(T = one epoch of batches, λ = 2e-4 from stage 1, hard class mining, the restricted loss). Departure: the framework's
reduce-on-plateau schedule is replaced by a constant learning rate (it needs a validation signal every epoch).
BatchNorm is frozen, as in the MS and PA BN-Inception code. No published APFS number exists to reach; compare with
the same recipe under `--config.method.name=baseline` (and the method kwargs removed) or `configs/<data set>.py:ms`.
"""

from __future__ import annotations

import ml_collections

from metriclearn import config_util
from metriclearn import optim

DATASETS = ("cub", "cars", "sop")
EPOCHS = 60
RECIPE_ARGS = {"cub": "CUB-200-2011", "cars": "Cars196", "sop": "Stanford Online Products",
               "no_mining": "random classes per batch (the authors' PROFS sampler) instead of hard class mining",
               "smoke": "a few steps on generated fixtures, for tests"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  parts = [part for part in (arg or "").split(",") if part]
  datasets = [part for part in parts if part in DATASETS]
  if len(datasets) != 1 or set(parts) - {*DATASETS, "no_mining", "smoke"}:
    raise ValueError(f"config argument {arg!r}: give one data set of {list(DATASETS)}, optionally 'no_mining' "
                     "and/or 'smoke'")
  dataset = datasets[0]
  photos = config_util.sibling_module(__file__, "photos.py")
  config = photos.get_config(f"{dataset},ms")
  config.name = f"{dataset}_apfs" + ("_no_mining" if "no_mining" in parts else "")
  config.batch_size = 128
  per_epoch = photos.steps_per_epoch(dataset, config.batch_size)
  config.num_steps = EPOCHS * per_epoch
  config.eval_every = config.checkpoint_every = 5 * per_epoch
  config.sampler = dict(name="m_per_class", kwargs=dict(m=4))
  config.model = dict(name="bninception", embedding_dim=512, pooling="gap+gmp", freeze_bn=True,
                      pretrained=ml_collections.config_dict.placeholder(str), kwargs={})
  config.loss = dict(name="multi_similarity", kwargs=dict(alpha=2.0, beta=40.0, base=0.5))
  config.optimizer = optim.default_config()
  config.optimizer.update(dict(name="adam", learning_rate=1e-5, weight_decay=1e-4, coupled_weight_decay=True,
                               weight_decay_exclude=optim.BIAS_AND_NORM_PATTERN, clip_global_norm=10.0,
                               clip_value=10.0, schedule="constant"))
  glyphs_apfs = config_util.sibling_config(__file__, "glyphs_apfs.py", "no_mining" if "no_mining" in parts else None)
  config.method = glyphs_apfs.method
  # T stays the recipe's unset int placeholder: one epoch of batches, resolved from the training split.
  if "smoke" in parts:
    photos.shrink_for_smoke(config)
    config.method.kwargs.representative_lifetime = 1  # stage 1 (mined, proximal) starts at step 1
  return config
