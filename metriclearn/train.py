"""The training program: `train_and_evaluate(config, workdir)` (DESIGN §5–§9).

config → dataset → sampler → loader (host prefetch) → device (batch sharded over mesh axis "data") → method step
(one `jax.jit`) → state → checkpoints / evaluation / logs. A run on a workdir that holds checkpoints resumes from the
latest one and reproduces the uninterrupted run exactly: batches are a pure function of (seed, step) and every
step's randomness is `fold_in(rng, step)`.

Multi-host (DESIGN §7; `main.py` starts JAX's distributed runtime): every process runs this same program. Each loads
only its contiguous share of every global batch (its devices hold exactly those rows of mesh axis "data") and the
global batch is assembled with `jax.make_array_from_process_local_data`; evaluation embeds each process's share and
gathers the embeddings, so every process computes the same metrics. Checkpoints are collective (every process calls
orbax's save and restore); metrics.jsonl, TensorBoard events, plots and results.json are written by process 0 alone.

A method (see `methods/__init__.py`) must provide `init` and `train_step`; these hooks are optional:

* `phase(step) -> str`: which phase `step` belongs to (DAML: "pretrain", then "joint"). `train_step` receives it as a
  static argument, so each phase compiles once.
* `host_update(step, state, context) -> state`: host-side work before `step` (APFS: stage boundaries, mining).
  `context` is a `StepContext` (the config, the train split, an `embed` function).
* `create_optimizer(optimizer_config, params) -> optax.GradientTransformation` (default: `optim.create_optimizer`).
* `make_sampler(train_labels, batch_size, seed) -> sampler` (default: the config's `sampler`).
* `embed(params, batch_stats, images) -> f32[B, D]`: the embedding evaluated (default: the model's output).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from absl import logging
from tensorboardX import SummaryWriter
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from metriclearn import checkpoint
from metriclearn import data
from metriclearn import evaluate
from metriclearn import interrupt
from metriclearn import losses
from metriclearn import methods
from metriclearn import models
from metriclearn import optim
from metriclearn import plots
from metriclearn import registry
from metriclearn.data import loader as loader_lib
from metriclearn.data import samplers
from metriclearn.methods.baseline import apply_model
from metriclearn.models import weights
from metriclearn.state import TrainState

# Keys every recipe shares (DESIGN §8); a config with any other top-level key is refused before any compute.
CONFIG_KEYS = (
    "name", "seed", "num_steps", "batch_size", "log_every", "eval_every", "checkpoint_every", "max_checkpoints",
    "dataset", "sampler", "model", "loss", "method", "optimizer", "eval", "memory", "sweep",
)
_OPTIONAL_SECTIONS = ("memory", "sweep")  # a recipe without this section runs without it
_COMPONENT_KEYS = {
    "dataset": ("name", "data_dir", "kwargs"),
    "sampler": ("name", "kwargs"),
    "model": ("name", "embedding_dim", "pooling", "freeze_bn", "pretrained", "kwargs"),
    "loss": ("name", "kwargs"),
    "method": ("name", "kwargs"),
    "eval": ("batch_size", "ks", "metric", "clustering", "baselines", "plots", "utilization"),
    "memory": ("size", "warmup_steps"),  # cross-batch memory (Wang et al. 2020); `metriclearn.memory`
    # What `metriclearn.sweep` searches (`metriclearn.search_space`); training ignores it.
    "sweep": ("shared", "space", "num_folds", "folds", "sampler", "pruner", "seed"),
}


# ----------------------------------------------------------------------------------------------------------------
# Config checks: every mistake a user can make in a config is reported before anything is computed.


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError on an unknown key or component name; the message lists the valid ones."""
  unknown = sorted(set(config.keys()) - set(CONFIG_KEYS))
  if unknown:
    raise ValueError(f"unknown config key(s) {unknown}; valid top-level keys: {list(CONFIG_KEYS)}")
  for section, keys in _COMPONENT_KEYS.items():
    if section in _OPTIONAL_SECTIONS and section not in config:
      continue
    extra = sorted(set(config[section].keys()) - set(keys))
    if extra:
      raise ValueError(f"unknown key(s) {extra} in config.{section}; valid keys: {list(keys)}")
  registry.lookup(data.DATASETS, config.dataset.name, "dataset")
  registry.lookup(samplers.SAMPLERS, config.sampler.name, "sampler")
  registry.lookup(models.MODELS, config.model.name, "model")
  if config.model.get("pretrained"):
    weights.check_file(config.model.pretrained, config.model.name)  # missing or unknown file: an error before compute
  registry.lookup(methods.METHODS, config.method.name, "method")
  loss_fn = registry.lookup(losses.LOSSES, config.loss.name, "loss")
  registry.check_kwargs(loss_fn, dict(config.loss.get("kwargs", {})), f"loss {config.loss.name!r}")
  for key in ("num_steps", "batch_size", "log_every", "eval_every", "checkpoint_every"):
    if int(config[key]) <= 0:
      raise ValueError(f"config.{key} must be a positive integer, got {config[key]}")
  num_devices = jax.device_count()
  if num_devices != jax.process_count() * jax.local_device_count():
    raise ValueError(f"every process must have the same number of devices; this one has {jax.local_device_count()} "
                     f"of {num_devices} devices over {jax.process_count()} processes")
  if config.batch_size % num_devices:
    raise ValueError(f"batch_size {config.batch_size} must be divisible by the number of devices ({num_devices}) "
                     "so that each device gets an equal share of the batch")
  if config.eval.batch_size % num_devices:
    raise ValueError(f"eval.batch_size {config.eval.batch_size} must be divisible by the number of devices "
                     f"({num_devices})")


