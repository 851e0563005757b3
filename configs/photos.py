r"""Baselines on the photo benchmarks (CUB-200-2011, Cars196, SOP, In-Shop) with the settings of the papers' code.

  python -m metriclearn.main --config=configs/photos.py:cub,ms --workdir=runs/cub_ms \
      --config.dataset.data_dir=~/data/CUB_200_2011 --config.model.pretrained=~/weights/resnet50-0676ba61.pth

`configs/{cub,cars,sop,inshop}.py` are this file with the data set fixed (`configs/cub.py:ms`); their docstrings give
the data and weights each needs and the published numbers. Arguments (comma-separated): one data set of `DATASETS`,
one loss of `LOSSES`, optionally `smoke` (seconds, on the fixtures the tests build; see below).

Where each setting comes from (`../shared/papers/`):
* `contrastive`, `ms`, `pa`: the Metrix authors' baseline code (`metrix.md` (e)), the setting of the published
  baselines in `PUBLISHED`: ResNet-50 (torchvision), GAP+GMP, 512-d, batch 100 (CUB/Cars: random batches; SOP,
  In-Shop: 20 classes × 5), RandomResizedCrop 224 + flip, Adam with coupled weight decay 1e-4, gradient clipping by
  value 10, a step schedule per data set and loss, and the first epochs training only the head (the code's "warm").
  The MS values are those of the Metrix code (the Reality-Check ones): α 17.97, β 75.66, base 0.77, with its
  multi-similarity miner, ε = 0.39 (`losses.multi_similarity_miner`).
* `triplet`: the DAML paper's triplet baseline (`daml.md` (e)): GoogLeNet (torchvision), 512-d, 40 triplets per
  batch with all classes distinct, resize 256² → random 224 crop + flip, margin γ = 1 (on distances between unit
  vectors), 20,000 iterations. The paper gives no optimiser; Adam 1e-5 with the new head at 10× (the paper's "new FC
  layer with 10× learning rate") and weight decay 1.09e-3 (the released code's) is our choice, unverified.
  Departure: ImageNet normalisation instead of the Caffe mean, since the weights are torchvision's.
* Epochs: 60 for every data set. The spec gives 60 for CUB/Cars; SOP/In-Shop epochs are not given (unverified).
* Evaluation follows the papers (every test image queries the rest; In-Shop query → gallery; cosine); the papers'
  protocol (test set at the end). The fair protocol of Musgrave et al. (select on validation MAP@R, test once):
  `--config.dataset.kwargs.val_fold=0` (… 3), then `python -m metriclearn.tabulate` over the seeds' results.json.
  NMI/F1 (k-means) are on for CUB/Cars; SOP (11,316 clusters) and In-Shop turn them on with
  `--config.eval.clustering=True` (slow on a CPU host).

`smoke` keeps the recipe's loss, sampler, optimiser and method but swaps the ImageNet backbone for the small CNN at
32² and runs 2 steps with batch 16, so that CI checks every recipe end to end on tiny generated photo directories.
"""

from __future__ import annotations

import math

import ml_collections

from metriclearn import optim

DATASETS = ("cub", "cars", "sop", "inshop")
LOSSES = ("contrastive", "triplet", "ms", "pa")
RECIPE_ARGS = {
    "cub": "CUB-200-2011", "cars": "Cars196", "sop": "Stanford Online Products", "inshop": "In-Shop Clothes",
    "contrastive": "contrastive loss (Metrix code's ResNet-50 setting)", "triplet": "triplet loss (DAML's GoogLeNet)",
    "ms": "multi-similarity loss (default)", "pa": "proxy-anchor loss",
    "smoke": "a few steps on generated fixtures, for tests",
}

# Training images of each benchmark's standard split (one epoch), and the Recall@K columns the papers report.
TRAIN_IMAGES = {"cub": 5_864, "cars": 8_054, "sop": 59_551, "inshop": 25_882}
RECALL_KS = {"cub": (1, 2, 4, 8), "cars": (1, 2, 4, 8), "sop": (1, 10, 100, 1000), "inshop": (1, 10, 20, 30, 40, 50)}

