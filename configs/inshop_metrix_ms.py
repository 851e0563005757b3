r"""Metrix (feature mixing) with the multi-similarity loss on In-Shop.

  python -m metriclearn.main --config=configs/inshop_metrix_ms.py --workdir=runs/inshop_metrix_ms \
      --config.dataset.data_dir=~/data/inshop \
      --config.model.pretrained=~/weights/resnet50-0676ba61.pth

This is `configs/photos_metrix.py:inshop,ms,feature`. Paper (`../shared/papers/metrix.md` (f), ResNet-50, 512-d):
R@1 92.2 %; its baseline `configs/inshop.py:ms`: 90.1 %. Settings, data and weights: the
docstrings of `configs/photos_metrix.py` and `configs/inshop.py`. Argument: `smoke` (seconds, on generated fixtures,
for tests). Not run here: no data set, weights or GPU on the development machine.
"""

from metriclearn import config_util

ROW = "inshop,ms,feature"


def get_config(arg: str | None = None):
  return config_util.sibling_config(__file__, "photos_metrix.py", ",".join([ROW, *([arg] if arg else [])]))
