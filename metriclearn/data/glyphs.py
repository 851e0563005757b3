"""`glyphs`, the embedded default data set: characters rendered from the fonts that ship inside matplotlib.

About 250 characters (Latin upper and lower case, Greek, Cyrillic, the Latin-1 letters, arrows, mathematical
symbols), each drawn about 30 times from the 16 text faces in `matplotlib.get_data_path()/fonts/ttf` (DejaVu Sans,
Sans Mono, Serif and STIX General; regular, bold, italic, bold italic) with a random rotation, scale, shift and stroke
weight, as 32×32 grey-scale `uint8` images (white ink on black). A class is a character; the split is zero-shot by
character (half the classes train, the other half test, chosen by the seed), so retrieval is measured on characters
the model never saw. Nothing is downloaded: the set is generated from the seed on first use (a few seconds) and
cached as a `.npz` file.

Classes are chosen so that every class is a distinct, visible character:

* a character a face does not have (not in the face's character map, or drawn as the face's missing-glyph box, or
  drawn with no ink) is not drawn in that face; a character that fewer than `min_faces` faces have is dropped;
* characters that look the same in some face (Latin A, Greek Α and Cyrillic А; Latin-1 ë and Cyrillic ё; Latin u
  and Cyrillic и in the italic faces ...) are detected by comparing their *canonical* renderings (upright, unscaled,
  centred; downsampled to the image size) face by face: when the root-mean-square difference is below
  `duplicate_tolerance` in any face both share, only the first of the two in the pool order (Latin, Latin-1, Greek,
  Cyrillic, arrows, mathematical symbols) is kept. Merging them would give the same class: their images coincide.

The pixels depend on the FreeType and Pillow versions that draw them; the cache file name encodes the generation
arguments and `RECIPE_VERSION`, not those versions, so delete the cache after upgrading them to regenerate.

Example:
  >>> dataset = load_glyphs(seed=0)
  >>> dataset.train.images.shape, dataset.test.num_classes
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import time

import matplotlib
import numpy as np
from matplotlib.ft2font import FT2Font
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from metriclearn.data import splits
from metriclearn.registry import check_kwargs

# Bump when anything that changes the generated pixels changes, so stale caches are regenerated, not reused.
RECIPE_VERSION = 1

FACE_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
)  # fmt: skip

_ARROWS = "←↑→↓↔↕↖↗↘↙↦↩↺↻⇐⇑⇒⇓⇔"
_MATH = "±∀∂∃∅∇∈∉∋∏∑∓√∝∞∠∥∧∨∩∪∫∴∵≃≅≈≠≡≤≥⊂⊃⊆⊇⊕⊖⊗⊘⊙⊢⊤⊥⋆"

# Rendering geometry, as fractions of the image side. The em square is placed at the same height for every face and
# character (baseline fixed, advance centred), so case and vertical position (o / O, p / P) stay visible.
_EM_FRACTION = 0.62
_BASELINE_FRACTION = 0.5 + 0.26 * _EM_FRACTION  # centres the span from descender (-0.24 em) to ascender (+0.76 em)
_SUPERSAMPLE = 3  # drawn and transformed at 3× the output size, then box-averaged: anti-aliasing without blur


def candidate_characters() -> list[str]:
  """The pool of characters in priority order: where two look alike, the earlier one is kept."""
  ranges = [
      (0x41, 0x5A), (0x61, 0x7A),  # Latin A-Z, a-z
      (0xC0, 0xFF),  # Latin-1 letters (× and ÷ removed below)
      (0x391, 0x3A9), (0x3B1, 0x3C9),  # Greek Α-Ω, α-ω (0x3A2 is unassigned)
      (0x410, 0x44F), (0x401, 0x401), (0x451, 0x451),  # Cyrillic А-я, Ё, ё
  ]  # fmt: skip
  pool = [chr(c) for lo, hi in ranges for c in range(lo, hi + 1) if c not in (0x3A2, 0xD7, 0xF7)]
  return pool + list(_ARROWS) + list(_MATH)


def _face_paths() -> list[str]:
  font_dir = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
  return [os.path.join(font_dir, name) for name in FACE_FILES]


def _draw(font: ImageFont.FreeTypeFont, char: str, side: int) -> np.ndarray:
  """`u8[side, side]`: `char` upright, advance centred horizontally, baseline at the fixed height."""
  image = Image.new("L", (side, side), 0)
  ImageDraw.Draw(image).text((side / 2, side * _BASELINE_FRACTION), char, font=font, fill=255, anchor="ms")
  return np.asarray(image)


def render_canonical(chars: list[str], *, image_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
  """Draws every character upright in every face, at `_SUPERSAMPLE` × `image_size`.

  Returns:
    renderings: `u8[num_chars, num_faces, S, S]` with `S = _SUPERSAMPLE * image_size`; zero where absent.
    present: `bool[num_chars, num_faces]`: the face has the character and draws it with ink, not as its
      missing-glyph box.
  """
  side = _SUPERSAMPLE * image_size
  renderings = np.zeros((len(chars), len(FACE_FILES), side, side), dtype=np.uint8)
  present = np.zeros((len(chars), len(FACE_FILES)), dtype=bool)
  for f, path in enumerate(_face_paths()):
    charmap = FT2Font(path).get_charmap()
    # The basic layout engine: single characters need no shaping, and it is present in every Pillow build.
    font = ImageFont.truetype(path, size=round(_EM_FRACTION * side), layout_engine=ImageFont.Layout.BASIC)
    # A private-use code point no face defines: what the face draws for a character it lacks (its .notdef box).
    missing_box = _draw(font, "\U000f0000", side)
    for c, char in enumerate(chars):
      if charmap.get(ord(char), 0) == 0:
        continue
      drawn = _draw(font, char, side)
      if drawn.max() == 0 or np.array_equal(drawn, missing_box):
        continue
      renderings[c, f], present[c, f] = drawn, True
  return renderings, present


def distinct_characters(
    renderings: np.ndarray, present: np.ndarray, *, min_faces: int, duplicate_tolerance: float
) -> np.ndarray:
  """Indices (increasing) of the characters kept as classes; see the module docstring for the rule.

  Args:
    renderings: `u8[num_chars, num_faces, S, S]` canonical renderings (any resolution).
    present: `bool[num_chars, num_faces]`.
    min_faces: a character drawn by fewer faces is dropped.
    duplicate_tolerance: root-mean-square difference (pixels scaled to [0, 1]) below which two renderings in the same
      face count as the same glyph.

  Returns:
    `i64[K]` indices into the character axis.
  """
  num_chars, num_faces = present.shape
  flat = renderings.reshape(num_chars, num_faces, -1).astype(np.float32) / 255.0
  # min over faces shared by both characters of the RMS difference, via ‖a‖² + ‖b‖² − 2⟨a, b⟩ (one matmul per face).
  closest = np.full((num_chars, num_chars), np.inf, dtype=np.float32)
  for f in range(num_faces):
    x = flat[:, f]
    sq = np.sum(x * x, axis=1)
    rms = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0) / x.shape[1])
    both = present[:, f, None] & present[None, :, f]
    closest = np.where(both, np.minimum(closest, rms), closest)
  kept: list[int] = []
  for c in range(num_chars):
    if present[c].sum() < min_faces:
      continue
    if kept and closest[c, kept].min() < duplicate_tolerance:
      continue
    kept.append(c)
  return np.asarray(kept, dtype=np.int64)


def _draw_variations(
    canonical: np.ndarray, rng: np.random.Generator, *, image_size: int, max_rotation: float,
    scale_range: tuple[float, float], max_shift: float, thicken_prob: float,
) -> np.ndarray:  # fmt: skip
  """`u8[image_size, image_size]`: one random rotation / scale / shift / stroke weight of a canonical rendering."""
  side = canonical.shape[0]
  image = Image.fromarray(canonical)
  # Bolder only: thinning by erosion erases the hairlines of the serif and STIX faces at this resolution.
  if rng.random() < thicken_prob:  # dilate by one supersampled pixel on each side (2/3 output pixel thicker)
    image = image.filter(ImageFilter.MaxFilter(3))
  angle = np.deg2rad(rng.uniform(-max_rotation, max_rotation))
  scale = rng.uniform(*scale_range)
  shift = rng.uniform(-max_shift, max_shift, size=2) * _SUPERSAMPLE
  # PIL's AFFINE maps each output pixel back to its input position: in = C + R(-angle)·(out − C − shift) / scale.
  cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
  centre_x, centre_y = side / 2 + shift[0], side / 2 + shift[1]
  matrix = (
      cos, sin, side / 2 - cos * centre_x - sin * centre_y,
      -sin, cos, side / 2 + sin * centre_x - cos * centre_y,
  )  # fmt: skip
  image = image.transform((side, side), Image.Transform.AFFINE, matrix, resample=Image.Resampling.BILINEAR)
  return np.asarray(image.reduce(_SUPERSAMPLE))  # box average of each 3×3 block


def generate_glyphs(
    *,
    seed: int = 0,
    images_per_class: int = 30,
    image_size: int = 32,
    max_classes: int | None = None,
    min_faces: int = 8,
    duplicate_tolerance: float = 0.021,
    max_rotation: float = 15.0,
    scale_range: tuple[float, float] = (0.7, 1.1),
    max_shift: float = 1.5,
    thicken_prob: float = 0.3,
) -> dict[str, np.ndarray]:
  """Generates the whole set (all classes, before the train/test split).

  Args:
    seed: fixes the class subset (with `max_classes`), the faces and every random transformation.
    images_per_class: renderings per character, each in a face drawn at random among those that have it.
    image_size: output side in pixels.
    max_classes: keep a seeded random subset of this many classes (for small test sets); None keeps all.
    min_faces: characters drawn by fewer faces are dropped (the STIX bold italic face has no arrows, for example).
    duplicate_tolerance: see `distinct_characters`; 0.021 separates the identical glyphs of different scripts
      (RMS difference 0) and the near-identical ones (Greek π / Cyrillic п in DejaVu Serif Bold, Φ / Ф in STIX:
      0.018) from the closest different characters (I / l in DejaVu Sans Oblique: 0.024; н / п in STIX Bold: 0.025).
    max_rotation: rotation drawn uniformly in ±`max_rotation` degrees.
    scale_range: scale drawn uniformly in this range (1 = the canonical size).
    max_shift: shift of each axis drawn uniformly in ±`max_shift` output pixels.
    thicken_prob: probability of a bolder stroke (a dilation by a third of an output pixel on each side).

  Returns:
    A dict with `images` `u8[N, S, S, 1]`, `labels` `i32[N]` (class order = pool order), `class_names` (`str[K]`,
    the characters) and `faces` `i32[N]` (index into `FACE_FILES`).
  """
  if images_per_class < 1:
    raise ValueError(f"images_per_class must be at least 1, got {images_per_class}")
  if max_classes is not None and max_classes < 2:
    raise ValueError(f"max_classes must be at least 2 (one train and one test class), got {max_classes}")
  pool = candidate_characters()
  renderings, present = render_canonical(pool, image_size=image_size)
  reduced = renderings.reshape(*renderings.shape[:2], image_size, _SUPERSAMPLE, image_size, _SUPERSAMPLE).mean((3, 5))
  kept = distinct_characters(reduced, present, min_faces=min_faces, duplicate_tolerance=duplicate_tolerance)
  rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
  if max_classes is not None and max_classes < len(kept):
    kept = np.sort(rng.choice(kept, size=max_classes, replace=False))
  num_images = len(kept) * images_per_class
  images = np.empty((num_images, image_size, image_size, 1), dtype=np.uint8)
  labels = np.repeat(np.arange(len(kept), dtype=np.int32), images_per_class)
  faces = np.empty(num_images, dtype=np.int32)
  for i in range(num_images):
    char = kept[labels[i]]
    faces[i] = rng.choice(np.flatnonzero(present[char]))
    images[i, :, :, 0] = _draw_variations(
        renderings[char, faces[i]], rng, image_size=image_size, max_rotation=max_rotation, scale_range=scale_range,
        max_shift=max_shift, thicken_prob=thicken_prob,
    )  # fmt: skip
  return {"images": images, "labels": labels, "class_names": np.array([pool[c] for c in kept]), "faces": faces}


_GENERATION_DEFAULTS = {name: p.default for name, p in inspect.signature(generate_glyphs).parameters.items()}


def random_shift(images: np.ndarray, rng: np.random.Generator, *, max_shift: int) -> np.ndarray:
  """Each image translated by its own whole-pixel offset in ±`max_shift` per axis, zeros (background) filled in.

  The glyph analogue of the papers' random crop (pad and crop, as CIFAR's): a train-time augmentation, `Augment`
  of `data.loader`, vectorised over the batch. Departure: no flip, which the papers pair with the crop: mirroring
  changes a character's identity, and the set holds mirror pairs as different classes (b / d, p / q, R / Я, N / И,
  ⊂ / ⊃, ∈ / ∋, ≤ / ≥, ← / →), so a flipped image would carry another class's label.

  Args:
    images: `f32[B, H, W, C]`.
    rng: the loader's generator for this batch.
    max_shift: the largest offset in pixels (0 returns the images unchanged).
  """
  if max_shift == 0:
    return images
  b, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
  top, left = rng.integers(0, 2 * max_shift + 1, size=(2, b))
  rows = (top[:, None] + np.arange(h))[:, :, None]  # [B, H, 1]
  cols = (left[:, None] + np.arange(w))[:, None, :]  # [B, 1, W]
  return padded[np.arange(b)[:, None, None], rows, cols]


def load_glyphs(
    *, data_dir: str | None = None, seed: int = 0, train_fraction: float = 0.5, train_shift: int = 0,
    **generation_kwargs,
) -> splits.Dataset:
  """The `glyphs` data set, generated on first use and cached under `data_dir` (default `default_cache_dir()`).

  Args:
    data_dir: cache directory; the file name encodes every generation argument, so changed arguments regenerate.
    seed: generation seed (see `generate_glyphs`) and the seed of the zero-shot class split.
    train_fraction: fraction of the classes in the train split (rounded); the rest are the test split.
    train_shift: train-time augmentation: each training image shifted by up to this many pixels per axis at every
      step (`random_shift`); 0 (default) trains on the stored images as they are.
    **generation_kwargs: passed to `generate_glyphs` (e.g. `images_per_class`, `max_classes`).

  Returns:
    A `Dataset` with disjoint `train` and `test` classes.

  Raises:
    ValueError: on an unknown generation argument or a split that leaves a side without classes.
  """
  check_kwargs(generate_glyphs, generation_kwargs, "glyphs (besides data_dir, train_fraction and train_shift)")
  if not 0 <= train_shift < 8:
    raise ValueError(f"train_shift must lie in 0..7 pixels, got {train_shift}")
  data = _load_or_generate(data_dir or splits.default_cache_dir(), seed=seed, **generation_kwargs)
  class_names = [str(name) for name in data["class_names"]]
  num_train = round(train_fraction * len(class_names))
  train_classes, test_classes = splits.zero_shot_classes(len(class_names), num_train, seed)
  images, labels = data["images"], data["labels"]
  return splits.Dataset(
      name="glyphs",
      train=splits.split_by_class(images, labels, class_names, train_classes),
      test=splits.split_by_class(images, labels, class_names, test_classes),
      train_augment=functools.partial(random_shift, max_shift=int(train_shift)) if train_shift else None,
  )


def cache_path(data_dir: str, **generation_kwargs) -> str:
  """The cache file for these generation arguments (defaults filled in, so equal settings share a file)."""
  settings = _GENERATION_DEFAULTS | generation_kwargs | {"recipe_version": RECIPE_VERSION}
  digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
  return os.path.join(data_dir, f"glyphs-v{RECIPE_VERSION}-{digest}.npz")


def _load_or_generate(data_dir: str, **generation_kwargs) -> dict[str, np.ndarray]:
  path = cache_path(data_dir, **generation_kwargs)
  if os.path.exists(path):
    with np.load(path) as cached:
      return dict(cached)
  start = time.perf_counter()
  data = generate_glyphs(**generation_kwargs)
  data["generation_seconds"] = np.float64(time.perf_counter() - start)
  os.makedirs(data_dir, exist_ok=True)
  # Written under a temporary name and renamed, so a concurrent reader never sees a half-written file.
  temporary = f"{path}.{os.getpid()}.tmp.npz"
  np.savez_compressed(temporary, **data)
  os.replace(temporary, path)
  return data
