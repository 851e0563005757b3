r"""Metrix (feature mixing) with the multi-similarity loss on CUB-200-2011.

  python -m metriclearn.main --config=configs/cub_metrix_ms.py --workdir=runs/cub_metrix_ms \
      --config.dataset.data_dir=~/data/CUB_200_2011 \
      --config.model.pretrained=~/weights/resnet50-0676ba61.pth

This is `configs/photos_metrix.py:cub,ms,feature`. Paper (`../shared/papers/metrix.md` (f), ResNet-50, 512-d):
R@1 71.4 %; its baseline `configs/cub.py:ms`: 67.8 %. Settings, data and weights: the
docstrings of `configs/photos_metrix.py` and `configs/cub.py`. Argument: `smoke` (seconds, on generated fixtures,
for tests). Not run here: no data set, weights or GPU on the development machine.
"""

from metriclearn import config_util

ROW = "cub,ms,feature"


def get_config(arg: str | None = None):
  return config_util.sibling_config(__file__, "photos_metrix.py", ",".join([ROW, *([arg] if arg else [])]))
