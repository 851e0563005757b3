r"""Classification pre-training on the glyph pool (`data/glyph_pool.py`), and the built-in pre-trained backbones.

The papers fine-tune a backbone pre-trained on ImageNet; for the embedded `glyphs` set the stand-in is a classifier
of the ~2,000 other characters of the bundled fonts. `pretrain(config)` trains the recipe's backbone with a linear
classifier on its pooled (pre-head) features: softmax cross-entropy with label smoothing, AdamW (no decay on biases
and BatchNorm scales) with linear warm-up and cosine decay, batches from the random sampler through the project's
loader. The classifier is dropped; the backbone is written as a torch-layout `.npz` state dict that
`models.weights.load_pretrained` reads, with a `.json` beside it (held-out accuracy, time, settings).

  python -m metriclearn.pretrain --config=configs/glyphs_pretrain.py   # prints the weight file's path

Built-in backbones: `BUILT_IN` names pre-training recipes in `configs/`. A training recipe sets
`config.model.pretrained = "glyphs_pretrain"` (or `"glyphs_pretrain:smoke"`, the recipe argument after a colon) and
`resolve` returns the cached weight file, pre-training it on first use (a one-line notice and a progress bar), so
one command still does everything. The cache file name is a digest of the recipe's settings and of
`PRETRAIN_VERSION`, `glyph_pool.POOL_VERSION` and `glyphs.RECIPE_VERSION`: a changed recipe builds a new file.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from metriclearn import config_util
from metriclearn import models
from metriclearn import registry
from metriclearn.data import glyph_pool, glyphs, loader as loader_lib, samplers, splits

# Bump when the training program changes what a recipe produces (stale weight files are then rebuilt).
PRETRAIN_VERSION = 1

# Built-in pre-trained backbones: name → pre-training recipe in the repository's configs/ directory.
BUILT_IN = {"glyphs_pretrain": "glyphs_pretrain.py"}
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

# Settings that do not change the weights (left out of the cache key).
_UNKEYED = ("log_every", "eval_every")


class Classifier(nn.Module):
  """Backbone → global pooling → Dense logits. The backbone's parameters live under `params/backbone`, as in
  `models.Embedder`, so the same subtree is exported."""

  backbone: nn.Module
  num_classes: int
  pooling: str = "gap"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    features = models.pool(self.backbone(x, train), self.pooling)
    return nn.Dense(self.num_classes, name="classifier")(features.astype(jnp.float32))


def _backbone(config: ml_collections.ConfigDict) -> nn.Module:
  backbone_cls = registry.lookup(models.MODELS, config.model.name, "model")
  kwargs = dict(config.model.get("kwargs", {}))
  registry.check_kwargs(backbone_cls, kwargs, f"model {config.model.name!r}")
  return backbone_cls(**kwargs)


def _load_pool(config: ml_collections.ConfigDict) -> splits.Dataset:
  pool = {key: value for key, value in config.pool.items() if key not in ("data_dir", "held_out_per_class")}
  if pool.get("max_classes") is None:
    pool.pop("max_classes", None)
  if "scale_range" in pool:
    pool["scale_range"] = tuple(pool["scale_range"])
  return glyph_pool.load_pool(data_dir=config.pool.get("data_dir"), seed=config.seed,
                              held_out_per_class=config.pool.held_out_per_class, **pool)


def weight_path(config: ml_collections.ConfigDict, cache_dir: str | None = None) -> str:
  """Where `config`'s backbone is cached: `<cache>/pretrained/<name>-v<version>-<digest of the settings>.npz`."""
  settings = {key: value for key, value in json.loads(config.to_json()).items() if key not in _UNKEYED}
  settings["pool"].pop("data_dir", None)
  settings["versions"] = [PRETRAIN_VERSION, glyph_pool.POOL_VERSION, glyphs.RECIPE_VERSION]
  digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
  directory = os.path.join(cache_dir or splits.default_cache_dir(), "pretrained")
  return os.path.join(directory, f"{config.name}-v{PRETRAIN_VERSION}-{digest}.npz")


def _accuracy(apply_fn, variables, split: splits.Split, batch_size: int) -> float:
  correct = 0
  for batch in loader_lib.eval_batches(split, batch_size):
    predicted = np.asarray(apply_fn(variables, batch["image"]))
    correct += int(np.sum((predicted == batch["label"]) & batch["mask"]))
  return correct / len(split)


