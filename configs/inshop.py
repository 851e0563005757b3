r"""Baselines on In-Shop Clothes Retrieval: `configs/photos.py` with the data set fixed.

  python -m metriclearn.main --config=configs/inshop.py:ms --workdir=runs/inshop_ms \
      --config.dataset.data_dir=~/data/inshop --config.model.pretrained=~/weights/resnet50-0676ba61.pth

Argument: the loss, one of `contrastive`, `ms` (default), `pa`, `triplet`; add `,smoke` for the seconds-long check on
generated fixtures. Settings and their sources: the docstring of `configs/photos.py`.

Data (`--config.dataset.data_dir`): the DeepFashion In-shop layout (`list_eval_partition.txt` or
`Eval/list_eval_partition.txt`, and `img/` or `Img/img/`); no tfds builder exists. Split: 3,997 classes train (25,882
images); query 14,218 / gallery 12,612 images of 3,985 classes. Nothing is downloaded; a missing or incomplete
directory is an error that names the expected files.
Weights (`--config.model.pretrained`): torchvision's ImageNet ResNet-50 (`resnet50-0676ba61.pth`; `.pth` needs torch,
or convert once with `metriclearn.models.weights.convert_to_npz`) for contrastive / ms / pa, torchvision's GoogLeNet
(`googlenet-1378be20.pth`) for triplet.

Published R@1 (%) this recipe should reach (`../shared/papers/metrix.md` (f), `daml.md` (f)):
  contrastive             86.4   (Metrix README, ResNet-50)
  ms                      90.1   (Metrix README, ResNet-50)
  pa                      90.0   (Metrix README, ResNet-50)
  triplet       none published
No run on this data was possible here (no data set or weights on the development machine, no GPU).
"""

from metriclearn import config_util


def get_config(arg: str | None = None):
  return config_util.sibling_config(__file__, "photos.py", ",".join(["inshop", *([arg] if arg else [])]))
