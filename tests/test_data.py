"""Tests for metriclearn.data: the glyphs and digits data sets, the samplers and the loader."""

from __future__ import annotations

import logging
import os
import threading

import numpy as np
import pytest
import scipy.spatial

from metriclearn import registry
from metriclearn.data import (
    Loader,
    MPerClassSampler,
    RandomSampler,
    Split,
    eval_batches,
    glyphs,
    load_dataset,
    make_sampler,
)
from metriclearn.data import samplers
from metriclearn.data.apfs_sampler import APFSSampler

SMALL_GLYPHS = {"max_classes": 24, "images_per_class": 4}


# ---------------------------------------------------------------------------------------------------------- glyphs


@pytest.fixture(scope="module")
def canonical():
  pool = glyphs.candidate_characters()
  renderings, present = glyphs.render_canonical(pool)
  side = renderings.shape[-1] // 3
  reduced = renderings.reshape(*renderings.shape[:2], side, 3, side, 3).mean((3, 5))
  return pool, reduced, present


@pytest.fixture(scope="module")
def small_glyphs(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("glyphs"))
  return data_dir, glyphs.load_glyphs(data_dir=data_dir, seed=0, **SMALL_GLYPHS)


def test_glyph_classes_are_distinct(canonical):
  pool, reduced, present = canonical
  tolerance = 0.021
  kept = glyphs.distinct_characters(reduced, present, min_faces=8, duplicate_tolerance=tolerance)
  names = [pool[i] for i in kept]
  assert 200 <= len(kept) <= 300  # the recipe targets about 250 classes
  assert len(set(names)) == len(names)
  # Look-alikes across scripts: the first in pool order survives, the others are dropped.
  assert "A" in names and "\u0391" not in names and "\u0410" not in names  # Latin A; Greek Alpha, Cyrillic A
  assert "o" in names and "\u03bf" not in names and "\u043e" not in names
  # No two kept characters look alike in any face they share.
  flat = reduced[kept].reshape(len(kept), reduced.shape[1], -1) / 255.0
  for f in range(flat.shape[1]):
    x = flat[present[kept, f], f]
    rms = np.sqrt(scipy.spatial.distance.pdist(x, "sqeuclidean") / x.shape[1])
    assert rms.min() >= tolerance, f"face {glyphs.FACE_FILES[f]}"
  assert np.all(present[kept].sum(axis=1) >= 8)


def test_glyph_missing_characters_are_skipped():
  # U+E000 (private use) is in no face; DejaVu has the arrow, STIX General Bold Italic does not.
  renderings, present = glyphs.render_canonical(["\ue000", "A", "\u21d0"])
  assert not present[0].any() and not renderings[0].any()
  assert present[1].all()
  assert present[2, glyphs.FACE_FILES.index("DejaVuSans.ttf")]
  assert not present[2, glyphs.FACE_FILES.index("STIXGeneralBolIta.ttf")]


@pytest.fixture(scope="module")
def generated():
  return glyphs.generate_glyphs(seed=5, **SMALL_GLYPHS)


def test_glyph_images_come_from_faces_that_have_the_character(canonical, generated):
  pool, _, present = canonical
  data = generated
  char_index = np.array([pool.index(name) for name in data["class_names"]])
  assert present[char_index[data["labels"]], data["faces"]].all()
  assert data["images"].shape == (24 * 4, 32, 32, 1) and data["images"].dtype == np.uint8
  assert data["images"].reshape(len(data["images"]), -1).max(axis=1).min() > 0  # every image has ink


def test_glyph_zero_shot_split(small_glyphs):
  _, dataset = small_glyphs
  train, test = dataset.train, dataset.test
  assert set(train.class_names).isdisjoint(test.class_names)
  assert train.num_classes == test.num_classes == 12
  for split in (train, test):
    assert split.images.shape == (12 * 4, 32, 32, 1)
    np.testing.assert_array_equal(np.bincount(split.labels), np.full(12, 4))
  assert dataset["train"] is train
  with pytest.raises(ValueError, match="has no split 'val'"):
    dataset["val"]  # pylint: disable=pointless-statement


