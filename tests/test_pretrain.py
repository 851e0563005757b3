"""The glyph pre-training pool, the pre-training program and the built-in backbone registry (`metriclearn.pretrain`).

The pool tests run on the real bundled fonts but on a subset of the candidate characters (a few seconds); the
pre-training runs are `configs/glyphs_pretrain.py:smoke` (40 pool classes, 4 steps), whose pool is rendered once into
the shared glyph cache and whose weights go to a temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from metriclearn import config_util
from metriclearn import pretrain
from metriclearn import train
from metriclearn.data import glyph_pool, glyphs
from metriclearn.models import weights

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN_RECIPE = ROOT / "configs" / "glyphs_pretrain.py"
FINETUNE_RECIPE = ROOT / "configs" / "glyphs_finetune.py"

# Pool candidates that look like `glyphs` characters in some face (long s / f in the italic faces, Pamphylian digamma
# / и, Latin Ȧ / Á and Cyrillic Ӏ / l at 32 px), then characters far from every one of them.
LOOKALIKES = ["ſ", "ͷ", "Ȧ", "Ӏ"]
DISTINCT = ["§", "¶", "@", "&", "ƛ", "ђ", "₤", "♪", "¤", "⊞"]


def _naive_closest(a_chars: list[str], b_chars: list[str]) -> np.ndarray:
  """The smallest RMS difference over shared faces, pair by pair and face by face with plain NumPy."""
  s = glyphs._SUPERSAMPLE  # pylint: disable=protected-access
  ra, pa = glyphs.render_canonical(a_chars)
  rb, pb = glyphs.render_canonical(b_chars)
  ra = ra.reshape(*ra.shape[:2], 32, s, 32, s).mean((3, 5)) / 255.0
  rb = rb.reshape(*rb.shape[:2], 32, s, 32, s).mean((3, 5)) / 255.0
  out = np.full((len(a_chars), len(b_chars)), np.inf)
  for i in range(len(a_chars)):
    for j in range(len(b_chars)):
      for f in range(len(glyphs.FACE_FILES)):
        if pa[i, f] and pb[j, f]:
          out[i, j] = min(out[i, j], np.sqrt(np.mean((ra[i, f] - rb[j, f]) ** 2)))
  return out


def test_code_point_candidates_exclude_every_glyphs_character():
  candidates = glyph_pool.code_point_candidates()
  assert len(candidates) >= 1000
  assert not set(candidates) & set(glyphs.candidate_characters())
  assert not any(0x2800 <= ord(c) <= 0x28FF or 0x2500 <= ord(c) <= 0x257F for c in candidates)  # Braille, boxes


def test_pool_drops_lookalikes_of_glyphs_characters_on_the_real_fonts():
  selection = glyph_pool.pool_characters(candidates=LOOKALIKES + DISTINCT)
  kept = selection["characters"]
  assert not set(kept) & set(LOOKALIKES)
  assert set(kept) == set(DISTINCT)
  # The rule, checked against a plain loop over every shared face: each kept character is at least the tolerance
  # away from every glyphs candidate (the float32 matmul form differs from this by ~1e-6 RMS, far below 0.05).
  closest = _naive_closest(kept, glyphs.candidate_characters())
  assert closest.min() >= 0.05
  # Each dropped one is within it of some candidate; ſ / f and Ȧ / Á only by the strict rule (glyphs' own duplicate
  # test, at 0.021, would have kept them).
  nearest = _naive_closest(LOOKALIKES, glyphs.candidate_characters()).min(1)
  assert np.all(nearest < 0.05) and nearest[LOOKALIKES.index("ſ")] > 0.021 and nearest[LOOKALIKES.index("Ȧ")] > 0.021


def test_closest_rms_matches_the_naive_loop():
  chars = ["a", "ſ", "f", "§"]
  s = glyphs._SUPERSAMPLE  # pylint: disable=protected-access
  renderings, present = glyphs.render_canonical(chars)
  reduced = renderings.reshape(*renderings.shape[:2], 32, s, 32, s).mean((3, 5), dtype=np.float32)
  # float32 matmul form vs float64 loop: the squared distance's rounding is ~1e-7 of ‖x‖² (≤ 1024), i.e. ~1e-4 in
  # the sum before /1024 and the square root, so 1e-4 in the RMS holds on any CPU.
  np.testing.assert_allclose(glyph_pool.closest_rms(reduced, present, reduced, present),
                             _naive_closest(chars, chars), atol=1e-4)


@pytest.fixture(scope="module")
def smoke_weights(tmp_path_factory) -> tuple[str, dict]:
  config = config_util.load_config(str(PRETRAIN_RECIPE), "smoke")
  output = str(tmp_path_factory.mktemp("pretrained") / "smoke.npz")
  return output, pretrain.pretrain(config, output)


def test_pretrain_smoke_writes_a_backbone_of_pool_classes_only(smoke_weights):
  path, summary = smoke_weights
  assert os.path.isfile(path) and os.path.isfile(path.removesuffix(".npz") + ".json")
  assert summary["num_classes"] == 40 and 0.0 <= summary["held_out_accuracy"] <= 1.0
  pool = glyph_pool.load_pool(images_per_class=4, held_out_per_class=1, max_classes=40)
  assert not set(pool.train.class_names) & set(glyphs.candidate_characters())
  assert pool.train.class_names == pool.test.class_names and len(pool.test) == 40
  state_dict = weights.read_state_dict(path)
  assert "conv0_0.weight" in state_dict and not any(key.startswith("classifier") for key in state_dict)


def test_pretrained_file_loads_into_the_finetuning_model(smoke_weights, tmp_path):
  path, _ = smoke_weights
  config = config_util.load_config(str(FINETUNE_RECIPE), "smoke")
  config.model.pretrained = path
  train.validate_config(config)
  built = train.build(config)
  state = train.create_state(config, built.method, built.tx, built.sample_images, built.init_rng)
  file = np.load(path)
  # OIHW in the file, HWIO in flax; exact copies.
  np.testing.assert_array_equal(state.params["backbone"]["conv1_0"]["kernel"],
                                file["conv1_0.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(state.batch_stats["backbone"]["bn2_0"]["var"], file["bn2_0.running_var"])
  config.dataset.data_dir = str(tmp_path / "glyphs")
  config.eval.baselines = config.eval.plots = config.eval.clustering = False
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["protocol"] == "fair (selected on val map@r)" and np.isfinite(results["map@r"])


def test_registry_builds_on_first_use_and_reuses_the_cache(tmp_path, monkeypatch, capsys):
  path = pretrain.resolve("glyphs_pretrain:smoke", cache_dir=str(tmp_path))
  assert os.path.isfile(path) and path.startswith(str(tmp_path))
  assert "Pre-training the built-in backbone 'glyphs_pretrain:smoke'" in capsys.readouterr().err

  def fail(*args, **kwargs):
    raise AssertionError("a cached backbone was pre-trained again")

  monkeypatch.setattr(pretrain, "pretrain", fail)
  assert pretrain.resolve("glyphs_pretrain:smoke", cache_dir=str(tmp_path)) == path
  # A changed recipe setting is another file (it would be built, not confused with this one).
  config = pretrain.built_in_config("glyphs_pretrain:smoke")
  config.num_steps = 5
  assert pretrain.weight_path(config, str(tmp_path)) != path


def test_weight_names_are_checked_before_any_compute():
  assert weights.check_file("glyphs_pretrain", "small_cnn") == "glyphs_pretrain"
  with pytest.raises(ValueError, match="valid: 'glyphs_pretrain'"):
    weights.check_file("glyph_pretrain", "small_cnn")
  with pytest.raises(ValueError, match="is a small_cnn, not a resnet50"):
    weights.check_file("glyphs_pretrain", "resnet50")
  with pytest.raises(ValueError, match="unknown config argument 'tiny'"):
    weights.check_file("glyphs_pretrain:tiny", "small_cnn")
  with pytest.raises(FileNotFoundError, match="glyphs_pretrain"):
    weights.check_file("/nonexistent/weights.npz", "small_cnn")


def test_random_shift_translates_each_image_within_the_range():
  rng = np.random.default_rng(0)
  images = rng.random((16, 8, 8, 1), dtype=np.float32)
  shifted = glyphs.random_shift(images, np.random.default_rng(1), max_shift=2)
  assert shifted.shape == images.shape
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
  offsets = set()
  for b in range(len(images)):
    matches = [(dy, dx) for dy in range(5) for dx in range(5)
               if np.array_equal(shifted[b], padded[b, dy:dy + 8, dx:dx + 8])]
    assert len(matches) == 1  # random pixels: exactly one offset reproduces the image
    offsets.add(matches[0])
  assert len(offsets) > 1  # not one shift for the whole batch
  assert glyphs.random_shift(images, np.random.default_rng(1), max_shift=0) is images


def test_finetune_recipe_follows_the_fair_protocol_and_the_baseline_loss():
  config = config_util.load_config(str(FINETUNE_RECIPE))
  baseline = config_util.load_config(str(ROOT / "configs" / "glyphs.py"))
  assert config.model.pretrained == "glyphs_pretrain" and config.dataset.kwargs.val_fold == 0
  assert config.loss.to_dict() == baseline.loss.to_dict()
  same = lambda optimizer: {k: v for k, v in optimizer.to_dict().items() if k != "decay_steps"}  # follows num_steps
  assert same(config.optimizer) == same(baseline.optimizer) and config.optimizer.decay_steps == config.num_steps
  assert not config_util.load_config(str(FINETUNE_RECIPE), "scratch").model.pretrained
  with pytest.raises(ValueError, match="valid: smoke, scratch"):
    config_util.load_config(str(FINETUNE_RECIPE), "tiny")
  module = config_util.sibling_module(str(FINETUNE_RECIPE), "glyphs_finetune.py")
  assert set(module.RECIPE_ARGS) == {"smoke", "scratch"}
