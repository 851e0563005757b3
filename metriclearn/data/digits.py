"""`digits`: scikit-learn's handwritten digits (1,797 real 8×8 scans, 10 classes), split zero-shot by class.

The images ship inside scikit-learn (`sklearn.datasets.load_digits`), so nothing is downloaded. With only 10
classes, the default zero-shot split trains on 5 digits and tests on the other 5; with so few training classes a
learned embedding generalises *worse* to the unseen digits than raw pixels do. Use this set for fast tests and for
linear metric learning (the AML linear form), not as the default benchmark: that is `glyphs`.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits as _sklearn_load_digits

from metriclearn.data import splits

_MAX_PIXEL = 16.0  # load_digits pixels count (0..16) the ink pixels of a 4×4 block of a 32×32 bitmap


def load_digits(
    *, data_dir: str | None = None, seed: int = 0, num_train_classes: int = 5, upsample: int = 1
) -> splits.Dataset:
  """The digits as a `Dataset` of float32 images in [0, 1].

  Args:
    data_dir: unused (the data ship with scikit-learn); accepted so every data set takes the same arguments.
    seed: chooses which digits are the training classes (a seeded permutation of 0..9).
    num_train_classes: how many digits train; the others test.
    upsample: integer factor for nearest-neighbour upsampling (1 keeps 8×8; 4 gives 32×32 for a CNN).

  Returns:
    A `Dataset` with `train` and `test` splits of `f32[N, 8·upsample, 8·upsample, 1]` images, disjoint classes.
  """
  del data_dir
  if upsample < 1:
    raise ValueError(f"upsample must be a positive integer factor, got {upsample}")
  digits = _sklearn_load_digits()
  images = (digits.images / _MAX_PIXEL).astype(np.float32)[..., None]
  if upsample > 1:
    images = images.repeat(upsample, axis=1).repeat(upsample, axis=2)
  labels = digits.target.astype(np.int32)
  class_names = [str(d) for d in range(10)]
  train_classes, test_classes = splits.zero_shot_classes(10, num_train_classes, seed)
  return splits.Dataset(
      name="digits",
      train=splits.split_by_class(images, labels, class_names, train_classes),
      test=splits.split_by_class(images, labels, class_names, test_classes),
  )
