r"""DAML with the N-pair (eq. 12) J_m on Cars196.

  python -m metriclearn.main --config=configs/cars_daml_npair.py --workdir=runs/cars_daml_npair \
      --config.dataset.data_dir=~/data/cars196 \
      --config.model.pretrained=~/weights/googlenet-1378be20.pth

This is `configs/photos_daml.py:cars,npair`. Paper (`../shared/papers/daml.md` (f), Table 2, GoogLeNet, 512-d):
R@1 75.1 % with DAML, 68.9 % for the same loss without it. Settings, data and weights: the docstrings of
`configs/photos_daml.py` and `configs/cars.py`. Arguments (comma-separated): `code` (the released code's preset),
`smoke` (seconds, on generated fixtures, for tests). Not run here: no data set, weights or GPU on this machine.
"""

from metriclearn import config_util

ROW = "cars,npair"


def get_config(arg: str | None = None):
  return config_util.sibling_config(__file__, "photos_daml.py", ",".join([ROW, *([arg] if arg else [])]))
