"""Every photo-benchmark recipe in configs/ runs end to end with `:smoke` on generated data-set directories, and
each recipe file's docstring states the published number of its row.

The smoke variant keeps a recipe's loss, sampler, method and optimiser chain but swaps the ImageNet backbone for the
small CNN at 32² (no weights can be downloaded here); the full settings are checked separately against the papers'
tables (`test_full_settings_follow_the_papers`).
"""

from __future__ import annotations

import enum
import glob
import os
import re

import ml_collections
import pytest
from ml_collections.config_flags import config_flags
from ml_collections.config_flags import config_path

import dataset_fixtures
from metriclearn import config_util
from metriclearn import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
PHOTO_DATASETS = ("cub", "cars", "sop", "inshop")


def _recipe_files() -> list[str]:
  """The recipe files of the photo benchmarks: `<data set>.py`, `photos*.py` and `sop_metrix.py`."""
  names = sorted(os.path.basename(path) for path in glob.glob(os.path.join(CONFIGS, "*.py")))
  return [name for name in names if name.split("_")[0].removesuffix(".py") in (*PHOTO_DATASETS, "photos")]


def _load(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
  return config_util.load_config(os.path.join(CONFIGS, name), arg)


def _module(name: str):
  return config_util.sibling_module(os.path.join(CONFIGS, name), name)


METRIX_LOSSES, METRIX_SPACES = ("contrastive", "ms", "pa"), ("feature", "input", "embed")
DAML_VARIANTS = ("cont", "tri", "lifted", "npair")

# Smoke runs: each data-set file with every loss, every row of every family file once.
SMOKE_RUNS = [(name, f"{loss},smoke") for name in ("cub.py", "cars.py", "sop.py", "inshop.py")
              for loss in ("contrastive", "triplet", "ms", "pa")]
SMOKE_RUNS += [("photos_metrix.py", f"{dataset},{loss},{space},smoke") for dataset in PHOTO_DATASETS
               for loss in METRIX_LOSSES for space in METRIX_SPACES]
SMOKE_RUNS += [("sop_metrix.py", "smoke")]
SMOKE_RUNS += [("photos_daml.py", f"{dataset},{variant},smoke") for dataset in ("cub", "cars", "sop")
               for variant in DAML_VARIANTS]
SMOKE_RUNS += [(name, f"{dataset},smoke") for name in ("photos_aml.py", "photos_apfs.py")
               for dataset in ("cub", "cars", "sop")]
SMOKE_RUNS += [("photos_daml.py", "cub,npair,code,smoke"), ("photos_daml.py", "cars,lifted,recommended,smoke"),
               ("photos_apfs.py", "sop,no_mining,smoke"), ("photos_metrix.py", "cars,released,smoke")]


def test_every_recipe_is_exercised():
  names = {name for name, _ in SMOKE_RUNS} | {"photos.py"}  # photos.py: through the data-set files
  assert names == set(_recipe_files())
  # 4 data sets × (4 losses + 9 Metrix rows) + SOP Metrix + 3 × (4 DAML + AML + APFS) + 4 presets/options
  assert len(SMOKE_RUNS) == 4 * 13 + 1 + 3 * 6 + 4


@pytest.fixture(scope="module")
def photo_roots(tmp_path_factory) -> dict[str, str]:
  """Each benchmark's layout with the real class-size histogram (`dataset_fixtures.make_realistic`): SOP and
  In-Shop with many 2- and 3-image classes (fewer than the recipes' M), CUB with 41–60 and Cars with 24–97 images
  per class."""
  base = tmp_path_factory.mktemp("photos")
  roots = {name: str(base / name) for name in PHOTO_DATASETS}
  for name in PHOTO_DATASETS:
    dataset_fixtures.make_realistic(name, roots[name])
  return roots


@pytest.mark.slow
@pytest.mark.parametrize("name,arg", SMOKE_RUNS, ids=[f"{n}:{a}" for n, a in SMOKE_RUNS])
def test_recipe_smoke_run(photo_roots, tmp_path, name, arg):
  config = _load(name, arg)
  words = [*name.removesuffix(".py").split("_"), *arg.split(",")]
  assert config.dataset.name == next(word for word in words if word in PHOTO_DATASETS)
  config.dataset.data_dir = photo_roots[config.dataset.name]
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["num_steps"] == config.num_steps == 2
  assert 0.0 <= results["recall@1"] <= 1.0
  assert results["config_name"] == config.name
  if config.method.name == "metrix":
    assert 0.0 <= results["utilization"] <= 1.0


def _table_row(doc: str, row: str) -> list[str]:
  """The cells after `row` on the docstring table line that starts with it."""
  lines = [line.split() for line in doc.splitlines() if line.split()[:1] == [row]]
  assert len(lines) == 1, f"no single table line for row {row!r}"
  return lines[0][1:]


@pytest.mark.parametrize("name", ["cub.py", "cars.py", "sop.py", "inshop.py", "sop_metrix.py", "photos_metrix.py",
                                  "photos_daml.py", "photos_aml.py", "photos_apfs.py"])
def test_docstring_states_the_published_number(name):
  """A recipe's docstring quotes the R@1 of each of its rows in the tables the configs hold (papers/*.md), or says
  that none was published."""
  module = _module(name)
  doc = module.__doc__
  if name in ("cub.py", "cars.py", "sop.py", "inshop.py"):
    published = _module("photos.py").PUBLISHED
    for loss in ("contrastive", "ms", "pa"):
      assert re.search(rf"{loss}\s+{published[loss][name.removesuffix('.py')]:.1f}", doc)
  elif name == "sop_metrix.py":
    assert f"R@1 {_module('photos_metrix.py').PUBLISHED['contrastive', 'feature']['sop']:.1f} %" in doc
  elif name == "photos_metrix.py":
    assert set(module.PUBLISHED) == {(loss, space) for loss in METRIX_LOSSES for space in METRIX_SPACES}
    for (loss, space), by_dataset in module.PUBLISHED.items():
      cells = _table_row(doc, f"{loss},{space}")
      assert cells[:4] == [f"{by_dataset[dataset]:.1f}" for dataset in PHOTO_DATASETS]
  elif name == "photos_daml.py":
    for variant in DAML_VARIANTS:
      cells = _table_row(doc, variant)
      expected = []
      for dataset in ("cub", "cars", "sop"):
        with_daml, without = module.PUBLISHED[variant][dataset]
        expected += [f"{with_daml:.1f}", "/", f"{without:.1f}"]
      assert cells == expected
  else:
    assert "No published" in doc
    for dataset in module.DATASETS:
      assert _table_row(doc, dataset)[0] == "none"


def test_family_files_list_their_arguments():
  """Each photo family file names its arguments in `RECIPE_ARGS`, and every name is accepted (with the words the
  file needs)."""
  needs = {"photos_metrix.py": "cub", "photos_daml.py": "cub,tri", "photos_aml.py": "cub", "photos_apfs.py": "cub"}
  for name, base in needs.items():
    args = _module(name).RECIPE_ARGS
    assert args and all(isinstance(key, str) and isinstance(text, str) and text for key, text in args.items())
    for word in args:
      words = base.split(",")
      if word not in words:
        kind = [group for group in (("cub", "cars", "sop", "inshop"), DAML_VARIANTS) if word in group]
        if kind:  # a data set or variant replaces the base's one
          words = [word if w in kind[0] else w for w in words]
        else:
          words.append(word)
      _load(name, ",".join(words))


def _leaf_types(config: ml_collections.ConfigDict, prefix: str = ""):
  """(path, type config_flags would parse an override of it with) for every leaf, recursively."""
  for key in config.keys():
    path = f"{prefix}{key}"
    value = config[key]
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaf_types(value, f"{path}.")
    else:
      yield path, config_path.get_type(key, config)


def _overridable(field_type) -> bool:
  parsers = config_flags._FIELD_TYPE_TO_PARSER  # noqa: SLF001 - the types `--config.<key>=` can parse
  return field_type is not type(None) and (field_type in parsers or (
      isinstance(field_type, type) and issubclass(field_type, enum.Enum)))


def _loadable_arguments(name: str) -> list[str | None]:
  """None (if the file loads without one) and, for each `RECIPE_ARGS` word, the first argument of at most three of
  its words (in file order) that loads, so every word is covered; `smoke` is one of the words where it exists."""
  module = _module(name)
  words = list(getattr(module, "RECIPE_ARGS", {}))
  found: list[str | None] = []

  def loads(arg):
    try:
      _load(name, arg)
      return True
    except ValueError:
      return False

  if loads(None):
    found.append(None)
  for word in words:
    others = [w for w in words if w != word]
    candidates = [[word]] + [[word, a] for a in others] + [
        [word, a, b] for i, a in enumerate(others) for b in others[i + 1:]]
    arg = next((",".join(c) for c in candidates if loads(",".join(c))), None)
    assert arg is not None, f"{name}: no argument of at most three RECIPE_ARGS words loads with {word!r}"
    found.append(arg)
  if not words and loads("smoke"):
    found.append("smoke")
  return list(dict.fromkeys(found))


@pytest.mark.parametrize("name", sorted(os.path.basename(p) for p in glob.glob(os.path.join(CONFIGS, "*.py"))))
def test_every_leaf_of_every_recipe_is_overridable(name):
  """Every leaf of every recipe has a type `--config.<key>=` can parse: no plain None (use
  `ml_collections.config_dict.placeholder(type)`), for the file's default, each `RECIPE_ARGS` word and `smoke`."""
  arguments = _loadable_arguments(name)
  assert arguments, f"{name} loads with no argument and defines no RECIPE_ARGS"
  for arg in arguments:
    bad = [(path, t) for path, t in _leaf_types(_load(name, arg)) if not _overridable(t)]
    assert not bad, f"{name}:{arg or ''} has leaves the command line cannot override: {bad}"


def test_full_settings_follow_the_papers():
  """Spot checks of the full (not smoke) recipes against ../shared/papers."""
  ms = _load("cub.py", "ms")
  assert (ms.model.name, ms.model.embedding_dim, ms.model.pooling) == ("resnet50", 512, "gap+gmp")
  assert (ms.batch_size, ms.sampler.name) == (100, "random")
  assert dict(ms.loss.kwargs) == dict(alpha=17.97, beta=75.66, base=0.77, miner_epsilon=0.39)
  assert (ms.optimizer.learning_rate, ms.optimizer.gamma, ms.optimizer.weight_decay) == (1e-4, 0.5, 1e-4)
  assert ms.optimizer.decay_steps == 5 * 59 and ms.num_steps == 60 * 59  # StepLR 5 epochs; 5,864 / 100 per epoch
  sop = _load("sop.py", "pa")
  assert (sop.sampler.name, sop.sampler.kwargs.m, sop.optimizer.learning_rate) == ("m_per_class", 5, 6e-4)
  assert tuple(sop.optimizer.lr_multipliers) == (("loss", 100.0),)
  assert tuple(sop.eval.ks) == (1, 10, 100, 1000)
  inshop = _load("photos_metrix.py", "inshop")
  assert (inshop.method.kwargs.space, inshop.method.kwargs.mixup_weight) == ("feature", 0.4)
  assert (inshop.optimizer.learning_rate, inshop.optimizer.gamma, inshop.model.freeze_bn) == (1e-4, 0.25, True)
  assert _load("sop_metrix.py").name == "sop_metrix" and _load("sop_metrix.py").loss.name == "contrastive"
  released = _load("photos_metrix.py", "cub,released").method.kwargs
  assert (released.space, released.released_negative_index) == ("input", True)
  assert _load("photos_metrix.py", "cub,input").method.kwargs.released_negative_index is False
  with pytest.raises(ValueError, match="'contrastive,input' only"):
    _load("photos_metrix.py", "cub,ms,input,released")
  tri = _load("photos_daml.py", "cars,tri")
  assert (tri.model.name, tri.batch_size, tri.num_steps, tri.method.kwargs.lambda_m) == ("googlenet", 120, 20_000, 50.0)
  assert tri.method.kwargs.pretrain_steps == 4_000
  assert _load("photos_daml.py", "cub,npair").sampler.kwargs.m == 2
  apfs = _load("photos_apfs.py", "sop")
  assert (apfs.model.name, apfs.batch_size, apfs.method.name) == ("bninception", 128, "apfs")
  assert _load("photos_aml.py", "cars").loss.name == "contrastive"


def test_unknown_recipe_argument_lists_the_valid_ones():
  with pytest.raises(ValueError, match=r"one data set of \['cub', 'cars', 'sop', 'inshop'\]"):
    _load("photos.py", "cub,nonsense")
  with pytest.raises(ValueError, match=r"one variant of \['cont', 'tri', 'lifted', 'npair'\]"):
    _load("photos_daml.py", "cub")
  with pytest.raises(ValueError, match=r"one preset of \['paper', 'code', 'recommended'\]"):
    _load("photos_daml.py", "cub,tri,code,paper")
