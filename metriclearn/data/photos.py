"""The real benchmarks: `cub`, `cars`, `sop` and `inshop`, with their standard (zero-shot) splits.

| name | data set | train | test |
|---|---|---|---|
| `cub` | CUB-200-2011 | classes 1–100 (5,864 images) | classes 101–200 (5,924) |
| `cars` | Cars196 | classes 1–98 (8,054) | classes 99–196 (8,131) |
| `sop` | Stanford Online Products | `Ebay_train.txt`: 11,318 products (59,551) | `Ebay_test.txt`: 11,316 (60,502) |
| `inshop` | In-Shop Clothes Retrieval | 3,997 items (25,882) | 3,985 items: query 14,218 / gallery 12,612 |

CUB and Cars are *classification* data sets whose official train/test split shares classes; every DML paper
instead splits by class, as here, over all images of both official splits. In-Shop ranks each query against the
gallery only: its `Dataset` has `query` and `gallery` splits, and its `test` split is the query images followed by
the gallery images.

Sources (`source=`): "directory" reads the original archives' layout under `data_dir` (`folders.py`); "tfds"
reads tensorflow-datasets' prepared `caltech_birds2011`, `cars196`, `stanford_online_products` in `data_dir`
(`tfds_source.py`; In-Shop is not in tfds); "auto" (the default) takes the directory layout when `data_dir` holds it
and tfds otherwise. Nothing is downloaded. The splits are file-backed (`ImageFiles`): an image is decoded, resized
and cropped when the loader or the evaluation asks for it.

Keyword arguments besides `data_dir`, `seed`, `source` and `num_workers` are `transforms.Preprocessing` fields
(`image_size`, `resize_size`, `augment`, `eval_resize`, `mean`, `std`).
"""

from __future__ import annotations

import numpy as np

from metriclearn.data import folders, tfds_source
from metriclearn.data.images import ImageFiles, concatenate, default_num_workers
from metriclearn.data.splits import Dataset, Split, split_by_class
from metriclearn.data.transforms import Preprocessing
from metriclearn.registry import check_kwargs

# The first classes that train in the class-split data sets (ids 0 .. n-1 train, the rest test).
NUM_TRAIN_CLASSES = {"cub": 100, "cars": 98}
_SOURCES = ("auto", "tfds", "directory")


def _catalogue(name: str, data_dir: str | None, source: str, num_workers: int) -> folders.Catalogue:
  if source not in _SOURCES:
    raise ValueError(f"unknown source {source!r}; valid: {', '.join(map(repr, _SOURCES))}")
  layout, read_directory = folders.READERS[name]
  if name not in tfds_source.BUILDERS:
    if source == "tfds":
      raise ValueError(f"{layout.title} is not in tensorflow-datasets: use source='directory' (or 'auto')")
    return read_directory(data_dir)
  if source == "directory":
    return read_directory(data_dir)
  if source == "tfds":
    return tfds_source.read_tfds(name, data_dir, num_workers=num_workers)
  if layout.root(data_dir) is not None:
    return read_directory(data_dir)
  if tfds_source.is_prepared(name, data_dir):
    return tfds_source.read_tfds(name, data_dir, num_workers=num_workers)
  directory_error, tfds_error = layout.missing(data_dir), tfds_source.not_prepared(name, data_dir)
  raise FileNotFoundError(f"{layout.title}: neither source is available.\n* directory: {directory_error}\n"
                          f"* tfds: {tfds_error}")  # fmt: skip


def _partition_split(images: ImageFiles, catalogue: folders.Catalogue, rows: np.ndarray, classes) -> Split:
  return split_by_class(images.take(rows), catalogue.labels[rows], catalogue.class_names, classes)


def load_photos(
    name: str,
    *,
    data_dir: str | None = None,
    source: str = "auto",
    num_workers: int | None = None,
    **preprocessing,
) -> Dataset:
  """Opens benchmark `name` ("cub", "cars", "sop", "inshop") with its standard split.

  Args:
    name: which benchmark.
    data_dir: the directory holding the original layout, or the tfds data directory.
    source: "auto", "directory" or "tfds" (see the module docstring).
    num_workers: decoding threads (default: one per CPU core).
    **preprocessing: `transforms.Preprocessing` fields.

  Returns:
    A `Dataset` of file-backed splits, with `mean`, `std` and `train_transform` set from `preprocessing`.

  Raises:
    FileNotFoundError: the data are not where `data_dir` and `source` say (the message lists the expected files).
    ValueError: an unknown source or preprocessing keyword.
  """
  check_kwargs(Preprocessing, preprocessing, f"dataset {name!r} (besides data_dir, seed, source, num_workers)")
  recipe = Preprocessing(**preprocessing)
  num_workers = num_workers or default_num_workers()
  catalogue = _catalogue(name, data_dir, source, num_workers)
  images = ImageFiles(read=catalogue.read, rows=np.arange(len(catalogue.labels)), transform=recipe.eval_transform(),
                      num_workers=num_workers, origin=catalogue.origin)  # fmt: skip
  labels, query, gallery = catalogue.labels, None, None
  if name in NUM_TRAIN_CLASSES:
    present = np.unique(labels)
    first_test = NUM_TRAIN_CLASSES[name]
    train = split_by_class(images, labels, catalogue.class_names, present[present < first_test])
    test = split_by_class(images, labels, catalogue.class_names, present[present >= first_test])
  else:
    part = catalogue.partition
    train_rows = np.flatnonzero(part == "train")
    train = _partition_split(images, catalogue, train_rows, np.unique(labels[train_rows]))
    if name == "inshop":
      query_rows, gallery_rows = np.flatnonzero(part == "query"), np.flatnonzero(part == "gallery")
      test_classes = np.unique(labels[np.concatenate([query_rows, gallery_rows])])
      query = _partition_split(images, catalogue, query_rows, test_classes)
      gallery = _partition_split(images, catalogue, gallery_rows, test_classes)
      test = Split(concatenate([query.images, gallery.images]), np.concatenate([query.labels, gallery.labels]),
                   query.class_names)  # fmt: skip
    else:
      test_rows = np.flatnonzero(part == "test")
      test = _partition_split(images, catalogue, test_rows, np.unique(labels[test_rows]))
  if len(train) == 0 or len(test) == 0:
    raise ValueError(f"{name} in {catalogue.origin} has an empty train or test split ({len(train)} / {len(test)} "
                     "images): is the index complete?")  # fmt: skip
  return Dataset(
      name=name, train=train, test=test,
      query=query, gallery=gallery,
      mean=tuple(recipe.mean), std=tuple(recipe.std), train_transform=recipe.train_transform(),
  )  # fmt: skip


def _loader(name: str):
  def load(*, data_dir: str | None = None, seed: int = 0, source: str = "auto", num_workers: int | None = None,
           **preprocessing) -> Dataset:  # fmt: skip
    del seed  # the standard splits are fixed
    return load_photos(name, data_dir=data_dir, source=source, num_workers=num_workers, **preprocessing)

  load.__name__ = load.__qualname__ = f"load_{name}"
  load.__doc__ = f"The `{name}` benchmark; see `load_photos` for the arguments."
  return load


load_cub = _loader("cub")
load_cars = _loader("cars")
load_sop = _loader("sop")
load_inshop = _loader("inshop")
