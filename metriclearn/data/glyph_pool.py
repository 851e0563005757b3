"""The glyph pre-training pool: an ImageNet analogue for `glyphs`, disjoint from its characters and their look-alikes.

The papers fine-tune an ImageNet backbone on a small metric-learning set whose classes ImageNet does not name. Here
the stand-in is every other character the bundled faces draw: code points that at least `min_faces` of the 16 faces
of `glyphs.FACE_FILES` have, in the Unicode categories letter, number, punctuation and symbol (so no private use,
controls, spaces or combining marks), minus Braille and box drawing (patterns of dots and lines rather than
characters), minus every `glyphs` candidate character (`glyphs.candidate_characters`, both of its splits, whatever the
seed), rendered exactly as `glyphs` renders (same faces, geometry, random rotation / scale / shift / stroke weight).

Look-alikes of the `glyphs` characters are removed too, with a rule stricter than `glyphs`' own duplicate test: a pool
character whose canonical rendering (upright, centred, at the image size) lies within RMS difference
`lookalike_tolerance` (0.05) of any `glyphs` candidate in *any* face both have is dropped. That removes the identical
glyphs of other code points (Latin ſ / f in italic faces, ͷ / и, Ȧ / Á at 32 px) that a 0.021 tolerance would keep.
Then the pool's own duplicates are merged by `glyphs.distinct_characters` (tolerance 0.021, earlier code point kept).

Accented Latin, Greek and Cyrillic letters outside the `glyphs` candidates stay in: they are distinct characters by
the rule above, and related-but-different classes are what ImageNet offers the photo benchmarks (its ~59 bird species
beside CUB's 200). On the default fonts the pool has about 2,000 characters (the exact count depends on the FreeType /
Pillow versions; `pool_characters` reports it), far above the 1,000 classes of ImageNet-1k's role here.

Each character is drawn `images_per_class` times; the last `held_out_per_class` of every class are held out to
measure the classifier's accuracy on renderings it never saw. Cached as `.npz` like `glyphs`, keyed by the
generation settings, `glyphs.RECIPE_VERSION` and `POOL_VERSION`.

Example:
  >>> pool = load_pool(images_per_class=24, held_out_per_class=4)
  >>> pool.train.num_classes, pool.test.images.shape  # `test` holds the held-out renderings of the same classes
"""

from __future__ import annotations

import collections
import hashlib
import inspect
import json
import os
import time
import unicodedata

import numpy as np
from matplotlib.ft2font import FT2Font

from metriclearn.data import glyphs, splits

# Bump when anything that changes the pool's characters or pixels changes (stale caches are then regenerated).
POOL_VERSION = 1

# Unicode blocks left out although their code points are symbols: patterns of dots and line segments.
EXCLUDED_BLOCKS = {"Braille": (0x2800, 0x28FF), "box drawing": (0x2500, 0x257F)}
_CATEGORIES = "LNPS"  # letters, numbers, punctuation, symbols (first letter of the general category)
_RENDER_CHUNK = 256  # characters rendered at a time (≈ 38 MB of supersampled renderings)


def code_point_candidates(min_faces: int = 8) -> list[str]:
  """Characters mapped by at least `min_faces` faces' character maps, before any rendering: the categories and
  exclusions of the module docstring applied, `glyphs` candidates removed, in code-point order."""
  counts = collections.Counter()
  for path in glyphs._face_paths():  # pylint: disable=protected-access  (same faces as glyphs, by construction)
    counts.update(code for code, glyph in FT2Font(path).get_charmap().items() if glyph)
  dml = {ord(char) for char in glyphs.candidate_characters()}
  return [chr(code) for code, count in sorted(counts.items())
          if count >= min_faces and code not in dml and unicodedata.category(chr(code))[0] in _CATEGORIES
          and not any(lo <= code <= hi for lo, hi in EXCLUDED_BLOCKS.values())]


