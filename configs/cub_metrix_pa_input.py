r"""Metrix (input mixing) with the proxy-anchor loss on CUB-200-2011.

  python -m metriclearn.main --config=configs/cub_metrix_pa_input.py --workdir=runs/cub_metrix_pa_input \
      --config.dataset.data_dir=~/data/CUB_200_2011 \
      --config.model.pretrained=~/weights/resnet50-0676ba61.pth

This is `configs/photos_metrix.py:cub,pa,input`. Paper (`../shared/papers/metrix.md` (f), ResNet-50, 512-d):
R@1 70.5 %; its baseline `configs/cub.py:pa`: 69.5 %. Settings, data and weights: the
docstrings of `configs/photos_metrix.py` and `configs/cub.py`. Argument: `smoke` (seconds, on generated fixtures,
for tests). Not run here: no data set, weights or GPU on the development machine.
"""

from metriclearn import config_util

ROW = "cub,pa,input"


def get_config(arg: str | None = None):
  return config_util.sibling_config(__file__, "photos_metrix.py", ",".join([ROW, *([arg] if arg else [])]))
