"""The embedder: backbone → feature maps → pooling → embedding head → L2 normalisation.

Every method trains this one module. Its stages are exposed as Linen methods so that a method can enter the network
after a stage it has changed (see DESIGN.md §6):

* Metrix feature mixing mixes the backbone's feature maps `[B, h, w, c]` and continues with
  `embed_from_feature_maps` (pooling → head → L2);
* DAML's generator works on the pooled pre-head features `[B, c]` and sends its synthetic features through the same
  head with `embed_from_features` (head → L2).

Every entry point is a plain `model.apply(variables, x, train=..., method=Embedder.<name>)`; the parameters live under
`params/backbone/...` and `params/head/...`, so optimisers can select them by path (`metriclearn.optim`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from metriclearn import distances

POOLINGS = ("gap", "gmp", "gap+gmp")

# Kaiming-normal with fan_out and an untruncated normal, as `torch.nn.init.kaiming_normal_(mode="fan_out")` in the
# Metrix code; flax's `kaiming_normal` is fan_in and truncated, so it is spelled out here.
HEAD_KERNEL_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def pool(feature_maps: jax.Array, pooling: str) -> jax.Array:
  """Pools `[B, h, w, c]` feature maps over the spatial axes into `[B, c]`.

  Args:
    feature_maps: `[B, h, w, c]`.
    pooling: `"gap"` (global average), `"gmp"` (global max) or `"gap+gmp"` (their sum, as the Metrix code; not a
      concatenation, so the width stays `c`).

  Returns:
    `[B, c]` pooled features, in the dtype of `feature_maps`.
  """
  if feature_maps.ndim != 4:
    raise ValueError(f"feature maps must be [B, h, w, c], got shape {feature_maps.shape}")
  if pooling == "gap":
    return jnp.mean(feature_maps, axis=(1, 2))
  if pooling == "gmp":
    return jnp.max(feature_maps, axis=(1, 2))
  if pooling == "gap+gmp":
    return jnp.mean(feature_maps, axis=(1, 2)) + jnp.max(feature_maps, axis=(1, 2))
  raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")


class EmbeddingHead(nn.Module):
  """Pre-head features `[B, c]` → (optional BatchNorm) → (optional MLP) → Dense → `[B, embedding_dim]`.

  Attributes:
    embedding_dim: output width.
    hidden_dims: widths of hidden Dense + ReLU layers before the output Dense; `()` is the usual linear head.
    batchnorm: BatchNorm on the input features before the first Dense (the DAML code's pool5 → BN → Linear).
    freeze_bn: use running statistics even in training and never update them.
    dtype: computation dtype (parameters stay float32).
  """

  embedding_dim: int
  hidden_dims: Sequence[int] = ()
  batchnorm: bool = False
  freeze_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array, train: bool = False) -> jax.Array:
    x = features
    if self.batchnorm:
      x = nn.BatchNorm(use_running_average=not train or self.freeze_bn, momentum=0.9, epsilon=1e-5,
                       dtype=self.dtype, name="bn")(x)
    for i, width in enumerate(self.hidden_dims):
      x = nn.Dense(width, kernel_init=HEAD_KERNEL_INIT, dtype=self.dtype, name=f"hidden_{i}")(x)
      x = nn.relu(x)
    return nn.Dense(self.embedding_dim, kernel_init=HEAD_KERNEL_INIT, dtype=self.dtype, name="out")(x)


class Embedder(nn.Module):
  """Backbone → feature maps → pooling → embedding head → optional L2 normalisation.

  Attributes:
    backbone: a Linen module mapping inputs to feature maps `[B, h, w, c]` with the signature `(x, train)`.
    embedding_dim: width of the embedding.
    pooling: one of `POOLINGS`.
    head_hidden_dims: hidden widths of an MLP head (`()`: a single Dense).
    head_batchnorm: BatchNorm on the pre-head features, before the head's first Dense.
    freeze_bn: the head's BatchNorm uses running statistics in training (the backbone has its own flag).
    normalize: L2-normalise the embeddings (eps 1e-12, as the reference code).
    dtype: computation dtype of the head.

  Example:
    >>> model = Embedder(backbone=SmallCNN(), embedding_dim=64)
    >>> variables = model.init(jax.random.key(0), jnp.zeros((2, 32, 32, 1)))
    >>> emb, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    >>> out = model.apply(variables, x, return_intermediates=True)  # dict of every stage
    >>> emb = model.apply(variables, out["feature_maps"], method=Embedder.embed_from_feature_maps)
  """

  backbone: nn.Module
  embedding_dim: int = 128
  pooling: str = "gap"
  head_hidden_dims: Sequence[int] = ()
  head_batchnorm: bool = False
  freeze_bn: bool = False
  normalize: bool = True
  dtype: Any = jnp.float32

  def setup(self):
    if self.pooling not in POOLINGS:
      raise ValueError(f"unknown pooling {self.pooling!r}; valid: {', '.join(POOLINGS)}")
    self.head = EmbeddingHead(self.embedding_dim, hidden_dims=tuple(self.head_hidden_dims),
                              batchnorm=self.head_batchnorm, freeze_bn=self.freeze_bn, dtype=self.dtype)

  def __call__(self, x: jax.Array, train: bool = False,
               return_intermediates: bool = False) -> jax.Array | dict[str, jax.Array]:
    """Full forward pass.

    Args:
      x: a batch of inputs, `[B, ...]` as the backbone expects.
      train: BatchNorm uses batch statistics and updates its running ones (unless frozen); pass
        `mutable=["batch_stats"]` to `apply`.
      return_intermediates: return a dict of every stage instead of the embeddings alone.

    Returns:
      `[B, embedding_dim]` embeddings, or a dict with `feature_maps` `[B, h, w, c]`, `features` `[B, c]`
      (pooled, pre-head) and `embeddings` `[B, embedding_dim]`.
    """
    feature_maps = self.feature_maps(x, train)
    features = self.pool(feature_maps)
    embeddings = self.embed_from_features(features, train)
    if return_intermediates:
      return {"feature_maps": feature_maps, "features": features, "embeddings": embeddings}
    return embeddings

  def feature_maps(self, x: jax.Array, train: bool = False) -> jax.Array:
    """The backbone alone: `[B, ...]` inputs → `[B, h, w, c]` feature maps."""
    maps = self.backbone(x, train)
    assert maps.ndim == 4, f"backbone must return [B, h, w, c] feature maps, got {maps.shape}"
    return maps

  def pool(self, feature_maps: jax.Array) -> jax.Array:
    """`[B, h, w, c]` → `[B, c]` with this model's pooling."""
    return pool(feature_maps, self.pooling)

  def embed_from_features(self, features: jax.Array, train: bool = False) -> jax.Array:
    """Head and normalisation only: pre-head features `[B, c]` → embeddings `[B, embedding_dim]` (DAML)."""
    embeddings = self.head(features, train)
    return distances.l2_normalize(embeddings, eps=1e-12) if self.normalize else embeddings

  def embed_from_feature_maps(self, feature_maps: jax.Array, train: bool = False) -> jax.Array:
    """Everything after the backbone: `[B, h, w, c]` → pooling → head → L2 → `[B, embedding_dim]` (Metrix)."""
    return self.embed_from_features(self.pool(feature_maps), train)