# ----------------------------------------------------------------------------------------------------------------
# Embeddings and their evaluation.


def embed_split(embed_fn, split: data.Split, batch_size: int, sharding: NamedSharding, *, mean=None,
                std=None) -> np.ndarray:
  """`f32[N, D]` embeddings of a whole split, in order, with fixed-size batches (one compilation).

  Each process loads its share of every batch; the embeddings of the whole batch are gathered to every process.
  """
  chunks = []
  for batch in loader_lib.eval_batches(split, batch_size, mean=mean, std=std, process_index=jax.process_index(),
                                       process_count=jax.process_count()):
    images = jax.make_array_from_process_local_data(sharding, batch["image"])
    chunks.append(multihost_utils.process_allgather(embed_fn(images), tiled=True))
  return np.concatenate(chunks)[: len(split)].astype(np.float32)  # the padding is the last batch's last rows


def evaluate_embeddings(embeddings: np.ndarray, labels: np.ndarray, eval_config, *, clustering: bool,
                        gallery: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
  """Retrieval metrics of the split against itself, or against `gallery` = (embeddings, labels) (In-Shop); and
  NMI / F1 of the split when `clustering`."""
  gallery_emb, gallery_labels = gallery if gallery is not None else (None, None)
  results = evaluate.retrieval_metrics(embeddings, labels, gallery_emb, gallery_labels, ks=tuple(eval_config.ks),
                                       metric=eval_config.metric)
  if clustering:
    results.update(evaluate.clustering_metrics(embeddings, labels, seed=0))
  return results


# ----------------------------------------------------------------------------------------------------------------
# Logs: stdout table, metrics.jsonl, TensorBoard (clu), results.json.


class JsonlLog:
  """`workdir/metrics.jsonl`, one JSON object per logged step or evaluation; on resume, lines after the restored
  step are dropped (they are recomputed identically).

  Every process keeps the records (the best-checkpoint selection reads them); only the one with `enabled` writes.
  """

  def __init__(self, path: str, resume_step: int, *, enabled: bool = True):
    self.path, self.enabled = path, enabled
    records = []
    if os.path.exists(path):
      with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    self.records = [r for r in records if r["step"] <= resume_step]
    if jax.process_count() > 1:  # every process has read the file before process 0 rewrites it
      multihost_utils.sync_global_devices("metriclearn: metrics.jsonl read")
    if enabled:
      with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in self.records)

  def write(self, record: dict) -> None:
    self.records.append(record)
    if self.enabled:
      with open(self.path, "a") as f:
        f.write(json.dumps(record) + "\n")


