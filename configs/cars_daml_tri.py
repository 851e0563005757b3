r"""DAML with the triplet (eq. 9) J_m on Cars196.

  python -m metriclearn.main --config=configs/cars_daml_tri.py --workdir=runs/cars_daml_tri \
      --config.dataset.data_dir=~/data/cars196 \
      --config.model.pretrained=~/weights/googlenet-1378be20.pth

This is `configs/photos_daml.py:cars,tri`. Paper (`../shared/papers/daml.md` (f), Table 2, GoogLeNet, 512-d):
R@1 60.6 % with DAML, 45.1 % for the same loss without it. Settings, data and weights: the docstrings of
`configs/photos_daml.py` and `configs/cars.py`. Arguments (comma-separated): `code` (the released code's preset),
`smoke` (seconds, on generated fixtures, for tests). Not run here: no data set, weights or GPU on this machine.
"""

from metriclearn import config_util

ROW = "cars,tri"


def get_config(arg: str | None = None):
  return config_util.sibling_config(__file__, "photos_daml.py", ",".join([ROW, *([arg] if arg else [])]))
