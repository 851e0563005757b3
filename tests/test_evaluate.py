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


@pytest.fixture(params=["numpy", "xla"])
def backend(request, monkeypatch):
  """Runs a retrieval test on each backend: `backend="auto"` resolves to the parameter."""
  resolve = evaluate._resolve_backend
  monkeypatch.setattr(evaluate, "_resolve_backend", lambda name: request.param if name == "auto" else resolve(name))
  return request.param

# ----------------------------------------------------------------------------------------------------------------------
# Retrieval


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_self_retrieval_matches_brute_force(distribution, metric, backend):
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
def test_query_gallery_matches_brute_force(distribution, metric, backend):
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
def test_matches_pytorch_metric_learning(metric, self_retrieval, distribution, backend):
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


# PML's other AccuracyCalculator options (issue 18): full MAP, MRR, avg_of_avgs, per class, k, queries in the gallery.

_PML_NAMES = {"precision@1": "precision_at_1", "r_precision": "r_precision", "map@r": "mean_average_precision_at_r",
              "map": "mean_average_precision", "mrr": "mean_reciprocal_rank"}


def pml_accuracy_of(query, query_labels, reference, reference_labels, *, metric, ref_includes_query, **options):
  """PML's AccuracyCalculator on our names (`_PML_NAMES`), brute-force faiss search."""
  if metric == "cosine":
    query, reference = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (query, reference))
    knn = pml_inference.FaissKNN(index_init_fn=faiss.IndexFlatIP)
  else:
    knn = pml_inference.FaissKNN()
  calculator = pml_accuracy.AccuracyCalculator(include=tuple(_PML_NAMES.values()), device=torch.device("cpu"),
                                               knn_func=knn, **options)
  result = calculator.get_accuracy(query, query_labels, reference, reference_labels,
                                   ref_includes_query=ref_includes_query)
  return {ours: result[theirs] for ours, theirs in _PML_NAMES.items()}


def _pml_option_data(distribution, seed=17, n=240):
  rng = np.random.default_rng(seed)
  labels = labels_with(distribution, n, rng)
  emb = rng.standard_normal((n, 6)).astype(np.float32) + rng.standard_normal((labels.max() + 1, 6))[labels]
  return emb, labels


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("layout", ["self", "gallery", "query_subset"])
@pytest.mark.parametrize("distribution", ["sop_like", "with_singletons", "imbalanced"])
@pytest.mark.parametrize("average", ["queries", "avg_of_avgs", "per_class"])
def test_pml_accuracy_calculator_options(metric, layout, distribution, average, backend):
  """Full MAP, MRR, MAP@R, R-precision and P@1 over the whole ranked gallery (PML k=None), per query, class-averaged
  (avg_of_avgs) or per class, for self-retrieval, a separate gallery, and queries that are the gallery's first rows
  (PML ref_includes_query=True; ours by id). Continuous random data: no ties, so faiss ranks as we do."""
  emb, labels = _pml_option_data(distribution)
  options = {"avg_of_avgs": average == "avg_of_avgs", "return_per_class": average == "per_class"}
  ours_kwargs = dict(ks=(1,), metric=metric, chunk_size=64, extra_metrics=("map", "mrr"), **options)
  if layout == "self":
    actual = evaluate.retrieval_metrics(emb, labels, **ours_kwargs)
    expected = pml_accuracy_of(emb, labels, emb, labels, metric=metric, ref_includes_query=True, **options)
  elif layout == "gallery":
    actual = evaluate.retrieval_metrics(emb[:80], labels[:80], emb[80:], labels[80:], **ours_kwargs)
    expected = pml_accuracy_of(emb[:80], labels[:80], emb[80:], labels[80:], metric=metric, ref_includes_query=False,
                               **options)
  else:
    # Ours: the gallery in another order, the queries found by id; PML: the queries must be the first rows.
    order = np.random.default_rng(1).permutation(len(emb))
    actual = evaluate.retrieval_metrics(emb[:70], labels[:70], emb[order], labels[order], query_ids=np.arange(70),
                                        gallery_ids=order, **ours_kwargs)
    expected = pml_accuracy_of(emb[:70], labels[:70], emb, labels, metric=metric, ref_includes_query=True, **options)
  for name, value in expected.items():
    if average == "per_class":  # PML: a list over the sorted labels of the non-lone queries
      assert list(actual[name]) == sorted(actual[name])
      np.testing.assert_allclose(list(actual[name].values()), value, atol=1e-6, err_msg=name)
    else:
      assert actual[name] == pytest.approx(value, abs=1e-6), name
  if average == "queries":
    assert 0.0 < actual["map"] < 1.0 and actual["map@r"] < actual["map"] and actual["mrr"] >= actual["precision@1"]


