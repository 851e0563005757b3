"""Reductions shared by the losses: masked log-sum-exp and the means DML losses use.

All are NaN-free on empty sets: an empty log-sum-exp is 0 (as pytorch-metric-learning's `logsumexp` with a keep
mask), a mean over nothing is 0, and in both cases the gradient is 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_logsumexp(
    x: jax.Array, weights: jax.Array, *, axis: int = -1, add_one: bool = False
) -> jax.Array:
  """`log(Σ_i w_i·exp(x_i) [+ 1])` along `axis`, over the entries with `w_i > 0`; 0 where that set is empty.

  `weights` are non-negative soft weights (a 0/1 mask for binary labels; Metrix's mixed labels λ otherwise), so the
  soft-label losses of Metrix eq. c.3 are log-sum-exps with `log w` added to the exponent.
  """
  x = x.astype(jnp.float32)
  weights = weights.astype(jnp.float32)
  present = weights > 0
  shift = jnp.max(jnp.where(present, x, -jnp.inf), axis=axis, keepdims=True)
  if add_one:
    shift = jnp.maximum(shift, 0.0)
  shift = jax.lax.stop_gradient(jnp.where(jnp.isfinite(shift), shift, 0.0))
  # Masked entries sit at the shift (exp(0) = 1, zero-weighted), so no exp overflows into a NaN gradient.
  x_safe = jnp.where(present, x, shift)
  total = jnp.sum(jnp.where(present, weights * jnp.exp(x_safe - shift), 0.0), axis=axis, keepdims=True)
  if add_one:
    total = total + jnp.exp(-shift)
  nonempty = jnp.any(present, axis=axis, keepdims=True)
  # Double `where`: the log's gradient is never evaluated at 0.
  out = jnp.where(nonempty, jnp.log(jnp.where(nonempty, total, 1.0)) + shift, 0.0)
  return jnp.squeeze(out, axis=axis)


def safe_divide(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
  """`numerator / denominator`, and 0 (with a zero gradient) where the denominator is 0."""
  nonzero = denominator != 0
  return jnp.where(nonzero, numerator / jnp.where(nonzero, denominator, 1.0), 0.0)


def mean_nonzero(terms: jax.Array) -> jax.Array:
  """Mean of the strictly positive entries of `terms` (pytorch-metric-learning's `AvgNonZeroReducer`); 0 if none."""
  terms = terms.astype(jnp.float32)
  return safe_divide(jnp.sum(terms), jnp.sum((terms > 0).astype(jnp.float32)))


def weighted_mean(terms: jax.Array, weights: jax.Array) -> jax.Array:
  """`Σ w·t / Σ w`; 0 when all weights are 0."""
  weights = weights.astype(jnp.float32)
  return safe_divide(jnp.sum(weights * terms.astype(jnp.float32)), jnp.sum(weights))


REDUCERS = ("mean_nonzero", "mean", "sum")


def reduce(terms: jax.Array, weights: jax.Array, reducer: str) -> jax.Array:
  """Reduce per-pair `terms` already multiplied by their `weights`.

  * `mean_nonzero`: mean over the strictly positive weighted terms (PML's default for hinge losses);
  * `mean`: Σ terms / Σ weights (a weighted mean over all pairs that exist, zero terms included);
  * `sum`: Σ terms.
  """
  if reducer == "mean_nonzero":
    return mean_nonzero(terms)
  if reducer == "mean":
    return safe_divide(jnp.sum(terms.astype(jnp.float32)), jnp.sum(weights.astype(jnp.float32)))
  if reducer == "sum":
    return jnp.sum(terms.astype(jnp.float32))
  raise ValueError(f"unknown reducer {reducer!r}; valid reducers: {list(REDUCERS)}")
