"""`DATASETS`, the registry of data sets, and `load_dataset`, the one way the training program opens one.

Every loader takes `(*, data_dir=None, seed=0, **kwargs)` and returns a `Dataset` (see `splits.py`).
"""

from __future__ import annotations

from metriclearn.data import digits, glyphs
from metriclearn.data.splits import Dataset
from metriclearn.registry import check_kwargs, lookup

DATASETS = {
    "glyphs": glyphs.load_glyphs,
    "digits": digits.load_digits,
}


def load_dataset(name: str, *, data_dir: str | None = None, seed: int = 0, **kwargs) -> Dataset:
  """Opens the data set registered as `name`.

  Args:
    name: a key of `DATASETS`.
    data_dir: where the data set lives or is cached (None: its default).
    seed: seed of generated data sets and of seeded class splits.
    **kwargs: the data set's own options (e.g. `images_per_class` for glyphs, `num_train_classes` for digits).

  Raises:
    ValueError: an unknown name or keyword (the message lists the valid ones).
  """
  loader = lookup(DATASETS, name, "dataset")
  if loader is not glyphs.load_glyphs:  # glyphs checks its generation keywords itself (they pass through **kwargs)
    check_kwargs(loader, kwargs, f"dataset {name!r}")
  return loader(data_dir=data_dir, seed=seed, **kwargs)
