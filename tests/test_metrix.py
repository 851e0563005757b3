"""Tests for metriclearn.methods.metrix (Metrix, ICLR 2022) against loops over the triples the official code builds.

Most tests use an *identity* embedder (MLP backbone without layers, identity head kernel), so embeddings are the
normalised inputs and input-, feature- and embedding-space mixing must all give the reference values.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from metriclearn import config_util
from metriclearn import losses
from metriclearn import models
from metriclearn import train
from metriclearn.methods import metrix
from metriclearn.methods import metrix_diagnostics
from metriclearn.methods.metrix import Metrix
from metriclearn.models.embedder import Embedder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Classes with 3, 2, 1, 4, 1 and 1 members: anchors with 0 to 3 positives, and anchors without any.
LABELS = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 5], np.int32)
DIM = 6
MS_KWARGS = dict(alpha=2.0, beta=10.0, base=0.5)
PA_KWARGS = dict(margin=0.1, alpha=8.0)


def make_config(space="embed", loss="contrastive", loss_kwargs=None, batch_size=len(LABELS), **method_kwargs):
  return ml_collections.ConfigDict(dict(
      batch_size=batch_size, sampler=dict(name="random", kwargs={}),
      loss=dict(name=loss, kwargs=dict(loss_kwargs or {})),
      method=dict(name="metrix", kwargs=dict(space=space, **method_kwargs))))


_METHODS = {}


def identity_method(config, num_classes=6):
  """Metrix on the identity embedder; one instance per config, so tests with equal configs share a compilation."""
  key = (config.to_json(), num_classes)
  if key not in _METHODS:
    model = models.create_model("mlp", embedding_dim=DIM, hidden_dims=(), batchnorm=False)
    method = Metrix(config, model, num_classes)
    params, batch_stats, _ = method.init(jax.random.key(0), jnp.zeros((2, DIM)))
    params["head"]["out"]["kernel"] = jnp.eye(DIM)
    _METHODS[key] = method, params, batch_stats
  return _METHODS[key]


def unit_inputs(seed=0, n=len(LABELS)):
  x = np.random.default_rng(seed).normal(size=(n, DIM))
  return jnp.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), jnp.float32)


def metrix_loss(method, params, batch_stats, x, labels, mix_lambda, positive_negative):
  """`(loss, metrics, (d loss / d params, d loss / d x))` of `method.loss`, jitted once per method (λ and the coin
  are traced arguments, so one compilation serves every λ)."""
  if not hasattr(method, "_test_loss_fn"):
    def loss_fn(params, x, labels, mix_lambda, positive_negative):
      loss, (_, metrics) = method.loss(params, batch_stats, {"image": x, "label": labels}, jax.random.key(1),
                                       mix_lambda=mix_lambda, use_positive_negative=positive_negative)
      return loss, metrics

    method._test_loss_fn = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))
  (loss, metrics), grads = method._test_loss_fn(params, x, jnp.asarray(labels), jnp.float32(mix_lambda),
                                                jnp.asarray(positive_negative))
  return loss, metrics, grads


# ----------------------------------------------------------------------------------------------------------------
# References written from the spec: the official code's triple lists and its formulas (metrix.md c.5, c.6).


def official_triples(labels, branch, first_positive_only, hardest_negative_of=None):
  """(anchor, mix source weighted λ, mix source weighted 1−λ) in the order the official code iterates them."""
  triples = []
  for a in range(len(labels)):
    positives = [p for p in range(len(labels)) if labels[p] == labels[a] and p != a]
    negatives = [n for n in range(len(labels)) if labels[n] != labels[a]]
    if hardest_negative_of is not None:
      negatives = [hardest_negative_of[a]]
    if branch == "positive_negative":
      for p in positives:
        for n in negatives:
          triples.append((a, positives[0] if first_positive_only else p, n))
    elif not positives:
      triples.extend((a, a, n) for n in negatives)
  return np.asarray(triples).reshape(-1, 3)


def normalize(v):
  return v / jnp.linalg.norm(v, axis=-1, keepdims=True)


def mixed_triple_embeddings(e, triples, lam, sources=None):
  """Clean anchors and re-normalised mixes of `sources` (default `e`; the identity model's raw inputs for input and
  feature mixing, which differ from mixing `e` in their gradients though not in their values at unit inputs)."""
  sources = e if sources is None else sources
  return e[triples[:, 0]], normalize(lam * sources[triples[:, 1]] + (1 - lam) * sources[triples[:, 2]])


def mean_of_positive_terms(terms):
  count = jnp.sum(terms > 0)
  return jnp.where(count > 0, jnp.sum(terms) / jnp.maximum(count, 1), 0.0)


def official_contrastive(e, labels, triples, lam, neg_margin=0.5, sources=None):
  """c.6: L_clean and L_mix with Euclidean distances of normalised embeddings, averages of non-zero terms."""
  i, j = np.nonzero(~np.eye(len(labels), dtype=bool))
  d = jnp.linalg.norm(e[i] - e[j], axis=1)
  same = labels[i] == labels[j]
  clean = (mean_of_positive_terms(jnp.where(same, d, 0.0))
           + mean_of_positive_terms(jnp.where(same, 0.0, jnp.maximum(neg_margin - d, 0.0))))
  anchors, mixed = mixed_triple_embeddings(e, triples, lam, sources)
  d_mix = jnp.sqrt(jnp.sum((anchors - mixed) ** 2, axis=1) + 1e-30)
  mix = (mean_of_positive_terms(lam * d_mix) + mean_of_positive_terms((1 - lam) * jnp.maximum(neg_margin - d_mix, 0)))
  return clean, mix


def loop_multi_similarity(e, triples, lam, alpha, beta, base):
  """ℓ̃_MS(a) of c.3 / (g)7 for each anchor with mixed examples, averaged over those anchors."""
  anchors, mixed = mixed_triple_embeddings(e, triples, lam)
  s = jnp.sum(anchors * mixed, axis=1)
  per_anchor = []
  for a in np.unique(triples[:, 0]):
    k = triples[:, 0] == a
    per_anchor.append(jnp.log1p(jnp.sum(lam * jnp.exp(-alpha * (s[k] - base)))) / alpha
                      + jnp.log1p(jnp.sum((1 - lam) * jnp.exp(beta * (s[k] - base)))) / beta)
  return jnp.mean(jnp.stack(per_anchor))


def loop_proxy_anchor(e, labels, proxies, pairs, lam, margin, alpha):
  """ℓ̃_PA: proxies as anchors, mixed examples mix_λ(x, n) labelled mix_λ(1[y_x=c], 1[y_n=c]) (c.2–c.3)."""
  mixed = normalize(lam * e[pairs[:, 0]] + (1 - lam) * e[pairs[:, 1]])
  p = normalize(proxies)
  pos, neg, with_positive = 0.0, 0.0, 0
  for c in range(proxies.shape[0]):
    y = lam * (labels[pairs[:, 0]] == c) + (1 - lam) * (labels[pairs[:, 1]] == c)
    s = mixed @ p[c]
    if np.any(y > 0):
      pos += jnp.log1p(jnp.sum(y * jnp.exp(-alpha * (s - margin))))
      with_positive += 1
    neg += jnp.log1p(jnp.sum((1 - y) * jnp.exp(alpha * (s + margin))))
  return pos / with_positive + neg / proxies.shape[0]


# ----------------------------------------------------------------------------------------------------------------
# The mixed losses equal the loops over the official triples, in every space.


# (On the identity model feature mixing is input mixing; the CNN test below covers feature maps.)
@pytest.mark.parametrize("space,branch,first_positive_only", [
    ("embed", "positive_negative", True), ("embed", "anchor_negative", True), ("input", "positive_negative", True),
    ("feature", "anchor_negative", False)])
def test_contrastive_equals_official_formula_c6(space, branch, first_positive_only):
  config = make_config(space, first_positive_only=first_positive_only, negatives_per_anchor="all")
  method, params, batch_stats = identity_method(config)
  x, lam = unit_inputs(), 0.37
  triples = official_triples(LABELS, branch, first_positive_only)
  positive_negative = branch == "positive_negative"

  total, metrics, (_, ours) = metrix_loss(method, params, batch_stats, x, LABELS, lam, positive_negative)

  def official_total(x):
    clean, mix = official_contrastive(normalize(x), LABELS, triples, lam, sources=None if space == "embed" else x)
    return clean + 0.4 * mix, mix

  (expected_total, mix), theirs = jax.jit(jax.value_and_grad(official_total, has_aux=True))(x)
  np.testing.assert_allclose(metrics["mixed_loss"], mix, rtol=2e-5)
  np.testing.assert_allclose(total, expected_total, rtol=2e-5)
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_input_space_default_mixes_every_positive_with_the_hardest_negative():
  method, params, batch_stats = identity_method(make_config("input"))
  x, lam = unit_inputs(1), 0.8
  d = np.linalg.norm(np.asarray(x)[:, None] - np.asarray(x)[None], axis=-1)
  hardest = np.where(LABELS[:, None] != LABELS[None, :], d, np.inf).argmin(axis=1)
  triples = official_triples(LABELS, "positive_negative", False, hardest_negative_of=hardest)
  _, metrics, _ = metrix_loss(method, params, batch_stats, x, LABELS, lam, True)
  expected = jax.jit(lambda x: official_contrastive(x, LABELS, triples, lam)[1])(x)
  np.testing.assert_allclose(metrics["mixed_loss"], expected, rtol=2e-5)
  assert int(metrics["mixed_pairs"]) == len(triples)


def released_input_triples(labels, x, branch):
  """The released input code's triples (`mixup/utils.py`, c.9), as it runs: the rank of the anchor's hardest negative
  within its own negatives indexes the batch-wide negative-pair list (`neg[indices]`, not `neg[idxs][indices]`)."""
  d = np.linalg.norm(x[:, None] - x[None], axis=-1)
  a2, neg = np.nonzero(labels[:, None] != labels[None, :])  # get_all_pairs_indices: row by row
  with_positive = [a for a in range(len(labels)) if np.sum(labels == labels[a]) > 1]
  if branch == "anchor_negative":  # the code drops the rows of anchors with a positive from the list first
    keep = ~np.isin(a2, with_positive)
    a2, neg = a2[keep], neg[keep]
  triples = []
  for a in range(len(labels)):
    positives = [p for p in range(len(labels)) if labels[p] == labels[a] and p != a]
    if (branch == "positive_negative") != bool(positives):
      continue
    idxs = np.nonzero(a2 == a)[0]
    indices = np.argsort(d[a2[idxs], neg[idxs]], kind="stable")
    wrong = neg[indices][0]
    triples.extend((a, p, wrong) for p in positives) if positives else triples.append((a, a, wrong))
  return np.asarray(triples)


@pytest.mark.parametrize("branch", ["positive_negative", "anchor_negative"])
def test_released_negative_index_reproduces_the_released_input_code(branch):
  method, params, batch_stats = identity_method(make_config("input", released_negative_index=True))
  x, lam = unit_inputs(3), 0.3
  triples = released_input_triples(LABELS, np.asarray(x), branch)
  d = np.linalg.norm(np.asarray(x)[:, None] - np.asarray(x)[None], axis=-1)
  hardest = np.where(LABELS[:, None] != LABELS[None, :], d, np.inf).argmin(axis=1)
  assert np.any(triples[:, 2] != hardest[triples[:, 0]])  # the quirk is exercised: not the true hardest negatives
  if branch == "positive_negative":  # and some "negatives" share the anchor's class (or are the anchor)
    assert np.any(LABELS[triples[:, 0]] == LABELS[triples[:, 2]])
  _, metrics, _ = metrix_loss(method, params, batch_stats, x, LABELS, lam, branch == "positive_negative")
  # The code's loss weights λ / 1−λ whatever the second source's class (c.6), which the formula here does too.
  expected = jax.jit(lambda x: official_contrastive(x, LABELS, triples, lam)[1])(x)
  np.testing.assert_allclose(metrics["mixed_loss"], expected, rtol=2e-5)
  assert int(metrics["mixed_pairs"]) == len(triples)


def test_released_negative_index_needs_the_hardest_negatives():
  with pytest.raises(ValueError, match="negatives_per_anchor"):
    Metrix(make_config("embed", negatives_per_anchor="all", released_negative_index=True),
           models.create_model("mlp", embedding_dim=DIM, hidden_dims=(), batchnorm=False), 6)


@pytest.mark.parametrize("space,branch", [("embed", "positive_negative"), ("feature", "anchor_negative")])
def test_multi_similarity_equals_loop(space, branch):
  config = make_config(space, "multi_similarity", MS_KWARGS, first_positive_only=False)
  method, params, batch_stats = identity_method(config)
  x, lam = unit_inputs(2), 0.55
  triples = official_triples(LABELS, branch, False)
  _, metrics, _ = metrix_loss(method, params, batch_stats, x, LABELS, lam, branch == "positive_negative")
  expected = jax.jit(lambda x: loop_multi_similarity(x, triples, lam, **MS_KWARGS))(x)
  np.testing.assert_allclose(metrics["mixed_loss"], expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["clean_loss"], losses.multi_similarity(x, jnp.asarray(LABELS), **MS_KWARGS),
                             rtol=1e-6)


@pytest.mark.parametrize("space,branch", [("embed", "positive_negative"), ("feature", "anchor_negative")])
def test_proxy_anchor_equals_loop(space, branch):
  config = make_config(space, "proxy_anchor", PA_KWARGS, negatives_per_anchor="all")
  method, params, batch_stats = identity_method(config, num_classes=6)
  x, lam = unit_inputs(3), 0.3
  has_positive = np.array([np.sum(LABELS == label) > 1 for label in LABELS])
  rows = has_positive if branch == "positive_negative" else ~has_positive
  pairs = np.array([(i, n) for i in np.flatnonzero(rows) for n in range(len(LABELS)) if LABELS[n] != LABELS[i]])
  _, metrics, _ = metrix_loss(method, params, batch_stats, x, LABELS, lam, branch == "positive_negative")
  expected = jax.jit(lambda x, p: loop_proxy_anchor(x, LABELS, p, pairs, lam, **PA_KWARGS))(x, params["loss"]["proxies"])
  np.testing.assert_allclose(metrics["mixed_loss"], expected, rtol=1e-5)


def test_mixed_multi_similarity_averages_over_the_anchors_with_mixed_examples():
  rng = np.random.default_rng(10)
  s, y = jnp.asarray(rng.uniform(-1, 1, (4, 5)), jnp.float32), jnp.full((4, 5), 0.3)
  valid = jnp.asarray(rng.random((4, 5)) < 0.7).at[2].set(False)  # anchor 2 has no mixed example
  kept = np.array([0, 1, 3])
  ours = metrix.mixed_loss("multi_similarity", s, y, valid, **MS_KWARGS)
  np.testing.assert_allclose(ours, losses.multi_similarity_from_matrix(s[kept], y[kept], valid[kept], **MS_KWARGS),
                             rtol=1e-6)
  over_all = metrix.mixed_loss("multi_similarity", s, y, valid, mean_over_mixed_anchors=False, **MS_KWARGS)
  np.testing.assert_allclose(over_all, ours * 3 / 4, rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Embedding space: the Gram route equals explicit mixing; limits; no NaN at d = 0.


def test_gram_similarities_equal_explicit_mixing_and_renormalisation():
  rng = np.random.default_rng(4)
  e = normalize(jnp.asarray(rng.normal(size=(9, 5)), jnp.float32))
  first, second = jnp.asarray(rng.integers(0, 9, (9, 3))), jnp.asarray(rng.integers(0, 9, (9, 4)))
  for lam in (0.0, 0.21, 0.5, 1.0):
    ours = metrix.mixed_cosine_from_gram(e @ e.T, first, second, jnp.float32(lam))
    explicit = normalize(lam * e[first][:, :, None] + (1 - lam) * e[second][:, None, :])  # [R, K, T, d]
    np.testing.assert_allclose(ours, jnp.einsum("rd,rktd->rkt", e, explicit), atol=2e-6)
    norms = jnp.linalg.norm(lam * e[first][:, :, None] + (1 - lam) * e[second][:, None, :], axis=-1)
    np.testing.assert_allclose(metrix.mixed_norm_from_gram(e @ e.T, first, second, jnp.float32(lam)), norms,
                               atol=2e-6)


def test_lambda_limits_reduce_to_clean_similarities():
  """λ = 1: every mix is its positive (label 1); λ = 0: its negative (label 0). Checked on the clean cosines."""
  config = make_config("embed", "multi_similarity", MS_KWARGS, first_positive_only=False)
  method, params, batch_stats = identity_method(config)
  x = unit_inputs(5)
  s = np.asarray(x @ x.T, np.float64)
  same = LABELS[:, None] == LABELS[None, :]
  positive, negative = same & ~np.eye(len(LABELS), dtype=bool), ~same
  anchors = positive.any(axis=1)
  alpha, beta, base = MS_KWARGS["alpha"], MS_KWARGS["beta"], MS_KWARGS["base"]
  # λ = 1: each positive p appears once per negative of a; λ = 0: each negative once per positive.
  at_one = np.log1p(negative.sum(1) * np.sum(positive * np.exp(-alpha * (s - base)), axis=1)) / alpha
  at_zero = np.log1p(positive.sum(1) * np.sum(negative * np.exp(beta * (s - base)), axis=1)) / beta
  for lam, expected in ((1.0, at_one[anchors].mean()), (0.0, at_zero[anchors].mean())):
    _, metrics, _ = metrix_loss(method, params, batch_stats, x, LABELS, lam, True)
    np.testing.assert_allclose(metrics["mixed_loss"], expected, rtol=1e-5)
    _, near, _ = metrix_loss(method, params, batch_stats, x, LABELS, abs(lam - 1e-6), True)
    np.testing.assert_allclose(near["mixed_loss"], expected, rtol=1e-2)  # continuous at the ends


@pytest.mark.parametrize("space,first_positive_only", [("embed", True), ("input", True), ("feature", False)])
def test_anchor_negative_at_lambda_one_has_no_nan(space, first_positive_only):
  """λ = 1 makes mix_λ(a, n) = a: distance 0, where an unguarded sqrt or norm has a NaN gradient (unsquared
  contrastive, the loss that takes the square root; the configs of the c.6 test, so the compilations are shared)."""
  config = make_config(space, first_positive_only=first_positive_only, negatives_per_anchor="all")
  method, params, batch_stats = identity_method(config)
  x = unit_inputs(6)
  value, metrics, grads = metrix_loss(method, params, batch_stats, x, LABELS, 1.0, False)
  assert np.isfinite(value)
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(grads))
  assert np.isfinite(metrics["mixed_loss"]) and int(metrics["mixed_pairs"]) > 0


# ----------------------------------------------------------------------------------------------------------------
# Feature space on a CNN: one backbone pass + mixed maps equals the official second pass.


# pool_before_mixing: False mixes the maps; None mixes the GAP-pooled features (exact since GAP is linear).
@pytest.mark.parametrize("freeze_bn,pool_before_mixing", [(True, False), (False, None)])
def test_feature_mixing_equals_separate_forward_of_the_mixed_maps(freeze_bn, pool_before_mixing):
  model = models.create_model("small_cnn", embedding_dim=8, freeze_bn=freeze_bn, widths=(4, 8))
  config = make_config("feature", first_positive_only=True, pool_before_mixing=pool_before_mixing)
  method = Metrix(config, model, 6)
  images = jax.random.normal(jax.random.key(7), (len(LABELS), 12, 12, 1))
  params, batch_stats, _ = method.init(jax.random.key(8), images[:2])
  batch_stats = jax.tree.map(lambda v: v + 0.3, batch_stats)  # running statistics that differ from the batch's
  lam = 0.65
  triples = official_triples(LABELS, "positive_negative", True)

  def ours(params):
    loss, (new_stats, metrics) = method.loss(params, batch_stats, {"image": images, "label": jnp.asarray(LABELS)},
                                             jax.random.key(0), mix_lambda=lam, use_positive_negative=True)
    return loss, (new_stats, metrics)

  def reference(params):
    variables = {"params": params, "batch_stats": batch_stats}
    embeddings, _ = model.apply(variables, images, train=True, mutable=["batch_stats"])
    # The official code: a second backbone pass over the whole batch, anchors re-embedded, source maps mixed.
    maps, _ = model.apply(variables, images, train=True, mutable=["batch_stats"], method=Embedder.feature_maps)
    head = lambda m: model.apply(variables, m, train=True, mutable=["batch_stats"],
                                 method=Embedder.embed_from_feature_maps)[0]
    anchors = head(maps[triples[:, 0]])
    mixed = head(lam * maps[triples[:, 1]] + (1 - lam) * maps[triples[:, 2]])
    d = jnp.sqrt(jnp.sum((anchors - mixed) ** 2, axis=1))
    mix = mean_of_positive_terms(lam * d) + mean_of_positive_terms((1 - lam) * jnp.maximum(0.5 - d, 0))
    return losses.contrastive(embeddings, jnp.asarray(LABELS)) + 0.4 * mix

  (value, (new_stats, _)), grads = jax.jit(jax.value_and_grad(ours, has_aux=True))(params)
  expected_value, expected_grads = jax.jit(jax.value_and_grad(reference))(params)
  np.testing.assert_allclose(value, expected_value, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6), grads, expected_grads)
  stats_changed = any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(new_stats), jax.tree.leaves(batch_stats)))
  assert stats_changed == (not freeze_bn)


# ----------------------------------------------------------------------------------------------------------------
# Branches, randomness, options.


def test_active_rows_coin_both_and_fallback():
  has_positive = jnp.array([True, True, False])
  np.testing.assert_array_equal(metrix.active_rows(has_positive, jnp.array(True)), [True, True, False])
  np.testing.assert_array_equal(metrix.active_rows(has_positive, jnp.array(False)), [False, False, True])
  np.testing.assert_array_equal(metrix.active_rows(has_positive, None), [True, True, True])
  all_positive = jnp.array([True, True])  # m-per-class batches: the anchor–negative branch is empty
  np.testing.assert_array_equal(metrix.active_rows(all_positive, jnp.array(False)), [True, True])
  np.testing.assert_array_equal(metrix.active_rows(all_positive, jnp.array(False), fallback=False), [False, False])


def test_train_step_draws_one_lambda_per_step_from_the_folded_key_and_compiles_once():
  import optax  # pylint: disable=import-outside-toplevel

  from metriclearn.state import TrainState  # pylint: disable=import-outside-toplevel

  method, params, batch_stats = identity_method(make_config("embed", branches="both"))
  tx = optax.adam(1e-3)
  rng = jax.random.key(3)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                     opt_state=tx.init(params), rng=rng, method_state={})
  step = jax.jit(lambda s, b: method.train_step(s, b, tx))
  batch = {"image": unit_inputs(7), "label": jnp.asarray(LABELS)}
  drawn = []
  for i in range(2):
    state, metrics = step(state, batch)
    expected = jax.jit(lambda k: jax.random.beta(jax.random.split(k)[0], 2.0, 2.0))(jax.random.fold_in(rng, i))
    np.testing.assert_allclose(metrics["mix_lambda"], expected)
    drawn.append(float(metrics["mix_lambda"]))
    assert 0 < drawn[-1] < 1 and np.isfinite(metrics["loss"])
  assert drawn[0] != drawn[1]
  assert step._cache_size() == 1  # pylint: disable=protected-access


def test_options_are_validated():
  model = models.create_model("mlp", embedding_dim=DIM, hidden_dims=(), batchnorm=False)
  with pytest.raises(ValueError, match="accepted: .*space"):
    Metrix(make_config(mixup_strength=0.4), model, 6)
  with pytest.raises(ValueError, match="unknown Metrix space"):
    Metrix(make_config(space="pixels"), model, 6)
  with pytest.raises(ValueError, match="supports config.loss.name"):
    Metrix(make_config(loss="triplet"), model, 6)
  with pytest.raises(ValueError, match="negatives_per_anchor"):
    Metrix(make_config(negatives_per_anchor=0), model, 6)
  max_pooled = models.create_model("mlp", embedding_dim=DIM, hidden_dims=(), batchnorm=False, pooling="gap+gmp")
  with pytest.raises(ValueError, match="pool_before_mixing"):
    Metrix(make_config("feature", pool_before_mixing=True), max_pooled, 6)
  config = make_config()
  config.sampler = dict(name="m_per_class", kwargs=dict(m=5))
  assert Metrix(config, model, 6).max_positives == 4


# ----------------------------------------------------------------------------------------------------------------
# Positivity diagnostic (c.7).


def test_positivity_threshold_and_single_term_curve_match_exactly(tmp_path):
  np.testing.assert_allclose(metrix_diagnostics.positivity_threshold(0.5, alpha=2, beta=50, base=0.5), 0.5)
  np.testing.assert_allclose(metrix_diagnostics.positivity_threshold(0.8, alpha=2, beta=8, base=0.1),
                             0.1 + np.log(4.0) / 10)
  # Labels (0, 0, 1): anchors 0 and 1 each have exactly one mixed term, where c.7's condition is exact.
  rng = np.random.default_rng(9)
  lambdas = np.linspace(0.0, 1.0, 9)
  fractions = set()
  for _ in range(4):
    curve = metrix_diagnostics.positivity_curve(rng.normal(size=(3, 4)), np.array([0, 0, 1]), lambdas, alpha=2.0,
                                                beta=4.0, base=0.2)
    assert curve["empirical"][0] == 0.0 and curve["empirical"][-1] == 1.0
    np.testing.assert_allclose(curve["empirical"], curve["theoretical"])
    fractions.update(curve["empirical"][1:-1])
  assert len(fractions) > 1  # the threshold is crossed: not a trivially constant curve
  path = metrix_diagnostics.plot_positivity(curve, str(tmp_path / "positivity.png"))
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------------------------
# The glyphs recipe end to end.


def load_glyphs_metrix_config(arg):
  return config_util.load_config(os.path.join(REPO, "configs", "glyphs_metrix.py"), arg)


def test_config_arguments():
  assert load_glyphs_metrix_config(None).method.kwargs.space == "embed"
  assert load_glyphs_metrix_config("input,smoke").method.kwargs.space == "input"
  assert load_glyphs_metrix_config("feature").eval.utilization
  with pytest.raises(ValueError, match="unknown config argument"):
    load_glyphs_metrix_config("pixels")


@pytest.mark.slow
def test_smoke_run_writes_utilization(tmp_path):
  config = load_glyphs_metrix_config("feature,smoke")
  config.dataset.data_dir = str(tmp_path / "data")
  config.dataset.kwargs = dict(images_per_class=5, max_classes=40)
  config.eval.clustering = config.eval.baselines = config.eval.plots = False
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert np.isfinite(results["final_loss"]) and results["utilization"] > 0
  with open(tmp_path / "run" / "results.json") as f:
    assert json.load(f)["utilization"] == results["utilization"]
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert any("test/utilization" in r for r in records) and any("mixed_loss" in r for r in records)


def test_hardest_negatives_are_ranked_on_unit_embeddings():
  """With an unnormalised model the T hardest negatives are ranked by the distance of the unit embeddings the losses
  and the mixing use, so the loss equals that of the normalising model on the same inputs."""
  rng = np.random.default_rng(3)
  x = unit_inputs(3) * jnp.asarray(rng.uniform(0.2, 5.0, size=(len(LABELS), 1)), jnp.float32)
  unit = np.asarray(x) / np.linalg.norm(np.asarray(x), axis=1, keepdims=True)
  negative = LABELS[:, None] != LABELS[None, :]

  def hardest(v):
    return np.where(negative, np.linalg.norm(v[:, None] - v[None], axis=-1), np.inf).argmin(axis=1)

  assert np.any(hardest(np.asarray(x)) != hardest(unit))  # raw distances would pick other negatives here
  losses = []
  for normalize in (True, False):
    config = make_config("embed", "multi_similarity", MS_KWARGS, negatives_per_anchor="1", first_positive_only=False)
    model = models.create_model("mlp", embedding_dim=DIM, hidden_dims=(), batchnorm=False, normalize=normalize)
    method = Metrix(config, model, 6)
    params, batch_stats, _ = method.init(jax.random.key(0), jnp.zeros((2, DIM)))
    params["head"]["out"]["kernel"] = jnp.eye(DIM)
    loss, (_, metrics) = method.loss(params, batch_stats, {"image": x, "label": jnp.asarray(LABELS)},
                                     jax.random.key(1), mix_lambda=0.7, use_positive_negative=True)
    losses.append((float(loss), float(metrics["mixed_loss"])))
  # Same unit vectors up to one rounding of the normalisation: float32 agreement to a few ulps of the O(1) loss.
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# The two further pair losses of c.1's form (circle, SNR contrastive) and the refusal of the others.

CIRCLE_KWARGS = dict(m=0.25, gamma=8.0)
SNR_KWARGS = dict(pos_margin=0.0, neg_margin=2.5)  # SNR distances of random 6-d unit rows lie around 2


def loop_circle(e, triples, lam, m, gamma):
  """ℓ̃_circle(a) = softplus(log Σ_v λ e^{−γα_p(s−(1−m))} + log Σ_v (1−λ) e^{γα_n(s−m)}), α fixed, mean over anchors."""
  anchors, mixed = mixed_triple_embeddings(e, triples, lam)
  s = jnp.sum(anchors * mixed, axis=1)
  fixed = jax.lax.stop_gradient(s)
  per_anchor = []
  for a in np.unique(triples[:, 0]):
    k = triples[:, 0] == a
    pos = jax.nn.logsumexp(-gamma * jax.nn.relu(1 + m - fixed[k]) * (s[k] - (1 - m)), b=lam)
    neg = jax.nn.logsumexp(gamma * jax.nn.relu(fixed[k] + m) * (s[k] - m), b=1 - lam)
    per_anchor.append(jax.nn.softplus(pos + neg))
  return jnp.mean(jnp.stack(per_anchor))


def loop_snr_contrastive(e, triples, lam, pos_margin, neg_margin, sources=None):
  """c.6's mixed contrastive loss on SNR distances var(v − a)/var(a), each triple's distance computed on its own."""
  anchors, mixed = mixed_triple_embeddings(e, triples, lam, sources)
  centred_a = anchors - jnp.mean(anchors, axis=1, keepdims=True)
  centred_v = mixed - jnp.mean(mixed, axis=1, keepdims=True)
  d = jnp.sum((centred_v - centred_a) ** 2, axis=1) / jnp.sum(centred_a ** 2, axis=1)
  return (mean_of_positive_terms(lam * jnp.maximum(d - pos_margin, 0.0))
          + mean_of_positive_terms((1 - lam) * jnp.maximum(neg_margin - d, 0.0)))


@pytest.mark.parametrize("space,branch", [("embed", "positive_negative"), ("feature", "anchor_negative")])
def test_circle_equals_loop(space, branch):
  config = make_config(space, "circle", CIRCLE_KWARGS, first_positive_only=False)
  method, params, batch_stats = identity_method(config)
  x, lam = unit_inputs(4), 0.65
  triples = official_triples(LABELS, branch, False)
  _, metrics, _ = metrix_loss(method, params, batch_stats, x, LABELS, lam, branch == "positive_negative")
  expected = jax.jit(lambda x: loop_circle(x, triples, lam, **CIRCLE_KWARGS))(x)
  # Logits up to γ·(1 + m)·2 ≈ 20 in float32 log-sum-exps: agreement ~1e-6 relative.
  np.testing.assert_allclose(metrics["mixed_loss"], expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["clean_loss"], losses.LOSSES["circle"](x, jnp.asarray(LABELS), **CIRCLE_KWARGS),
                             rtol=1e-6)


@pytest.mark.parametrize("space,branch", [("embed", "positive_negative"), ("embed", "anchor_negative"),
                                          ("feature", "positive_negative")])
def test_snr_contrastive_equals_loop_with_gradients(space, branch):
  config = make_config(space, "snr_contrastive", SNR_KWARGS, first_positive_only=False, negatives_per_anchor="all")
  method, params, batch_stats = identity_method(config)
  x, lam = unit_inputs(5), 0.45
  triples = official_triples(LABELS, branch, False)
  total, metrics, (_, ours) = metrix_loss(method, params, batch_stats, x, LABELS, lam, branch == "positive_negative")

  def expected_total(x):
    mix = loop_snr_contrastive(normalize(x), triples, lam, sources=None if space == "embed" else x, **SNR_KWARGS)
    return losses.LOSSES["snr_contrastive"](x, jnp.asarray(LABELS), **SNR_KWARGS) + 0.4 * mix, mix

  (expected, mix), theirs = jax.jit(jax.value_and_grad(expected_total, has_aux=True))(x)
  assert metrics["mixed_loss"] > 0
  # The Gram route (embed) expands ‖c_v − c_a‖² into three inner products: ~1e-6 absolute on distances of ~2.
  np.testing.assert_allclose(metrics["mixed_loss"], mix, rtol=1e-5)
  np.testing.assert_allclose(total, expected, rtol=1e-5)
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_mixed_snr_from_gram_and_from_embeddings_equal_pairwise_snr():
  e = unit_inputs(6)
  rng = np.random.default_rng(6)
  first, second = (jnp.asarray(rng.integers(0, len(LABELS), (len(LABELS), n))) for n in (2, 3))
  lam = 0.3
  mixed = normalize(lam * e[first][:, :, None] + (1 - lam) * e[second][:, None, :])  # [B, 2, 3, D]
  expected = jnp.stack([losses.distances.pairwise_snr(e[r:r + 1], mixed[r].reshape(-1, DIM)).reshape(2, 3)
                        for r in range(len(LABELS))])
  # Distances of order 1 from float32 inner products: ~1e-6 absolute.
  np.testing.assert_allclose(metrix.mixed_snr(e, mixed), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(metrix.mixed_snr_from_gram(e, first, second, lam), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("loss, reason", [("fastap", "AP of their ranking"), ("ntxent", "divides the shared label"),
                                          ("margin", "λ\\(1 − λ\\)"), ("arcface", "classification mixup")])
def test_unsupported_losses_are_refused_with_the_reason(loss, reason):
  model = models.create_model("mlp", embedding_dim=DIM, hidden_dims=(), batchnorm=False)
  with pytest.raises(ValueError, match=f"supports config.loss.name in .*circle.*{reason}"):
    Metrix(make_config(loss=loss), model, 6)


def test_mixed_contrastive_refuses_a_cosine_distance_and_honours_squared_euclidean():
  similarity = jnp.array([[0.5, -0.2], [0.1, 0.9]], jnp.float32)
  y = jnp.array([[1.0, 0.0], [0.3, 1.0]], jnp.float32)
  valid = jnp.ones((2, 2), jnp.float32)
  with pytest.raises(ValueError, match="distance='cosine' is not supported"):
    metrix.mixed_loss("contrastive", similarity, y, valid, distance="cosine")
  by_name = metrix.mixed_loss("contrastive", similarity, y, valid, distance="squared_euclidean")
  by_flag = metrix.mixed_loss("contrastive", similarity, y, valid, squared=True)
  plain = metrix.mixed_loss("contrastive", similarity, y, valid)
  np.testing.assert_allclose(by_name, by_flag, rtol=1e-6)
  assert abs(float(by_name) - float(plain)) > 1e-4  # squared distances give another loss
