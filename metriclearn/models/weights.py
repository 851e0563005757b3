"""Pretrained ImageNet weights from a local file (torchvision / timm / Cadene state dicts) into a backbone's trees.

The ImageNet backbones name their flax modules after the torch modules (`models/layers.py`), so a flax path joined by
"." is the torch state-dict key, and only the leaves differ:

| flax (collection: leaf) | torch | layout |
|---|---|---|
| params: `kernel` of a convolution | `weight` | HWIO ← OIHW |
| params: `kernel` of a Dense | `weight` | [in, out] ← [out, in] |
| params: `bias` | `bias` | |
| params: `scale` (BatchNorm) | `weight` | |
| batch_stats: `mean`, `var` | `running_mean`, `running_var` | |

The classifier (`fc.*`, Cadene's `last_linear.*`), GoogLeNet's auxiliary heads (`aux1.*`, `aux2.*`) and
`num_batches_tracked` are ignored. Everything else must match exactly: a missing or unexpected key or a shape that
differs is a ValueError that lists them (and names the architecture the file fits, when it fits another one).

Files: `.pth`/`.pt`/`.bin` (read with PyTorch, imported only then), `.safetensors` (with the `safetensors` package)
and `.npz` (NumPy; `convert_to_npz` writes one from a `.pth` on a machine that has torch). A built-in backbone's
name (`metriclearn.pretrain.BUILT_IN`: "glyphs_pretrain", the small CNN pre-trained on the glyph pool) stands for its
cached `.npz`, pre-trained on first use.

    params, batch_stats, method_state = method.init(rng, images)
    params, batch_stats = weights.load_pretrained(params, batch_stats, "/weights/resnet50-0676ba61.pth", "resnet50")
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

# What to download for each backbone, by name (never downloaded here).
WEIGHT_FILES = {
    "resnet18": "torchvision's ResNet18_Weights.IMAGENET1K_V1 (resnet18-f37072fd.pth)",
    "resnet34": "torchvision's ResNet34_Weights.IMAGENET1K_V1 (resnet34-b627a593.pth)",
    "resnet50": ("torchvision's ResNet50_Weights.IMAGENET1K_V1 (resnet50-0676ba61.pth) or IMAGENET1K_V2 "
                 "(resnet50-11ad3fa6.pth), or timm's resnet50 (model.safetensors)"),
    "bninception": "Cadene pretrainedmodels' bninception 'imagenet' weights (bn_inception-239d2248.pth)",
    "googlenet": "torchvision's GoogLeNet_Weights.IMAGENET1K_V1 (googlenet-1378be20.pth)",
}
# torchvision's builders download into the torch hub cache, where an existing download can be found.
_WHERE = ("torchvision / pretrainedmodels save downloads under ~/.cache/torch/hub/checkpoints/. Put the file anywhere "
          "and pass its path as --config.model.pretrained=/path/to/file")

SKIPPED_PREFIXES = ("fc.", "last_linear.", "aux1.", "aux2.")
SKIPPED_SUFFIXES = ("num_batches_tracked",)
SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".npz")
_WRAPPER_KEYS = ("state_dict", "model")  # training checkpoints that wrap the state dict
_MAX_LISTED = 8

_PARAM_LEAVES = {"kernel": "weight", "bias": "bias", "scale": "weight"}
_STAT_LEAVES = {"mean": "running_mean", "var": "running_var"}


def _torch_shape(leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  if leaf == "kernel" and len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  if leaf == "kernel" and len(shape) == 2:
    return (shape[1], shape[0])
  return tuple(shape)


def _to_flax_layout(leaf: str, value: np.ndarray) -> np.ndarray:
  if leaf == "kernel" and value.ndim == 4:
    return value.transpose(2, 3, 1, 0)
  if leaf == "kernel" and value.ndim == 2:
    return value.T
  return value


def _expected(params: Any, batch_stats: Any) -> dict[str, tuple[str, tuple[str, ...], Any]]:
  """torch key → (collection, flax path, flax leaf) for every leaf of a backbone's `params` and `batch_stats`."""
  expected = {}
  for collection, tree, names in (("params", params, _PARAM_LEAVES), ("batch_stats", batch_stats, _STAT_LEAVES)):
    for path, leaf in traverse_util.flatten_dict(dict(tree or {})).items():
      if path[-1] not in names:
        raise ValueError(f"{collection} leaf {'/'.join(path)} has no torch counterpart (expected one of {list(names)})")
      expected[".".join(path[:-1] + (names[path[-1]],))] = (collection, path, leaf)
  return expected


