"""Evaluation protocols: the papers' protocol, and the fair protocol of Musgrave et al. 2020.

* **Paper protocol** (`val_fold=None`, the default): train on the training classes, evaluate on the test classes at
  intervals and report the test metrics; the four papers' code keeps the best *test* evaluation, which selects on the
  test set. Reports must label such numbers "selected on test".
* **Fair protocol** ("A Metric Learning Reality Check", Musgrave, Belongie and Lim, ECCV 2020): the training classes
  are cut into `num_folds` class-disjoint folds; with `val_fold=k`, fold k's classes become the `val` split and the
  other folds train. Model selection (checkpoint, hyper-parameters) uses validation MAP@R only, and the test split
  is evaluated once, with the selected model. The paper trains one model per fold (4 folds) and reports the test
  metrics of the selected models, averaged (or of their concatenated embeddings).

The folds are contiguous runs of the sorted training classes (`np.array_split`), as in the authors'
powerful-benchmarker (`ClassDisjointSplitManager`): deterministic, no seed, the same on every machine.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from metriclearn.data.splits import Dataset, Split, split_by_class


def class_folds(num_classes: int, num_folds: int) -> list[np.ndarray]:
  """`num_folds` class-disjoint folds covering `0 .. num_classes - 1`: contiguous runs, sizes differing by ≤ 1."""
  if num_folds < 2:
    raise ValueError(f"num_folds must be at least 2 (one validation fold and at least one to train), got {num_folds}")
  if num_folds > num_classes:
    raise ValueError(f"num_folds ({num_folds}) exceeds the number of training classes ({num_classes})")
  return np.array_split(np.arange(num_classes), num_folds)


def carve_validation(dataset: Dataset, *, val_fold: int, num_folds: int = 4) -> Dataset:
  """The dataset with fold `val_fold` of its training classes moved to a `val` split (the fair protocol).

  Args:
    dataset: a data set without a `val` split.
    val_fold: which fold validates, `0 .. num_folds - 1`.
    num_folds: how many class-disjoint folds the training classes are cut into (4 in Musgrave et al. 2020).

  Returns:
    A `Dataset` whose `train` holds the other folds' classes and whose `val` holds fold `val_fold`'s classes, each
    relabelled `0 .. C-1` (in the order of the original training labels); `test` is unchanged.
  """
  if dataset.val is not None:
    raise ValueError(f"data set {dataset.name!r} already has a validation split")
  if not 0 <= val_fold < num_folds:
    raise ValueError(f"val_fold must lie in 0..{num_folds - 1} (num_folds={num_folds}), got {val_fold}")
  train = dataset.train
  folds = class_folds(train.num_classes, num_folds)
  val_classes = folds[val_fold]
  train_classes = np.concatenate([fold for k, fold in enumerate(folds) if k != val_fold])
  return dataclasses.replace(
      dataset,
      train=_subset(train, train_classes),
      val=_subset(train, val_classes),
  )


def _subset(split: Split, classes: np.ndarray) -> Split:
  return split_by_class(split.images, split.labels, split.class_names, classes)
