"""Tiny copies of the photo benchmarks' directory layouts, for tests (a few classes, a few small generated images).

Each `make_<name>(root)` writes the layout under `root` with the original index files and returns what the loader
should find: `{"train": {class id: count}, "test": ...}` keyed by the data set's own class ids.
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


def make_cub(root: str, classes=(1, 2, 3, 101, 102), per_class: int = 3) -> dict:
  base = os.path.join(root, "CUB_200_2011")
  images, labels = [], []
  for c in classes:
    for k in range(per_class):
      rel = f"{c:03d}.Bird_{c}/Bird_{c}_{k:04d}.jpg"
      # One grey-scale JPEG: CUB has a few, and the loader must return RGB.
      write_image(os.path.join(base, "images", rel), 100 * c + k, size=SIZES[k % 3], mode="L" if k == 2 else "RGB")
      images.append(rel)
      labels.append(c)
  with open(os.path.join(base, "images.txt"), "w") as f:
    f.writelines(f"{i + 1} {rel}\n" for i, rel in enumerate(images))
  with open(os.path.join(base, "image_class_labels.txt"), "w") as f:
    f.writelines(f"{i + 1} {c}\n" for i, c in enumerate(labels))
  return {"train": {c: per_class for c in classes if c <= 100}, "test": {c: per_class for c in classes if c > 100}}


def make_cars(root: str, classes=(1, 2, 98, 99, 150), per_class: int = 3) -> dict:
  records, number = [], 0
  for c in classes:
    for k in range(per_class):
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
  return {"train": {c: per_class for c in classes if c <= 98}, "test": {c: per_class for c in classes if c > 98}}


def make_sop(root: str, train_classes=(1, 2, 3), test_classes=(11319, 11320), per_class: int = 2) -> dict:
  base = os.path.join(root, "Stanford_Online_Products")
  number = 0
  for part, classes in (("train", train_classes), ("test", test_classes)):
    lines = ["image_id class_id super_class_id path"]
    for c in classes:
      for k in range(per_class):
        number += 1
        rel = f"bicycle_final/{1000 + c}_{k}.JPG"
        write_image(os.path.join(base, rel), number, size=SIZES[k % 3])
        lines.append(f"{number} {c} 1 {rel}")
    with open(os.path.join(base, f"Ebay_{part}.txt"), "w") as f:
      f.write("\n".join(lines) + "\n")
  return {"train": {c: per_class for c in train_classes}, "test": {c: per_class for c in test_classes}}


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