def test_glyphs_deterministic_in_seed(generated):
  first = generated
  again = glyphs.generate_glyphs(seed=5, **SMALL_GLYPHS)
  other = glyphs.generate_glyphs(seed=6, **SMALL_GLYPHS)
  for key in ("images", "labels", "class_names", "faces"):
    np.testing.assert_array_equal(first[key], again[key])
  assert not np.array_equal(first["images"], other["images"])


def test_glyph_cache_is_reused(small_glyphs, monkeypatch):
  data_dir, dataset = small_glyphs
  files = [name for name in os.listdir(data_dir) if name.endswith(".npz")]
  assert files == [os.path.basename(glyphs.cache_path(data_dir, seed=0, **SMALL_GLYPHS))]

  def fail(**_):
    raise AssertionError("regenerated although the cache exists")

  monkeypatch.setattr(glyphs, "generate_glyphs", fail)
  cached = glyphs.load_glyphs(data_dir=data_dir, seed=0, **SMALL_GLYPHS)
  np.testing.assert_array_equal(cached.test.images, dataset.test.images)
  assert cached.test.class_names == dataset.test.class_names
  # Different generation arguments name a different file, so they are never served a stale cache.
  assert glyphs.cache_path(data_dir, seed=1, **SMALL_GLYPHS) != glyphs.cache_path(data_dir, seed=0, **SMALL_GLYPHS)
  assert glyphs.cache_path(data_dir) == glyphs.cache_path(data_dir, images_per_class=30)


# ---------------------------------------------------------------------------------------------------------- digits


def test_digits_zero_shot_split():
  dataset = load_dataset("digits", seed=0)
  train, test = dataset.train, dataset.test
  assert train.num_classes == test.num_classes == 5
  assert set(train.class_names).isdisjoint(test.class_names)
  assert len(train) + len(test) == 1797
  assert train.images.shape[1:] == (8, 8, 1) and train.images.dtype == np.float32
  assert 0.0 <= train.images.min() and train.images.max() == 1.0
  assert set(np.unique(test.labels)) == set(range(5))

  three = load_dataset("digits", num_train_classes=3, upsample=4)
  assert three.train.num_classes == 3 and three.test.num_classes == 7
  assert three.train.images.shape[1:] == (32, 32, 1)
  with pytest.raises(ValueError, match="num_train_classes must be between 1 and 9"):
    load_dataset("digits", num_train_classes=10)


def test_load_dataset_errors():
  with pytest.raises(ValueError, match="unknown dataset 'imagenet'; valid dataset names are: 'cars', 'cub', 'digits'"):
    load_dataset("imagenet")
  with pytest.raises(ValueError, match="unknown keyword.*'images_per_clas'.*accepted: .*'images_per_class'"):
    load_dataset("glyphs", images_per_clas=3)
  with pytest.raises(ValueError, match="unknown keyword.*'upsampling'.*accepted:.*'upsample'"):
    load_dataset("digits", upsampling=2)
  with pytest.raises(ValueError, match="unknown loss 'x'; valid loss names are: 'a', 'b'"):
    registry.lookup({"b": 1, "a": 2}, "x", "loss")


def test_split_validates_its_arrays():
  images = np.zeros((4, 2, 2, 1), np.uint8)
  with pytest.raises(ValueError, match="labels must be int32"):
    Split(images, np.zeros(4, np.int64), ["a"])
  with pytest.raises(ValueError, match="labels must lie in 0..0"):
    Split(images, np.array([0, 1, 0, 0], np.int32), ["a"])
  with pytest.raises(ValueError, match=r"images must be \[N, H, W, C\]"):
    Split(images[..., 0], np.zeros(4, np.int32), ["a"])


# -------------------------------------------------------------------------------------------------------- samplers