@pytest.mark.parametrize("self_retrieval", [True, False])
def test_pml_k_truncation(self_retrieval, backend):
  """PML's integer k: every metric reads the top k only; R-based metrics are truncated where R > k (inexact)."""
  emb, labels = _pml_option_data("uniform_few", n=150)  # 5 classes of ~30: R > k = 7 everywhere
  args = (emb, labels) if self_retrieval else (emb[:50], labels[:50], emb[50:], labels[50:])
  with pytest.warns(UserWarning, match="truncated"):
    actual = evaluate.retrieval_metrics(*args, ks=(1,), metric="euclidean", k=7, extra_metrics=("map", "mrr"))
  reference = (emb, labels) if self_retrieval else (emb[50:], labels[50:])
  expected = pml_accuracy_of(*args[:2], *reference, metric="euclidean", ref_includes_query=self_retrieval, k=7)
  for name, value in expected.items():
    assert actual[name] == pytest.approx(value, abs=1e-6), name
  exact = evaluate.retrieval_metrics(*args, ks=(1,), metric="euclidean")
  assert actual["map@r"] < exact["map@r"]  # the truncation is visible, not a rounding


def brute_force_with_self_index(query, query_labels, gallery, gallery_labels, self_index):
  """map@r, map, mrr (Euclidean) from a full stable argsort in float64, the row `self_index[q]` dropped (−1: none)."""
  distance = np.sqrt(((query[:, None].astype(np.float64) - gallery[None].astype(np.float64)) ** 2).sum(-1))
  rows = []
  for q in range(len(query)):
    order = np.argsort(distance[q], kind="stable")
    order = order[order != self_index[q]]
    relevant = gallery_labels[order] == query_labels[q]
    r = relevant.sum()
    if r == 0:
      continue
    precision = np.cumsum(relevant) / np.arange(1, len(relevant) + 1)
    rows.append([(precision[:r] * relevant[:r]).sum() / r, (precision * relevant).sum() / r,
                 1.0 / (np.argmax(relevant) + 1)])
  return dict(zip(["map@r", "map", "mrr"], np.mean(rows, axis=0)))


def test_some_queries_in_the_gallery_some_not(backend):
  """Ids exclude only the queries' own rows: 30 queries in the gallery (anywhere), 20 outside it, full ranking."""
  emb, labels = _pml_option_data("sop_like", n=200)
  gallery, gallery_labels = emb[:150], labels[:150]
  pick = np.random.default_rng(2).choice(150, size=30, replace=False)
  query = np.concatenate([emb[pick], emb[150:170]])
  query_labels = np.concatenate([labels[pick], labels[150:170]])
  query_ids = np.concatenate([pick, -1 - np.arange(20)])  # ids not in the gallery: not excluded
  expected = brute_force_with_self_index(query, query_labels, gallery, gallery_labels,
                                         np.concatenate([pick, np.full(20, -1)]))
  actual = evaluate.retrieval_metrics(query, query_labels, gallery, gallery_labels, ks=(1,), metric="euclidean",
                                      extra_metrics=("map", "mrr"), query_ids=query_ids,
                                      gallery_ids=np.arange(150), chunk_size=16)
  for name, value in expected.items():
    assert actual[name] == pytest.approx(value, abs=1e-6), name


def test_extra_metrics_leave_the_default_metrics_unchanged(backend):
  emb, labels = _pml_option_data("sop_like")
  default = evaluate.retrieval_metrics(emb, labels, ks=(1, 4), chunk_size=50)
  extra = evaluate.retrieval_metrics(emb, labels, ks=(1, 4), chunk_size=50, extra_metrics=("mrr", "map"))
  assert list(extra) == list(default) + ["map", "mrr"]
  # The same per-query sums over longer (whole-gallery) rows: XLA may add the float32 terms in another order, so
  # they agree to float32 rounding of a sum of ≤ 12 terms ≤ 1 (≲ 1e-6), not bit for bit.
  assert {name: extra[name] for name in default} == pytest.approx(default, abs=1e-6)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(extra_metrics=("ndcg",)), "unknown extra_metrics"),
    (dict(avg_of_avgs=True, return_per_class=True), "mutually exclusive"),
    (dict(k=0), "positive integer"),
    (dict(k=2, ks=(4,)), "must lie between"),
    (dict(query_ids=np.arange(10), gallery_ids=np.arange(10)), "need a gallery"),
    (dict(gallery_emb=np.ones((6, 3), np.float32), gallery_labels=np.zeros(6), query_ids=np.arange(10)), "together"),
    (dict(gallery_emb=np.ones((6, 3), np.float32), gallery_labels=np.zeros(6), query_ids=np.arange(10),
          gallery_ids=np.zeros(6)), "unique"),
    (dict(gallery_emb=np.ones((6, 3), np.float32), gallery_labels=np.ones(6), query_ids=np.arange(10),
          gallery_ids=np.arange(6)), "another label"),
    (dict(gallery_emb=np.ones((6, 3), np.float32), gallery_labels=np.zeros(6), query_ids=np.arange(9),
          gallery_ids=np.arange(6)), "one id per query"),
])
def test_pml_options_reject_bad_input(kwargs, message):
  emb = np.random.default_rng(0).standard_normal((10, 3)).astype(np.float32)
  kwargs = {"ks": (1,), **kwargs}
  with pytest.raises(ValueError, match=message):
    evaluate.retrieval_metrics(emb, np.zeros(10), **kwargs)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_duplicate_of_query_is_retrieved(metric, backend):
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