class ScalarWriter:
  """TensorBoard scalars in `workdir` (tensorboardX; clu's writers would pull in TensorFlow), one writer per run."""

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.summary = SummaryWriter(workdir) if enabled else None

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    if self.summary is not None:
      for name, value in scalars.items():
        self.summary.add_scalar(name.replace("@", "_at_"), value, step)  # TensorBoard tag names have no '@'

  def flush(self) -> None:
    if self.summary is not None:
      self.summary.flush()

  def close(self) -> None:
    if self.summary is not None:
      self.summary.close()


def format_table(rows: dict[str, dict], ks) -> str:
  columns = [f"recall@{k}" for k in ks] + ["map@r", "nmi", "f1"]
  header = f"{'':14s}" + "".join(f"{c:>10s}" for c in columns)
  lines = [header]
  for name, values in rows.items():
    lines.append(f"{name:14s}" + "".join(f"{values.get(c, float('nan')):10.4f}" for c in columns))
  return "\n".join(lines)


def _write_plots(workdir: str, log: JsonlLog, embeddings: np.ndarray, labels: np.ndarray, *,
                 references: dict[str, dict] | None = None, class_names=None, title: str | None = None) -> None:
  train_records = [r for r in log.records if "loss" in r]
  prefix = "val/" if any("val/map@r" in r for r in log.records) else "test/"  # the split selected on
  eval_records = [r for r in log.records if f"{prefix}map@r" in r]
  if train_records:
    plots.plot_loss([r["step"] for r in train_records], [r["loss"] for r in train_records],
                    os.path.join(workdir, "loss.png"))
  if eval_records:
    names = [k for k in eval_records[0] if k.startswith(f"{prefix}recall@") or k == f"{prefix}map@r"]
    plots.plot_recall([r["step"] for r in eval_records],
                      {n: [r[n] for r in eval_records] for n in names},
                      os.path.join(workdir, "recall.png"), references=references, title=title)
  plots.plot_embeddings(embeddings, labels, os.path.join(workdir, "embeddings.png"), class_names=class_names,
                        title=title)


def progress_width(stream) -> dict[str, Any]:
  """tqdm's width arguments for `stream`: follow the terminal's width, or a fixed 100 columns (`$COLUMNS` if set)
  where the stream is not a terminal or the terminal reports 0 columns (tqdm would then draw no bar at all)."""
  try:
    columns = os.get_terminal_size(stream.fileno()).columns
  except (AttributeError, OSError, ValueError):
    columns = 0
  if columns > 0:
    return {"dynamic_ncols": True}
  return {"dynamic_ncols": False, "ncols": int(os.environ.get("COLUMNS", "0") or 0) or 100}


# ----------------------------------------------------------------------------------------------------------------
# The program.


@dataclasses.dataclass
class StepContext:
  """What a method's `host_update` may use: the config, the train split, and `embed(params, batch_stats, split)`
  returning the `f32[N, D]` inference-mode embeddings of a split (one compiled function, fixed batch size)."""

  config: ml_collections.ConfigDict
  train_split: data.Split
  embed: Any