def pretrain(config: ml_collections.ConfigDict, output: str | None = None) -> dict[str, Any]:
  """Trains `config`'s backbone as a classifier of the glyph pool and writes its weights.

  Args:
    config: a pre-training recipe (`configs/glyphs_pretrain.py`).
    output: the `.npz` to write (default `weight_path(config)`); a `.json` of the summary is written beside it.

  Returns:
    The summary: `path`, `held_out_accuracy` (classification accuracy on renderings not trained on), `curve`
    (`[step, held-out accuracy]` pairs), `num_classes`, `train_images`, `seconds`.
  """
  output = output or weight_path(config)
  start = time.time()
  dataset = _load_pool(config)
  train_split, held_out = dataset.train, dataset.test
  model = Classifier(backbone=_backbone(config), num_classes=train_split.num_classes, pooling=config.model.pooling)
  sampler = samplers.make_sampler("random", train_split.labels, config.batch_size, seed=config.seed)
  loader = loader_lib.Loader(train_split, sampler, seed=config.seed)
  variables = model.init(jax.random.key(config.seed), jnp.asarray(loader.batch(0)["image"][:2]))
  params, batch_stats = variables["params"], variables.get("batch_stats", {})

  schedule = optax.warmup_cosine_decay_schedule(0.0, config.optimizer.learning_rate, config.optimizer.warmup_steps,
                                                config.num_steps, end_value=0.0)
  # Decoupled weight decay on kernels only (ndim > 1): decaying biases and BatchNorm scales only shrinks the features.
  tx = optax.adamw(schedule, weight_decay=config.optimizer.weight_decay,
                   mask=lambda tree: jax.tree.map(lambda p: p.ndim > 1, tree))
  opt_state = tx.init(params)
  smoothing, num_classes = float(config.label_smoothing), train_split.num_classes

  @jax.jit
  def train_step(params, batch_stats, opt_state, images, labels):
    def loss_fn(params):
      logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                                    mutable=["batch_stats"])
      targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), smoothing)
      return optax.softmax_cross_entropy(logits, targets).mean(), updates["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  predict = jax.jit(lambda variables, images: jnp.argmax(model.apply(variables, images, train=False), -1))
  curve = []
  progress = tqdm.tqdm(total=config.num_steps, desc=f"pre-train {config.name}", dynamic_ncols=True,
                       mininterval=0.5 if sys.stderr.isatty() else 30.0)
  batches = loader.iterate(0, config.num_steps)
  for step in range(1, config.num_steps + 1):
    batch = next(batches)
    params, batch_stats, opt_state, loss = train_step(params, batch_stats, opt_state, batch["image"], batch["label"])
    progress.update(1)
    if step % config.log_every == 0 or step == config.num_steps:
      loss = float(loss)
      if not np.isfinite(loss):
        raise FloatingPointError(f"the pre-training loss is {loss} at step {step}; lower optimizer.learning_rate")
      progress.set_postfix(loss=f"{loss:.3f}")
    if step % config.eval_every == 0 or step == config.num_steps:
      accuracy = _accuracy(predict, {"params": params, "batch_stats": batch_stats}, held_out, 512)
      curve.append([step, accuracy])
      progress.write(f"step {step}: held-out accuracy {accuracy:.4f}")
  batches.close()
  progress.close()

  from metriclearn.models import weights  # pylint: disable=g-import-not-at-top  (weights imports this module lazily)
  state_dict = weights.to_state_dict(params["backbone"], batch_stats.get("backbone", {}))
  summary = {"path": output, "held_out_accuracy": curve[-1][1], "curve": curve, "num_classes": num_classes,
             "train_images": len(train_split), "held_out_images": len(held_out),
             "seconds": round(time.time() - start, 1), "config": json.loads(config.to_json())}
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  temporary = f"{output}.{os.getpid()}.tmp.npz"  # renamed when complete: a concurrent reader never sees half a file
  np.savez(temporary, **state_dict)
  with open(f"{output}.{os.getpid()}.tmp.json", "w") as f:
    json.dump(summary, f, indent=2)
  os.replace(f"{output}.{os.getpid()}.tmp.json", output.removesuffix(".npz") + ".json")
  os.replace(temporary, output)
  return summary


# ----------------------------------------------------------------------------------------------------------------
# Built-in pre-trained backbones, by name.


def is_built_in(name: str) -> bool:
  """Whether `name` (`"glyphs_pretrain"` or `"glyphs_pretrain:arg"`) names a built-in backbone."""
  return isinstance(name, str) and name.partition(":")[0] in BUILT_IN


def built_in_config(name: str) -> ml_collections.ConfigDict:
  """The pre-training recipe of a built-in name (`name:arg` passes `arg` to its `get_config`).

  Raises:
    ValueError: an unknown name (the message lists the valid ones) or recipe argument.
    FileNotFoundError: the repository's configs/ directory is not beside the package.
  """
  base, _, arg = str(name).partition(":")
  recipe = registry.lookup(BUILT_IN, base, "built-in pre-trained backbone")
  path = os.path.join(CONFIGS_DIR, recipe)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"the pre-training recipe {path} of {base!r} is missing: run from a checkout of the "
                            "repository (its configs/ directory), or pass a weight file's path instead")
  return config_util.load_config(path, arg or None)


def resolve(name: str, cache_dir: str | None = None) -> str:
  """The weight file of built-in backbone `name`, pre-trained now (with a notice and a progress bar) if not cached."""
  config = built_in_config(name)
  path = weight_path(config, cache_dir)
  if not os.path.exists(path):
    print(f"Pre-training the built-in backbone {name!r} once (a few minutes on 2 CPU cores); cached in {path}",
          file=sys.stderr, flush=True)
    pretrain(config, path)
  return path


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  summary = pretrain(flags.FLAGS.config, flags.FLAGS.output)
  print(f"held-out accuracy {summary['held_out_accuracy']:.4f} over {summary['num_classes']} classes, "
        f"{summary['seconds']:.0f} s; weights: {summary['path']}")


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  config_flags.DEFINE_config_file("config", None, "Pre-training recipe: configs/glyphs_pretrain.py[:arg].",
                                  lock_config=True)
  flags.DEFINE_string("output", None, "The .npz to write (default: the cache path keyed by the recipe).")
  flags.mark_flags_as_required(["config"])
  app.run(main)
