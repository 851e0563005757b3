"""Metrix's positivity analysis (Venkataramanan et al. 2022, c.7): when does a mixed example act as a positive?

A mixed embedding v of anchor a is *positive* when the loss pulls it towards a: ∂ℓ̃/∂s(a, v) ≤ 0 (s the cosine
similarity). For positive–negative mixing under the multi-similarity loss with a single mixed term the condition is
(1−λ)e^{β(s−m)} ≤ λe^{−α(s−m)}, i.e. s ≤ m + ln(λ/(1−λ))/(α+β), so (poster, c.7)

    P(Pos(a, v)) = F_λ( ln(λ/(1−λ)) / (α+β) + m ),

F_λ the CDF of s(a, v) at that λ. (α, β, m are this library's multi-similarity `alpha` (positive scale), `beta`
(negative scale) and `base`; the paper writes β, γ and m.) `positivity_curve` measures both sides on a batch of
embeddings: the *empirical* fraction of mixed pairs whose exact gradient (all mixed terms of the anchor together,
from `losses.multi_similarity_from_matrix`) is < 0 (an underflowed zero exerts no pull), and the *theoretical* F_λ
at the threshold from the empirical distribution of s(a, v). `plot_positivity` draws them against λ (matplotlib,
Agg backend).

Mixing is in embedding space (re-normalised λe_p + (1−λ)e_n, every positive p and negative n of each anchor), so the
diagnostic needs only embeddings, e.g. those a trained model gives for a training batch.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from matplotlib.figure import Figure  # no pyplot: no global backend or figure state
import numpy as np

from metriclearn import distances
from metriclearn import losses
from metriclearn.methods import metrix


def positivity_threshold(mix_lambda, *, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5):
  """The similarity below which a positive–negative mix acts as a positive: m + ln(λ/(1−λ))/(α+β) (c.7).

  ±inf at λ = 1 and λ = 0 (always / never positive); works on scalars and arrays.
  """
  mix_lambda = np.asarray(mix_lambda, np.float64)
  with np.errstate(divide="ignore"):
    return base + (np.log(mix_lambda) - np.log1p(-mix_lambda)) / (alpha + beta)


def _mixed_matrices(embeddings: jax.Array, labels: jax.Array, mix_lambda: jax.Array, max_positives: int):
  batch = labels.shape[0]
  unit = distances.l2_normalize(embeddings).astype(jnp.float32)
  has_positive = jnp.any((labels[:, None] == labels[None, :]) & ~jnp.eye(batch, dtype=bool), axis=1)
  slots = metrix.mixing_slots(labels, None, has_positive, max_positives=max_positives, first_positive_only=False,
                              negatives_per_anchor=None)
  similarity = metrix.mixed_cosine_from_gram(unit @ unit.T, slots.first, slots.second, mix_lambda)
  y = metrix.mixed_labels((labels[:, None] == labels[None, :]).astype(jnp.float32), slots.first, slots.second,
                          mix_lambda)
  return similarity.reshape(batch, -1), y.reshape(batch, -1), slots.valid.reshape(batch, -1)


@functools.partial(jax.jit, static_argnames=("alpha", "beta", "base", "max_positives"))
def _similarity_and_gradient(embeddings, labels, mix_lambda, *, alpha, beta, base, max_positives):
  """s(a, v), ∂ℓ̃_MS/∂s(a, v) and validity, each `[B, K·B]`."""
  similarity, y, valid = _mixed_matrices(embeddings, labels, mix_lambda, max_positives)
  loss_fn = lambda s: losses.multi_similarity_from_matrix(s, y, valid, alpha=alpha, beta=beta, base=base)
  return similarity, jax.grad(loss_fn)(similarity), valid


def positivity_curve(embeddings, labels, lambdas, *, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5,
                     max_positives: int | None = None) -> dict[str, np.ndarray]:
  """Empirical and theoretical P(Pos(a, v)) of positive–negative mixes, for each λ in `lambdas`.

  Args:
    embeddings: `f[B, D]` (normalised inside); labels: `i[B]`, with some class occurring at least twice.
    lambdas: `f[L]` values of λ in [0, 1].
    alpha, beta, base: the multi-similarity loss's parameters.
    max_positives: positive slots per anchor (default B − 1: every positive).

  Returns:
    `{"lambda", "empirical", "theoretical", "threshold"}`, each `f64[L]`.
  """
  embeddings = jnp.asarray(embeddings, jnp.float32)
  labels = jnp.asarray(labels)
  max_positives = labels.shape[0] - 1 if max_positives is None else max_positives

  empirical, theoretical = [], []
  thresholds = positivity_threshold(lambdas, alpha=alpha, beta=beta, base=base)
  for mix_lambda, threshold in zip(np.asarray(lambdas, np.float32), thresholds):
    similarity, gradient, valid = (np.asarray(x) for x in _similarity_and_gradient(
        embeddings, labels, jnp.float32(mix_lambda), alpha=alpha, beta=beta, base=base, max_positives=max_positives))
    keep = valid > 0
    if not keep.any():
      raise ValueError("no positive–negative pair in the batch: labels need a class that occurs at least twice")
    # Strictly negative: a gradient that underflowed to 0 (e^{β(s−m)} for s far below m) exerts no pull.
    empirical.append(np.mean(gradient[keep] < 0))
    theoretical.append(np.mean(similarity[keep] <= threshold))  # F_λ(threshold) from the empirical CDF
  return {"lambda": np.asarray(lambdas, np.float64), "empirical": np.asarray(empirical),
          "theoretical": np.asarray(theoretical), "threshold": thresholds}


def plot_positivity(curve: dict[str, np.ndarray], path: str, *, title: str = "Metrix positivity (MS loss)") -> str:
  """Writes the empirical and theoretical P(Pos) against λ (the poster's figure, c.7) to `path`; returns `path`."""
  figure = Figure(figsize=(4.5, 3.5))
  axis = figure.subplots()
  axis.plot(curve["lambda"], curve["empirical"], "o-", label="empirical (gradient sign)")
  axis.plot(curve["lambda"], curve["theoretical"], "s--", label=r"$F_\lambda$(threshold)")
  axis.set_xlabel(r"$\lambda$")
  axis.set_ylabel("P(positive)")
  axis.set_ylim(-0.02, 1.02)
  axis.set_title(title)
  axis.legend(loc="lower right", fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  return path
