r"""Metrix (input mixing) with the proxy-anchor loss on In-Shop.

  python -m metriclearn.main --config=configs/inshop_metrix_pa_input.py --workdir=runs/inshop_metrix_pa_input \
      --config.dataset.data_dir=~/data/inshop \
      --config.model.pretrained=~/weights/resnet50-0676ba61.pth

This is `configs/photos_metrix.py:inshop,pa,input`. Paper (`../shared/papers/metrix.md` (f), ResNet-50, 512-d):
R@1 90.9 %; its baseline `configs/inshop.py:pa`: 90.0 %. Settings, data and weights: the
docstrings of `configs/photos_metrix.py` and `configs/inshop.py`. Argument: `smoke` (seconds, on generated fixtures,
for tests). Not run here: no data set, weights or GPU on the development machine.
"""

from metriclearn import config_util

ROW = "inshop,pa,input"


def get_config(arg: str | None = None):
  return config_util.sibling_config(__file__, "photos_metrix.py", ",".join([ROW, *([arg] if arg else [])]))
