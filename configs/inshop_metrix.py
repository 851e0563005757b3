r"""Metrix (feature mixing) with the contrastive loss on In-Shop.

  python -m metriclearn.main --config=configs/inshop_metrix.py --workdir=runs/inshop_metrix \
      --config.dataset.data_dir=~/data/inshop \
      --config.model.pretrained=~/weights/resnet50-0676ba61.pth

This is `configs/photos_metrix.py:inshop,contrastive,feature`. Paper (`../shared/papers/metrix.md` (f), ResNet-50, 512-d):
R@1 89.1 %; its baseline `configs/inshop.py:contrastive`: 86.4 %. Settings, data and weights: the
docstrings of `configs/photos_metrix.py` and `configs/inshop.py`. Argument: `smoke` (seconds, on generated fixtures,
for tests). Not run here: no data set, weights or GPU on the development machine.
"""

from metriclearn import config_util

ROW = "inshop,contrastive,feature"


def get_config(arg: str | None = None):
  return config_util.sibling_config(__file__, "photos_metrix.py", ",".join([ROW, *([arg] if arg else [])]))