def _reduced(chars: list[str], image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Canonical renderings box-averaged to the image size, `f32[N, faces, S, S]` (0..255), and `bool[N, faces]`."""
  s = glyphs._SUPERSAMPLE  # pylint: disable=protected-access
  parts, present = [], []
  for start in range(0, len(chars), _RENDER_CHUNK):
    renderings, chunk_present = glyphs.render_canonical(chars[start:start + _RENDER_CHUNK], image_size=image_size)
    shape = (*renderings.shape[:2], image_size, s, image_size, s)
    parts.append(renderings.reshape(shape).mean((3, 5), dtype=np.float32))
    present.append(chunk_present)
  return np.concatenate(parts), np.concatenate(present)


def closest_rms(a: np.ndarray, present_a: np.ndarray, b: np.ndarray, present_b: np.ndarray) -> np.ndarray:
  """`f32[Na, Nb]`: for each pair, the smallest RMS difference (pixels scaled to [0, 1]) over the faces both have
  (inf where they share none). `a`, `b`: `[N, faces, S, S]` renderings (0..255); `present_*`: `bool[N, faces]`."""
  fa = a.reshape(*a.shape[:2], -1).astype(np.float32) / 255.0
  fb = b.reshape(*b.shape[:2], -1).astype(np.float32) / 255.0
  closest = np.full((len(a), len(b)), np.inf, dtype=np.float32)
  for f in range(fa.shape[1]):
    x, y = fa[:, f], fb[:, f]
    # ‖x‖² + ‖y‖² − 2⟨x, y⟩, clipped at 0 against rounding: one matmul per face (as glyphs.distinct_characters).
    sq = np.sum(x * x, axis=1)[:, None] + np.sum(y * y, axis=1)[None, :] - 2.0 * x @ y.T
    rms = np.sqrt(np.maximum(sq, 0.0) / x.shape[1])
    both = present_a[:, f, None] & present_b[None, :, f]
    closest = np.where(both, np.minimum(closest, rms), closest)
  return closest


def pool_characters(*, image_size: int = 32, min_faces: int = 8, duplicate_tolerance: float = 0.021,
                    lookalike_tolerance: float = 0.05,
                    candidates: list[str] | None = None) -> dict[str, int | list[str]]:
  """The pool's characters and the count left after each rule (see the module docstring).

  `candidates` replaces `code_point_candidates(min_faces)` (a subset, for tests).

  Returns:
    `{"characters": [...], "mapped": n, "drawn": n, "not_lookalike": n, "distinct": n}`: the counts after the
    character-map filter, after dropping those fewer than `min_faces` faces draw, after the look-alike rule, and
    after the pool's own duplicate merge (= `len(characters)`).
  """
  candidates = code_point_candidates(min_faces) if candidates is None else list(candidates)
  rendered, present = _reduced(candidates, image_size)
  drawn = present.sum(1) >= min_faces
  dml, dml_present = _reduced(glyphs.candidate_characters(), image_size)
  far = closest_rms(rendered, present, dml, dml_present).min(1) >= lookalike_tolerance
  keep = np.flatnonzero(drawn & far)
  distinct = keep[glyphs.distinct_characters(rendered[keep], present[keep], min_faces=min_faces,
                                             duplicate_tolerance=duplicate_tolerance)]
  return {"characters": [candidates[i] for i in distinct], "mapped": len(candidates), "drawn": int(drawn.sum()),
          "not_lookalike": len(keep), "distinct": len(distinct)}


def generate_pool(
    *,
    seed: int = 0,
    images_per_class: int = 24,
    image_size: int = 32,
    max_classes: int | None = None,
    min_faces: int = 8,
    duplicate_tolerance: float = 0.021,
    lookalike_tolerance: float = 0.05,
    max_rotation: float = 15.0,
    scale_range: tuple[float, float] = (0.7, 1.1),
    max_shift: float = 1.5,
    thicken_prob: float = 0.3,
) -> dict[str, np.ndarray]:
  """Renders the pool: `images` `u8[N, S, S, 1]`, `labels` `i32[N]` (each class's images contiguous, in drawing
  order), `class_names`, `faces`, and the rule counts of `pool_characters`.

  The augmentation arguments are those of `glyphs.generate_glyphs` (same defaults); `max_classes` keeps a seeded
  random subset of the pool (for tests).
  """
  if images_per_class < 2:
    raise ValueError(f"images_per_class must be at least 2 (one to train, one held out), got {images_per_class}")
  selection = pool_characters(image_size=image_size, min_faces=min_faces, duplicate_tolerance=duplicate_tolerance,
                              lookalike_tolerance=lookalike_tolerance)
  chars = selection["characters"]
  rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))  # stream 2: glyphs uses 0 and 1
  if max_classes is not None and max_classes < len(chars):
    chars = [chars[i] for i in np.sort(rng.choice(len(chars), size=max_classes, replace=False))]
  images = np.empty((len(chars) * images_per_class, image_size, image_size, 1), dtype=np.uint8)
  faces = np.empty(len(images), dtype=np.int32)
  for start in range(0, len(chars), _RENDER_CHUNK):  # supersampled renderings a chunk at a time (memory)
    renderings, present = glyphs.render_canonical(chars[start:start + _RENDER_CHUNK], image_size=image_size)
    for c in range(len(renderings)):
      for i in range((start + c) * images_per_class, (start + c + 1) * images_per_class):
        faces[i] = rng.choice(np.flatnonzero(present[c]))
        images[i, :, :, 0] = glyphs._draw_variations(  # pylint: disable=protected-access
            renderings[c, faces[i]], rng, image_size=image_size, max_rotation=max_rotation,
            scale_range=scale_range, max_shift=max_shift, thicken_prob=thicken_prob)
  labels = np.repeat(np.arange(len(chars), dtype=np.int32), images_per_class)
  counts = {f"count_{key}": np.int64(value) for key, value in selection.items() if key != "characters"}
  return {"images": images, "labels": labels, "class_names": np.array(chars), "faces": faces, **counts}


_GENERATION_DEFAULTS = {name: p.default for name, p in inspect.signature(generate_pool).parameters.items()}


def cache_path(data_dir: str, **generation_kwargs) -> str:
  """The cache file for these generation arguments (defaults filled in)."""
  settings = _GENERATION_DEFAULTS | generation_kwargs | {"glyphs_version": glyphs.RECIPE_VERSION,
                                                         "pool_version": POOL_VERSION}
  digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
  return os.path.join(data_dir, f"glyph_pool-v{POOL_VERSION}-{digest}.npz")


def load_pool(*, data_dir: str | None = None, held_out_per_class: int = 4, **generation_kwargs) -> splits.Dataset:
  """The pool as a `Dataset` for classification: `train` and `test` hold the same classes (labels aligned), `test`
  the last `held_out_per_class` renderings of each class. Generated on first use and cached under `data_dir`
  (default `splits.default_cache_dir()`).

  Raises:
    ValueError: an unknown generation argument, or no rendering left to train on.
  """
  from metriclearn.registry import check_kwargs  # pylint: disable=g-import-not-at-top
  check_kwargs(generate_pool, generation_kwargs, "the glyph pool (besides data_dir and held_out_per_class)")
  per_class = generation_kwargs.get("images_per_class", _GENERATION_DEFAULTS["images_per_class"])
  if not 1 <= held_out_per_class < per_class:
    raise ValueError(f"held_out_per_class must lie in 1..{per_class - 1} (images_per_class={per_class}), "
                     f"got {held_out_per_class}")
  data = _load_or_generate(data_dir or splits.default_cache_dir(), **generation_kwargs)
  class_names = [str(name) for name in data["class_names"]]
  held_out = np.arange(len(data["labels"])) % per_class >= per_class - held_out_per_class
  return splits.Dataset(
      name="glyph_pool",
      train=splits.Split(data["images"][~held_out], data["labels"][~held_out], class_names),
      test=splits.Split(data["images"][held_out], data["labels"][held_out], class_names),
  )


def _load_or_generate(data_dir: str, **generation_kwargs) -> dict[str, np.ndarray]:
  path = cache_path(data_dir, **generation_kwargs)
  if os.path.exists(path):
    with np.load(path) as cached:
      return dict(cached)
  print(f"Rendering the glyph pre-training pool (once; cached in {path}) ...", flush=True)
  start = time.perf_counter()
  data = generate_pool(**generation_kwargs)
  data["generation_seconds"] = np.float64(time.perf_counter() - start)
  os.makedirs(data_dir, exist_ok=True)
  temporary = f"{path}.{os.getpid()}.tmp.npz"  # renamed when complete: a concurrent reader never sees half a file
  np.savez_compressed(temporary, **data)
  os.replace(temporary, path)
  return data
