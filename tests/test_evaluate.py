"""Tests for metriclearn.evaluate: brute-force NumPy references, pytorch-metric-learning parity, edge cases."""

from __future__ import annotations

import itertools

import faiss
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils import accuracy_calculator as pml_accuracy
from pytorch_metric_learning.utils import inference as pml_inference
from sklearn import metrics as sk_metrics

from metriclearn import evaluate

# ----------------------------------------------------------------------------------------------------------------------
# References


def reference_retrieval(query, query_labels, gallery=None, gallery_labels=None, *, ks, metric):
  """Musgrave et al. 2020 metrics from a full stable argsort in float64, one query at a time."""
  self_retrieval = gallery is None
  if self_retrieval:
    gallery, gallery_labels = query, query_labels
  query, gallery = query.astype(np.float64), gallery.astype(np.float64)
  if metric == "cosine":
    unit_q = query / np.linalg.norm(query, axis=1, keepdims=True)
    unit_g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    distance = -unit_q @ unit_g.T
  else:
    distance = np.sqrt(((query[:, None, :] - gallery[None, :, :]) ** 2).sum(-1))
  rows = []
  for i in range(len(query)):
    order = np.argsort(distance[i], kind="stable")
    if self_retrieval:
      order = order[order != i]
    relevant = gallery_labels[order] == query_labels[i]
    r = int(relevant.sum())
    if r == 0:
      continue
    recalls = [float(relevant[:k].any()) for k in ks]
    precision_at_i = np.cumsum(relevant) / np.arange(1, len(relevant) + 1)
    r_precision = relevant[:r].sum() / r
    map_at_r = (precision_at_i[:r] * relevant[:r]).sum() / r
    rows.append(recalls + [float(relevant[0]), r_precision, map_at_r])
  names = [f"recall@{k}" for k in ks] + ["precision@1", "r_precision", "map@r"]
  return dict(zip(names, np.mean(rows, axis=0)))


