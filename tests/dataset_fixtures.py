"""Tiny copies of the photo benchmarks' directory layouts, for tests (a few classes, a few small generated images).

Each `make_<name>(root)` writes the layout under `root` with the original index files and returns what the loader
should find: `{"train": {class id: count}, "test": ...}` keyed by the data set's own class ids. Their defaults are
minimal layouts for the loader's own tests; `make_realistic(name, root)` writes a layout whose class sizes follow the
real data set's histogram (`CLASS_SIZES`): a handful of classes, but SOP and In-Shop with their many 2- and 3-image
classes, so every recipe meets the small classes a real run meets.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.io
from PIL import Image

SIZES = ((40, 30), (30, 44), (52, 52))  # (width, height): landscape, portrait, square


def write_image(path: str, seed: int, *, size=(40, 30), mode: str = "RGB") -> None:
  """A small JPEG (or PNG, by extension) whose colour depends on `seed`, with a bright left half to test flips."""
  rng = np.random.default_rng(seed)
  width, height = size
  pixels = np.empty((height, width, 3), np.uint8)
  pixels[:] = rng.integers(0, 160, size=3, dtype=np.uint8)
  pixels[:, : width // 2] += 90
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(pixels).convert(mode).save(path, quality=95)


# Class-size histograms of the real data sets: bins (fewest, most images per class, share of the classes), each size
# of a bin equally likely. Where the figures come from:
# * Totals, the published split sizes the loader tests and the recipes use (configs/photos.py `TRAIN_IMAGES`): SOP
#   (Song et al., CVPR 2016) train 11,318 classes / 59,551 images, test 11,316 / 60,502; In-Shop (Liu et al., CVPR
#   2016) train 3,997 items / 25,882 images, query 14,218 + gallery 12,612 images of 3,985 items; CUB-200-2011 classes
#   1–100: 5,864 images; Cars196 classes 1–98: 8,054 images.
# * Ranges and shape, as measured on the real index files and stated in issue 18: SOP 2–12 images per class, median
#   about 5, most classes 2–6; In-Shop from 2 to about 160, a heavy tail; CUB 41–60, most classes 60; Cars 24–97.
# * The share of each size inside those ranges is our approximation (the per-class counts of the real index files are
#   not copied here), chosen so the histogram's mean equals the published mean within 1 % (`test_datasets.py`
#   checks it): SOP 5.27 vs 59,551 / 11,318 = 5.26; In-Shop 6.48 vs 6.48; CUB 58.7 vs 58.6; Cars 82.2 vs 82.2.
#   The test splits (SOP 5.35, In-Shop 6.73, CUB 59.2, Cars 83.0 per class) are drawn from the same histograms.
CLASS_SIZES = {
    "sop": ((2, 2, 0.12), (3, 3, 0.14), (4, 4, 0.16), (5, 5, 0.17), (6, 6, 0.14), (7, 7, 0.09), (8, 8, 0.07),
            (9, 9, 0.05), (10, 10, 0.03), (11, 11, 0.02), (12, 12, 0.01)),
    "inshop": ((2, 2, 0.20), (3, 3, 0.17), (4, 4, 0.14), (5, 5, 0.11), (6, 6, 0.09), (7, 7, 0.07), (8, 8, 0.05),
               (9, 12, 0.10), (13, 20, 0.04), (21, 40, 0.022), (41, 90, 0.006), (91, 160, 0.002)),
    "cub": ((41, 41, 0.01), (48, 59, 0.17), (60, 60, 0.82)),
    "cars": ((24, 45, 0.03), (46, 69, 0.08), (75, 97, 0.89)),
}
# (classes, images) of the real training splits, for the check of the histograms' means.
PUBLISHED_TRAIN = {"sop": (11_318, 59_551), "inshop": (3_997, 25_882), "cub": (100, 5_864), "cars": (98, 8_054)}
# In-Shop's test items: the share of their images in the query set (14,218 of 14,218 + 12,612).
INSHOP_QUERY_SHARE = 14_218 / (14_218 + 12_612)


def histogram_mean(name: str) -> float:
  """Images per class that `CLASS_SIZES[name]` gives on average."""
  return sum((low + high) / 2 * share for low, high, share in CLASS_SIZES[name])


def class_sizes(name: str, num_classes: int, seed: int = 0) -> np.ndarray:
  """`int[num_classes]` images per class, a seeded stratified draw from `CLASS_SIZES[name]`: class k takes the size at
  quantile (k + u_k) / num_classes of the histogram (u_k uniform), so even a handful of classes covers the histogram's
  shape, small classes included; the sizes come out in a seeded random order."""
  rng = np.random.default_rng(seed)
  bins = CLASS_SIZES[name]
  cumulative = np.cumsum([share for _, _, share in bins])
  quantiles = (np.arange(num_classes) + rng.uniform(size=num_classes)) / num_classes * cumulative[-1]
  sizes = np.empty(num_classes, np.int64)
  for k, q in enumerate(quantiles):
    b = min(int(np.searchsorted(cumulative, q, side="right")), len(bins) - 1)
    low, high, share = bins[b]
    within = (q - (cumulative[b] - share)) / share  # position inside the bin, in [0, 1)
    sizes[k] = low + min(int(within * (high - low + 1)), high - low)
  return rng.permutation(sizes)


def _per_class(classes, per_class) -> list[int]:
  """`per_class` as one count per class: an int for all, or a sequence aligned with `classes`."""
  counts = [per_class] * len(classes) if np.isscalar(per_class) else [int(n) for n in per_class]
  if len(counts) != len(classes):
    raise ValueError(f"per_class has {len(counts)} counts for {len(classes)} classes")
  return counts


def make_cub(root: str, classes=(1, 2, 3, 101, 102), per_class=3) -> dict:
  """`per_class`: images of every class, or one count per class."""
  base = os.path.join(root, "CUB_200_2011")
  images, labels = [], []
  counts = dict(zip(classes, _per_class(classes, per_class)))
  for c in classes:
    for k in range(counts[c]):
      rel = f"{c:03d}.Bird_{c}/Bird_{c}_{k:04d}.jpg"
      # One grey-scale JPEG: CUB has a few, and the loader must return RGB.
      write_image(os.path.join(base, "images", rel), 100 * c + k, size=SIZES[k % 3], mode="L" if k == 2 else "RGB")
      images.append(rel)
      labels.append(c)
  with open(os.path.join(base, "images.txt"), "w") as f:
    f.writelines(f"{i + 1} {rel}\n" for i, rel in enumerate(images))
  with open(os.path.join(base, "image_class_labels.txt"), "w") as f:
    f.writelines(f"{i + 1} {c}\n" for i, c in enumerate(labels))
  return {"train": {c: n for c, n in counts.items() if c <= 100}, "test": {c: n for c, n in counts.items() if c > 100}}


def make_cars(root: str, classes=(1, 2, 98, 99, 150), per_class=3) -> dict:
  """`per_class`: images of every class, or one count per class."""
  records, number = [], 0
  counts = dict(zip(classes, _per_class(classes, per_class)))
  for c in classes:
    for k in range(counts[c]):
      number += 1
      rel = f"car_ims/{number:06d}.jpg"
      write_image(os.path.join(root, rel), 7 * number, size=SIZES[k % 3])
      # `test` is the classification split, which the DML split ignores: alternate it.
      records.append((rel, 1.0, 2.0, 30.0, 20.0, c, number % 2))
  fields = [("relative_im_path", "O"), ("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"),
            ("class", "O"), ("test", "O")]  # fmt: skip
  annotations = np.array(records, dtype=fields)
  class_names = np.array([f"Car model {c}" for c in range(1, 197)], dtype=object)
  scipy.io.savemat(os.path.join(root, "cars_annos.mat"), {"annotations": annotations, "class_names": class_names})
  return {"train": {c: n for c, n in counts.items() if c <= 98}, "test": {c: n for c, n in counts.items() if c > 98}}


def make_sop(root: str, train_classes=(1, 2, 3), test_classes=(11319, 11320), per_class=2) -> dict:
  """`per_class`: images of every class, or one count per class of `train_classes + test_classes`."""
  base = os.path.join(root, "Stanford_Online_Products")
  number = 0
  counts = dict(zip((*train_classes, *test_classes), _per_class((*train_classes, *test_classes), per_class)))
  for part, classes in (("train", train_classes), ("test", test_classes)):
    lines = ["image_id class_id super_class_id path"]
    for c in classes:
      for k in range(counts[c]):
        number += 1
        rel = f"bicycle_final/{1000 + c}_{k}.JPG"
        write_image(os.path.join(base, rel), number, size=SIZES[k % 3])
        lines.append(f"{number} {c} 1 {rel}")
    with open(os.path.join(base, f"Ebay_{part}.txt"), "w") as f:
      f.write("\n".join(lines) + "\n")
  return {"train": {c: counts[c] for c in train_classes}, "test": {c: counts[c] for c in test_classes}}


INSHOP_PLAN = ((1, "train", 3), (2, "train", 2), (3, "query", 2), (3, "gallery", 2), (4, "query", 1),
               (4, "gallery", 3), (5, "gallery", 2))  # (item, status, images)


def make_inshop(root: str, *, official_layout: bool = False, plan=INSHOP_PLAN) -> dict:
  """By default train items 1-2; test items 3-5 (item 5 only in the gallery). `official_layout`: Eval/ and Img/img/.
  `plan`: other (item, status, images) rows."""
  image_base = os.path.join(root, "Img") if official_layout else root
  rows, number = [], 0
  for item, status, count in plan:
    for k in range(count):
      number += 1
      rel = f"img/WOMEN/Dresses/id_{item:08d}/{number:02d}_{k + 1}_front.jpg"
      write_image(os.path.join(image_base, rel), number, size=SIZES[k % 3])
      rows.append(f"{rel}  id_{item:08d}  {status}")
  listing = os.path.join(root, "Eval", "list_eval_partition.txt") if official_layout else os.path.join(
      root, "list_eval_partition.txt")  # fmt: skip
  os.makedirs(os.path.dirname(listing), exist_ok=True)
  with open(listing, "w") as f:
    f.write(f"{len(rows)}\nimage_name item_id evaluation_status\n" + "\n".join(rows) + "\n")
  counts: dict = {"train": {}, "query": {}, "gallery": {}}
  for item, status, count in plan:
    counts[status][f"id_{item:08d}"] = counts[status].get(f"id_{item:08d}", 0) + count
  return counts


MAKERS = {"cub": make_cub, "cars": make_cars, "sop": make_sop, "inshop": make_inshop}

# Classes of the realistic layouts (train, test): a handful, enough for the recipes' smoke batches (8 distinct classes
# for 4 triplets, 4 classes × 4 for m-per-class), SOP and In-Shop with more so their small classes are many.
REALISTIC_CLASSES = {"cub": (8, 4), "cars": (8, 4), "sop": (24, 12), "inshop": (24, 12)}


def make_realistic(name: str, root: str, seed: int = 0) -> dict:
  """The layout of data set `name` with `REALISTIC_CLASSES` classes whose sizes are drawn by `class_sizes` from the
  real histogram; returns the expected class counts like `make_<name>`. In-Shop's test items put one image in the
  query set and one in the gallery, and each further image in the query set with probability `INSHOP_QUERY_SHARE`."""
  num_train, num_test = REALISTIC_CLASSES[name]
  sizes = np.concatenate([class_sizes(name, num_train, seed), class_sizes(name, num_test, seed + 1)])
  first_test = {"cub": 101, "cars": 99, "sop": 11_319, "inshop": num_train + 1}[name]
  train, test = list(range(1, num_train + 1)), list(range(first_test, first_test + num_test))
  if name == "cub":
    return make_cub(root, classes=(*train, *test), per_class=sizes)
  if name == "cars":
    return make_cars(root, classes=(*train, *test), per_class=sizes)
  if name == "sop":
    return make_sop(root, train_classes=tuple(train), test_classes=tuple(test), per_class=sizes)
  rng = np.random.default_rng(seed + 2)
  plan = [(item, "train", int(n)) for item, n in zip(train, sizes[:num_train])]
  for item, n in zip(test, sizes[num_train:]):
    queries = 1 + rng.binomial(n - 2, INSHOP_QUERY_SHARE)
    plan += [(item, "query", int(queries)), (item, "gallery", int(n - queries))]
  return make_inshop(root, plan=plan)
