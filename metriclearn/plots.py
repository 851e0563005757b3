"""PNG figures for the workdir: the loss curve, Recall@K over training, a 2-D projection of test embeddings."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure  # no pyplot: no global backend or figure state, so notebooks keep theirs
import numpy as np
from sklearn.decomposition import PCA


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


def plot_recall(steps: Sequence[int], recalls: dict[str, Sequence[float]], path: str) -> None:
  """Each `recall@K` (and MAP@R if given) of the evaluated split (`test/…` or `val/…`) against the step."""
  fig = Figure(figsize=(6, 4))
  ax = fig.subplots()
  for name, values in recalls.items():
    ax.plot(steps, values, marker="o", lw=1.2, label=name)
  ax.set_xlabel("step")
  ax.set_ylabel("retrieval")
  ax.set_ylim(0, 1)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def plot_embeddings(embeddings: np.ndarray, labels: np.ndarray, path: str, *, max_classes: int = 20) -> None:
  """A PCA projection of the test embeddings of the first `max_classes` classes, coloured by class."""
  keep = np.isin(labels, np.unique(labels)[:max_classes])
  points = PCA(n_components=2).fit_transform(np.asarray(embeddings[keep], np.float64))
  fig = Figure(figsize=(5.5, 5.5))
  ax = fig.subplots()
  ax.scatter(points[:, 0], points[:, 1], c=labels[keep], cmap="tab20", s=8)
  ax.set_title(f"test embeddings (PCA), {min(max_classes, len(np.unique(labels)))} classes")
  ax.set_xticks([])
  ax.set_yticks([])
  fig.tight_layout()
  fig.savefig(path, dpi=110)