def labels_with(distribution, n, rng):
  if distribution == "uniform_few":  # many items per class
    return rng.integers(0, 5, n)
  if distribution == "sop_like":  # classes of 2-12 items
    sizes = []
    while sum(sizes) < n:
      sizes.append(int(rng.integers(2, 13)))
    return rng.permutation(np.repeat(np.arange(len(sizes)), sizes)[:n])
  if distribution == "with_singletons":  # some queries have R = 0
    return rng.integers(0, n // 2, n)
  if distribution == "imbalanced":  # one class holds half the items
    labels = rng.integers(1, 40, n)
    labels[rng.random(n) < 0.5] = 0
    return labels
  raise AssertionError(distribution)


def assert_metrics_close(actual, expected, atol=1e-6):
  assert actual.keys() == expected.keys()
  for name in expected:
    assert actual[name] == pytest.approx(expected[name], abs=atol), name


DISTRIBUTIONS = ["uniform_few", "sop_like", "with_singletons", "imbalanced"]
KS = (1, 3, 10)

# ----------------------------------------------------------------------------------------------------------------------
# Retrieval


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_self_retrieval_matches_brute_force(distribution, metric):
  rng = np.random.default_rng(DISTRIBUTIONS.index(distribution))
  n = 157
  labels = labels_with(distribution, n, rng)
  emb = rng.standard_normal((n, 6)).astype(np.float32) + 0.8 * rng.standard_normal((labels.max() + 1, 6))[labels]
  expected = reference_retrieval(emb, labels, ks=KS, metric=metric)
  actual = evaluate.retrieval_metrics(emb, labels, ks=KS, metric=metric, chunk_size=40)  # 40 does not divide 157
  assert_metrics_close(actual, expected)
  assert 0.0 < actual["map@r"] < 1.0  # neither trivial extreme, so the comparison has teeth


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_query_gallery_matches_brute_force(distribution, metric):
  rng = np.random.default_rng(10 + DISTRIBUTIONS.index(distribution))
  labels = labels_with(distribution, 230, rng)
  emb = rng.standard_normal((230, 5)).astype(np.float32) + rng.standard_normal((labels.max() + 1, 5))[labels]
  query, gallery = emb[:70], emb[70:]
  query_labels, gallery_labels = labels[:70], labels[70:]
  expected = reference_retrieval(query, query_labels, gallery, gallery_labels, ks=KS, metric=metric)
  actual = evaluate.retrieval_metrics(query, query_labels, gallery, gallery_labels, ks=KS, metric=metric,
                                      chunk_size=32)
  assert_metrics_close(actual, expected)


def pml_metrics(emb, labels, gallery=None, gallery_labels=None, *, metric):
  if metric == "cosine":  # inner product of unit vectors = cosine similarity
    normalize = lambda x: None if x is None else x / np.linalg.norm(x, axis=1, keepdims=True)
    emb, gallery = normalize(emb), normalize(gallery)
    knn = pml_inference.FaissKNN(index_init_fn=faiss.IndexFlatIP)
  else:
    knn = pml_inference.FaissKNN()  # IndexFlatL2
  calculator = pml_accuracy.AccuracyCalculator(
      include=("mean_average_precision_at_r", "r_precision", "precision_at_1"), k="max_bin_count",
      device=torch.device("cpu"), knn_func=knn)
  if gallery is None:
    result = calculator.get_accuracy(emb, labels, emb, labels, ref_includes_query=True)
  else:
    result = calculator.get_accuracy(emb, labels, gallery, gallery_labels, ref_includes_query=False)
  return {"map@r": result["mean_average_precision_at_r"], "r_precision": result["r_precision"],
          "precision@1": result["precision_at_1"]}


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("self_retrieval", [True, False])
@pytest.mark.parametrize("distribution", ["sop_like", "with_singletons"])
def test_matches_pytorch_metric_learning(metric, self_retrieval, distribution):
  rng = np.random.default_rng(7)
  labels = labels_with(distribution, 300, rng)
  emb = rng.standard_normal((300, 8)).astype(np.float32) + rng.standard_normal((labels.max() + 1, 8))[labels]
  if self_retrieval:
    args = (emb, labels)
  else:
    args = (emb[:100], labels[:100], emb[100:], labels[100:])
  expected = pml_metrics(*args, metric=metric)
  actual = evaluate.retrieval_metrics(*args, ks=(1,), metric=metric, chunk_size=64)
  for name, value in expected.items():
    assert actual[name] == pytest.approx(value, abs=1e-6), name


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_duplicate_of_query_is_retrieved(metric):
  # Each point has an exact duplicate with its label; excluding the query by distance would drop the duplicate too.
  rng = np.random.default_rng(3)
  base = rng.standard_normal((40, 8)).astype(np.float32)
  emb = np.concatenate([base, base])
  labels = np.concatenate([np.arange(40), np.arange(40)])
  result = evaluate.retrieval_metrics(emb, labels, ks=(1,), metric=metric, chunk_size=16)
  assert result == {"recall@1": 1.0, "precision@1": 1.0, "r_precision": 1.0, "map@r": 1.0}
  # A duplicate under another label is retrieved first as well, and is a miss.
  labels_other = np.concatenate([np.arange(40), np.arange(40) + 40, np.arange(40)])
  emb_other = np.concatenate([base, base, base + 0.1])
  result = evaluate.retrieval_metrics(emb_other[:40], labels_other[:40], emb_other[40:], labels_other[40:],
                                      ks=(1,), metric=metric)
  assert result["recall@1"] == 0.0


def test_ties_go_to_the_lower_gallery_index():
  query = np.array([[1.0, 0.0]], np.float32)
  gallery = np.array([[0.0, 1.0], [0.0, 1.0], [-1.0, 0.0]], np.float32)  # rows 0 and 1 tie
  first_relevant = evaluate.retrieval_metrics(query, [5], gallery, [5, 6, 7], ks=(1,), metric="euclidean")
  second_relevant = evaluate.retrieval_metrics(query, [5], gallery, [6, 5, 7], ks=(1,), metric="euclidean")
  assert first_relevant["precision@1"] == 1.0
  assert second_relevant["precision@1"] == 0.0


@pytest.mark.parametrize("self_retrieval", [True, False])
def test_many_exact_ties_match_stable_argsort(self_retrieval):
  # Only 3 distinct integer vectors (exact float32 distances), so most neighbours tie and a query often has more
  # than k + 1 duplicates before its own index: the ranking must still follow index order, with only the query's
  # own row excluded.
  rng = np.random.default_rng(13)
  distinct = np.array([[1, 0, 2, 0], [0, 3, 0, 1], [2, 2, 1, 1]], np.float32)
  emb = distinct[rng.integers(0, 3, 90)]
  labels = rng.integers(0, 12, 90)
  args = (emb, labels) if self_retrieval else (emb[:30], labels[:30], emb[30:], labels[30:])
  expected = reference_retrieval(*args, ks=(1, 2, 5), metric="euclidean")
  actual = evaluate.retrieval_metrics(*args, ks=(1, 2, 5), metric="euclidean", chunk_size=16)
  assert_metrics_close(actual, expected)


def test_queries_without_relevant_items_are_left_out():
  rng = np.random.default_rng(4)
  emb = rng.standard_normal((60, 4)).astype(np.float32)
  labels = np.repeat(np.arange(20), 3)
  with_lone = evaluate.retrieval_metrics(np.concatenate([emb, emb[:5] + 9.0]),
                                         np.concatenate([labels, [100, 101, 102, 103, 104]]), ks=(1, 2))
  # The lone queries are left out of every average, but remain gallery items for the others; far away here.
  assert with_lone == pytest.approx(evaluate.retrieval_metrics(emb, labels, ks=(1, 2)), abs=1e-12)
  with pytest.warns(UserWarning, match="R = 0"):
    all_lone = evaluate.retrieval_metrics(emb, np.arange(60), ks=(1,))
  assert all(np.isnan(v) for v in all_lone.values())


def test_chunk_size_invariance_and_one_compilation():
  rng = np.random.default_rng(5)
  labels = labels_with("sop_like", 203, rng)
  emb = jnp.asarray(rng.standard_normal((203, 16)), jnp.float32)
  results = [evaluate.retrieval_metrics(emb, labels, ks=(1, 4), chunk_size=c) for c in (3, 7, 50, 203, 1000)]
  for result in results[1:]:
    assert result == pytest.approx(results[0], abs=1e-12)
  before = evaluate._retrieval_chunk._cache_size()
  evaluate.retrieval_metrics(emb, labels, ks=(1, 4), chunk_size=60)  # 203 = 3·60 + 23: the last chunk overlaps
  assert evaluate._retrieval_chunk._cache_size() == before + 1


def test_bfloat16_embeddings_give_float_metrics():
  rng = np.random.default_rng(6)
  labels = np.repeat(np.arange(10), 5)
  emb = (3.0 * rng.standard_normal((10, 32))[labels] + rng.standard_normal((50, 32))).astype(np.float32)
  expected = evaluate.retrieval_metrics(emb, labels, ks=(1, 2))
  actual = evaluate.retrieval_metrics(jnp.asarray(emb, jnp.bfloat16), labels, ks=(1, 2))
  assert all(isinstance(v, float) for v in actual.values())
  assert_metrics_close(actual, expected, atol=0.05)


def test_string_labels():
  rng = np.random.default_rng(8)
  labels = np.repeat(np.arange(8), 4)
  emb = rng.standard_normal((32, 4)).astype(np.float32)
  names = np.array([f"class_{i}" for i in labels])
  assert evaluate.retrieval_metrics(emb, names) == evaluate.retrieval_metrics(emb, labels)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(query_emb=np.zeros((5,)), query_labels=np.zeros(5)), "2-D"),
    (dict(query_emb=np.zeros((5, 3)), query_labels=np.zeros(4)), "one label per embedding"),
    (dict(query_emb=np.zeros((5, 3)), query_labels=np.zeros(5), ks=(5,)), "exceeds the 4"),
    (dict(query_emb=np.zeros((5, 3)), query_labels=np.zeros(5), gallery_emb=np.zeros((3, 3)),
          gallery_labels=np.zeros(3), ks=(4,)), "exceeds the 3"),
    (dict(query_emb=np.zeros((5, 3)), query_labels=np.zeros(5), gallery_emb=np.zeros((6, 2)),
          gallery_labels=np.zeros(6)), "dimension"),
    (dict(query_emb=np.zeros((5, 3)), query_labels=np.zeros(5), gallery_emb=np.zeros((6, 3))), "without gallery_labels"),
    (dict(query_emb=np.zeros((5, 3)), query_labels=np.zeros(5), gallery_emb=np.zeros((6, 3)),
          gallery_labels=np.zeros(5)), "gallery_labels must be"),
    (dict(query_emb=np.zeros((5, 3)), query_labels=np.zeros(5), metric="manhattan"), "unknown metric"),
    (dict(query_emb=np.zeros((5, 3)), query_labels=np.zeros(5), ks=()), "ks must be"),
    (dict(query_emb=np.zeros((5, 3)), query_labels=np.zeros(5), ks=(0,)), "ks must be"),
    (dict(query_emb=np.zeros((5, 3)), query_labels=np.zeros(5), chunk_size=0), "chunk_size"),
    (dict(query_emb=np.full((5, 3), np.nan, np.float32), query_labels=np.zeros(5)), "NaN"),
    (dict(query_emb=np.zeros((5, 3), np.int32), query_labels=np.zeros(5)), "floating point"),
])
def test_retrieval_rejects_bad_input(kwargs, message):
  with pytest.raises(ValueError, match=message):
    evaluate.retrieval_metrics(**kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# Clustering


def brute_force_pairwise_f1(labels, assignments):
  true_positive = same_cluster = same_class = 0
  for i, j in itertools.combinations(range(len(labels)), 2):
    same_cluster += assignments[i] == assignments[j]
    same_class += labels[i] == labels[j]
    true_positive += assignments[i] == assignments[j] and labels[i] == labels[j]
  precision, recall = true_positive / same_cluster, true_positive / same_class
  return 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("seed", range(5))
def test_cluster_scores_match_sklearn_and_pair_count(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 6, 80)
  assignments = np.where(rng.random(80) < 0.6, labels, rng.integers(0, 8, 80))  # partly right
  scores = evaluate.cluster_scores(labels, assignments)
  assert scores["nmi"] == pytest.approx(sk_metrics.normalized_mutual_info_score(labels, assignments), abs=1e-12)
  assert scores["f1"] == pytest.approx(brute_force_pairwise_f1(labels, assignments), abs=1e-12)
  assert 0.0 < scores["f1"] < 1.0


def test_perfect_clustering_scores_one():
  labels = np.repeat(np.arange(7), 5)
  renamed = (labels * 3 + 11) % 7 + 100  # cluster ids are arbitrary
  assert evaluate.cluster_scores(labels, renamed) == pytest.approx({"nmi": 1.0, "f1": 1.0})
  assert evaluate.cluster_scores(np.arange(9), np.arange(9))["f1"] == 1.0  # all singletons, both sides
  assert evaluate.cluster_scores(labels, np.arange(35))["f1"] == 0.0  # nothing merged: recall 0


def test_clustering_metrics_recover_separated_classes():
  rng = np.random.default_rng(9)
  labels = np.repeat(np.arange(6), 20)
  centres = 10.0 * np.eye(6, 16)
  emb = (centres[labels] + 0.1 * rng.standard_normal((120, 16))).astype(np.float32)
  assert evaluate.clustering_metrics(emb, labels) == pytest.approx({"nmi": 1.0, "f1": 1.0})
  two = evaluate.clustering_metrics(emb, labels, n_clusters=2, seed=1)
  assert two["nmi"] < 1.0 and two["f1"] < 1.0


def test_clustering_rejects_bad_input():
  with pytest.raises(ValueError, match="n_clusters"):
    evaluate.clustering_metrics(np.zeros((4, 2), np.float32), np.arange(4), n_clusters=5)
  with pytest.raises(ValueError, match="one label per embedding"):
    evaluate.clustering_metrics(np.zeros((4, 2), np.float32), np.arange(3))
  with pytest.raises(ValueError, match="assignments"):
    evaluate.cluster_scores(np.arange(4), np.arange(3))


# ----------------------------------------------------------------------------------------------------------------------
# Utilization


@pytest.mark.parametrize("chunk_size", [1, 13, 1000])
def test_utilization_matches_brute_force(chunk_size):
  rng = np.random.default_rng(11)
  query = rng.standard_normal((45, 7)).astype(np.float32)
  train = rng.standard_normal((90, 7)).astype(np.float32)
  expected = ((query[:, None, :].astype(np.float64) - train[None]) ** 2).sum(-1).min(axis=1).mean()
  assert evaluate.utilization(query, train, chunk_size=chunk_size) == pytest.approx(expected, rel=1e-5)


def test_utilization_of_training_points_is_zero():
  rng = np.random.default_rng(12)
  train = rng.standard_normal((64, 32)).astype(np.float32)
  assert evaluate.utilization(train[::2], train) == 0.0


def test_utilization_rejects_bad_input():
  with pytest.raises(ValueError, match="dimension"):
    evaluate.utilization(np.zeros((3, 2), np.float32), np.zeros((3, 4), np.float32))
  with pytest.raises(ValueError, match="chunk_size"):
    evaluate.utilization(np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32), chunk_size=-1)
