"""The photo benchmarks through tensorflow-datasets, when they are prepared in a tfds data directory.

Never downloads: a builder that is not prepared in `data_dir` is a `FileNotFoundError` that says how to prepare it.

Two storage formats, two ways to read:

* **ArrayRecord** (`tfds build NAME --file_format=array_record`): random access through `builder.as_data_source`,
  with no TensorFlow import. Records are read as raw bytes and only the image and label features are parsed; the
  image stays encoded until the loader decodes it (Pillow, on its threads). Opening the set reads every record
  once for its label (labels are not stored apart from the images).
* **TFRecord** (tfds's default format): sequential files. The encoded images (not decoded ones: CUB ≈ 1.1 GB,
  Cars ≈ 1.9 GB, SOP ≈ 3 GB) are read once into memory through TensorFlow. A log line says how to convert the set
  to ArrayRecord (`tfds convert_format`), which needs no memory and starts faster.

`tfds.testing.mock_data` serves random examples of the real feature specs on the ArrayRecord path, which is how the
tests run this module offline.
"""

from __future__ import annotations

import concurrent.futures

import numpy as np
from absl import logging

from metriclearn.data.folders import Catalogue

# registered name -> (tfds builder, label feature, the splits that hold all images)
BUILDERS = {
    "cub": ("caltech_birds2011", "label"),
    "cars": ("cars196", "label"),
    "sop": ("stanford_online_products", "class_id"),
}
_SPLITS = ("train", "test")


def _import_tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (optional dependency, ~1 s import)
  except ImportError as error:
    raise ImportError(
        "reading data sets through tensorflow-datasets needs the data extra: pip install 'metriclearn[data]' "
        "(or use the original archives' directory layout with source='directory')"
    ) from error
  return tfds


def not_prepared(name: str, data_dir: str | None) -> FileNotFoundError:
  builder_name = BUILDERS[name][0]
  where = data_dir or "the default tfds directory (~/tensorflow_datasets)"
  return FileNotFoundError(
      f"tensorflow-datasets has no prepared '{builder_name}' in {where}. Prepare it once (this downloads): "
      f"`tfds build {builder_name} --data_dir={data_dir or '~/tensorflow_datasets'} --file_format=array_record` "
      "(ArrayRecord gives random access without TensorFlow), then pass that directory as data_dir; metriclearn "
      "itself never downloads."
  )


def is_prepared(name: str, data_dir: str | None) -> bool:
  """Whether `BUILDERS[name]` is prepared in `data_dir` (False when tensorflow-datasets is not installed)."""
  try:
    tfds = _import_tfds()
  except ImportError:
    return False
  return tfds.builder(BUILDERS[name][0], data_dir=data_dir).is_prepared()


def read_tfds(name: str, data_dir: str | None, *, num_workers: int = 1) -> Catalogue:
  """All images of `BUILDERS[name]`'s train and test splits, with their labels and tfds split as `partition`.

  Raises:
    FileNotFoundError: the builder is not prepared in `data_dir`.
  """
  tfds = _import_tfds()
  builder_name, label_key = BUILDERS[name]
  builder = tfds.builder(builder_name, data_dir=data_dir)
  try:
    sources = [builder.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
               for split in _SPLITS]  # fmt: skip
  except NotImplementedError:  # a TFRecord set, or (the TFRecord default of) no set at all
    if not builder.is_prepared():
      raise not_prepared(name, data_dir) from None
    return read_sequential(name, data_dir)
  except AssertionError as error:  # "could not find data in DIR"
    raise not_prepared(name, data_dir) from error
  # Parse only the image (left encoded) and the label: tfds would otherwise decode every image feature (CUB's
  # segmentation masks too). PartialDecoding's feature subset does this on every tfds path, mocked ones included.
  features = tfds.decode.PartialDecoding({"image": True, label_key: True}).extract_features(builder.info.features)
  skip_image = {"image": tfds.decode.SkipDecoding()}
  offsets = np.cumsum([0] + [len(s) for s in sources])

  def example(row: int) -> dict:
    part = int(np.searchsorted(offsets, row, side="right")) - 1
    return features.deserialize_example_np(sources[part][row - int(offsets[part])], decoders=skip_image)

  with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
    labels = np.fromiter(pool.map(lambda row: int(example(row)[label_key]), range(int(offsets[-1]))), np.int64)
  return Catalogue(
      read=lambda row: example(row)["image"],
      labels=labels,
      class_names=list(builder.info.features[label_key].names),
      partition=np.repeat(np.array(_SPLITS), np.diff(offsets)),
      origin=f"tfds {builder_name} in {builder.data_dir}",
  )


def read_sequential(name: str, data_dir: str | None) -> Catalogue:
  """The TFRecord path: every encoded image read once into memory (needs TensorFlow)."""
  tfds = _import_tfds()
  builder_name, label_key = BUILDERS[name]
  builder = tfds.builder(builder_name, data_dir=data_dir)
  logging.warning(
      "%s is stored as TFRecord: reading all encoded images into memory. For random access without TensorFlow, "
      "convert it once: tfds convert_format --dataset_version_dir=%s --out_file_format=array_record",
      builder_name, builder.data_dir,
  )  # fmt: skip
  decoders = tfds.decode.PartialDecoding({"image": True, label_key: True},
                                         decoders={"image": tfds.decode.SkipDecoding()})  # fmt: skip
  encoded, labels, partition = [], [], []
  for split in _SPLITS:
    try:
      dataset = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
    except AssertionError as error:  # "could not find data in DIR"
      raise not_prepared(name, data_dir) from error
    for example in tfds.as_numpy(dataset):
      encoded.append(example["image"])
      labels.append(int(example[label_key]))
      partition.append(split)
  return Catalogue(
      read=encoded.__getitem__,
      labels=np.asarray(labels, dtype=np.int64),
      class_names=list(builder.info.features[label_key].names),
      partition=np.asarray(partition),
      origin=f"tfds {builder_name} in {builder.data_dir}",
  )

