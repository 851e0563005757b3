import numpy as np
import pytest

from metriclearn import knn


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("self_retrieval", [False, True])
def test_matches_stable_argsort_reference_with_duplicates(metric, self_retrieval):
  rng = np.random.default_rng(0)
  # Small integer coordinates: many exact duplicates and tied scores (exact in float32).
  gallery = rng.integers(-2, 3, size=(300, 4)).astype(np.float32)
  query = gallery[:50] if self_retrieval else rng.integers(-2, 3, size=(40, 4)).astype(np.float32)
  if metric == "cosine":
    gallery[gallery.sum(1) == 0] += 1  # no zero rows
    query = gallery[:50] if self_retrieval else np.abs(query) + 1
  k = 17
  got = knn.top_k_neighbours(query, gallery, k, metric=metric, self_offset=0 if self_retrieval else None,
                             chunk_size=16)
  q, g = query.astype(np.float32), gallery.astype(np.float32)
  if metric == "cosine":
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    scores = q @ g.T
  else:
    scores = q @ g.T - 0.5 * (g * g).sum(1)
  if self_retrieval:
    scores[np.arange(len(q)), np.arange(len(q))] = -np.inf
  want = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  np.testing.assert_array_equal(got, want)