def _labels(counts):
  return np.repeat(np.arange(len(counts)), counts).astype(np.int32)


def test_m_per_class_batches_have_p_classes_of_m():
  labels = np.random.default_rng(0).permutation(_labels([7, 4, 9, 5, 6, 12, 4, 8, 5, 10, 4]))
  sampler = MPerClassSampler(labels, 12, seed=0, m=4)
  assert sampler.steps_per_epoch == 11 // 3
  for step in range(20):
    batch = sampler.batch_indices(step)
    assert batch.shape == (12,) and batch.dtype == np.int32
    assert len(set(batch.tolist())) == 12  # samples without replacement
    classes, counts = np.unique(labels[batch], return_counts=True)
    assert len(classes) == 3 and np.all(counts == 4)
  # Within an epoch of classes no class repeats.
  epoch = np.concatenate([labels[sampler.batch_indices(s)] for s in range(3, 6)])
  assert len(np.unique(epoch)) == 9


def test_samplers_are_deterministic_and_resumable():
  labels = _labels([6] * 20)
  for name, kwargs in [("random", {}), ("m_per_class", {"m": 3})]:
    run = make_sampler(name, labels, 12, seed=7, **kwargs)
    uninterrupted = [run.batch_indices(step) for step in range(25)]
    resumed = make_sampler(name, labels, 12, seed=7, **kwargs)  # a fresh process resuming at step 10
    for step in range(10, 25):
      np.testing.assert_array_equal(resumed.batch_indices(step), uninterrupted[step])
    other = make_sampler(name, labels, 12, seed=8, **kwargs)
    assert not all(np.array_equal(other.batch_indices(s), uninterrupted[s]) for s in range(25))
    assert not all(np.array_equal(uninterrupted[s], uninterrupted[s + 1]) for s in range(24))


def test_random_sampler_covers_each_index_once_per_epoch():
  sampler = RandomSampler(_labels([5] * 12), 10, seed=1)  # 60 examples, 6 steps per epoch
  for epoch in range(3):
    indices = np.concatenate([sampler.batch_indices(epoch * 6 + s) for s in range(6)])
    np.testing.assert_array_equal(np.sort(indices), np.arange(60))
  remainder = RandomSampler(_labels([5] * 13), 10, seed=1)  # 65 examples: 5 dropped per epoch
  indices = np.concatenate([remainder.batch_indices(s) for s in range(6)])
  assert len(np.unique(indices)) == 60


def test_sampler_errors():
  labels = _labels([5, 5, 3, 8])
  with pytest.raises(ValueError, match=r"batch_size 30 cannot hold P classes × M=4 samples: choose a multiple of 4"):
    MPerClassSampler(_labels([8] * 10), 30, m=4)
  with pytest.raises(ValueError, match=r"needs P=5 distinct classes per batch, but the labels have only 4 classes"):
    MPerClassSampler(labels, 10, m=2)
  with pytest.raises(ValueError, match="batch_size 40 is larger than the split"):
    RandomSampler(labels, 40)
  with pytest.raises(ValueError, match="unknown sampler 'mpc'; valid sampler names are: 'm_per_class', 'random'"):
    make_sampler("mpc", labels, 8)
  with pytest.raises(ValueError, match="unknown keyword.*'samples_per_class'.*accepted:.*'m'"):
    make_sampler("m_per_class", labels, 8, samples_per_class=2)


# SOP-like class sizes (real SOP: 2–12 images per class): 18 of 25 classes have fewer than M = 4.
SOP_LIKE_SIZES = [2] * 10 + [3] * 8 + [4, 5, 5, 6, 7, 9, 12]


def _shuffled_labels(counts, seed=0):
  return np.random.default_rng(seed).permutation(_labels(counts))


def _warnings(caplog, build):
  """The warnings logged while `build()` runs, and its result."""
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    result = build()
  return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING], result


