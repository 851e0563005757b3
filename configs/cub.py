r"""Baselines on CUB-200-2011: `configs/photos.py` with the data set fixed.

  python -m metriclearn.main --config=configs/cub.py:ms --workdir=runs/cub_ms \
      --config.dataset.data_dir=~/data/CUB_200_2011 --config.model.pretrained=~/weights/resnet50-0676ba61.pth

Argument: the loss, one of `contrastive`, `ms` (default), `pa`, `triplet`; add `,smoke` for the seconds-long check on
generated fixtures. Settings and their sources: the docstring of `configs/photos.py`.

Data (`--config.dataset.data_dir`): the extracted `CUB_200_2011/` (images.txt, image_class_labels.txt, images/) or a
tfds data directory with `caltech_birds2011` prepared. Split: classes 1–100 train (5,864 images), 101–200 test
(5,924). Nothing is downloaded; a missing or incomplete directory is an error that names the expected files.
Weights (`--config.model.pretrained`): torchvision's ImageNet ResNet-50 (`resnet50-0676ba61.pth`; `.pth` needs torch,
or convert once with `metriclearn.models.weights.convert_to_npz`) for contrastive / ms / pa, torchvision's GoogLeNet
(`googlenet-1378be20.pth`) for triplet.

Published R@1 (%) this recipe should reach (`../shared/papers/metrix.md` (f), `daml.md` (f)):
  contrastive             64.7   (Metrix README, ResNet-50)
  ms                      67.8   (Metrix README, ResNet-50)
  pa                      69.5   (Metrix README, ResNet-50)
  triplet                 35.9   (DAML Tables 1–3, GoogLeNet)
No run on this data was possible here (no data set or weights on the development machine, no GPU).
"""

from metriclearn import config_util


def get_config(arg: str | None = None):
  return config_util.sibling_config(__file__, "photos.py", ",".join(["cub", *([arg] if arg else [])]))
