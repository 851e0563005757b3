"""Every photo-benchmark recipe in configs/ runs end to end with `:smoke` on generated data-set directories, and
each recipe file's docstring states the published number of its row.

The smoke variant keeps a recipe's loss, sampler, method and optimiser chain but swaps the ImageNet backbone for the
small CNN at 32² (no weights can be downloaded here); the full settings are checked separately against the papers'
tables (`test_full_settings_follow_the_papers`).
"""

from __future__ import annotations

import glob
import os
import re

import ml_collections
import pytest

import dataset_fixtures
from metriclearn import config_util
from metriclearn import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
PHOTO_DATASETS = ("cub", "cars", "sop", "inshop")


def _recipe_files() -> list[str]:
  """The recipe files of the photo benchmarks: `<data set>.py` and `<data set>_<method>….py`."""
  names = sorted(os.path.basename(path) for path in glob.glob(os.path.join(CONFIGS, "*.py")))
  return [name for name in names if name.split("_")[0].removesuffix(".py") in PHOTO_DATASETS]


def _load(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
  return config_util.load_config(os.path.join(CONFIGS, name), arg)


def _module(name: str):
  return config_util.sibling_module(os.path.join(CONFIGS, name), name)


# Smoke runs: each base file with every loss, every method file once.
SMOKE_RUNS = [(name, f"{loss},smoke") for name in ("cub.py", "cars.py", "sop.py", "inshop.py")
              for loss in ("contrastive", "triplet", "ms", "pa")]
SMOKE_RUNS += [(name, "smoke") for name in _recipe_files() if "_" in name]
SMOKE_RUNS += [("cub_daml_npair.py", "code,smoke"), ("sop_apfs.py", "no_mining,smoke")]


def test_every_recipe_is_exercised():
  names = {name for name, _ in SMOKE_RUNS}
  assert names == set(_recipe_files())
  # 4 data sets × (base + 9 Metrix rows) + 3 × (4 DAML + AML + APFS)
  assert len(names) == 4 * 10 + 3 * 6


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
  assert config.dataset.name == name.split("_")[0].removesuffix(".py")
  config.dataset.data_dir = photo_roots[config.dataset.name]
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["num_steps"] == config.num_steps == 2
  assert 0.0 <= results["recall@1"] <= 1.0
  assert results["config_name"] == config.name
  if config.method.name == "metrix":
    assert 0.0 <= results["utilization"] <= 1.0


@pytest.mark.parametrize("name", [name for name in _recipe_files() if "_" in name or name in (
    "cub.py", "cars.py", "sop.py", "inshop.py")])
def test_docstring_states_the_published_number(name):
  """A recipe's docstring quotes the R@1 of its row in the tables the configs hold (papers/*.md), or says that none
  was published."""
  doc = _module(name).__doc__
  dataset, _, rest = name.removesuffix(".py").partition("_")
  if not rest:
    published = _module("photos.py").PUBLISHED
    for loss in ("contrastive", "ms", "pa"):
      assert re.search(rf"{loss}\s+{published[loss][dataset]:.1f}", doc)
  elif rest.startswith("metrix"):
    suffixes = rest.split("_")[1:]
    loss = next((s for s in suffixes if s in ("ms", "pa")), "contrastive")
    space = next((s for s in suffixes if s in ("input", "embed")), "feature")
    assert f"R@1 {_module('photos_metrix.py').PUBLISHED[loss, space][dataset]:.1f} %" in doc
  elif rest.startswith("daml"):
    with_daml, without = _module("photos_daml.py").PUBLISHED[rest.split("_")[1]][dataset]
    assert f"R@1 {with_daml:.1f} % with DAML, {without:.1f} %" in doc
  else:
    assert "No published" in doc


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
  inshop = _load("inshop_metrix.py")
  assert (inshop.method.kwargs.space, inshop.method.kwargs.mixup_weight) == ("feature", 0.4)
  assert (inshop.optimizer.learning_rate, inshop.optimizer.gamma, inshop.model.freeze_bn) == (1e-4, 0.25, True)
  assert _load("sop_metrix.py").name == "sop_metrix" and _load("sop_metrix.py").loss.name == "contrastive"
  tri = _load("cars_daml_tri.py")
  assert (tri.model.name, tri.batch_size, tri.num_steps, tri.method.kwargs.lambda_m) == ("googlenet", 120, 20_000, 50.0)
  assert tri.method.kwargs.pretrain_steps == 4_000
  assert _load("cub_daml_npair.py").sampler.kwargs.m == 2
  apfs = _load("sop_apfs.py")
  assert (apfs.model.name, apfs.batch_size, apfs.method.name) == ("bninception", 128, "apfs")
  assert _load("cars_aml.py").loss.name == "contrastive"


def test_unknown_recipe_argument_lists_the_valid_ones():
  with pytest.raises(ValueError, match=r"one data set of \['cub', 'cars', 'sop', 'inshop'\]"):
    _load("photos.py", "cub,nonsense")
  with pytest.raises(ValueError, match=r"one variant of \['cont', 'tri', 'lifted', 'npair'\]"):
    _load("photos_daml.py", "cub")
