r"""Metrix (embed mixing) with the contrastive loss on Cars196.

  python -m metriclearn.main --config=configs/cars_metrix_embed.py --workdir=runs/cars_metrix_embed \
      --config.dataset.data_dir=~/data/cars196 \
      --config.model.pretrained=~/weights/resnet50-0676ba61.pth

This is `configs/photos_metrix.py:cars,contrastive,embed`. Paper (`../shared/papers/metrix.md` (f), ResNet-50, 512-d):
R@1 83.9 %; its baseline `configs/cars.py:contrastive`: 81.6 %. Settings, data and weights: the
docstrings of `configs/photos_metrix.py` and `configs/cars.py`. Argument: `smoke` (seconds, on generated fixtures,
for tests). Not run here: no data set, weights or GPU on the development machine.
"""

from metriclearn import config_util

ROW = "cars,contrastive,embed"


def get_config(arg: str | None = None):
  return config_util.sibling_config(__file__, "photos_metrix.py", ",".join([ROW, *([arg] if arg else [])]))
