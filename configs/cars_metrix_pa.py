r"""Metrix (feature mixing) with the proxy-anchor loss on Cars196.

  python -m metriclearn.main --config=configs/cars_metrix_pa.py --workdir=runs/cars_metrix_pa \
      --config.dataset.data_dir=~/data/cars196 \
      --config.model.pretrained=~/weights/resnet50-0676ba61.pth

This is `configs/photos_metrix.py:cars,pa,feature`. Paper (`../shared/papers/metrix.md` (f), ResNet-50, 512-d):
R@1 89.1 %; its baseline `configs/cars.py:pa`: 87.6 %. Settings, data and weights: the
docstrings of `configs/photos_metrix.py` and `configs/cars.py`. Argument: `smoke` (seconds, on generated fixtures,
for tests). Not run here: no data set, weights or GPU on the development machine.
"""

from metriclearn import config_util

ROW = "cars,pa,feature"


def get_config(arg: str | None = None):
  return config_util.sibling_config(__file__, "photos_metrix.py", ",".join([ROW, *([arg] if arg else [])]))
