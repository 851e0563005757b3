"""Tests for the photo benchmarks (directory layouts, tfds), the file-backed loader path, transforms and protocols.

Directory layouts are tiny fixtures written by `dataset_fixtures.py`, minimal ones and ones with the real data sets'
class-size histograms. The tfds path on `tfds.testing.mock_data` is
in `test_datasets_tfds.py`, because the mock imports TensorFlow (about 10 s); reading prepared ArrayRecord data does
not. Images are decoded at 16×16 to stay fast.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os

import dataset_fixtures as fx
import numpy as np
import pytest
from PIL import Image

from metriclearn.data import (
    ImageFiles,
    Loader,
    RandomResizedCrop,
    RandomSampler,
    ResizeCenterCrop,
    ResizeRandomCrop,
    Split,
    class_folds,
    eval_batches,
    load_dataset,
    to_float,
)
from metriclearn.data import transforms

SMALL = {"image_size": 16, "resize_size": 20}


@pytest.fixture(scope="module", params=[(name, kind) for name in sorted(fx.MAKERS) for kind in ("minimal", "real")],
                ids=lambda param: "-".join(param))
def layout(request, tmp_path_factory):
  """(name, data_dir, expected class counts) for each data set's directory layout: minimal, or with the real data
  set's class-size histogram (`fx.make_realistic`)."""
  name, kind = request.param
  root = str(tmp_path_factory.mktemp(name))
  return name, root, fx.MAKERS[name](root) if kind == "minimal" else fx.make_realistic(name, root)


def _counts(split) -> dict:
  return dict(collections.Counter(split.class_names[label] for label in split.labels))


def _names(name: str, expected: dict) -> dict:
  """The class names the loader gives the fixture's class ids."""
  if name == "cub":
    return {c: f"Bird_{c}" for c in expected}
  if name == "cars":
    return {c: f"Car model {c}" for c in expected}
  return {c: str(c) for c in expected}


# ------------------------------------------------------------------------------------------------ directory layouts


def test_directory_layouts_give_the_standard_splits(layout):
  name, root, expected = layout
  dataset = load_dataset(name, data_dir=root, source="directory", **SMALL)
  if name == "inshop":
    assert _counts(dataset.train) == expected["train"]
    assert _counts(dataset.query) == expected["query"] and _counts(dataset.gallery) == expected["gallery"]
  else:
    for split in ("train", "test"):
      names = _names(name, expected[split])
      assert _counts(dataset[split]) == {names[c]: n for c, n in expected[split].items()}
  for split in dataset.splits.values():
    assert not split.in_memory
    assert split.labels.dtype == np.int32 and set(split.labels) <= set(range(split.num_classes))
    images = split.images[: len(split)]
    assert images.shape == (len(split), 16, 16, 3) and images.dtype == np.uint8
    assert split.image_shape == (16, 16, 3)
  assert not set(dataset.train.class_names) & set(dataset.test.class_names)  # zero-shot
  assert dataset.mean == transforms.IMAGENET_MEAN and dataset.train_transform == RandomResizedCrop(size=16)


# The ranges issue 18 measured on the real index files: (smallest, largest class) of the training split.
REAL_RANGES = {"sop": (2, 12), "inshop": (2, 160), "cub": (41, 60), "cars": (24, 97)}


@pytest.mark.parametrize("name", sorted(fx.CLASS_SIZES))
def test_class_size_histograms_match_the_real_data_sets(name):
  bins = fx.CLASS_SIZES[name]
  assert math.isclose(sum(share for _, _, share in bins), 1.0, abs_tol=1e-9)
  assert (bins[0][0], bins[-1][1]) == REAL_RANGES[name]
  classes, images = fx.PUBLISHED_TRAIN[name]
  assert abs(fx.histogram_mean(name) / (images / classes) - 1) < 0.01  # the published mean images per class
  # The stratified draw follows the histogram. Class k's size lies between the histogram's quantiles k/n and (k+1)/n,
  # and the quantile function is monotone, so the drawn mean is within (largest − smallest size) / n of the
  # histogram's: with n = 20,000 at most 158 / 20,000 = 0.008 images (In-Shop), 0.12 % of 6.48; 1 % holds.
  sizes = fx.class_sizes(name, 20_000, seed=3)
  assert sizes.min() >= REAL_RANGES[name][0] and sizes.max() <= REAL_RANGES[name][1]
  assert abs(sizes.mean() / fx.histogram_mean(name) - 1) < 0.01
  np.testing.assert_array_equal(fx.class_sizes(name, 30, seed=4), fx.class_sizes(name, 30, seed=4))


