"""Throughput of the photo input pipeline: decode + crop + resize + flip + normalise, images per second.

Generates photo-like JPEG fixtures (smooth colour fields with fine noise, quality 90, like the benchmarks' photos in
size and file size), wraps them in an `ImageFiles` split and times `Loader.batch(step)` (the work of one training
batch, without the prefetch thread, so the number is the pipeline's own) for each recipe and number of decoding
threads; the test transform is timed through `eval_batches`. For comparison, `--tf` times the same train recipe as
a tf.data pipeline (`decode_and_crop_jpeg` + bilinear resize, `num_parallel_calls` = workers, a private thread pool
of that size), and `--grain` the same Pillow crop in grain worker processes (`mp_prefetch`). CPU milliseconds per
image (of this process) are steadier than wall time when other processes share the machine; "cores busy" (CPU
seconds per wall second) shows whether the decoding threads really run in parallel.

    python benchmarks/input.py                                  # 500×375 and 1000×750, 1 and 2 workers
    python benchmarks/input.py --workers 1 2 4 8 --tf --grain

Results and the machine they came from: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
from PIL import Image

from metriclearn.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFiles,
    Loader,
    RandomResizedCrop,
    RandomSampler,
    ResizeCenterCrop,
    ResizeRandomCrop,
    Split,
    eval_batches,
)
from metriclearn.data.transforms import render


def write_fixtures(directory: str, num_images: int, width: int, height: int, seed: int = 0) -> list[str]:
  """`num_images` photo-like JPEGs: a bicubically upsampled 8×6 colour field plus per-pixel noise."""
  rng = np.random.default_rng(seed)
  paths = []
  for i in range(num_images):
    field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    pixels = np.asarray(field, dtype=np.int16) + rng.integers(-20, 21, (height, width, 3), dtype=np.int16)
    path = os.path.join(directory, f"{width}x{height}_{i:04d}.jpg")
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
    paths.append(path)
  return paths


def time_loader(split: Split, transform, batch_size: int, num_batches: int) -> tuple[float, float, float]:
  """(images per wall second, CPU milliseconds per image, CPU seconds per wall second) of `Loader.batch`."""
  sampler = RandomSampler(split.labels, batch_size, seed=0)
  loader = Loader(split, sampler, transform=transform, mean=IMAGENET_MEAN, std=IMAGENET_STD, seed=0)
  loader.batch(0)  # warm-up: starts the thread pool, touches the files
  wall, cpu = time.perf_counter(), time.process_time()
  for step in range(1, num_batches + 1):
    loader.batch(step)
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  images = batch_size * num_batches
  return images / wall, 1000 * cpu / images, cpu / wall


def time_eval(split: Split, batch_size: int) -> tuple[float, float, float]:
  list(eval_batches(split, batch_size))  # warm-up
  wall, cpu = time.perf_counter(), time.process_time()
  count = sum(int(b["mask"].sum()) for b in eval_batches(split, batch_size, mean=IMAGENET_MEAN, std=IMAGENET_STD))
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  return count / wall, 1000 * cpu / count, cpu / wall


def time_tf_data(paths: list[str], workers: int, batch_size: int, num_batches: int) -> tuple[float, float, float]:
  """The RandomResizedCrop recipe in tf.data (TensorFlow's fused JPEG crop-decode)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  def load(path, seed):
    data = tf.io.read_file(path)
    shape = tf.io.extract_jpeg_shape(data)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, tf.zeros([1, 0, 4]), seed=seed, area_range=(0.08, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
        max_attempts=10, use_image_if_no_bounding_boxes=True)  # fmt: skip
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.io.decode_and_crop_jpeg(data, window, channels=3)
    image = tf.image.resize(image, (224, 224), method="bilinear", antialias=True)
    image = tf.image.stateless_random_flip_left_right(image, seed)
    return (image / 255.0 - IMAGENET_MEAN) / IMAGENET_STD

  repeated = paths * (batch_size * (num_batches + 1) // len(paths) + 1)
  seeds = np.stack([np.zeros(len(repeated), np.int64), np.arange(len(repeated))], axis=1)
  dataset = tf.data.Dataset.from_tensor_slices((repeated, seeds)).map(load, num_parallel_calls=workers)
  options = tf.data.Options()
  options.threading.private_threadpool_size = workers
  options.deterministic = True
  iterator = iter(dataset.batch(batch_size).with_options(options))
  next(iterator)  # warm-up
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(num_batches):
    next(iterator).numpy()
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  images = batch_size * num_batches
  return images / wall, 1000 * cpu / images, cpu / wall


class _GrainLoad:
  """One training image for grain (a picklable callable: grain's worker processes receive it)."""

  def __init__(self, paths: list[str]):
    self.paths, self.crop = paths, RandomResizedCrop(size=224)

  def __call__(self, index: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([0, 4, int(index)]))
    with Image.open(self.paths[index % len(self.paths)]) as image:
      pixels = render(image, self.crop.plan(image.width, image.height, rng), 224)
    return ((pixels / np.float32(255) - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def time_grain(paths: list[str], workers: int, batch_size: int, num_batches: int) -> tuple[float, float]:
  """The same Pillow RandomResizedCrop in grain worker processes (`mp_prefetch`).

  Workers start in seconds and then run ahead of the consumer, so a single timed span misleads; this times two
  whole runs of different lengths from the iterator's creation and divides the difference of images by the
  difference of times, which cancels the start-up and the read-ahead.
  """
  import grain  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # grain reads its absl flags; this script has none of its own

  def run(batches: int) -> float:
    dataset = grain.MapDataset.range(batch_size * batches).map(_GrainLoad(paths)).batch(batch_size)
    iterable = dataset.to_iter_dataset().mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    wall = time.perf_counter()
    for _ in iterable:
      pass
    return time.perf_counter() - wall

  short, long = num_batches, 4 * num_batches
  return batch_size * (long - short) / (run(long) - run(short)), float("nan")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", nargs="+", default=["500x375", "1000x750"], help="fixture sizes, WIDTHxHEIGHT")
  parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
  parser.add_argument("--num_images", type=int, default=128)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--num_batches", type=int, default=8)
  parser.add_argument("--tf", action="store_true", help="also time the tf.data equivalent of RandomResizedCrop")
  parser.add_argument("--grain", action="store_true", help="also time the same PIL crop in grain worker processes")
  args = parser.parse_args()

  print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at start; batch {args.batch_size}, {args.num_batches} batches")  # fmt: skip
  print("| images | recipe | workers | images/s | CPU ms/image | cores busy |")
  print("|---|---|---|---|---|---|")
  recipes = {
      "RandomResizedCrop 224 + flip": RandomResizedCrop(size=224),
      "DAML: 256² + random 224 + flip": ResizeRandomCrop(resize=256, size=224),
  }
  with tempfile.TemporaryDirectory() as directory:
    for size in args.sizes:
      width, height = map(int, size.split("x"))
      paths = write_fixtures(directory, args.num_images, width, height)
      kib = np.mean([os.path.getsize(p) for p in paths]) / 1024
      label = f"{width}×{height} JPEG ({kib:.0f} KiB)"
      labels = (np.arange(args.num_images) % 16).astype(np.int32)
      for workers in args.workers:
        images = ImageFiles.from_paths(paths, transform=ResizeCenterCrop(256, 224), num_workers=workers)
        split = Split(images, labels, [str(c) for c in range(16)])
        for name, transform in recipes.items():
          rate, cpu, busy = time_loader(split, transform, args.batch_size, args.num_batches)
          print(f"| {label} | {name} | {workers} | {rate:.0f} | {cpu:.2f} | {busy:.2f} |", flush=True)
        rate, cpu, busy = time_eval(split, args.batch_size)
        print(f"| {label} | test: resize 256 + centre 224 | {workers} | {rate:.0f} | {cpu:.2f} | {busy:.2f} |",
              flush=True)  # fmt: skip
        if args.tf:
          rate, cpu, busy = time_tf_data(paths, workers, args.batch_size, args.num_batches)
          name = "tf.data RandomResizedCrop (reference)"
          print(f"| {label} | {name} | {workers} | {rate:.0f} | {cpu:.2f} | {busy:.2f} |", flush=True)
        if args.grain:
          rate, _ = time_grain(paths, workers, args.batch_size, args.num_batches)
          name = "grain processes, Pillow RandomResizedCrop (reference)"
          print(f"| {label} | {name} | {workers} | {rate:.0f} | – | – |", flush=True)


if __name__ == "__main__":
  main()