def create_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh over every device, axis "data". Auto axes: the compiler places the collectives, so a loss written
  for one device sees the global batch (all pairs across devices) with no axis named in its code (DESIGN §7).

  Multi-host: the devices are grouped by process (keeping `jax.make_mesh`'s order within a process), so process p's
  devices hold rows `[p · B/P, (p + 1) · B/P)` of a batch of B, the share its loader reads.
  """
  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  if jax.process_count() == 1:
    return mesh
  devices = sorted(mesh.devices.flat, key=lambda device: device.process_index)  # stable: within-process order kept
  return jax.sharding.Mesh(np.array(devices), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def replicate(tree: Any, sharding: NamedSharding) -> Any:
  """`tree` placed on the replicated `sharding`, whose devices may span processes. Typed PRNG keys travel as their
  key data: `jax.device_put` refuses a key array for devices of other processes."""

  def put(x):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(jax.device_put(jax.random.key_data(x), sharding), impl=jax.random.key_impl(x))
    return jax.device_put(x, sharding)

  return jax.tree.map(put, tree)


def create_state(config, method, tx, sample_images, rng) -> TrainState:
  """The state at step 0: the method's initial parameters, with the backbone from `config.model.pretrained` if set.

  A method state derived from the parameters (APFS's θ_anchor) needs no reset after the import: it is refreshed from
  the parameters at the first step of every stage, step 0 included.
  """
  params, batch_stats, method_state = method.init(rng, sample_images)
  if config.model.get("pretrained"):
    params, batch_stats = weights.load_pretrained(params, batch_stats, config.model.pretrained, config.model.name)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), rng=jax.random.fold_in(rng, 1), method_state=method_state)


class Built(NamedTuple):
  """What a config builds before any training: the data set, the model and method, the optimiser, the images and
  key the parameters are initialised from, and the jitted embedding `embed_fn(params, batch_stats, images)`."""

  dataset: data.Dataset
  model: Any
  method: Any
  tx: optax.GradientTransformation
  sample_images: jax.Array
  init_rng: jax.Array
  embed_fn: Callable[[Any, Any, jax.Array], jax.Array]


def build(config: ml_collections.ConfigDict) -> Built:
  """Opens the data set and builds model, method and optimiser for `config` (already validated)."""
  dataset = data.load_dataset(config.dataset.name, data_dir=config.dataset.get("data_dir"), seed=config.seed,
                              **dict(config.dataset.get("kwargs", {})))
  model = models.create_model(config.model.name, embedding_dim=config.model.embedding_dim,
                              pooling=config.model.pooling, freeze_bn=config.model.freeze_bn,
                              **dict(config.model.get("kwargs", {})))
  method = methods.create_method(config, model, dataset.train.num_classes)
  if config.model.name in weights.WEIGHT_FILES and not config.model.get("pretrained"):
    logging.warning("%s starts from random weights: the photo recipes and their published numbers assume ImageNet "
                    "weights, --config.model.pretrained=PATH (%s)", config.model.name,
                    weights.WEIGHT_FILES[config.model.name])
  # Every process initialises from the same images: the first rows of the global batch 0 of a plain random sampler
  # (a pure function of the seed, so the same whatever the method's own sampler is).
  sample_sampler = samplers.make_sampler("random", dataset.train.labels, 2, seed=config.seed)
  sample_loader = loader_lib.Loader(dataset.train, sample_sampler, seed=config.seed, mean=dataset.mean,
                                    std=dataset.std)
  sample_images = jnp.asarray(sample_loader.batch(0)["image"][:2])
  init_rng = jax.random.key(config.seed)
  params_shape = jax.eval_shape(lambda: method.init(init_rng, sample_images)[0])
  tx = getattr(method, "create_optimizer", optim.create_optimizer)(config.optimizer, params_shape)

  @jax.jit
  def embed_fn(params, batch_stats, images):
    if hasattr(method, "embed"):  # a method whose embedding is not the model's output (DAML's `code` metric head)
      return method.embed(params, batch_stats, images)
    return apply_model(model, params, batch_stats, images, train=False)

  return Built(dataset, model, method, tx, sample_images, init_rng, embed_fn)


class TrainedEmbedding(NamedTuple):
  """A finished (or interrupted) run's embedding, from `load_trained`.

  Attributes:
    step: the checkpoint's step.
    params, batch_stats: its parameters.
    dataset: the run's data set (its splits, mean and std).
    embed: `embed(split) -> f32[N, D]` for a `data.Split` (e.g. `dataset.test`), normalised as in training.
  """

  step: int
  params: Any
  batch_stats: Any
  dataset: data.Dataset
  embed: Callable[[data.Split], np.ndarray]


def load_trained(config: ml_collections.ConfigDict, workdir: str, *, step: int | None = None) -> TrainedEmbedding:
  """The embedding of the run in `workdir` trained with `config`: the fair protocol's selected checkpoint
  (`workdir/best`) when there is one, else the latest (or `step`).

  Raises:
    FileNotFoundError: no checkpoint in `workdir` (or not at `step`).
    ValueError: as `train_and_evaluate` for a bad config, or a checkpoint of another model.
  """
  validate_config(config)
  built = build(config)
  mesh = create_mesh()
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  like = replicate(create_state(config, built.method, built.tx, built.sample_images, built.init_rng), replicated)
  best_dir = os.path.join(workdir, "best")
  use_best = step is None and os.path.isdir(best_dir) and bool(os.listdir(best_dir))
  checkpointer = checkpoint.Checkpointer(best_dir if use_best else workdir, max_to_keep=None)
  try:
    step = checkpointer.latest_step() if step is None else step
    if step is None or step not in checkpointer.all_steps():
      raise FileNotFoundError(f"no checkpoint{'' if step is None else f' at step {step}'} in "
                              f"{checkpointer.directory}; train first with the same config and --workdir={workdir}")
    state = checkpointer.restore(step, like)
  finally:
    checkpointer.close()
  dataset = built.dataset

  def embed(split: data.Split) -> np.ndarray:
    return embed_split(lambda images: built.embed_fn(state.params, state.batch_stats, images), split,
                       config.eval.batch_size, sharded, mean=dataset.mean, std=dataset.std)

  return TrainedEmbedding(int(step), state.params, state.batch_stats, dataset, embed)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, evaluate_test: bool = True,
                       on_evaluation: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
  """Trains the configured model in `workdir` (resuming from its latest checkpoint) and evaluates it.

  Args:
    config: the recipe.
    workdir: checkpoints, logs, plots and results.json.
    evaluate_test: False for model selection (`metriclearn.sweep`): the test split is never embedded or read (no
      final test evaluation, no untrained / raw-pixel rows, no plots), and results.json holds the selected
      checkpoint's validation metrics (`val/...`) only. Needs a validation split (`dataset.kwargs.val_fold`).
    on_evaluation: called as `on_evaluation(step, {"val/map@r": ..., ...})` after every evaluation during training
      (the split selected on as the key prefix); it may raise to stop the run (a sweep's pruner does).

  Returns:
    The contents of `workdir/results.json`: the trained embedding's test metrics at top level, `untrained` and
    `raw_pixels` for comparison, `final_loss`, `num_steps` and `config_name`.
  """
  validate_config(config)
  check_workdir(workdir)
  start_time = time.time()
  is_main_process = jax.process_index() == 0  # the one that writes logs, plots and results.json
  finished = finished_results(config, workdir)
  if finished is not None:
    if is_main_process:
      print(f"{workdir} already finished: step {config.num_steps} of {config.num_steps} with this config. Nothing "
            "was trained, evaluated or written; use a new --workdir (or delete this one) to train again. Stored "
            "results (results.json):")
      print(format_table(_result_rows(finished), config.eval.ks))
    return finished

  built = build(config)
  dataset, model, method, tx = built.dataset, built.model, built.method, built.tx
  sample_images, init_rng = built.sample_images, built.init_rng
  train_split, test_split = dataset.train, dataset.test
  if not evaluate_test and dataset.val is None:
    raise ValueError("evaluate_test=False selects the checkpoint on a validation split, and this config has none: "
                     "set config.dataset.kwargs.val_fold (and num_folds) for the fair protocol")
  if hasattr(method, "make_sampler"):
    sampler = method.make_sampler(train_split.labels, config.batch_size, config.seed)
  else:
    sampler = samplers.make_sampler(config.sampler.name, train_split.labels, config.batch_size, seed=config.seed,
                                    **dict(config.sampler.get("kwargs", {})))
  # Each process loads its rows of every batch.
  train_loader = loader_lib.Loader(train_split, sampler, seed=config.seed, transform=dataset.train_transform,
                                   augment=dataset.train_augment,
                                   mean=dataset.mean, std=dataset.std, process_index=jax.process_index(),
                                   process_count=jax.process_count())
  os.makedirs(workdir, exist_ok=True)  # only now: a run that fails its config, data or weights checks leaves nothing
  mesh = create_mesh()
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  state = replicate(create_state(config, method, tx, sample_images, init_rng), replicated)

  checkpointer = checkpoint.Checkpointer(workdir, max_to_keep=config.max_checkpoints)
  start_step = checkpointer.latest_step() or 0
  if start_step:
    state = checkpointer.restore(start_step, state)
    logging.info("Resumed from the checkpoint at step %d in %s", start_step, checkpointer.directory)
  log = JsonlLog(os.path.join(workdir, "metrics.jsonl"), resume_step=start_step, enabled=is_main_process)
  writer = ScalarWriter(workdir, enabled=is_main_process)

  phase_of = getattr(method, "phase", lambda step: "train")
  train_step = jax.jit(lambda s, b, phase: method.train_step(s, b, tx, phase), static_argnums=2,
                       in_shardings=(replicated, sharded), out_shardings=(replicated, replicated),
                       donate_argnums=0)

  def embed(state_or_params, split):
    params, batch_stats = state_or_params
    return embed_split(lambda images: built.embed_fn(params, batch_stats, images), split, config.eval.batch_size,
                       sharded, mean=dataset.mean, std=dataset.std)

  def evaluate_split(state_or_params, name, *, clustering):
    """(metrics, query embeddings) of split `name` ("val" or "test"); In-Shop's test ranks its queries against
    its gallery."""
    if name == "test" and dataset.query is not None:
      queries, gallery = embed(state_or_params, dataset.query), embed(state_or_params, dataset.gallery)
      return evaluate_embeddings(queries, dataset.query.labels, config.eval, clustering=False,
                                 gallery=(gallery, dataset.gallery.labels)), queries
    split = dataset[name]
    embeddings = embed(state_or_params, split)
    return evaluate_embeddings(embeddings, split.labels, config.eval, clustering=clustering), embeddings

  # Fair protocol (Musgrave et al. 2020) when the dataset has a val split: select on val MAP@R, test once.
  select_on = "val" if dataset.val is not None else "test"
  best = checkpoint.Checkpointer(os.path.join(workdir, "best"), max_to_keep=1) if select_on == "val" else None

  context = StepContext(config=config, train_split=train_split,
                        embed=lambda params, batch_stats, split: embed((params, batch_stats), split))
  last_loss = float("nan")
  progress = tqdm.tqdm(total=config.num_steps, initial=start_step, desc="train", **progress_width(sys.stderr),
                       disable=not is_main_process,
                       mininterval=0.5 if sys.stderr.isatty() else 30.0)  # a log file gets a line every 30 s
  if start_step == 0:  # the untrained network on the selection split: the curves' step-0 point
    initial, _ = evaluate_split((state.params, state.batch_stats), select_on, clustering=False)
    writer.write_scalars(0, {f"{select_on}/{k}": v for k, v in initial.items()})
    log.write({"step": 0, **{f"{select_on}/{k}": v for k, v in initial.items()}})
  batches = train_loader.iterate(start_step, config.num_steps - start_step)
  stop = interrupt.StopRequests()  # Ctrl-C / SIGTERM: finish the step, save it, stop (metriclearn/interrupt.py)
  stop.install()
  for step in range(start_step + 1, config.num_steps + 1):
    # The host update comes first: it may hand the sampler what the next batches depend on (APFS's mined classes,
    # restored from the checkpoint on resume), and the loader builds batches ahead in its thread.
    if hasattr(method, "host_update"):
      state = method.host_update(step - 1, state, context)
    batch = next(batches)
    state, metrics = train_step(state, jax.make_array_from_process_local_data(sharded, batch), phase_of(step - 1))
    # Blocking on the loss every step costs little here and is what lets a NaN name its step (and keeps simulated
    # multi-device CPU runs from queueing collectives; ENVIRONMENT.md).
    last_loss = float(metrics["loss"])
    grad_norm = float(metrics.get("grad_norm", 0.0))
    if not (math.isfinite(last_loss) and math.isfinite(grad_norm)):
      stop.restore()
      checkpointer.close()
      # A finite loss with a non-finite gradient norm still puts NaN into the parameters.
      raise FloatingPointError(
          f"the training loss is {last_loss} (gradient norm {grad_norm}) at step {step}; stopped without saving "
          f"this state. The last good "
          f"checkpoint is step {checkpointer.latest_step()} in {checkpointer.directory}. Lower "
          "optimizer.learning_rate or enable optimizer.clip_value, then rerun with the same --workdir to resume.")
    progress.update(1)
    if step % config.log_every == 0 or step == config.num_steps:
      scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
      progress.set_postfix(loss=f"{last_loss:.4f}")
      writer.write_scalars(step, scalars)
      log.write({"step": step, **scalars})
    at_end = step == config.num_steps  # under the paper protocol the final evaluation below covers the last step
    if (step % config.eval_every == 0 and not at_end) or (at_end and best is not None):
      results, embeddings = evaluate_split((state.params, state.batch_stats), select_on, clustering=False)
      if config.eval.utilization:
        results["utilization"] = evaluate.utilization(embeddings, embed((state.params, state.batch_stats), train_split))
      writer.write_scalars(step, {f"{select_on}/{k}": v for k, v in results.items()})
      log.write({"step": step, **{f"{select_on}/{k}": v for k, v in results.items()}})
      if best is not None:
        previous = [r["val/map@r"] for r in log.records[:-1] if "val/map@r" in r and r["step"] > 0]
        improved = not previous or results["map@r"] > max(previous)
        # A save is collective: process 0 decides for all, whatever rounding the others' metrics saw.
        if multihost_utils.broadcast_one_to_all(np.bool_(improved)):
          best.save(step, state)
      if is_main_process:
        progress.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
      if on_evaluation is not None:
        try:
          on_evaluation(step, {f"{select_on}/{k}": v for k, v in results.items()})
        except BaseException:  # stopped from outside (a pruned trial): release the loader thread and checkpointers
          batches.close()
          progress.close()
          checkpointer.close()
          if best is not None:
            best.close()
          writer.close()
          stop.restore()
          raise
    stopping = stop.requested() if step < config.num_steps else 0  # the last step goes on to the evaluation
    if step % config.checkpoint_every == 0 or step == config.num_steps or stopping:
      checkpointer.save(step, state)
    if stopping:
      _stop_interrupted(stop, batches, progress, writer, checkpointer, best)
      raise interrupt.Interrupted(step, stopping, checkpointer.directory)
  stop.restore()
  batches.close()
  progress.close()
  checkpointer.close()

  # Final evaluation of the trained embedding, next to the untrained network and raw pixels.
  protocol = {"protocol": "paper (final step)"}
  if best is not None:
    selected_step = best.latest_step()
    state = best.restore(selected_step, state)
    best.close()
    selected = [r for r in log.records if r["step"] == selected_step and "val/map@r" in r][-1]
    protocol = {"protocol": "fair (selected on val map@r)", "selected_step": selected_step,
                "val_fold": config.dataset.kwargs.get("val_fold"),
                "num_folds": config.dataset.kwargs.get("num_folds", 4),
                **{k: v for k, v in selected.items() if k.startswith("val/")}}
  if not evaluate_test:
    writer.close()
    results = {**protocol, "test_evaluated": False, "final_loss": last_loss if start_step < config.num_steps
               else _last_logged_loss(log), "num_steps": int(config.num_steps), "config_name": config.name,
               "seed": int(config.seed), "wall_time_s": round(time.time() - start_time, 2)}
    if is_main_process:
      with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results
  trained, test_embeddings = evaluate_split((state.params, state.batch_stats), "test",
                                            clustering=config.eval.clustering)
  if config.eval.utilization:
    trained["utilization"] = evaluate.utilization(test_embeddings, embed((state.params, state.batch_stats), train_split))
  rows = {"trained": trained}
  if config.eval.baselines:
    untrained_state = replicate(create_state(config, method, tx, sample_images, init_rng), replicated)
    rows["untrained"], _ = evaluate_split((untrained_state.params, untrained_state.batch_stats), "test",
                                          clustering=config.eval.clustering)
    if test_split.in_memory:  # file-backed photos: 150,528 dims per image, not a meaningful baseline
      pixels = loader_lib.to_float(test_split.images).reshape(len(test_split), -1)
      rows["raw_pixels"] = evaluate_embeddings(pixels, test_split.labels, config.eval,
                                               clustering=config.eval.clustering)
  writer.write_scalars(config.num_steps, {f"test/{k}": v for k, v in trained.items()})
  log.write({"step": config.num_steps, **{f"test/{k}": v for k, v in trained.items()}})
  writer.close()
  if config.eval.plots and is_main_process:
    queries = test_split if dataset.query is None else dataset.query
    references = {f"{name.replace('_', ' ')} (test)": rows[name]
                  for name in ("untrained", "raw_pixels") if name in rows}
    _write_plots(workdir, log, test_embeddings, queries.labels, references=references,
                 class_names=queries.class_names, title=config.name)

  results = {**trained, **protocol, **{name: row for name, row in rows.items() if name != "trained"},
             "final_loss": last_loss if start_step < config.num_steps else _last_logged_loss(log),
             "num_steps": int(config.num_steps), "config_name": config.name, "seed": int(config.seed),
             "wall_time_s": round(time.time() - start_time, 2)}
  if is_main_process:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
    with open(os.path.join(workdir, CONFIG_FILE), "w") as f:  # what `finished_results` compares a rerun with
      f.write(config.to_json_best_effort(sort_keys=True, indent=2))
    print(f"\nTest split of {config.dataset.name} ({test_split.num_classes} unseen classes, {len(test_split)} "
          "images):")
    print(format_table(rows, config.eval.ks))
  return results


def check_workdir(workdir: str) -> None:
  """Raises NotADirectoryError when `workdir` exists and is not a directory."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise NotADirectoryError(f"--workdir {workdir} is a file, not a directory; pass a directory (it is created if "
                             "missing, and a run on an existing one resumes it)")


CONFIG_FILE = "config.json"  # the config of the run that wrote results.json


def finished_results(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
  """`workdir/results.json` when the run in `workdir` is finished with this same config (its config.json equals
  `config` and its latest checkpoint is step `config.num_steps`), else None."""
  results_path, config_path = os.path.join(workdir, "results.json"), os.path.join(workdir, CONFIG_FILE)
  checkpoints = os.path.join(workdir, "checkpoints")
  if not (os.path.isfile(results_path) and os.path.isfile(config_path) and os.path.isdir(checkpoints)):
    return None
  with open(config_path) as f:
    if json.load(f) != json.loads(config.to_json_best_effort(sort_keys=True)):
      return None
  # A finished orbax checkpoint is a directory named by its step; an unfinished one has a temporary suffix.
  steps = [int(name) for name in os.listdir(checkpoints) if name.isdigit()]
  if not steps or max(steps) != config.num_steps:
    return None
  with open(results_path) as f:
    return json.load(f)


def _result_rows(results: dict) -> dict[str, dict]:
  """The rows of the results table from a results.json: the trained embedding and the baselines beside it."""
  rows = {"trained": results}
  rows.update({name: results[name] for name in ("untrained", "raw_pixels") if isinstance(results.get(name), dict)})
  return rows


def _stop_interrupted(stop, batches, progress, writer, *checkpointers) -> None:
  """Closes what the step loop holds open after a stop request; a checkpointer's `close` waits for its last save."""
  stop.restore()
  batches.close()
  progress.close()
  writer.close()
  for checkpointer in checkpointers:
    if checkpointer is not None:
      checkpointer.close()


def _last_logged_loss(log: JsonlLog) -> float:
  losses = [r["loss"] for r in log.records if "loss" in r]
  return losses[-1] if losses else float("nan")