@pytest.mark.parametrize("name", ["sop", "inshop"])
def test_realistic_sop_and_inshop_layouts_have_many_two_and_three_image_classes(name, tmp_path):
  counts = fx.make_realistic(name, str(tmp_path))
  train = np.array(list(counts["train"].values()))
  assert np.sum(train == 2) >= 3 and np.sum(train == 3) >= 3 and np.mean(train < 4) >= 0.25
  if name == "inshop":  # every test item has a query and a gallery image, as in the real query / gallery split
    assert counts["query"].keys() == counts["gallery"].keys() and min(counts["query"].values()) >= 1
    assert min(counts["gallery"].values()) >= 1


def test_auto_source_finds_the_directory_layout(layout):
  name, root, _ = layout
  auto = load_dataset(name, data_dir=root, **SMALL)
  directory = load_dataset(name, data_dir=root, source="directory", **SMALL)
  np.testing.assert_array_equal(auto.test.labels, directory.test.labels)
  np.testing.assert_array_equal(auto.test.images[:3], directory.test.images[:3])


def test_inshop_query_and_gallery_share_labels(tmp_path):
  fx.make_inshop(str(tmp_path), official_layout=True)  # Eval/list_eval_partition.txt and Img/img/
  dataset = load_dataset("inshop", data_dir=str(tmp_path), **SMALL)
  assert dataset.query.class_names == dataset.gallery.class_names == dataset.test.class_names
  assert dataset.query.class_names == ["id_00000003", "id_00000004", "id_00000005"]
  np.testing.assert_array_equal(dataset.test.labels, np.concatenate([dataset.query.labels, dataset.gallery.labels]))
  assert len(dataset.test) == len(dataset.query) + len(dataset.gallery) == 10
  np.testing.assert_array_equal(dataset.test.images[len(dataset.query):], dataset.gallery.images[:])


@pytest.mark.parametrize(
    "name, expected",
    [
        ("cub", r"CUB_200_2011.*images\.txt.*image_class_labels\.txt.*Caltech-UCSD Birds-200-2011"),
        ("cars", r"cars_annos\.mat.*car_ims.*Stanford Cars"),
        ("sop", r"Ebay_train\.txt.*Ebay_test\.txt.*Stanford Online Products"),
        ("inshop", r"list_eval_partition\.txt.*img.*In-shop Clothes Retrieval Benchmark.*DeepFashion"),
    ],
)
def test_missing_directory_names_the_expected_files(name, expected, tmp_path):
  with pytest.raises(FileNotFoundError, match=expected):
    load_dataset(name, data_dir=str(tmp_path), source="directory")
  with pytest.raises(FileNotFoundError, match="no data_dir was given"):
    load_dataset(name, source="directory")


def test_auto_source_without_data_names_both_sources(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"(?s)images\.txt.*tfds build caltech_birds2011.*array_record"):
    load_dataset("cub", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="not in tensorflow-datasets"):
    load_dataset("inshop", data_dir=str(tmp_path), source="tfds")
  with pytest.raises(ValueError, match="unknown source 'web'"):
    load_dataset("sop", data_dir=str(tmp_path), source="web")
  with pytest.raises(ValueError, match="unknown keyword.*'image_sise'.*accepted:.*'image_size'"):
    load_dataset("sop", data_dir=str(tmp_path), image_sise=224)


def test_incomplete_directory_and_corrupt_images_are_reported(tmp_path):
  fx.make_sop(str(tmp_path))
  first = tmp_path / "Stanford_Online_Products" / "bicycle_final" / "1001_0.JPG"
  first.write_bytes(b"not a jpeg")
  dataset = load_dataset("sop", data_dir=str(tmp_path), **SMALL)
  with pytest.raises(OSError, match="could not decode image .*1001_0.JPG"):
    dataset.train.images[0:2]
  os.remove(first)
  with pytest.raises(FileNotFoundError, match="incomplete: 1 of .* missing, e.g. .*1001_0.JPG"):
    load_dataset("sop", data_dir=str(tmp_path))


