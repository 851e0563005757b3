"""PNG figures for the workdir: the loss curve, Recall@K over training (with the untrained network and raw pixels
for reference), a map of the test classes and their embeddings."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure  # no pyplot: no global backend or figure state, so notebooks keep theirs
import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE


def plot_loss(steps: Sequence[int], values: Sequence[float], path: str) -> None:
  """The training loss against the step."""
  fig = Figure(figsize=(6, 4))
  ax = fig.subplots()
  ax.plot(steps, values, lw=1.2)
  ax.set_xlabel("step")
  ax.set_ylabel("training loss")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def plot_recall(steps: Sequence[int], recalls: dict[str, Sequence[float]], path: str, *,
                references: dict[str, dict[str, float]] | None = None, title: str | None = None) -> Figure:
  """Each `recall@K` (and MAP@R if given) of the evaluated split (`test/…` or `val/…`) against the step.

  `references`: horizontal lines, e.g. `{"untrained (test)": {"recall@1": 0.29, ...}, "raw pixels (test)": {...}}`,
  drawn per metric (matched by the name after the split prefix) in the metric's colour.
  """
  fig = Figure(figsize=(7, 4.5))
  ax = fig.subplots()
  styles = ("--", ":", "-.")
  for index, (name, values) in enumerate(recalls.items()):
    color = f"C{index}"
    ax.plot(steps, values, marker="o", ms=3.5, lw=1.4, color=color, label=name)
    metric = name.split("/", 1)[-1]
    for style, row in zip(styles, (references or {}).values()):
      if metric in row:
        ax.axhline(row[metric], color=color, ls=style, lw=1.0, alpha=0.8)
  for style, reference in zip(styles, references or {}):  # one legend entry per reference, in black
    ax.plot([], [], color="0.3", ls=style, lw=1.0, label=reference)
  ax.set_xlabel("step")
  ax.set_ylabel("retrieval")
  ax.set_ylim(0, 1)
  ax.set_xlim(left=min(0, min(steps, default=0)))
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
  if title:
    ax.set_title(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return fig


def _label(ax, x, y, name, *, color="0.15", fontsize=9, bold=False, edge="none") -> None:
  ax.text(x, y, name, ha="center", va="center", fontsize=fontsize, color=color,
          fontweight="bold" if bold else "normal",
          bbox=dict(boxstyle="round,pad=0.15", fc="white", ec=edge, alpha=0.8, lw=0.8))


def class_map(centroids: np.ndarray, *, seed: int = 0) -> np.ndarray:
  """`f64[C, 2]`: a t-SNE map of the class centroids (PCA beyond 2,000 classes, where t-SNE takes minutes)."""
  if len(centroids) <= 3:
    return np.pad(centroids[:, :2], ((0, 0), (0, max(0, 2 - centroids.shape[1]))))
  if len(centroids) > 2000:
    return PCA(n_components=2).fit_transform(centroids)
  perplexity = float(min(30, max(2, (len(centroids) - 1) // 3)))
  return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(centroids)


def plot_embeddings(embeddings: np.ndarray, labels: np.ndarray, path: str, *, class_names: Sequence[str] | None = None,
                    title: str | None = None, num_highlighted: int = 6, max_labels: int = 400) -> Figure:
  """Two panels. Left: every test class at its centroid (of the L2-normalised embeddings) on a t-SNE map, labelled
  with its name (the first `max_labels` classes; the rest as dots). Right: the points of `num_highlighted` classes
  (spread over the class ids, coloured as their labels on the left) on the PCA plane of those points.

  t-SNE for the centroids because a linear projection of 100+ classes piles their centroids into one unreadable
  heap; PCA for the points because it keeps their spread around each centroid honest.
  """
  embeddings = np.asarray(embeddings, np.float64)
  embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
  classes = np.unique(labels)
  names = [str(class_names[c]) if class_names is not None else str(c) for c in classes]
  centroids = np.stack([embeddings[labels == c].mean(axis=0) for c in classes])
  mapped = class_map(centroids)
  highlighted = classes[np.linspace(0, len(classes) - 1, min(num_highlighted, len(classes))).round().astype(int)]
  colors = {int(c): f"C{i}" for i, c in enumerate(highlighted)}

  fig = Figure(figsize=(15, 7.5))
  left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.15, 1]})
  fontsize = 11 if len(classes) <= 150 else 8 if len(classes) <= 300 else 5
  left.scatter(*mapped.T, s=3, color="0.6")
  for index, (c, name, (x, y)) in enumerate(zip(classes, names, mapped)):
    if int(c) in colors:
      _label(left, x, y, name, color=colors[int(c)], fontsize=fontsize + 2, bold=True, edge=colors[int(c)])
    elif index < max_labels:
      _label(left, x, y, name, fontsize=fontsize)
  left.set_title(f"all {len(classes)} test classes: t-SNE of their centroids", fontsize=10)

  keep = np.isin(labels, highlighted)
  pca = PCA(n_components=2).fit(embeddings[keep])
  for c in highlighted:
    points = pca.transform(embeddings[labels == c])
    right.scatter(*points.T, s=10, color=colors[int(c)], alpha=0.5, linewidths=0)
    _label(right, *points.mean(axis=0), names[int(np.searchsorted(classes, c))], color=colors[int(c)],
           fontsize=12, bold=True, edge=colors[int(c)])
  variance = pca.explained_variance_ratio_
  right.set_xlabel(f"PC 1 ({variance[0]:.0%} of the variance)")
  right.set_ylabel(f"PC 2 ({variance[1]:.0%})")
  right.set_title(f"the test images of {len(highlighted)} of them: PCA", fontsize=10)
  for ax in (left, right):
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(f"{title}: test embeddings" if title else "test embeddings", fontsize=12)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  return fig
