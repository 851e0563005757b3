"""Model registry: backbones by name, wrapped in the `Embedder` (backbone → pooling → head → L2).

`MODELS` maps a backbone name to its Linen module class; every class takes `freeze_bn` and `dtype` and returns feature
maps `[B, h, w, c]` from `(x, train)`. `create_model` is what a config's `model.{name, ...}` calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp

from metriclearn import registry
from metriclearn.models.bninception import BNInception
from metriclearn.models.embedder import POOLINGS, Embedder, EmbeddingHead, pool
from metriclearn.models.googlenet import GoogLeNet
from metriclearn.models.resnet import ResNet, ResNet18, ResNet34, ResNet50
from metriclearn.models.small import MLP, SmallCNN

MODELS: dict[str, type] = {
    "small_cnn": SmallCNN,
    "mlp": MLP,
    # ImageNet backbones in the torchvision / Cadene layouts; pretrained weights: `metriclearn.models.weights`.
    "resnet18": ResNet18,
    "resnet34": ResNet34,
    "resnet50": ResNet50,
    "bninception": BNInception,
    "googlenet": GoogLeNet,
}


def create_model(name: str, *, embedding_dim: int = 128, pooling: str = "gap", freeze_bn: bool = False,
                 normalize: bool = True, head_hidden_dims: Sequence[int] = (), head_batchnorm: bool = False,
                 dtype: Any = jnp.float32, **backbone_kwargs: Any) -> Embedder:
  """Builds an `Embedder` around the backbone registered as `name`.

  Args:
    name: a key of `MODELS`.
    embedding_dim: embedding width.
    pooling: one of `"gap"`, `"gmp"`, `"gap+gmp"` (sum).
    freeze_bn: every BatchNorm (backbone and head) uses running statistics in training and never updates them.
    normalize: L2-normalise the embeddings.
    head_hidden_dims: hidden widths of an MLP head; `()` is a single Dense layer.
    head_batchnorm: BatchNorm on the pooled features before the head (the DAML code's pool5 → BN → Linear).
    dtype: computation dtype of backbone and head (parameters stay float32).
    **backbone_kwargs: passed to the backbone class (e.g. `widths=(32, 64)` for `small_cnn`).

  Returns:
    An unbound `Embedder`; `init` it with a batch of the input shape.

  Raises:
    ValueError: unknown model name, pooling or backbone keyword (the message lists the valid ones).
  """
  backbone_cls = registry.lookup(MODELS, name, "model")
  if pooling not in POOLINGS:
    raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
  if embedding_dim <= 0:
    raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
  registry.check_kwargs(backbone_cls, backbone_kwargs, f"model {name!r}")
  backbone = backbone_cls(freeze_bn=freeze_bn, dtype=dtype, **backbone_kwargs)
  return Embedder(backbone=backbone, embedding_dim=embedding_dim, pooling=pooling,
                  head_hidden_dims=tuple(head_hidden_dims), head_batchnorm=head_batchnorm, freeze_bn=freeze_bn,
                  normalize=normalize, dtype=dtype)


__all__ = ["MODELS", "POOLINGS", "BNInception", "Embedder", "EmbeddingHead", "GoogLeNet", "MLP", "ResNet", "ResNet18",
           "ResNet34", "ResNet50", "SmallCNN", "create_model", "pool"]