def test_ties_go_to_the_lower_gallery_index(backend):
  query = np.array([[1.0, 0.0]], np.float32)
  gallery = np.array([[0.0, 1.0], [0.0, 1.0], [-1.0, 0.0]], np.float32)  # rows 0 and 1 tie
  first_relevant = evaluate.retrieval_metrics(query, [5], gallery, [5, 6, 7], ks=(1,), metric="euclidean")
  second_relevant = evaluate.retrieval_metrics(query, [5], gallery, [6, 5, 7], ks=(1,), metric="euclidean")
  assert first_relevant["precision@1"] == 1.0
  assert second_relevant["precision@1"] == 0.0


@pytest.mark.parametrize("self_retrieval", [True, False])
def test_many_exact_ties_match_stable_argsort(self_retrieval, backend):
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


def test_queries_without_relevant_items_are_left_out(backend):
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


@pytest.mark.parametrize("backend", ["numpy", "xla"])
def test_chunk_size_invariance_and_one_compilation(backend):
  rng = np.random.default_rng(5)
  labels = labels_with("sop_like", 203, rng)
  emb = jnp.asarray(rng.standard_normal((203, 16)), jnp.float32)
  kwargs = {"ks": (1, 4), "backend": backend}
  # numpy: 3 and 7 (tiles narrower than 8k) take row blocks, 100 the tiled path with its symmetric half.
  results = [evaluate.retrieval_metrics(emb, labels, chunk_size=c, **kwargs) for c in (3, 7, 50, 100, 203, 1000)]
  for result in results[1:]:
    assert result == pytest.approx(results[0], abs=1e-12)
  jitted = evaluate._retrieval_chunk if backend == "xla" else evaluate._neighbour_metrics
  before = jitted._cache_size()
  evaluate.retrieval_metrics(emb, labels, chunk_size=60, **kwargs)  # 203 = 3·60 + 23: the last chunk overlaps
  assert jitted._cache_size() == before + 1


def test_bfloat16_embeddings_give_float_metrics(backend):
  rng = np.random.default_rng(6)
  labels = np.repeat(np.arange(10), 5)
  emb = (3.0 * rng.standard_normal((10, 32))[labels] + rng.standard_normal((50, 32))).astype(np.float32)
  expected = evaluate.retrieval_metrics(emb, labels, ks=(1, 2))
  actual = evaluate.retrieval_metrics(jnp.asarray(emb, jnp.bfloat16), labels, ks=(1, 2))
  assert all(isinstance(v, float) for v in actual.values())
  assert_metrics_close(actual, expected, atol=0.05)


def test_string_labels(backend):
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


@pytest.mark.parametrize("seed", [0, 1])
def test_ami_matches_pml(seed):
  """PML's "AMI" (and "NMI") on the same cluster assignments (its k-means replaced by ours)."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 6, 90)
  emb = rng.standard_normal((90, 4)).astype(np.float32) + 2.0 * rng.standard_normal((6, 4))[labels]
  assignments = rng.integers(0, 6, 90)
  assignments[:60] = labels[:60]  # partly right: AMI strictly between 0 and 1
  calculator = pml_accuracy.AccuracyCalculator(include=("AMI", "NMI"), device=torch.device("cpu"),
                                               kmeans_func=lambda x, n: torch.as_tensor(assignments))
  expected = calculator.get_accuracy(emb, labels)
  actual = evaluate.cluster_scores(labels, assignments, extra_metrics=("ami",))
  assert actual["ami"] == pytest.approx(expected["AMI"], abs=1e-12) and 0.0 < actual["ami"] < 1.0
  assert actual["nmi"] == pytest.approx(expected["NMI"], abs=1e-12)
  assert set(evaluate.clustering_metrics(emb, labels, extra_metrics=("ami",))) == {"nmi", "f1", "ami"}
  with pytest.raises(ValueError, match="unknown extra_metrics"):
    evaluate.cluster_scores(labels, assignments, extra_metrics=("ari",))


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
