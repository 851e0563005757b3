"""N-pair internals (issue 20): the sort-based pair finder and the written-out gradient of the default path."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metriclearn import losses


def mask_pairs(labels):
  """The [B, B]-mask definition: first occurrence with a later one; the positive is the second occurrence."""
  labels = np.asarray(labels)
  is_anchor = np.zeros(len(labels), bool)
  positive = np.zeros(len(labels), np.int32)
  for i, label in enumerate(labels):
    same = np.flatnonzero(labels == label)
    if same[0] == i and len(same) > 1:
      is_anchor[i], positive[i] = True, same[1]
  return is_anchor, positive


@pytest.mark.parametrize(("size", "classes"), [(1, 1), (2, 1), (7, 3), (64, 16), (64, 60), (33, 2)])
def test_npair_pairs_match_the_mask_definition(size, classes):
  labels = np.random.default_rng(size).integers(0, classes, size)
  is_anchor, positive = losses.npair_pairs(jnp.asarray(labels))
  want_anchor, want_positive = mask_pairs(labels)
  np.testing.assert_array_equal(np.asarray(is_anchor), want_anchor)
  np.testing.assert_array_equal(np.where(want_anchor, np.asarray(positive), 0), want_positive)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_written_out_gradient_equals_autodiff(dtype):
  # The default path's custom VJP against autodiff of the same slots (max_pairs = B / 2 holds every anchor).
  rng = np.random.default_rng(3)
  labels = jnp.asarray(rng.integers(0, 20, 64))
  embeddings = jnp.asarray(rng.standard_normal((64, 16)), dtype)
  value, grad = jax.jit(jax.value_and_grad(losses.npair))(embeddings, labels)
  want_value, want_grad = jax.value_and_grad(functools.partial(losses.npair, max_pairs=32))(embeddings, labels)
  assert grad.dtype == dtype
  # float32: both sum the same ≤ 64 terms in another order (~1e-6 relative); bf16: the gradient is rounded once to
  # bf16 from float32 in both, which can differ by one bf16 ulp (2⁻⁸ relative) where the float32 sums straddle.
  tolerance = 1e-5 if dtype == jnp.float32 else 1e-2
  np.testing.assert_allclose(float(value), float(want_value), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad, np.float32), np.asarray(want_grad, np.float32), atol=tolerance,
                             rtol=tolerance)
