r"""Deep AML on CUB-200-2011: `configs/photos_aml.py:cub`.

  python -m metriclearn.main --config=configs/cub_aml.py --workdir=runs/cub_aml \
      --config.dataset.data_dir=~/data/CUB_200_2011 \
      --config.model.pretrained=~/weights/resnet50-0676ba61.pth

No published AML number exists (`../shared/papers/aml.md` (f)); compare with `configs/cub.py:contrastive`. Settings,
data and weights: the docstrings of `configs/photos_aml.py` and `configs/cub.py`. Argument `smoke`: seconds, on
generated fixtures, for tests. Not run here: no data set, weights or GPU on the development machine.
"""

from metriclearn import config_util


def get_config(arg: str | None = None):
  return config_util.sibling_config(__file__, "photos_aml.py", ",".join(["cub", *([arg] if arg else [])]))
