"""`DATASETS`, the registry of data sets, and `load_dataset`, the one way the training program opens one.

Every loader takes `(*, data_dir=None, seed=0, **kwargs)` and returns a `Dataset` (see `splits.py`). The embedded
sets (`glyphs`, `digits`) live in memory; the photo benchmarks (`cub`, `cars`, `sop`, `inshop`; `photos.py`) are
file-backed. `load_dataset` adds the fair protocol's validation split to any of them (`val_fold`, `num_folds`).
"""

from __future__ import annotations

from metriclearn.data import digits, glyphs, photos, protocols
from metriclearn.data.splits import Dataset
from metriclearn.registry import check_kwargs, lookup

DATASETS = {
    "glyphs": glyphs.load_glyphs,
    "digits": digits.load_digits,
    "cub": photos.load_cub,
    "cars": photos.load_cars,
    "sop": photos.load_sop,
    "inshop": photos.load_inshop,
}


def load_dataset(
    name: str,
    *,
    data_dir: str | None = None,
    seed: int = 0,
    val_fold: int | None = None,
    num_folds: int = 4,
    **kwargs,
) -> Dataset:
  """Opens the data set registered as `name`.

  Args:
    name: a key of `DATASETS`.
    data_dir: where the data set lives or is cached (None: its default).
    seed: seed of generated data sets and of seeded class splits.
    val_fold: None for the papers' protocol (train / test); k in `0 .. num_folds - 1` for the fair protocol
      (Musgrave et al. 2020): the training classes are cut into `num_folds` class-disjoint folds and fold k becomes
      the `val` split (`protocols.carve_validation`).
    num_folds: the number of folds of the fair protocol (4 in the paper).
    **kwargs: the data set's own options (e.g. `images_per_class` for glyphs, `num_train_classes` for digits,
      `source` and the preprocessing fields for the photo benchmarks).

  Raises:
    ValueError: an unknown name or keyword (the message lists the valid ones), or a bad fold.
    FileNotFoundError: a photo benchmark whose files are not where `data_dir` says.
  """
  loader = lookup(DATASETS, name, "dataset")
  if loader is not glyphs.load_glyphs:  # glyphs checks its generation keywords itself (they pass through **kwargs)
    check_kwargs(loader, kwargs, f"dataset {name!r}")
  dataset = loader(data_dir=data_dir, seed=seed, **kwargs)
  if val_fold is not None:
    dataset = protocols.carve_validation(dataset, val_fold=val_fold, num_folds=num_folds)
  return dataset
