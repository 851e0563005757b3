r"""APFS on SOP: `configs/photos_apfs.py:sop`.

  python -m metriclearn.main --config=configs/sop_apfs.py --workdir=runs/sop_apfs \
      --config.dataset.data_dir=~/data/Stanford_Online_Products \
      --config.model.pretrained=~/weights/bn_inception-239d2248.pth

No published APFS number exists (`../shared/papers/apfs.md` (f)). Argument `no_mining`: random classes per batch
instead of hard class mining. Settings, data and weights: the docstrings of `configs/photos_apfs.py` and
`configs/sop.py`. Argument `smoke`: seconds, on generated fixtures, for tests. Not run here: no data set, weights or
GPU on the development machine.
"""

from metriclearn import config_util


def get_config(arg: str | None = None):
  return config_util.sibling_config(__file__, "photos_apfs.py", ",".join(["sop", *([arg] if arg else [])]))
