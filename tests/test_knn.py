"""Tests for metriclearn.knn (the NumPy backend of retrieval_metrics): exact neighbours, ties, both backends alike."""

from __future__ import annotations

import numpy as np
import pytest

from metriclearn import evaluate
from metriclearn import knn


def reference(query, gallery, k, metric, self_index):
  """Stable argsort of the same float32 scores: ties lower index first; the excluded row last."""
  q, g = query.astype(np.float32), gallery.astype(np.float32)
  if metric == "cosine":
    q, g = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (q, g))
    scores = q @ g.T
  else:
    scores = q @ g.T - 0.5 * (g * g).sum(1)
  rows = np.flatnonzero(self_index >= 0)
  scores[rows, self_index[rows]] = -np.inf
  return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def tied_data(rng, n, dim=8):
  """Rows of {−1, 0, 1} with exactly 4 non-zeros: norm 2, so normalised coordinates (±½) and every score are exact in
  float32 whatever the summation order, and many rows are exact duplicates: ties everywhere, on either backend."""
  x = np.zeros((n, dim), np.float32)
  for row in x:
    row[rng.choice(dim, 4, replace=False)] = rng.choice([-1.0, 1.0], 4)
  return x


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("layout", ["self", "gallery", "query_ids"])
@pytest.mark.parametrize(("k", "block_size"), [(1, None), (5, 40), (17, 136), (17, 300), (17, 64), (299, 64)])
def test_matches_stable_argsort_with_ties(metric, layout, k, block_size):
  # block 40 and 136: tiled (8k ≤ side < N), the last tile ragged; 64 with k = 17: row blocks; None and 300: one tile.
  rng = np.random.default_rng(k)
  gallery = tied_data(rng, 300, dim=6)
  self_index = np.full(300 if layout == "self" else 70, -1)
  if layout == "self":
    query, self_index = gallery, np.arange(300)
  elif layout == "gallery":
    query = tied_data(rng, 70, dim=6)
  else:  # queries are gallery rows, excluded by index; a few are not
    self_index = rng.choice(300, 70, replace=False)
    self_index[:10] = -1
    query = np.where(self_index[:, None] >= 0, gallery[self_index], tied_data(rng, 70, dim=6))
  got = knn.top_k_neighbours(query, None if layout == "self" else gallery, k, metric=metric, block_size=block_size,
                             self_index=None if layout != "query_ids" else self_index)
  np.testing.assert_array_equal(got, reference(query, gallery, k, metric, self_index))


def test_excluded_row_ranks_last_when_k_is_the_whole_gallery():
  gallery = tied_data(np.random.default_rng(1), 50)
  got = knn.top_k_neighbours(gallery, None, 50, metric="euclidean")
  np.testing.assert_array_equal(got[:, -1], np.arange(50))
  np.testing.assert_array_equal(got, reference(gallery, gallery, 50, "euclidean", np.arange(50)))


@pytest.mark.parametrize("threads", [1, 3])
def test_all_equal_scores_take_the_lowest_indices(threads):
  # Every score ties: every tile entry is a candidate (the dense-row path after the first tile), and the k nearest
  # are the k lowest indices other than the query's own.
  emb = np.ones((260, 4), np.float32)
  got = knn.top_k_neighbours(emb, None, 6, metric="cosine", block_size=48, threads=threads)
  want = np.array([[j for j in range(7) if j != i][:6] for i in range(260)])
  np.testing.assert_array_equal(got, want)


def test_random_data_matches_float64_up_to_rounding():
  # Continuous data: the float64 ranking, except where float32 rounding (relative ~1e-7 of scores ≤ ~30) can swap
  # two neighbours whose float64 scores differ by less than 1e-5; such swaps are the only difference allowed.
  rng = np.random.default_rng(2)
  x = rng.standard_normal((500, 16)).astype(np.float32)
  got = knn.top_k_neighbours(x, None, 20, metric="euclidean", block_size=160)
  x64 = x.astype(np.float64)
  scores = x64 @ x64.T - 0.5 * (x64 * x64).sum(1)
  np.fill_diagonal(scores, -np.inf)
  want = np.argsort(-scores, axis=1, kind="stable")[:, :20]
  got_scores, want_scores = np.take_along_axis(scores, got, 1), np.take_along_axis(scores, want, 1)
  np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)
  assert np.mean(got == want) > 0.99


@pytest.mark.filterwarnings("ignore:k = 9 is less than R")
@pytest.mark.parametrize("layout", ["self", "gallery", "query_ids"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_backends_give_the_same_metrics_on_tied_data(layout, metric):
  """The same neighbours (exact scores, ties by index on both) give the same numbers from the shared metric code."""
  rng = np.random.default_rng(3)
  emb = tied_data(rng, 240)
  labels = rng.integers(0, 30, 240)
  kwargs = dict(ks=(1, 2, 8), metric=metric, extra_metrics=("map", "mrr"), return_per_class=True)
  if layout == "self":
    args = (emb, labels)
  elif layout == "gallery":
    args = (emb[:60], labels[:60], emb[60:], labels[60:])
  else:
    args = (emb[:60], labels[:60], emb[30:], labels[30:])
    kwargs.update(query_ids=np.arange(60), gallery_ids=np.arange(30, 240))
  for extra in [dict(), dict(k=9), dict(extra_metrics=())]:
    results = [evaluate.retrieval_metrics(*args, backend=backend, chunk_size=chunk, **{**kwargs, **extra})
               for backend, chunk in [("xla", 64), ("numpy", 72), ("numpy", 128), ("numpy", None)]]
    assert all(result == results[0] for result in results[1:])  # numpy: tiled (72, 128 where 8k fits) and rows


def test_bad_arguments():
  x = np.ones((5, 3), np.float32)
  with pytest.raises(ValueError, match="metric"):
    knn.top_k_neighbours(x, None, 2, metric="manhattan")
  with pytest.raises(ValueError, match="k must be"):
    knn.top_k_neighbours(x, None, 6)
  with pytest.raises(ValueError, match="self_index needs a gallery"):
    knn.top_k_neighbours(x, None, 2, self_index=np.zeros(5))
  with pytest.raises(ValueError, match="unknown backend"):
    evaluate.retrieval_metrics(x, np.zeros(5), ks=(1,), backend="faiss")