# Published R@1 (%) of each baseline in the setting above; None: no source in ../shared/papers reports it.
PUBLISHED = {
    # metrix.md (f), the Metrix authors' README / ICLR 2022 poster (ResNet-50, 512-d).
    "contrastive": {"cub": 64.7, "cars": 81.6, "sop": 74.9, "inshop": 86.4},
    "ms": {"cub": 67.8, "cars": 87.8, "sop": 76.9, "inshop": 90.1},
    "pa": {"cub": 69.5, "cars": 87.6, "sop": 79.1, "inshop": 90.0},
    # daml.md (f), DAML (CVPR 2018) Tables 1–3, "Triplet" rows (GoogLeNet, 512-d); no In-Shop table.
    "triplet": {"cub": 35.9, "cars": 45.1, "sop": 53.9, "inshop": None},
}

# Per (data set, loss) schedule of the Metrix code's baseline commands (metrix.md (e)): learning rate, StepLR period
# and factor in epochs, head-only warm-up epochs, and whether BatchNorm is frozen.
_SCHEDULES = {
    ("cub", "contrastive"): dict(lr=1e-4, step=10, gamma=0.1, warm=5, freeze_bn=True),
    ("cars", "contrastive"): dict(lr=1e-4, step=10, gamma=0.1, warm=5, freeze_bn=True),
    ("sop", "contrastive"): dict(lr=3e-5, step=10, gamma=0.25, warm=5, freeze_bn=False),
    ("inshop", "contrastive"): dict(lr=3e-5, step=5, gamma=0.25, warm=1, freeze_bn=False),
    **{(d, loss): dict(lr=1e-4, step=5, gamma=0.5, warm=5, freeze_bn=True) for d in ("cub", "cars")
       for loss in ("ms", "pa")},
    **{(d, loss): dict(lr=6e-4, step=20, gamma=0.25, warm=1, freeze_bn=False) for d in ("sop", "inshop")
       for loss in ("ms", "pa")},
}
EPOCHS = 60
TRIPLET_STEPS = 20_000

_LOSS_CONFIGS = {
    "contrastive": dict(name="contrastive", kwargs=dict(pos_margin=0.0, neg_margin=0.5)),
    "ms": dict(name="multi_similarity", kwargs=dict(alpha=17.97, beta=75.66, base=0.77, miner_epsilon=0.39)),
    "pa": dict(name="proxy_anchor", kwargs=dict(margin=0.1, alpha=32.0)),
    "triplet": dict(name="triplet", kwargs=dict(margin=1.0, squared=False)),
}


def parse(arg: str | None, extra: tuple[str, ...] = ()) -> tuple[str, str, set[str]]:
  """`"cub,ms,smoke"` → ("cub", "ms", {"smoke"}); the other recipes add their own `extra` words."""
  parts = [part for part in (arg or "").split(",") if part]
  datasets = [part for part in parts if part in DATASETS]
  found_losses = [part for part in parts if part in LOSSES]
  unknown = [part for part in parts if part not in (*DATASETS, *LOSSES, *extra, "smoke")]
  if unknown or len(datasets) != 1 or len(found_losses) > 1:
    raise ValueError(f"config argument {arg!r}: give one data set of {list(DATASETS)}, at most one loss of "
                     f"{list(LOSSES)}, optionally {[*extra, 'smoke']} (comma-separated), e.g. 'cub,ms'")
  return datasets[0], (found_losses or ["ms"])[0], set(parts) - {datasets[0], *found_losses}


def steps_per_epoch(dataset: str, batch_size: int) -> int:
  return math.ceil(TRAIN_IMAGES[dataset] / batch_size)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  dataset, loss, words = parse(arg)
  config = ml_collections.ConfigDict()
  config.name = f"{dataset}_{loss}"
  config.seed = 0
  placeholder = ml_collections.config_dict.placeholder
  config.dataset = dict(name=dataset, data_dir=placeholder(str), kwargs=dict(
      source="auto", image_size=224, resize_size=256, augment="random_resized_crop", eval_resize="shorter_side",
      val_fold=placeholder(int)))
  config.loss = dict(_LOSS_CONFIGS[loss])
  config.method = dict(name="baseline", kwargs={})
  config.memory = dict(size=0, warmup_steps=0)  # cross-batch memory: off (`metriclearn.memory`)
  config.optimizer = optim.default_config()
  config.eval = dict(batch_size=256, ks=RECALL_KS[dataset], metric="cosine", clustering=dataset in ("cub", "cars"),
                     baselines=True, plots=True, utilization=False)
  config.max_checkpoints = 2
  config.log_every = 50

  if loss == "triplet":
    _triplet_recipe(config)
  else:
    _metrix_code_recipe(config, dataset, loss)
  config.checkpoint_every = config.eval_every
  if "smoke" in words:
    shrink_for_smoke(config)
  return config


