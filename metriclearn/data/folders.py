"""The photo benchmarks in the directory layouts of their original archives.

Each reader takes the directory the user extracted the archive into and returns a `Catalogue` (image paths, labels
over all classes, and the official partition where there is one). A missing or incomplete directory raises a
`FileNotFoundError` naming the files expected, where they were looked for, and where the archive comes from.

| data set | `data_dir` holds (either directly or in the archive's top folder) |
|---|---|
| CUB-200-2011 | `CUB_200_2011/images.txt`, `CUB_200_2011/image_class_labels.txt`, `CUB_200_2011/images/…` |
| Cars196 | `cars_annos.mat`, `car_ims/…` (the original release, all 16,185 images in one folder) |
| SOP | `Stanford_Online_Products/Ebay_train.txt`, `Ebay_test.txt`, the image folders (`bicycle_final/…` …) |
| In-Shop | `list_eval_partition.txt` (or `Eval/…`), `img/…` (or `Img/img/…`) |
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

import numpy as np

# How many listed images `check_images` looks for on disk: a sample, so opening a data set on a network file
# system stays fast; a file missing later still fails with its path when it is decoded.
_IMAGES_CHECKED = 64


@dataclasses.dataclass(frozen=True)
class Catalogue:
  """All images of a data set before its split.

  Attributes:
    read: `read(row)` → the row's record (a path here; encoded bytes for tfds), thread-safe.
    labels: `i64[N]` class ids `0 .. len(class_names) - 1` over all classes.
    class_names: the name of every class id.
    partition: `str[N]` the official partition of each row ("train", "test", "query", "gallery"), or None where
      the split is by class id (CUB, Cars).
    origin: where the records come from (for messages).
  """

  read: Callable[[int], object]
  labels: np.ndarray
  class_names: list[str]
  partition: np.ndarray | None
  origin: str


@dataclasses.dataclass(frozen=True)
class Layout:
  """What a data set's directory must contain, and where its archive comes from."""

  title: str
  subdirs: tuple[str, ...]  # where under data_dir the archive's files may sit ("" = data_dir itself)
  required: tuple[str, ...]  # paths, relative to that root, of the index files (and folders) that must exist
  obtain: str  # where users get the archive (by name)

  def root(self, data_dir: str | None) -> str | None:
    """The first candidate root that holds every required path, or None."""
    for candidate in self.candidates(data_dir):
      if all(any(os.path.exists(os.path.join(candidate, alt)) for alt in req.split("|")) for req in self.required):
        return candidate
    return None

  def candidates(self, data_dir: str | None) -> list[str]:
    return [os.path.join(data_dir, sub) if sub else data_dir for sub in self.subdirs] if data_dir else []

  def missing(self, data_dir: str | None) -> FileNotFoundError:
    top = self.subdirs[0]
    expected = ", ".join(" or ".join(os.path.join(top, alt) for alt in req.split("|")) for req in self.required)
    where = ", ".join(self.candidates(data_dir)) if data_dir else "nowhere: no data_dir was given"
    return FileNotFoundError(
        f"{self.title} not found: expected {expected} under data_dir (looked in {where}). {self.obtain} Then set "
        "config.dataset.data_dir (or load_dataset's data_dir) to that directory."
    )


CUB = Layout(
    title="CUB-200-2011",
    subdirs=("CUB_200_2011", ""),
    required=("images.txt", "image_class_labels.txt", "images"),
    obtain="Download CUB_200_2011.tgz from the Caltech-UCSD Birds-200-2011 page (Caltech Vision Lab) and extract it "
    "into data_dir (it creates CUB_200_2011/).",
)
CARS = Layout(
    title="Cars196 (Stanford Cars)",
    subdirs=("", "cars196", "stanford_cars"),
    required=("cars_annos.mat", "car_ims"),
    obtain="Get the original release of the Stanford Cars Dataset (Krause et al. 2013): car_ims.tgz (all 16,185 "
    "images) and cars_annos.mat, and extract car_ims.tgz next to cars_annos.mat.",
)
SOP = Layout(
    title="Stanford Online Products",
    subdirs=("Stanford_Online_Products", ""),
    required=("Ebay_train.txt", "Ebay_test.txt"),
    obtain="Download Stanford_Online_Products.zip from the Stanford Online Products page (Song et al. 2016, "
    "'Deep Metric Learning via Lifted Structured Feature Embedding') and extract it into data_dir.",
)
INSHOP = Layout(
    title="In-Shop Clothes Retrieval (DeepFashion)",
    subdirs=("", "In-shop Clothes Retrieval Benchmark", "inshop"),
    required=("list_eval_partition.txt|Eval/list_eval_partition.txt", "img|Img/img"),
    obtain="Download the In-shop Clothes Retrieval Benchmark of the DeepFashion data set (MMLAB, CUHK): "
    "Eval/list_eval_partition.txt and Img/img.zip; unzip img.zip so that img/ lies next to the list (or in Img/).",
)


def _read_table(path: str, skip: int = 0) -> list[list[str]]:
  with open(path, encoding="utf-8") as f:
    return [line.split() for line in f.read().splitlines()[skip:] if line.strip()]


