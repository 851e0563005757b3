r"""Deep AML on Cars196: `configs/photos_aml.py:cars`.

  python -m metriclearn.main --config=configs/cars_aml.py --workdir=runs/cars_aml \
      --config.dataset.data_dir=~/data/cars196 \
      --config.model.pretrained=~/weights/resnet50-0676ba61.pth

No published AML number exists (`../shared/papers/aml.md` (f)); compare with `configs/cars.py:contrastive`.
Settings, data and weights: the docstrings of `configs/photos_aml.py` and `configs/cars.py`. Argument `smoke`:
seconds, on generated fixtures, for tests. Not run here: no data set, weights or GPU on the development machine.
"""

from metriclearn import config_util


def get_config(arg: str | None = None):
  return config_util.sibling_config(__file__, "photos_aml.py", ",".join(["cars", *([arg] if arg else [])]))