def to_state_dict(params: Any, batch_stats: Any) -> dict[str, np.ndarray]:
  """A backbone's flax `params` / `batch_stats` → a torch-layout state dict of float32 NumPy arrays (OIHW kernels)."""
  state_dict = {}
  for key, (_, path, leaf) in _expected(params, batch_stats).items():
    value = np.asarray(leaf, np.float32)
    if path[-1] == "kernel":
      value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
    state_dict[key] = np.ascontiguousarray(value)
  return state_dict


def _filtered(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  return {key: value for key, value in state_dict.items()
          if not key.startswith(SKIPPED_PREFIXES) and not key.endswith(SKIPPED_SUFFIXES)}


def _listed(items: list[str]) -> str:
  shown = ", ".join(items[:_MAX_LISTED])
  return shown + (f", … ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def _shape(value: Any) -> list[int]:
  return list(np.shape(value))


@functools.cache
def _known_layouts() -> dict[str, dict[str, tuple[int, ...]]]:
  """torch key → shape of every backbone in `WEIGHT_FILES` (abstract init only), to name the one a file fits."""
  import jax  # pylint: disable=g-import-not-at-top
  from metriclearn.models import MODELS  # pylint: disable=g-import-not-at-top  (the registry imports this module)
  layouts = {}
  for name in WEIGHT_FILES:
    variables = jax.eval_shape(MODELS[name]().init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    layouts[name] = {key: _torch_shape(path[-1], leaf.shape) for key, (_, path, leaf)
                     in _expected(variables["params"], variables.get("batch_stats", {})).items()}
  return layouts


def _fits(state_dict: Mapping[str, Any]) -> list[str]:
  shapes = {key: tuple(np.shape(value)) for key, value in _filtered(state_dict).items()}
  return [name for name, layout in _known_layouts().items() if layout == shapes]


def from_state_dict(state_dict: Mapping[str, Any], params: Any, batch_stats: Any, *, arch: str,
                    source: str = "the state dict") -> tuple[Any, Any]:
  """A torch-layout state dict → new `(params, batch_stats)` trees for a backbone, after a strict key/shape check.

  Args:
    state_dict: torch key → array (NumPy or anything `np.asarray` takes), e.g. from `read_state_dict`.
    params: the backbone's parameter tree (concrete or from `jax.eval_shape`): gives the keys, shapes and dtypes.
    batch_stats: the backbone's BatchNorm statistics tree (`{}` for none).
    arch: the backbone's registered name, for the messages.
    source: where the state dict came from, for the messages.

  Returns:
    `(params, batch_stats)` with the structure, shapes and dtypes of the inputs and the file's values.

  Raises:
    ValueError: a key the backbone needs is missing, the file holds keys the backbone does not have, or shapes
      differ; the message lists them and names the architecture the file does fit, if it fits a known one.
  """
  expected = _expected(params, batch_stats)
  given = _filtered(state_dict)
  missing = sorted(set(expected) - set(given))
  unexpected = sorted(set(given) - set(expected))
  mismatched = [f"{key} is {_shape(given[key])} in the file, expected {list(_torch_shape(path[-1], leaf.shape))}"
                for key, (_, path, leaf) in expected.items()
                if key in given and tuple(np.shape(given[key])) != _torch_shape(path[-1], leaf.shape)]
  if missing or unexpected or mismatched:
    fits = [name for name in _fits(state_dict) if name != arch]
    problems = ([f"it holds a {' / '.join(fits)} state dict"] if fits else []) + mismatched[:_MAX_LISTED]
    if len(mismatched) > _MAX_LISTED:
      problems.append(f"… ({len(mismatched) - _MAX_LISTED} more shape mismatches)")
    if missing:
      problems.append(f"{len(missing)} key(s) missing: {_listed(missing)}")
    if unexpected:
      problems.append(f"{len(unexpected)} unexpected key(s): {_listed(unexpected)}")
    wanted = f" {arch} takes {WEIGHT_FILES[arch]}." if arch in WEIGHT_FILES else ""
    raise ValueError(f"{source} does not fit {arch}: " + "; ".join(problems) +
                     f". Is it the right architecture?{wanted}")
  trees = {"params": {}, "batch_stats": {}}
  for key, (collection, path, leaf) in expected.items():
    # A copy: the arrays may share memory with tensors that their owner still updates in place.
    trees[collection][path] = jnp.array(_to_flax_layout(path[-1], np.asarray(given[key])), dtype=leaf.dtype)
  return traverse_util.unflatten_dict(trees["params"]), traverse_util.unflatten_dict(trees["batch_stats"])


def _read_torch(path: str) -> Mapping[str, Any]:
  try:
    import torch  # pylint: disable=g-import-not-at-top  (a test-only dependency)
  except ImportError as error:
    raise ImportError(f"reading {path} needs PyTorch (`pip install torch`; the CPU build is enough), or convert the "
                      "file to .npz with `metriclearn.models.weights.convert_to_npz` where torch is installed"
                      ) from error
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as error:  # torch raises UnpicklingError, RuntimeError … for files that are not a state dict
    raise ValueError(f"{path} is not a readable PyTorch state dict ({type(error).__name__}: {error}); save "
                     "`model.state_dict()`, not the pickled model") from error
  while isinstance(obj, Mapping) and not any(torch.is_tensor(v) for v in obj.values()):
    wrapper = next((key for key in _WRAPPER_KEYS if isinstance(obj.get(key), Mapping)), None)
    if wrapper is None:
      break
    obj = obj[wrapper]
  if not isinstance(obj, Mapping):
    raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)")
  # bfloat16 has no NumPy dtype: floating tensors come out as float32 (the parameter trees' dtype anyway).
  return {key: (value.detach().float() if value.is_floating_point() else value.detach()).numpy()
          for key, value in obj.items() if torch.is_tensor(value)}


def _read_safetensors(path: str) -> Mapping[str, Any]:
  try:
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError(f"reading {path} needs the `safetensors` package (`pip install safetensors`, no torch "
                      "needed)") from error
  return load_file(path)


def check_file(path: str, arch: str | None = None) -> str:
  """`path` with `~` expanded, or a FileNotFoundError that names the weights to download for `arch` and where they go.

  A built-in backbone's name (`metriclearn.pretrain.BUILT_IN`, e.g. "glyphs_pretrain") is returned as it is, after
  checking that it is built for `arch`; `read_state_dict` builds it on first use. Cheap (no read, no build), for a
  config check before any compute; `read_state_dict` and `load_pretrained` call it too.
  """
  from metriclearn import pretrain  # pylint: disable=g-import-not-at-top  (it imports the models package)
  if pretrain.is_built_in(path):  # a built-in backbone: built on first use by `read_state_dict`
    built_for = pretrain.built_in_config(path).model.name
    if arch is not None and built_for != arch:
      raise ValueError(f"the built-in pre-trained backbone {path!r} is a {built_for}, not a {arch}")
    return path
  path = os.path.expanduser(str(path))
  if not os.path.isfile(path):
    built_in = ", ".join(repr(name) for name in sorted(pretrain.BUILT_IN))
    if os.sep not in path and os.path.splitext(path)[1].lower() not in SUFFIXES:
      raise ValueError(f"unknown pre-trained backbone {path!r}: neither a built-in name (valid: {built_in}, "
                       "optionally with ':arg' for its recipe) nor an existing weight file")
    what = f"Download {WEIGHT_FILES[arch]}. " if arch in WEIGHT_FILES else ""
    raise FileNotFoundError(f"pretrained weights not found: {path}. {what}{_WHERE} (or name a built-in backbone: "
                            f"{built_in}).")
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in SUFFIXES:
    raise ValueError(f"unknown weight file type {suffix!r} ({path}); valid: {', '.join(SUFFIXES)}")
  return path


def read_state_dict(path: str, arch: str | None = None) -> dict[str, np.ndarray]:
  """Reads a state dict (torch key → NumPy array) from a `.pth`/`.pt`/`.bin`, `.safetensors` or `.npz` file.

  A `{"state_dict": …}` or `{"model": …}` wrapper and a DataParallel `module.` prefix are removed.

  Args:
    path: the local file, or a built-in backbone's name (its cached file, pre-trained now if missing).
    arch: the backbone it is meant for, so that a missing file's message can say what to download.

  Raises:
    FileNotFoundError: no such file (the message names the weights to download for `arch`).
    ValueError: an unknown file suffix or a file that holds no state dict.
    ImportError: a `.pth` without torch or a `.safetensors` without the safetensors package installed.
  """
  path = check_file(path, arch)
  from metriclearn import pretrain  # pylint: disable=g-import-not-at-top
  if pretrain.is_built_in(path):
    path = pretrain.resolve(path)
  suffix = os.path.splitext(path)[1].lower()
  if suffix in (".pth", ".pt", ".bin"):
    state_dict = _read_torch(path)
  elif suffix == ".safetensors":
    state_dict = _read_safetensors(path)
  else:
    with np.load(path, allow_pickle=False) as archive:
      state_dict = {key: archive[key] for key in archive.files}
  if state_dict and all(key.startswith("module.") for key in state_dict):
    state_dict = {key[len("module."):]: value for key, value in state_dict.items()}
  return {key: np.asarray(value) for key, value in state_dict.items()}


def load_pretrained(params: Any, batch_stats: Any, path: str, arch: str) -> tuple[Any, Any]:
  """Replaces the embedder's backbone (`params["backbone"]`, `batch_stats["backbone"]`) with the file's weights.

  The head (and anything else in the trees, e.g. a loss's proxies) keeps its initial values.

  Args:
    params: an `Embedder`'s parameter tree, as a method's `init` returns it.
    batch_stats: its BatchNorm statistics.
    path: a weight file (see `read_state_dict`).
    arch: the registered backbone name (`config.model.name`).

  Returns:
    New `(params, batch_stats)`; the inputs are not modified.

  Raises:
    FileNotFoundError, ValueError, ImportError: as `read_state_dict` (missing file, unknown type, missing reader)
      and `from_state_dict` (a file of another architecture).
  """
  if "backbone" not in params:
    raise ValueError(f"load_pretrained expects an Embedder's params with a 'backbone' subtree, got keys {list(params)}")
  backbone_params, backbone_stats = from_state_dict(read_state_dict(path, arch), params["backbone"],
                                                    dict(batch_stats or {}).get("backbone", {}), arch=arch,
                                                    source=path)
  batch_stats = dict(batch_stats or {})
  if backbone_stats:
    batch_stats["backbone"] = backbone_stats
  return {**params, "backbone": backbone_params}, batch_stats


def convert_to_npz(source: str, destination: str, arch: str | None = None) -> None:
  """Writes the state dict of `source` (any supported file) to `destination` as `.npz`, e.g. a `.pth` read where
  torch is installed, for a machine without it."""
  np.savez(destination, **read_state_dict(source, arch))