def check_images(layout: Layout, root: str, paths: Sequence[str]) -> None:
  """Raises FileNotFoundError when the index lists no image or when sampled listed images are absent."""
  if len(paths) == 0:
    raise FileNotFoundError(f"{layout.title} in {root} lists no images: the index files are empty. {layout.obtain}")
  sample = np.unique(np.linspace(0, len(paths) - 1, min(_IMAGES_CHECKED, len(paths))).astype(np.int64))
  absent = [paths[i] for i in sample if not os.path.isfile(paths[i])]
  if absent:
    raise FileNotFoundError(
        f"{layout.title} in {root} is incomplete: {len(absent)} of {len(sample)} sampled images listed in its "
        f"index are missing, e.g. {absent[0]}. Extract the whole archive. {layout.obtain}"
    )


def _catalogue(layout, root, paths, labels, class_names, partition=None) -> Catalogue:
  check_images(layout, root, paths)
  paths = np.asarray(paths, dtype=object)
  return Catalogue(
      read=paths.__getitem__,
      labels=np.asarray(labels, dtype=np.int64),
      class_names=list(class_names),
      partition=None if partition is None else np.asarray(partition),
      origin=root,
  )


def read_cub(data_dir: str | None) -> Catalogue:
  """CUB-200-2011: `images.txt` (id, path under images/) and `image_class_labels.txt` (id, class 1..200)."""
  root = CUB.root(data_dir)
  if root is None:
    raise CUB.missing(data_dir)
  path_of = dict(_read_table(os.path.join(root, "images.txt")))
  class_of = dict(_read_table(os.path.join(root, "image_class_labels.txt")))
  ids = [i for i in path_of if i in class_of]
  labels = np.array([int(class_of[i]) - 1 for i in ids], dtype=np.int64)
  # Class names from the folder names ("001.Black_footed_Albatross"), so classes.txt is not needed.
  names = [f"class {c + 1}" for c in range(max(200, labels.max(initial=-1) + 1))]
  for i, label in zip(ids, labels, strict=True):
    names[label] = path_of[i].split("/")[0].split(".", 1)[-1]
  paths = [os.path.join(root, "images", path_of[i]) for i in ids]
  return _catalogue(CUB, root, paths, labels, names)


def read_cars(data_dir: str | None) -> Catalogue:
  """Cars196: `cars_annos.mat` (struct `annotations`: relative_im_path, class 1..196, ...; cell `class_names`)."""
  import scipy.io  # pylint: disable=g-import-not-at-top  (only this reader needs it)

  root = CARS.root(data_dir)
  if root is None:
    raise CARS.missing(data_dir)
  mat = scipy.io.loadmat(os.path.join(root, "cars_annos.mat"), squeeze_me=True)
  annotations = np.atleast_1d(mat["annotations"])
  relative = [str(p) for p in np.atleast_1d(annotations["relative_im_path"])]
  labels = np.array([int(c) - 1 for c in np.atleast_1d(annotations["class"])], dtype=np.int64)
  names = [str(n) for n in np.atleast_1d(mat.get("class_names", []))]
  names += [f"class {c + 1}" for c in range(len(names), max(196, labels.max(initial=-1) + 1))]
  paths = [os.path.join(root, p) for p in relative]
  return _catalogue(CARS, root, paths, labels, names)


def read_sop(data_dir: str | None) -> Catalogue:
  """SOP: `Ebay_train.txt` and `Ebay_test.txt` (header, then image_id class_id super_class_id path)."""
  root = SOP.root(data_dir)
  if root is None:
    raise SOP.missing(data_dir)
  paths, labels, partition = [], [], []
  for part in ("train", "test"):
    for row in _read_table(os.path.join(root, f"Ebay_{part}.txt"), skip=1):
      paths.append(os.path.join(root, row[3]))
      labels.append(int(row[1]) - 1)
      partition.append(part)
  num_classes = max(labels, default=-1) + 1
  return _catalogue(SOP, root, paths, labels, [str(c + 1) for c in range(num_classes)], partition)


def read_inshop(data_dir: str | None) -> Catalogue:
  """In-Shop: `list_eval_partition.txt` (count, header, then image_name item_id evaluation_status)."""
  root = INSHOP.root(data_dir)
  if root is None:
    raise INSHOP.missing(data_dir)
  listing = next(p for p in ("list_eval_partition.txt", "Eval/list_eval_partition.txt")
                 if os.path.exists(os.path.join(root, p)))  # fmt: skip
  rows = _read_table(os.path.join(root, listing), skip=2)
  # Image names start with img/; the folder holding img/ is the root or Img/ (the DeepFashion archive's layout).
  image_base = root if os.path.isdir(os.path.join(root, "img")) else os.path.join(root, "Img")
  items = sorted({row[1] for row in rows})
  label_of = {item: c for c, item in enumerate(items)}
  paths = [os.path.join(image_base, row[0]) for row in rows]
  partition = [row[2] for row in rows]
  unknown = sorted(set(partition) - {"train", "query", "gallery"})
  if unknown:
    raise ValueError(f"{listing} in {root} has evaluation status {unknown[0]!r}; expected train, query or gallery")
  return _catalogue(INSHOP, root, paths, [label_of[row[1]] for row in rows], items, partition)


READERS = {"cub": (CUB, read_cub), "cars": (CARS, read_cars), "sop": (SOP, read_sop), "inshop": (INSHOP, read_inshop)}
