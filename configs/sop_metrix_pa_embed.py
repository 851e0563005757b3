r"""Metrix (embed mixing) with the proxy-anchor loss on SOP.

  python -m metriclearn.main --config=configs/sop_metrix_pa_embed.py --workdir=runs/sop_metrix_pa_embed \
      --config.dataset.data_dir=~/data/Stanford_Online_Products \
      --config.model.pretrained=~/weights/resnet50-0676ba61.pth

This is `configs/photos_metrix.py:sop,pa,embed`. Paper (`../shared/papers/metrix.md` (f), ResNet-50, 512-d):
R@1 80.6 %; its baseline `configs/sop.py:pa`: 79.1 %. Settings, data and weights: the
docstrings of `configs/photos_metrix.py` and `configs/sop.py`. Argument: `smoke` (seconds, on generated fixtures,
for tests). Not run here: no data set, weights or GPU on the development machine.
"""

from metriclearn import config_util

ROW = "sop,pa,embed"


def get_config(arg: str | None = None):
  return config_util.sibling_config(__file__, "photos_metrix.py", ",".join([ROW, *([arg] if arg else [])]))
