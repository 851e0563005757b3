r"""APFS on CUB-200-2011: `configs/photos_apfs.py:cub`.

  python -m metriclearn.main --config=configs/cub_apfs.py --workdir=runs/cub_apfs \
      --config.dataset.data_dir=~/data/CUB_200_2011 \
      --config.model.pretrained=~/weights/bn_inception-239d2248.pth

No published APFS number exists (`../shared/papers/apfs.md` (f)). Argument `no_mining`: random classes per batch
instead of hard class mining. Settings, data and weights: the docstrings of `configs/photos_apfs.py` and
`configs/cub.py`. Argument `smoke`: seconds, on generated fixtures, for tests. Not run here: no data set, weights or
GPU on the development machine.
"""

from metriclearn import config_util


def get_config(arg: str | None = None):
  return config_util.sibling_config(__file__, "photos_apfs.py", ",".join(["cub", *([arg] if arg else [])]))
