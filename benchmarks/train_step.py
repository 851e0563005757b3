"""Training speed of an ImageNet backbone: compile time and images/s of the baseline step, then with the JPEG pipeline.

The step is the one the training program jits (`metriclearn/train.py`: the baseline method's `train_step`, the batch
placed on mesh axis "data", the state donated) for an `Embedder` with a 512-d head, Adam, and the multi-similarity loss
on a batch of P classes × 4 images. Reported:

* compile: seconds to lower and compile the step (`jit(...).lower(...).compile()`);
* step: images/s over `--steps` steps on one fixed device-resident batch (after one warm-up step), blocking on
  each step's loss as the training loop does, and the CPU seconds this process spent per image (steadier than wall
  time when other jobs share the CPU; on a GPU it is the host's cost);
* + pipeline: images/s of the same loop fed by `metriclearn.data.Loader` (JPEG decode, RandomResizedCrop 224, flip,
  normalisation in `--workers` threads, prefetched) from photo-like JPEG fixtures (`benchmarks/input.py`).

The device is whatever `jax.devices()` offers (CPU, GPU or TPU; nothing here is CPU-specific).

    python benchmarks/train_step.py                                  # ResNet-50, 224², batch 32
    python benchmarks/train_step.py --model bninception --batch_size 128 --steps 20 --dtype bfloat16

Results and the machine they came from: benchmarks/RESULTS.md ("Train step of the ImageNet backbones").
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from metriclearn import methods
from metriclearn import models
from metriclearn import optim
from metriclearn import train
from metriclearn.data import (IMAGENET_MEAN, IMAGENET_STD, ImageFiles, Loader, RandomResizedCrop, RandomSampler,
                              ResizeCenterCrop, Split)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES_PER_CLASS = 4


def load_input_benchmark():
  """`benchmarks/input.py` as a module, for its JPEG fixtures (benchmarks/ is not a package)."""
  spec = importlib.util.spec_from_file_location("input_benchmark", os.path.join(ROOT, "benchmarks", "input.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def build(args):
  """(jitted step, state, device batch, shardings) for the configured model and loss."""
  config = ml_collections.ConfigDict({
      "method": {"name": "baseline"},
      "loss": {"name": args.loss, "kwargs": {}},
      "optimizer": optim.default_config(),
  })
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[args.dtype]
  model = models.create_model(args.model, embedding_dim=args.embedding_dim, freeze_bn=args.freeze_bn, dtype=dtype)
  num_classes = args.batch_size // SAMPLES_PER_CLASS
  method = methods.create_method(config, model, num_classes)
  sample = jnp.zeros((2, args.image_size, args.image_size, 3), jnp.float32)
  params_shape = jax.eval_shape(lambda: method.init(jax.random.key(0), sample)[0])
  tx = optim.create_optimizer(config.optimizer, params_shape)
  mesh = train.create_mesh()
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  state = jax.device_put(train.create_state(config, method, tx, sample, jax.random.key(0)), replicated)
  step = jax.jit(lambda s, b: method.train_step(s, b, tx, "train"), in_shardings=(replicated, sharded),
                 out_shardings=(replicated, replicated), donate_argnums=0)
  rng = np.random.default_rng(0)
  batch = {
      "image": rng.normal(size=(args.batch_size, args.image_size, args.image_size, 3)).astype(np.float32),
      "label": np.repeat(np.arange(num_classes, dtype=np.int32), SAMPLES_PER_CLASS),
  }
  return step, state, jax.device_put(batch, sharded), sharded


def time_steps(compiled, state, batches, num_steps: int):
  """(images/s, CPU seconds of this process per image, state) over `num_steps` steps, blocking on each loss."""
  start, cpu, images = time.perf_counter(), time.process_time(), 0
  for _ in range(num_steps):
    batch = next(batches)
    state, metrics = compiled(state, batch)
    float(metrics["loss"])
    images += batch["label"].shape[0]
  return images / (time.perf_counter() - start), (time.process_time() - cpu) / images, state


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="resnet50", choices=sorted(models.MODELS))
  parser.add_argument("--loss", default="multi_similarity")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--embedding_dim", type=int, default=512)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="computation dtype")
  parser.add_argument("--freeze_bn", action="store_true")
  parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
  parser.add_argument("--workers", type=int, default=os.cpu_count(), help="JPEG decoding threads")
  parser.add_argument("--no_pipeline", action="store_true", help="skip the run with the JPEG input pipeline")
  args = parser.parse_args()
  if args.batch_size % SAMPLES_PER_CLASS:
    parser.error(f"--batch_size must be a multiple of {SAMPLES_PER_CLASS} (P classes × {SAMPLES_PER_CLASS} images)")

  devices = jax.devices()
  device = f"{len(devices)}× {devices[0].device_kind} ({devices[0].platform})"
  if devices[0].platform == "cpu":
    device += f", {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
  print(f"# {device}; {platform.python_implementation()} {platform.python_version()}, jax {jax.__version__}")

  step, state, batch, sharded = build(args)
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start

  def fixed():
    while True:
      yield batch

  batches = fixed()
  state, metrics = compiled(state, next(batches))  # warm-up: first-run allocations
  float(metrics["loss"])
  rate, cpu, state = time_steps(compiled, state, batches, args.steps)

  pipeline, pipeline_cpu = "–", "–"
  if not args.no_pipeline:
    fixtures = load_input_benchmark()
    with tempfile.TemporaryDirectory() as directory:
      num_images = 2 * args.batch_size
      paths = fixtures.write_fixtures(directory, num_images, 500, 375)
      labels = (np.arange(num_images) % (args.batch_size // SAMPLES_PER_CLASS)).astype(np.int32)
      test_transform = ResizeCenterCrop(args.image_size * 8 // 7, args.image_size)  # 256 / 224
      split = Split(ImageFiles.from_paths(paths, transform=test_transform, num_workers=args.workers), labels,
                    [str(c) for c in range(labels.max() + 1)])
      loader = Loader(split, RandomSampler(labels, args.batch_size, seed=0),
                      transform=RandomResizedCrop(size=args.image_size), mean=IMAGENET_MEAN, std=IMAGENET_STD)
      loaded = (jax.device_put(b, sharded) for b in loader.iterate(0, args.steps + 1))
      state, metrics = compiled(state, next(loaded))  # warm-up: the decoding threads start
      float(metrics["loss"])
      pipeline_rate, pipeline_cpu_s, state = time_steps(compiled, state, loaded, args.steps)
      pipeline, pipeline_cpu = f"{pipeline_rate:.1f}", f"{pipeline_cpu_s:.2f}"

  print("| device | model | image | batch | loss | dtype | compile s | images/s | CPU s/image | "
        "+ JPEG pipeline: images/s | CPU s/image |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  print(f"| {devices[0].device_kind} | {args.model} | {args.image_size}² | {args.batch_size} | {args.loss} | "
        f"{args.dtype} | {compile_s:.1f} | {rate:.1f} | {cpu:.2f} | {pipeline} | {pipeline_cpu} |")


if __name__ == "__main__":
  main()
