r"""DAML (`metriclearn/methods/daml.py`) on CUB-200-2011, Cars196 and SOP: every row of the paper's tables is an argument.

  python -m metriclearn.main --config=configs/photos_daml.py:cars,tri --workdir=runs/cars_daml_tri \
      --config.dataset.data_dir=~/data/cars196 --config.model.pretrained=~/weights/googlenet-1378be20.pth

Arguments (comma-separated; `RECIPE_ARGS`): one data set (`cub`, `cars`, `sop`; the paper has no In-Shop table), one
variant (`cont`, `tri`, `lifted`, `npair`), optionally one preset (`paper`, the default; `code`, the released code's;
`recommended`, each J_m as the library's loss of its family trains it: `configs/glyphs_daml.py`) and `smoke`
(seconds, on generated fixtures). Every `DAMLOptions` field is a key of `config.method.kwargs`. Published R@1 (%)
(`PUBLISHED`, `../shared/papers/daml.md` (f), Tables 1–3, GoogLeNet, 512-d), with DAML / the same loss without it:

  row        cub           cars          sop
  cont       35.7 / 27.2   37.2 / 27.6   41.7 / 37.5
  tri        37.6 / 35.9   60.6 / 45.1   58.1 / 53.9
  lifted     49.0 / 46.9   72.5 / 59.9   66.3 / 62.6
  npair      52.7 / 51.9   75.1 / 68.9   68.4 / 66.4

The setting (`../shared/papers/daml.md` (e)): GoogLeNet (torchvision weights), 512-d embedding, resize 256² → random
224 crop + flip, margin γ = 1, 20,000 iterations of which the first 20 % pre-train without the generator (the
released code's 1,200 of 6,000), batch 120 = 40 triplets with distinct classes for `tri`, 128 = 64 classes × 2 for
the pair variants, λ1 = 1, λ2 = 1, λ = 50 with the fully joint routing of eq. (7). Optimiser: the paper names none;
Adam 1e-5 with the new head at 10× and weight decay 1.09e-3 (the released code's) is our choice, unverified. `code`:
λ = 1, the released code's 2-layer metric head on the L2-normalised embedding (evaluated on that head's output, as
the code), 6,000 iterations (1,200 pre-training), its joint-phase learning rates (backbone and head ×1/1000,
generator ×1/10) from Adam 1e-4 (the top of its random search range), and BatchNorm before the embedding layer.
Departure: ImageNet normalisation instead of the Caffe mean, since the weights are torchvision's. The baselines the
paper compares with are the same recipe without the generator: `--config.method.kwargs.pretrain_steps=20000` (for
`tri` also `configs/<data set>.py:triplet`). Not run here: no data set, weights or GPU on the development machine.
"""

from __future__ import annotations

import ml_collections

from metriclearn import config_util
from metriclearn.methods import daml

DATASETS = ("cub", "cars", "sop")
VARIANTS = {"cont": "contrastive", "tri": "triplet", "lifted": "lifted_structure", "npair": "npair"}

# daml.md (f), Tables 1–3 (GoogLeNet, 512-d): R@1 (%) of DAML(<variant>) and of the same loss without DAML.
PUBLISHED = {
    "cont": {"cub": (35.7, 27.2), "cars": (37.2, 27.6), "sop": (41.7, 37.5)},
    "tri": {"cub": (37.6, 35.9), "cars": (60.6, 45.1), "sop": (58.1, 53.9)},
    "lifted": {"cub": (49.0, 46.9), "cars": (72.5, 59.9), "sop": (66.3, 62.6)},
    "npair": {"cub": (52.7, 51.9), "cars": (75.1, 68.9), "sop": (68.4, 66.4)},
}
BATCH = {"triplets": 120, "pairs": 128}
RECIPE_ARGS = {
    "cub": "CUB-200-2011", "cars": "Cars196", "sop": "Stanford Online Products",
    "cont": "DAML (cont), eq. 8", "tri": "DAML (tri), eq. 9", "lifted": "DAML (lifted), eqs. 10-11",
    "npair": "DAML (N-pair), eq. 12",
    "paper": "preset (default): lambda1 = lambda2 = 1, lambda = 50, J_m as published",
    "code": "preset: the released code's (lambda = 1, metric head, 6k steps, lr/1000 backbone in the joint phase)",
    "recommended": "preset: each J_m as strong as the library's loss of its family (configs/glyphs_daml.py)",
    "smoke": "a few steps on generated fixtures, for tests",
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  glyphs_daml = config_util.sibling_module(__file__, "glyphs_daml.py")
  parts = [part for part in (arg or "").split(",") if part]
  datasets = [part for part in parts if part in DATASETS]
  if len(datasets) != 1:
    raise ValueError(f"config argument {arg!r}: give one data set of {list(DATASETS)} and one variant of "
                     f"{list(VARIANTS)}, optionally one preset of {list(glyphs_daml.PRESET_NAMES)} and/or 'smoke' "
                     "(comma-separated), e.g. 'cars,tri'")
  variant, preset, parts = glyphs_daml.parse(arg, extra=DATASETS)
  dataset = datasets[0]
  photos = config_util.sibling_module(__file__, "photos.py")
  config = photos.get_config(f"{dataset},triplet")  # GoogLeNet, DAML's preprocessing, 20k iterations
  config.name = f"{dataset}_daml_{variant}" + ("" if preset == "paper" else f"_{preset}")
  loss = VARIANTS[variant]
  config.loss = dict(name=loss, kwargs={})
  layout = daml.LAYOUTS[loss]
  sampler_name, sampler_kwargs = daml.SAMPLER_OF_LAYOUT[layout]
  config.sampler = dict(name=sampler_name, kwargs=dict(sampler_kwargs))
  config.batch_size = BATCH[layout]
  config.model.kwargs = dict(config.model.get("kwargs", {}))
  config.model.kwargs.normalize = True
  if preset == "code":
    config.num_steps = daml.CODE_NUM_STEPS
    config.optimizer.learning_rate = 1e-4
    config.optimizer.lr_multipliers = daml.CODE_LR_MULTIPLIERS
    config.model.kwargs.head_batchnorm = True
  if preset == "recommended":
    config.model.kwargs.update(daml.RECOMMENDED_MODEL_KWARGS.get(loss, {}))
  config.method = dict(name="daml", kwargs=glyphs_daml.method_kwargs(preset, config.num_steps))
  if "smoke" in parts:
    photos.shrink_for_smoke(config)
    config.method.kwargs.pretrain_steps = 1  # one step of each phase
  return config
