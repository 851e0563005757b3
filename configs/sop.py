r"""Baselines on Stanford Online Products: `configs/photos.py` with the data set fixed.

  python -m metriclearn.main --config=configs/sop.py:ms --workdir=runs/sop_ms \
      --config.dataset.data_dir=~/data/Stanford_Online_Products --config.model.pretrained=~/weights/resnet50-0676ba61.pth

Argument: the loss, one of `contrastive`, `ms` (default), `pa`, `triplet`; add `,smoke` for the seconds-long check on
generated fixtures. Settings and their sources: the docstring of `configs/photos.py`.

Data (`--config.dataset.data_dir`): `Stanford_Online_Products/` (Ebay_train.txt, Ebay_test.txt, the image folders) or
a tfds data directory with `stanford_online_products` prepared. Split: 11,318 classes train (59,551 images), 11,316
test (60,502). Nothing is downloaded; a missing or incomplete directory is an error that names the expected files.
Weights (`--config.model.pretrained`): torchvision's ImageNet ResNet-50 (`resnet50-0676ba61.pth`; `.pth` needs torch,
or convert once with `metriclearn.models.weights.convert_to_npz`) for contrastive / ms / pa, torchvision's GoogLeNet
(`googlenet-1378be20.pth`) for triplet.

Published R@1 (%) this recipe should reach (`../shared/papers/metrix.md` (f), `daml.md` (f)):
  contrastive             74.9   (Metrix README, ResNet-50)
  ms                      76.9   (Metrix README, ResNet-50)
  pa                      79.1   (Metrix README, ResNet-50)
  triplet                 53.9   (DAML Tables 1–3, GoogLeNet)
No run on this data was possible here (no data set or weights on the development machine, no GPU).
"""

from metriclearn import config_util


def get_config(arg: str | None = None):
  return config_util.sibling_config(__file__, "photos.py", ",".join(["sop", *([arg] if arg else [])]))