def _former_m_per_class_batch(labels, batch_size, seed, m, step):
  """The m-per-class draw before small classes were allowed (`rng.choice(..., replace=False)` per class), written
  out again: classes with at least M examples must keep getting exactly these batches."""
  classes, counts = np.unique(labels, return_counts=True)
  members = np.split(np.argsort(labels, kind="stable").astype(np.int32), np.cumsum(counts)[:-1])
  per_batch = batch_size // m
  epoch, position = divmod(step, len(classes) // per_batch)
  order = samplers._rng(seed, samplers._STREAM_CLASS_PERMUTATION, epoch).permutation(len(classes))
  rng = samplers._rng(seed, samplers._STREAM_SAMPLES_IN_CLASS, step)
  return np.concatenate([rng.choice(members[c], size=m, replace=False)
                         for c in order[position * per_batch:(position + 1) * per_batch]])


def test_m_per_class_draws_small_classes_with_replacement_and_warns_once(caplog):
  labels = _shuffled_labels(SOP_LIKE_SIZES)
  messages, sampler = _warnings(caplog, lambda: MPerClassSampler(labels, 16, seed=2, m=4))
  assert messages == [
      "m_per_class sampler: 18 of 25 classes (44 of 92 images) have fewer than 4 examples, 0 of them a single one: "
      "their M=4 slots are filled with replacement, every image of the class once before any repeats"]
  assert sampler.steps_per_epoch == 25 // 4
  for step in range(40):
    batch = sampler.batch_indices(step)
    assert batch.shape == (16,) and batch.dtype == np.int32
    rows = batch.reshape(4, 4)  # P = 4 classes × M = 4, each class as 4 consecutive indices
    row_classes = labels[rows[:, 0]]
    assert len(set(row_classes)) == 4 and np.all(labels[rows] == row_classes[:, None])
    for c, row in zip(row_classes, rows):
      members = set(np.flatnonzero(labels == c))
      if len(members) < 4:  # every image once, the rest repeats
        assert set(row) == members
      else:  # without replacement
        assert len(set(row)) == 4 and set(row) <= members
  # Within an epoch of classes no class repeats, small or not.
  assert len(np.unique(labels[np.concatenate([sampler.batch_indices(s) for s in range(6, 12)])])) == 24
  # Deterministic in (seed, step) and resumable: a fresh sampler at step 17 gives what the first gave.
  _, resumed = _warnings(caplog, lambda: MPerClassSampler(labels, 16, seed=2, m=4))
  for step in (17, 3, 39):
    np.testing.assert_array_equal(resumed.batch_indices(step), sampler.batch_indices(step))
  other = MPerClassSampler(labels, 16, seed=3, m=4)
  assert not all(np.array_equal(other.batch_indices(s), sampler.batch_indices(s)) for s in range(10))


def test_m_per_class_without_small_classes_is_unchanged_and_silent(caplog):
  labels = _shuffled_labels([4, 7, 5, 9, 4, 6, 12, 4, 8, 5, 10], seed=1)  # every class has at least M = 4
  messages, sampler = _warnings(caplog, lambda: MPerClassSampler(labels, 12, seed=5, m=4))
  assert messages == []
  for step in range(30):
    np.testing.assert_array_equal(sampler.batch_indices(step), _former_m_per_class_batch(labels, 12, 5, 4, step))


def test_m_per_class_single_image_classes_fill_their_slots_with_that_image(caplog):
  labels = _shuffled_labels([1, 1, 2, 3, 6, 6])
  messages, sampler = _warnings(caplog, lambda: MPerClassSampler(labels, 6, seed=0, m=3))
  assert messages == [
      "m_per_class sampler: 3 of 6 classes (4 of 19 images) have fewer than 3 examples, 2 of them a single one: "
      "their M=3 slots are filled with replacement, every image of the class once before any repeats"]
  seen = set()
  for step in range(12):
    for row in sampler.batch_indices(step).reshape(2, 3):
      c = labels[row[0]]
      seen.add(c)
      if c in (0, 1):  # a 1-image class: its one image three times, as PML's MPerClassSampler
        assert len(set(row)) == 1 and labels[row[0]] == c
  assert seen == set(range(6))  # every class stays usable
  # N-pair batches (m = 2, DAML): a 1-image class's anchor is its own positive; the others get two different images.
  pairs = MPerClassSampler(labels, 4, seed=0, m=2)
  for step in range(9):
    anchor, positive = pairs.batch_indices(step)[0::2], pairs.batch_indices(step)[1::2]
    np.testing.assert_array_equal(labels[anchor], labels[positive])
    np.testing.assert_array_equal(anchor == positive, np.isin(labels[anchor], [0, 1]))


def test_triplets_put_single_image_classes_in_negative_slots(caplog):
  labels = _shuffled_labels([1, 2, 1, 3, 1, 4, 2, 1, 5, 2, 3, 2])  # 4 of 12 classes have one image
  messages, sampler = _warnings(caplog, lambda: samplers.TripletSampler(labels, 12, seed=4))  # T = 4, 8 classes
  assert messages == [
      "triplets sampler: 4 of 12 classes (4 of 27 images) have fewer than 2 examples, 4 of them a single one: they "
      "take negative slots; only where a batch draws more than T=4 of them is one an anchor, its own positive"]
  for step in range(30):
    batch = sampler.batch_indices(step)
    assert batch.shape == (12,) and batch.dtype == np.int32
    anchor, positive, negative = batch[0::3], batch[1::3], batch[2::3]
    np.testing.assert_array_equal(labels[anchor], labels[positive])
    assert np.all(anchor != positive)  # at most 4 single-image classes per batch: all of them fit the negatives
    assert len(set(labels[anchor]) | set(labels[negative])) == 8
  np.testing.assert_array_equal(samplers.TripletSampler(labels, 12, seed=4).batch_indices(7), sampler.batch_indices(7))
  # More single-image classes in a batch than its T negative slots: the excess are anchors with themselves as positive.
  crowded_labels = _shuffled_labels([1] * 6 + [3, 2])
  crowded = samplers.TripletSampler(crowded_labels, 12, seed=0)
  for step in range(5):
    batch = crowded.batch_indices(step)
    np.testing.assert_array_equal(crowded_labels[batch[0::3]], crowded_labels[batch[1::3]])
    assert np.sum(batch[0::3] == batch[1::3]) == 2 and len(set(crowded_labels[batch])) == 8


def test_apfs_fills_small_classes_with_replacement_and_stays_a_function_of_step(caplog):
  labels = _shuffled_labels(SOP_LIKE_SIZES + [1])  # M−1 = 3 ordinary slots: the 2-image classes and the 1-image one
  messages, sampler = _warnings(caplog, lambda: APFSSampler(labels, 16, seed=1, m=4, representative_lifetime=3))
  assert messages == [
      "APFS sampler: 11 of 26 classes (21 of 93 images) have fewer than 3 examples, 1 of them a single one: their "
      "M−1=3 ordinary slots are filled with replacement, every image of the class once before any repeats"]
  for step in range(30):
    batch = sampler.batch_indices(step)
    classes = sampler.batch_classes(step)
    assert batch.shape == (16,) and batch.dtype == np.int32
    np.testing.assert_array_equal(batch[:4], sampler.representatives(step // 3)[classes])
    ordinary = batch[4:].reshape(3, 4).T  # [P, M−1]: slot j of class i at P + j·P + i
    for c, row in zip(classes, ordinary):
      members = set(np.flatnonzero(labels == c))
      assert set(row) == members if len(members) < 3 else len(set(row)) == 3 and set(row) <= members
  fresh = APFSSampler(labels, 16, seed=1, m=4, representative_lifetime=3)
  for step in (22, 5, 13):
    np.testing.assert_array_equal(fresh.batch_indices(step), sampler.batch_indices(step))


# ---------------------------------------------------------------------------------------------------------- loader


def _split(n=40, classes=8):
  images = np.random.default_rng(0).integers(0, 256, size=(n, 6, 6, 1), dtype=np.uint8)
  labels = (np.arange(n) % classes).astype(np.int32)
  return Split(images, labels, [str(c) for c in range(classes)])


def _prefetch_threads():
  return [t for t in threading.enumerate() if t.name == "metriclearn-prefetch"]


def test_loader_prefetch_equals_direct_indexing():
  split = _split()
  sampler = MPerClassSampler(split.labels, 8, seed=0, m=2)
  loader = Loader(split, sampler, prefetch=2)
  batches = list(loader.iterate(3, 6))
  assert len(batches) == 6
  for step, batch in zip(range(3, 9), batches):
    indices = sampler.batch_indices(step)
    np.testing.assert_array_equal(batch["image"], split.images[indices].astype(np.float32) / 255.0)
    np.testing.assert_array_equal(batch["label"], split.labels[indices])
    assert batch["image"].dtype == np.float32 and batch["label"].dtype == np.int32
  assert not _prefetch_threads()


def test_loader_propagates_errors_and_shuts_down():
  class FailingSampler:
    def batch_indices(self, step):
      if step == 3:
        raise RuntimeError("bad step 3")
      return np.arange(4, dtype=np.int32)

  iterator = Loader(_split(), FailingSampler()).iterate(0, 10)
  assert len([next(iterator) for _ in range(3)]) == 3
  with pytest.raises(RuntimeError, match="bad step 3"):
    next(iterator)
  assert not _prefetch_threads()

  endless = Loader(_split(), RandomSampler(_split().labels, 4)).iterate(0)
  next(endless)
  endless.close()  # the producer blocks on a full buffer; closing must still stop it
  assert not _prefetch_threads()


def test_loader_augmentation_and_normalisation_are_per_step_deterministic():
  split = _split()

  def add_noise(images, rng):
    return images + rng.normal(size=images.shape).astype(np.float32)

  def loader(seed):
    return Loader(split, RandomSampler(split.labels, 8), augment=add_noise, mean=[0.5], std=[0.25], seed=seed)

  a, b, c = loader(0).batch(5), loader(0).batch(5), loader(1).batch(5)
  np.testing.assert_array_equal(a["image"], b["image"])
  assert not np.array_equal(a["image"], c["image"])
  plain = Loader(split, RandomSampler(split.labels, 8)).batch(5)["image"]
  assert np.abs(a["image"] * 0.25 + 0.5 - plain).mean() > 0.5  # noise was added, then normalised


def test_loader_process_shares_make_up_the_global_batch():
  split = _split()
  sampler = RandomSampler(split.labels, 8)
  shares = [Loader(split, sampler, process_index=i, process_count=2).batch(2) for i in range(2)]
  whole = Loader(split, sampler).batch(2)
  np.testing.assert_array_equal(np.concatenate([s["label"] for s in shares]), whole["label"])
  np.testing.assert_array_equal(np.concatenate([s["image"] for s in shares]), whole["image"])
  with pytest.raises(ValueError, match="multiple of 3"):
    Loader(split, sampler, process_index=0, process_count=3).batch(0)


def test_eval_batches_have_static_shapes_and_mask_the_padding():
  split = _split(n=23)
  batches = list(eval_batches(split, 10))
  assert [b["image"].shape for b in batches] == [(10, 6, 6, 1)] * 3
  assert [int(b["mask"].sum()) for b in batches] == [10, 10, 3]
  np.testing.assert_array_equal(batches[-1]["label"][3:], -1)
  images = np.concatenate([b["image"][b["mask"]] for b in batches])
  labels = np.concatenate([b["label"][b["mask"]] for b in batches])
  np.testing.assert_array_equal(images, split.images / np.float32(255.0))
  np.testing.assert_array_equal(labels, split.labels)