# ------------------------------------------------------------------------------------------- transforms and loader


@pytest.mark.parametrize("width, height", [(500, 375), (375, 500), (60, 600)])
def test_random_resized_crop_boxes_are_inside_and_within_the_ranges(width, height):
  crop = RandomResizedCrop(size=224)
  for seed in range(200):
    left, top, right, bottom = crop.plan(width, height, np.random.default_rng(seed)).box
    assert 0 <= left < right <= width and 0 <= top < bottom <= height
    w, h = right - left, bottom - top
    fallback = (w == width or h == height) and abs(left - (width - w) // 2) <= 1 and abs(top - (height - h) // 2) <= 1
    if not fallback:
      assert 0.08 * width * height * 0.95 <= w * h <= width * height
      assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
  flips = [crop.plan(width, height, np.random.default_rng(s)).flip for s in range(200)]
  assert 60 < sum(flips) < 140


def test_deterministic_crops():
  centre = ResizeCenterCrop(resize=256, size=224).plan(500, 375)
  scale = 375 / 256  # the shorter side goes to 256
  half = 112 * scale
  np.testing.assert_allclose(centre.box, (250 - half, 187.5 - half, 250 + half, 187.5 + half))
  square = ResizeCenterCrop(resize=256, size=224, square=True).plan(512, 256)
  np.testing.assert_allclose(square.box, (32, 16, 480, 240))
  daml = ResizeRandomCrop(resize=256, size=224)
  for seed in range(50):
    plan = daml.plan(512, 256, np.random.default_rng(seed))
    left, top, right, bottom = plan.box
    assert right - left == 448 and bottom - top == 224 and 0 <= left <= 64 and 0 <= top <= 32
    assert left % 2 == 0  # whole pixels of the 256² image (2 original pixels each horizontally)
  assert not daml.plan(512, 256, None).flip


def test_render_mirrors_and_draft_matches_full_decoding(tmp_path):
  path = str(tmp_path / "big.jpg")
  fx.write_image(path, 3, size=(1200, 900))
  plan = ResizeCenterCrop(resize=256, size=224).plan(1200, 900)
  with Image.open(path) as image:
    drafted = transforms.render(image, plan, 224)  # decoded at 1/2 scale (600×450 ≥ the 256-side crop box)
  with Image.open(path) as image:
    image.load()  # already decoded: no draft
    full = transforms.render(image, plan, 224)
  assert drafted.shape == full.shape == (224, 224, 3)
  assert np.abs(drafted.astype(int) - full.astype(int)).mean() < 2.0
  flipped = transforms.render(Image.open(path), plan._replace(flip=True), 224)
  np.testing.assert_array_equal(flipped, drafted[:, ::-1])
  assert drafted[:, :100].mean() > drafted[:, 124:].mean() + 50  # the bright half stays on the left


@pytest.fixture(scope="module")
def cub(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("cub_loader"))
  fx.make_cub(root, classes=(1, 2, 3, 4, 101, 102), per_class=4)
  return load_dataset("cub", data_dir=root, **SMALL)


def test_loader_transforms_are_deterministic_in_seed_and_step(cub):
  sampler = RandomSampler(cub.train.labels, 8, seed=0)

  def loader(seed, workers=2):
    split = Split(dataclasses.replace(cub.train.images, num_workers=workers), cub.train.labels, cub.train.class_names)
    return Loader(split, sampler, transform=cub.train_transform, mean=cub.mean, std=cub.std, seed=seed)

  a, b = loader(0).batch(3), loader(0).batch(3)
  assert a["image"].shape == (8, 16, 16, 3) and a["image"].dtype == np.float32
  np.testing.assert_array_equal(a["image"], b["image"])
  np.testing.assert_array_equal(a["image"], loader(0, workers=1).batch(3)["image"])
  assert not np.array_equal(a["image"], loader(1).batch(3)["image"])
  plain = Loader(cub.train, sampler, mean=cub.mean, std=cub.std).batch(3)  # no transform: the test centre crop
  np.testing.assert_array_equal(a["label"], plain["label"])
  assert not np.array_equal(a["image"], plain["image"])
  shares = [Loader(cub.train, sampler, transform=cub.train_transform, process_index=i, process_count=2).batch(3)
            for i in range(2)]  # fmt: skip
  whole = Loader(cub.train, sampler, transform=cub.train_transform).batch(3)
  np.testing.assert_array_equal(np.concatenate([s["image"] for s in shares]), whole["image"])


def test_loader_gives_the_test_transform_to_the_rows_the_sampler_asks(cub):
  class Representatives(RandomSampler):  # the hook of apfs_sampler.APFSSampler
    def test_time_preprocessing_mask(self, step):
      return np.arange(self.batch_size) >= 2  # rows 0-1 augmented, the rest not

  sampler = Representatives(cub.train.labels, 6, seed=1)
  batch = Loader(cub.train, sampler, transform=cub.train_transform).batch(0)
  plain = to_float(cub.train.images[sampler.batch_indices(0)])
  np.testing.assert_allclose(batch["image"][2:], plain[2:], atol=1e-6)
  assert not np.array_equal(batch["image"][:2], plain[:2])


def test_eval_batches_of_a_file_backed_split(cub):
  batches = list(eval_batches(cub.test, 5, mean=cub.mean, std=cub.std))
  assert [b["image"].shape for b in batches] == [(5, 16, 16, 3)] * 2
  images = np.concatenate([b["image"][b["mask"]] for b in batches])
  expected = to_float(cub.test.images[:], cub.mean, cub.std)
  np.testing.assert_allclose(images, expected, atol=1e-5)
  np.testing.assert_array_equal(np.concatenate([b["label"][b["mask"]] for b in batches]), cub.test.labels)


def test_file_backed_images_refuse_whole_array_conversion(cub):
  with pytest.raises(TypeError, match="split.images\\[indices\\]"):
    to_float(cub.test.images)
  with pytest.raises(TypeError, match="split.in_memory"):
    np.asarray(cub.test.images)
  with pytest.raises(ValueError, match="file-backed splits"):
    Loader(load_dataset("digits").train, RandomSampler(np.zeros(8, np.int32), 4), transform=cub.train_transform)
  assert isinstance(cub.test.images, ImageFiles) and len(cub.test.images) == 8


# -------------------------------------------------------------------------------------------------- fair protocol


@pytest.mark.parametrize("num_classes, num_folds", [(100, 4), (98, 4), (5, 4), (7, 3)])
def test_class_folds_are_disjoint_contiguous_and_cover(num_classes, num_folds):
  folds = class_folds(num_classes, num_folds)
  assert len(folds) == num_folds
  np.testing.assert_array_equal(np.concatenate(folds), np.arange(num_classes))
  assert max(map(len, folds)) - min(map(len, folds)) <= 1


def test_fair_protocol_carves_class_disjoint_validation_folds(cub):
  base = load_dataset("digits", num_train_classes=8)
  seen = []
  for fold in range(4):
    dataset = load_dataset("digits", num_train_classes=8, val_fold=fold, num_folds=4)
    train, val = set(dataset.train.class_names), set(dataset.val.class_names)
    assert not train & val and train | val == set(base.train.class_names) and len(val) == 2
    assert len(dataset.train) + len(dataset.val) == len(base.train)
    assert dataset.test.class_names == base.test.class_names
    seen += sorted(val)
  assert sorted(seen) == sorted(base.train.class_names)  # every training class validates exactly once
  again = load_dataset("digits", num_train_classes=8, val_fold=2, num_folds=4)
  assert again.val.class_names == load_dataset("digits", num_train_classes=8, val_fold=2).val.class_names
  with pytest.raises(ValueError, match="val_fold must lie in 0..3"):
    load_dataset("digits", val_fold=4)
  with pytest.raises(ValueError, match="exceeds the number of training classes"):
    load_dataset("digits", num_train_classes=3, val_fold=0, num_folds=4)


def test_fair_protocol_on_a_file_backed_benchmark(tmp_path):
  fx.make_cub(str(tmp_path), classes=(1, 2, 3, 4, 5, 6, 7, 8, 101), per_class=2)
  dataset = load_dataset("cub", data_dir=str(tmp_path), val_fold=3, num_folds=4, **SMALL)
  assert dataset.val.class_names == ["Bird_7", "Bird_8"] and dataset.train.num_classes == 6
  assert dataset.val.images[:].shape == (4, 16, 16, 3) and not dataset.val.in_memory
  assert math.isclose(len(dataset.train) / len(dataset.val), 3.0)
