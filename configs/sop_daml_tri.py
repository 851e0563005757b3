r"""DAML with the triplet (eq. 9) J_m on SOP.

  python -m metriclearn.main --config=configs/sop_daml_tri.py --workdir=runs/sop_daml_tri \
      --config.dataset.data_dir=~/data/Stanford_Online_Products \
      --config.model.pretrained=~/weights/googlenet-1378be20.pth

This is `configs/photos_daml.py:sop,tri`. Paper (`../shared/papers/daml.md` (f), Table 3, GoogLeNet, 512-d):
R@1 58.1 % with DAML, 53.9 % for the same loss without it. Settings, data and weights: the docstrings of
`configs/photos_daml.py` and `configs/sop.py`. Arguments (comma-separated): `code` (the released code's preset),
`smoke` (seconds, on generated fixtures, for tests). Not run here: no data set, weights or GPU on this machine.
"""

from metriclearn import config_util

ROW = "sop,tri"


def get_config(arg: str | None = None):
  return config_util.sibling_config(__file__, "photos_daml.py", ",".join([ROW, *([arg] if arg else [])]))
