"""Tests for metriclearn.models: stage shapes, pooling, the partial entry points, frozen BatchNorm, the registry."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metriclearn import distances
from metriclearn.models import MODELS, Embedder, create_model, pool

IMAGE_SHAPE = (32, 32, 1)


def _images(batch: int, seed: int = 0) -> jax.Array:
  return jax.random.normal(jax.random.key(seed), (batch, *IMAGE_SHAPE))


def _init(model: Embedder, x: jax.Array, seed: int = 1) -> dict:
  return model.init(jax.random.key(seed), x)


def _perturb_batch_stats(variables: dict, seed: int = 2) -> dict:
  """Running statistics away from their init (0, 1), so that using them differs visibly from batch statistics."""
  keys = iter(jax.random.split(jax.random.key(seed), 100))
  stats = jax.tree_util.tree_map_with_path(
      lambda path, v: (0.3 * jax.random.normal(next(keys), v.shape) if path[-1].key == "mean"
                       else jnp.exp(0.3 * jax.random.normal(next(keys), v.shape))), variables["batch_stats"])
  return {**variables, "batch_stats": stats}


def test_small_cnn_stage_shapes_and_unit_norm():
  model = create_model("small_cnn", embedding_dim=48)
  x = _images(6)
  variables = _init(model, x)
  out = model.apply(variables, x, return_intermediates=True)
  assert out["feature_maps"].shape == (6, 4, 4, 128)
  assert out["features"].shape == (6, 128)
  assert out["embeddings"].shape == (6, 48)
  np.testing.assert_allclose(jnp.linalg.norm(out["embeddings"], axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(model.apply(variables, x), out["embeddings"])
  assert set(variables) == {"params", "batch_stats"}
  assert set(variables["params"]) == {"backbone", "head"}


def test_stem_stride_one_keeps_more_resolution():
  model = create_model("small_cnn", embedding_dim=8, stem_stride=1, widths=(8, 16))
  x = _images(2)
  maps = model.apply(_init(model, x), x, return_intermediates=True)["feature_maps"]
  assert maps.shape == (2, 16, 16, 16)


def test_normalize_false_gives_raw_head_output():
  model = create_model("small_cnn", embedding_dim=16, normalize=False)
  x = _images(4)
  variables = _init(model, x)
  out = model.apply(variables, x, return_intermediates=True)
  head = variables["params"]["head"]["out"]
  np.testing.assert_allclose(out["embeddings"], out["features"] @ head["kernel"] + head["bias"], rtol=1e-5, atol=1e-6)
  assert not np.allclose(jnp.linalg.norm(out["embeddings"], axis=-1), 1.0)


@pytest.mark.parametrize("pooling", ["gap", "gmp", "gap+gmp"])
def test_pooling_variants(pooling):
  model = create_model("small_cnn", embedding_dim=8, pooling=pooling, widths=(8, 16))
  x = _images(3)
  out = model.apply(_init(model, x), x, return_intermediates=True)
  maps = np.asarray(out["feature_maps"])
  expected = {"gap": maps.mean(axis=(1, 2)), "gmp": maps.max(axis=(1, 2)),
              "gap+gmp": maps.mean(axis=(1, 2)) + maps.max(axis=(1, 2))}[pooling]
  np.testing.assert_allclose(out["features"], expected, rtol=1e-6, atol=1e-6)


def test_pool_function_and_bad_input():
  maps = jnp.arange(2 * 2 * 3 * 2, dtype=jnp.float32).reshape(2, 2, 3, 2)
  np.testing.assert_allclose(pool(maps, "gap+gmp"), maps.mean(axis=(1, 2)) + maps.max(axis=(1, 2)))
  with pytest.raises(ValueError, match="gap, gmp, gap\\+gmp"):
    pool(maps, "avg")
  with pytest.raises(ValueError, match=r"\[B, h, w, c\]"):
    pool(maps[0], "gap")


@pytest.mark.parametrize("freeze_bn", [False, True])
@pytest.mark.parametrize("head_batchnorm", [False, True])
def test_partial_entry_points_equal_full_forward(freeze_bn, head_batchnorm):
  model = create_model("small_cnn", embedding_dim=16, pooling="gap+gmp", freeze_bn=freeze_bn,
                       head_batchnorm=head_batchnorm, head_hidden_dims=(24,), widths=(8, 16))
  x = _images(5)
  variables = _perturb_batch_stats(_init(model, x))
  # Eval mode always; train mode only where BN is frozen (with batch statistics a second pass on other inputs would
  # normalise differently, papers/metrix.md (h)).
  modes = [False, True] if freeze_bn else [False]
  for train in modes:
    out = model.apply(variables, x, train=train, return_intermediates=True, mutable=["batch_stats"])[0]
    from_maps = model.apply(variables, out["feature_maps"], train=train,
                            method=Embedder.embed_from_feature_maps, mutable=["batch_stats"])[0]
    from_features = model.apply(variables, out["features"], train=train,
                                method=Embedder.embed_from_features, mutable=["batch_stats"])[0]
    maps_only = model.apply(variables, x, train=train, method=Embedder.feature_maps, mutable=["batch_stats"])[0]
    np.testing.assert_allclose(from_maps, out["embeddings"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(from_features, out["embeddings"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(maps_only, out["feature_maps"], rtol=1e-6, atol=1e-6)


def test_embed_from_features_differentiates_into_head_only():
  model = create_model("small_cnn", embedding_dim=8, widths=(8,))
  x = _images(4)
  variables = _init(model, x)
  features = model.apply(variables, x, return_intermediates=True)["features"]

  def loss(params):
    emb = model.apply({**variables, "params": params}, features * 1.5, method=Embedder.embed_from_features)
    return jnp.sum(emb[:, 0])

  grads = jax.grad(loss)(variables["params"])
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["backbone"]))
  assert float(jnp.abs(grads["head"]["out"]["kernel"]).max()) > 0.0


@pytest.mark.parametrize("name,input_shape", [("small_cnn", IMAGE_SHAPE), ("mlp", (20,))])
def test_freeze_bn_uses_and_keeps_running_statistics(name, input_shape):
  kwargs = {"widths": (8, 16)} if name == "small_cnn" else {"hidden_dims": (32, 16)}
  frozen = create_model(name, embedding_dim=8, freeze_bn=True, head_batchnorm=True, **kwargs)
  trainable = create_model(name, embedding_dim=8, freeze_bn=False, head_batchnorm=True, **kwargs)
  x = jax.random.normal(jax.random.key(0), (7, *input_shape))
  variables = _perturb_batch_stats(_init(frozen, x))

  train_out, updates = frozen.apply(variables, x, train=True, mutable=["batch_stats"])
  eval_out = frozen.apply(variables, x, train=False)
  np.testing.assert_array_equal(train_out, eval_out)
  for before, after in zip(jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(updates["batch_stats"])):
    np.testing.assert_array_equal(before, after)

  # The same variables without freezing: batch statistics change the output and the running averages move.
  train_out, updates = trainable.apply(variables, x, train=True, mutable=["batch_stats"])
  assert not np.allclose(train_out, eval_out, atol=1e-4)
  moved = [not np.array_equal(b, a) for b, a in zip(jax.tree.leaves(variables["batch_stats"]),
                                                     jax.tree.leaves(updates["batch_stats"]))]
  assert all(moved)


def test_head_init_is_kaiming_normal_fan_out_with_zero_bias():
  model = create_model("mlp", embedding_dim=512, hidden_dims=(256,))
  x = jnp.zeros((2, 10))
  head = _init(model, x)["params"]["head"]["out"]
  kernel = np.asarray(head["kernel"])
  assert kernel.shape == (256, 512)
  np.testing.assert_allclose(kernel.std(), np.sqrt(2.0 / 512), rtol=0.02)
  # Untruncated normal: about 0.27 % of the entries lie beyond 3 standard deviations (a truncated one has none).
  assert np.mean(np.abs(kernel) > 3 * np.sqrt(2.0 / 512)) > 0.001
  np.testing.assert_array_equal(head["bias"], 0.0)


def test_mlp_on_flattened_vectors():
  model = create_model("mlp", embedding_dim=12, hidden_dims=(32, 24))
  x = jax.random.normal(jax.random.key(0), (9, 64))
  variables = _init(model, x)
  out = model.apply(variables, x, return_intermediates=True)
  assert out["feature_maps"].shape == (9, 1, 1, 24)
  assert out["features"].shape == (9, 24)
  assert out["embeddings"].shape == (9, 12)
  # Inputs with more axes are flattened: 8×8 images give the same result as their 64-vectors.
  np.testing.assert_allclose(model.apply(variables, x.reshape(9, 8, 8)), out["embeddings"], rtol=1e-6)


def test_mlp_without_hidden_layers_is_a_normalised_linear_map():
  model = create_model("mlp", embedding_dim=5, hidden_dims=())
  x = jax.random.normal(jax.random.key(0), (4, 7))
  variables = _init(model, x)
  assert "batch_stats" not in variables
  head = variables["params"]["head"]["out"]
  np.testing.assert_allclose(model.apply(variables, x),
                             distances.l2_normalize(x @ head["kernel"] + head["bias"]), rtol=1e-5, atol=1e-6)


def test_bad_names_and_arguments_list_the_valid_ones():
  with pytest.raises(ValueError, match="mlp.*small_cnn"):
    create_model("resnet_tiny")
  with pytest.raises(ValueError, match="gap, gmp, gap\\+gmp"):
    create_model("small_cnn", pooling="mean")
  with pytest.raises(ValueError, match="widths"):
    create_model("small_cnn", width=(8,))
  with pytest.raises(ValueError, match="channels last"):
    model = create_model("small_cnn")
    model.init(jax.random.key(0), jnp.zeros((2, 32, 32)))
  assert set(MODELS) >= {"small_cnn", "mlp"}


def test_jitted_train_step_small_cnn_batch_128():
  model = create_model("small_cnn", embedding_dim=64)
  x = _images(128)
  variables = _init(model, x[:2])
  tx = optax.adam(1e-3)
  opt_state = tx.init(variables["params"])

  @jax.jit
  def step(params, batch_stats, opt_state, x):
    def loss_fn(params):
      emb, updates = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                 mutable=["batch_stats"])
      return jnp.mean(jnp.square(emb @ emb.T)), updates["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  params, batch_stats = variables["params"], variables["batch_stats"]
  params, batch_stats, opt_state, first_loss = jax.block_until_ready(step(params, batch_stats, opt_state, x))
  start, repeats = time.perf_counter(), 5
  for _ in range(repeats):
    params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state, x)
  jax.block_until_ready(loss)
  print(f"small_cnn train step, batch 128, 32x32x1: {(time.perf_counter() - start) / repeats * 1e3:.1f} ms")
  assert np.isfinite(loss) and float(loss) < float(first_loss)
