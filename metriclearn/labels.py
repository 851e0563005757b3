"""Pair-label matrices: the `y` and `valid` that every matrix-form loss consumes (DESIGN §2).

`y[a, x]` is the *soft pair label* of anchor a and candidate x: 1 for the same class, 0 for different classes, and
λ for a Metrix mix of a positive and a negative (Venkataramanan et al. 2022, eq. c.3: mix_λ(y, y') = λy + (1−λ)y').
`valid[a, x]` says which pairs exist at all (self-pairs, padding and pairs a method restricts away are 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def pair_labels(labels_a: jax.Array, labels_b: jax.Array | None = None) -> jax.Array:
  """`f32[A, B]`: 1 where `labels_a[i] == labels_b[j]`, else 0 (`labels_b` defaults to `labels_a`)."""
  labels_b = labels_a if labels_b is None else labels_b
  if labels_a.ndim != 1 or labels_b.ndim != 1:
    raise ValueError(f"labels must be 1-D integer vectors, got shapes {labels_a.shape} and {labels_b.shape}")
  return (labels_a[:, None] == labels_b[None, :]).astype(jnp.float32)


def self_pair_mask(num_anchors: int, num_candidates: int | None = None) -> jax.Array:
  """`bool[A, B]`, True on the pairs (i, i): anchor i against itself when the first A candidates are the anchors."""
  num_candidates = num_anchors if num_candidates is None else num_candidates
  return jnp.eye(num_anchors, num_candidates, dtype=bool)


def mixed_pair_labels(
    y: jax.Array, first: jax.Array, second: jax.Array, mix_lambda: jax.Array | float
) -> jax.Array:
  """Labels of mixed candidates: `λ·y[:, first] + (1−λ)·y[:, second]` (Metrix eq. c.3).

  Args:
    y: `f32[A, B]` pair labels of the anchors against the clean candidates.
    first, second: `i32[M]` indices of the candidates mixed into each of M mixed examples.
    mix_lambda: the interpolation factor λ (scalar, or `f32[M]` for one λ per mixed example).

  Returns:
    `f32[A, M]`: the pair label of every anchor with every mixed example.
  """
  mix_lambda = jnp.asarray(mix_lambda, jnp.float32)
  return mix_lambda * y[:, first] + (1.0 - mix_lambda) * y[:, second]


def batch_matrices(
    labels: jax.Array, ref_labels: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
  """`(y, valid)` for a batch against itself, followed by optional reference columns (cross-batch memory).

  Candidates are `[batch; reference]`: `y` is `f32[B, B + R]`, `valid` excludes only the self-pairs (i, i).
  """
  batch_size = labels.shape[0]
  candidates = labels if ref_labels is None else jnp.concatenate([labels, ref_labels.astype(labels.dtype)])
  y = pair_labels(labels, candidates)
  valid = ~self_pair_mask(batch_size, candidates.shape[0])
  return y, valid.astype(jnp.float32)