def _metrix_code_recipe(config: ml_collections.ConfigDict, dataset: str, loss: str) -> None:
  """ResNet-50 + GAP+GMP, batch 100, Adam + StepLR, head-only warm-up (the Metrix code's baselines)."""
  schedule = _SCHEDULES[dataset, loss]
  config.batch_size = 100
  per_epoch = steps_per_epoch(dataset, config.batch_size)
  config.num_steps = EPOCHS * per_epoch
  config.eval_every = 5 * per_epoch
  balanced = dataset in ("sop", "inshop")  # the code's class-balanced sampler (20 classes × 5) on SOP/In-Shop
  config.sampler = dict(name="m_per_class", kwargs=dict(m=5)) if balanced else dict(name="random", kwargs={})
  config.model = dict(name="resnet50", embedding_dim=512, pooling="gap+gmp", freeze_bn=schedule["freeze_bn"],
                      pretrained=ml_collections.config_dict.placeholder(str), kwargs={})
  opt = config.optimizer
  opt.name = "adam"
  opt.learning_rate = schedule["lr"]
  opt.weight_decay = 1e-4  # coupled, as torch's Adam(weight_decay=…)
  opt.clip_value = 10.0
  opt.schedule = "step"
  opt.decay_steps = schedule["step"] * per_epoch
  opt.gamma = schedule["gamma"]
  opt.frozen_warmup_steps = schedule["warm"] * per_epoch
  opt.trainable_during_warmup = "head|loss"  # the new layers: embedding head and, for proxy-anchor, the proxies
  if loss == "pa":
    opt.lr_multipliers = (("loss", 100.0),)  # proxies at 100× (the Proxy-Anchor and Metrix code)


def _triplet_recipe(config: ml_collections.ConfigDict) -> None:
  """GoogLeNet, 40 distinct-class triplets per batch, 256² → 224 crops, 20k iterations (the DAML paper's baseline)."""
  config.batch_size = 120
  config.num_steps = TRIPLET_STEPS
  config.eval_every = 2_000
  config.sampler = dict(name="triplets", kwargs={})
  config.dataset.kwargs.augment = "resize_random_crop"
  config.dataset.kwargs.eval_resize = "square"
  config.model = dict(name="googlenet", embedding_dim=512, pooling="gap", freeze_bn=True,
                      pretrained=ml_collections.config_dict.placeholder(str), kwargs={})
  opt = config.optimizer
  opt.name = "adam"
  opt.learning_rate = 1e-5
  opt.weight_decay = 1.09e-3
  opt.lr_multipliers = (("head", 10.0),)


def shrink_for_smoke(config: ml_collections.ConfigDict) -> None:
  """Seconds instead of hours: small CNN at 32², 2 steps, batch 16 (a multiple of 2, 4 and 8 for the tuple
  samplers), no pretrained weights, no plots. Everything that makes the recipe (loss, sampler, method, optimiser
  chain) stays."""
  config.num_steps = 2
  config.log_every = config.eval_every = config.checkpoint_every = 1
  config.batch_size = 12 if config.sampler.name == "triplets" else 16
  if config.sampler.name == "m_per_class":
    config.sampler.kwargs.m = min(config.sampler.kwargs.m, 4)
  config.dataset.kwargs.image_size = 32
  config.dataset.kwargs.resize_size = 36
  config.dataset.kwargs.num_workers = 2
  config.model.name = "small_cnn"
  config.model.embedding_dim = 16
  config.model.pretrained = None
  config.model.kwargs.widths = (8, 16)
  config.optimizer.frozen_warmup_steps = min(config.optimizer.frozen_warmup_steps, 1)
  if config.optimizer.schedule == "step":
    config.optimizer.decay_steps = 1
  config.eval.batch_size = 16
  config.eval.ks = tuple(k for k in config.eval.ks if k <= 8)  # the fixtures' galleries are tiny
  config.eval.clustering = True
  config.eval.plots = False
