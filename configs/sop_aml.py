r"""Deep AML on SOP: `configs/photos_aml.py:sop`.

  python -m metriclearn.main --config=configs/sop_aml.py --workdir=runs/sop_aml \
      --config.dataset.data_dir=~/data/Stanford_Online_Products \
      --config.model.pretrained=~/weights/resnet50-0676ba61.pth

No published AML number exists (`../shared/papers/aml.md` (f)); compare with `configs/sop.py:contrastive`. Settings,
data and weights: the docstrings of `configs/photos_aml.py` and `configs/sop.py`. Argument `smoke`: seconds, on
generated fixtures, for tests. Not run here: no data set, weights or GPU on the development machine.
"""

from metriclearn import config_util


def get_config(arg: str | None = None):
  return config_util.sibling_config(__file__, "photos_aml.py", ",".join(["sop", *([arg] if arg else [])]))
