r"""Deep AML (`metriclearn/methods/aml.py`) on CUB-200-2011, Cars196 and SOP.

  python -m metriclearn.main --config=configs/photos_aml.py:cub --workdir=runs/cub_aml \
      --config.dataset.data_dir=~/data/CUB_200_2011 --config.model.pretrained=~/weights/resnet50-0676ba61.pth

Arguments (comma-separated; `RECIPE_ARGS`): one data set (`cub`, `cars`, `sop`), optionally `smoke` (seconds, on
generated fixtures). No published AML number exists for any row (`../shared/papers/aml.md` (f)):

  row    published R@1   compare with
  cub    none            configs/cub.py:contrastive (64.7)
  cars   none            configs/cars.py:contrastive (81.6)
  sop    none            configs/sop.py:contrastive (74.9)

The AML paper's deep setting could not be read (`../shared/papers/aml.md` (f): no table, no hyper-parameters), so
this recipe is our design: the contrastive baseline of `configs/photos.py` (the Metrix code's ResNet-50 setting,
whose published R@1 is the comparison: CUB 64.7, Cars 81.6, SOP 74.9) plus AML's two stages with the options of
`configs/glyphs_aml.py` (adversarial pairs in the feature space before the embedding head, K = 10 SGD confusion
steps with closeness weight β = 10, distinguishment on original + α·adversarial pairs, α = 0.3). No published AML
number exists to reach; compare with `configs/<data set>.py:contrastive` under the same protocol and seeds.
"""

from __future__ import annotations

import ml_collections

from metriclearn import config_util

DATASETS = ("cub", "cars", "sop")
RECIPE_ARGS = {"cub": "CUB-200-2011", "cars": "Cars196", "sop": "Stanford Online Products",
               "smoke": "a few steps on generated fixtures, for tests"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  parts = [part for part in (arg or "").split(",") if part]
  datasets = [part for part in parts if part in DATASETS]
  if len(datasets) != 1 or set(parts) - {*DATASETS, "smoke"}:
    raise ValueError(f"config argument {arg!r}: give one data set of {list(DATASETS)}, optionally 'smoke'")
  config = config_util.sibling_config(__file__, "photos.py", ",".join([datasets[0], "contrastive", *(
      ["smoke"] if "smoke" in parts else [])]))
  config.name = f"{datasets[0]}_aml"
  glyphs_aml = config_util.sibling_config(__file__, "glyphs_aml.py")
  config.method = glyphs_aml.method
  return config
