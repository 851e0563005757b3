"""Tests of the tensorflow-datasets path of the photo benchmarks, on `tfds.testing.mock_data` (offline).

Separate from `test_datasets.py` because the mock imports TensorFlow (about 10 s on two cores); needs the `data`
extra (`pip install -e ".[dev,data]"`). The mock serves random examples with the builders' real feature specs, the
same examples in every split, and ignores split slicing.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from metriclearn.data import load_dataset, tfds_source

SMALL = {"image_size": 16, "resize_size": 20}
NUM_EXAMPLES = 24  # per tfds split


@pytest.fixture(autouse=True)
def ordered_mock_bboxes(monkeypatch):
  # The mock draws bounding boxes with min > max, which tfds's own encoder then rejects (CUB and Cars have a bbox
  # feature); order the coordinates. Test-only: real data has valid boxes.
  encode = tfds.features.BBoxFeature.encode_example

  def ordered(self, bbox):
    y0, x0, y1, x1 = bbox
    return encode(self, tfds.features.BBox(min(y0, y1), min(x0, x1), max(y0, y1), max(x0, x1)))

  monkeypatch.setattr(tfds.features.BBoxFeature, "encode_example", ordered)


def _class_names(builder_name: str, data_dir: str) -> list[str]:
  return tfds.builder(builder_name, data_dir=data_dir).info.features["label"].names


@pytest.mark.parametrize("name, builder_name, first_test", [("cub", "caltech_birds2011", 100), ("cars", "cars196", 98)])
def test_class_split_is_rebuilt_from_both_tfds_splits(tmp_path, name, builder_name, first_test):
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    dataset = load_dataset(name, data_dir=str(tmp_path), source="tfds", **SMALL)
    images = dataset.train.images[:3]
    catalogue = tfds_source.read_tfds(name, str(tmp_path))
  names = _class_names(builder_name, str(tmp_path))
  assert len(names) == {"cub": 200, "cars": 196}[name]
  # Both tfds splits (classification splits sharing classes) are pooled and re-split by class id.
  assert len(dataset.train) + len(dataset.test) == 2 * NUM_EXAMPLES
  assert len(dataset.train) == int(np.sum(catalogue.labels < first_test))
  assert set(dataset.train.class_names) <= set(names[:first_test])
  assert set(dataset.test.class_names) <= set(names[first_test:])
  assert dataset.train.num_classes == len(np.unique(catalogue.labels[catalogue.labels < first_test]))
  assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
  assert isinstance(catalogue.read(0), bytes)  # the image stays encoded until the loader decodes it


def test_sop_keeps_the_tfds_split(tmp_path):
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    dataset = load_dataset("sop", data_dir=str(tmp_path), source="tfds", **SMALL)
    batch = dataset.test.images[[0, 5, 7]]
  assert len(dataset.train) == len(dataset.test) == NUM_EXAMPLES
  assert batch.shape == (3, 16, 16, 3)
  assert len(dataset.train.class_names) == dataset.train.num_classes <= NUM_EXAMPLES


@pytest.mark.parametrize("name", ["cub", "cars", "sop"])
def test_tfrecord_path_reads_the_same_labels(tmp_path, name):
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    random_access = tfds_source.read_tfds(name, str(tmp_path))
    sequential = tfds_source.read_sequential(name, str(tmp_path))
  np.testing.assert_array_equal(sequential.partition, random_access.partition)
  assert len(sequential.labels) == 2 * NUM_EXAMPLES
  assert sequential.class_names == random_access.class_names
  assert isinstance(sequential.read(3), bytes)


def test_unprepared_tfds_data_says_how_to_prepare(tmp_path):
  expected = r"no prepared 'cars196' in .*tfds build cars196 --data_dir=.*array_record"
  with pytest.raises(FileNotFoundError, match=expected):
    load_dataset("cars", data_dir=str(tmp_path), source="tfds")
  with pytest.raises(FileNotFoundError, match=r"(?s)cars_annos\.mat.*tfds build cars196"):
    load_dataset("cars", data_dir=str(tmp_path))  # auto: neither source
