"""The workdir's figures: the retrieval curve with its references, the class map of every test class, and a progress
bar that keeps its width when the terminal reports 0 columns."""

from __future__ import annotations

import os
import pty
import re

import numpy as np
import tqdm

from metriclearn import plots
from metriclearn import train

PNG = b"\x89PNG\r\n\x1a\n"


def test_recall_plot_draws_a_reference_line_per_metric_and_baseline(tmp_path):
  references = {"untrained (test)": {"recall@1": 0.29, "map@r": 0.04}, "raw pixels (test)": {"recall@1": 0.54}}
  fig = plots.plot_recall([0, 2, 4], {"test/recall@1": [0.3, 0.5, 0.6], "test/map@r": [0.04, 0.1, 0.2]},
                          str(tmp_path / "recall.png"), references=references, title="glyphs")
  assert (tmp_path / "recall.png").read_bytes()[:8] == PNG
  (ax,) = fig.axes
  horizontal = sorted(round(line.get_ydata()[0], 2) for line in ax.lines if len(set(line.get_ydata())) == 1
                      and len(line.get_ydata()) == 2)
  assert horizontal == [0.04, 0.29, 0.54]  # map@r has no raw-pixel value here: no line for it
  assert ax.get_title() == "glyphs" and ax.get_xlim()[0] <= 0
  assert {t.get_text() for t in ax.get_legend().get_texts()} == {"test/recall@1", "test/map@r", *references}


def test_embedding_map_labels_every_class_with_its_name(tmp_path):
  rng = np.random.default_rng(0)
  num_classes, per_class = 125, 8
  centres = rng.normal(size=(num_classes, 16))
  labels = np.repeat(np.arange(num_classes, dtype=np.int32), per_class)
  embeddings = centres[labels] + 0.1 * rng.normal(size=(len(labels), 16))
  names = [f"c{i}" for i in range(num_classes)]
  fig = plots.plot_embeddings(embeddings.astype(np.float32), labels, str(tmp_path / "embeddings.png"),
                              class_names=names, title="glyphs_test")
  assert (tmp_path / "embeddings.png").read_bytes()[:8] == PNG
  class_panel, points_panel = fig.axes
  assert sorted(t.get_text() for t in class_panel.texts) == sorted(names)  # all 125, not the first 20
  assert len(points_panel.texts) == 6 and len(points_panel.collections) == 6
  assert fig._suptitle.get_text().startswith("glyphs_test")


def test_class_map_separates_the_centroids():
  centroids = np.random.default_rng(1).normal(size=(40, 8))
  mapped = plots.class_map(centroids)
  assert mapped.shape == (40, 2) and np.all(np.isfinite(mapped))
  assert len({tuple(np.round(p, 6)) for p in mapped}) == 40


def test_progress_bar_keeps_a_width_when_the_terminal_reports_zero_columns(monkeypatch):
  monkeypatch.delenv("COLUMNS", raising=False)
  controller, terminal = pty.openpty()  # a fresh pseudo-terminal reports 0 rows and 0 columns
  try:
    assert os.get_terminal_size(terminal).columns == 0
    with os.fdopen(terminal, "w", closefd=False) as stream:
      kwargs = train.progress_width(stream)
      assert kwargs == {"dynamic_ncols": False, "ncols": 100}
      bar = tqdm.tqdm(total=10, file=stream, mininterval=0, **kwargs)
      bar.update(5)
      bar.close()
    shown = [line for line in re.split(r"[\r\n]+", os.read(controller, 8192).decode()) if "50%" in line]
    assert shown and len(shown[-1].rstrip()) >= 60, repr(shown)  # a bar, not just the counters
  finally:
    os.close(controller)
    os.close(terminal)
  monkeypatch.setenv("COLUMNS", "132")
  assert train.progress_width(open(os.devnull, "w")) == {"dynamic_ncols": False, "ncols": 132}
