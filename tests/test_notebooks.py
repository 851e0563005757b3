"""The notebooks in `notebooks/` work: the quickstart and the losses notebook are executed end to end with nbclient
(in a temporary directory, with fewer training steps), and the TPU notebook's code parses and its untagged cells
build the SOP Metrix config (its cells tagged `needs-tpu` / `needs-data` cannot run here and are skipped).

Parameters are overridden as papermill does: a cell inserted after the cell tagged `parameters`. The kernel is this
interpreter, through a kernelspec written to a temporary directory, so no user-installed kernel is needed.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL_NAME = "metriclearn-tests"
SKIP_TAGS = frozenset({"needs-tpu", "needs-data"})  # cells that need hardware or data CI does not have
SUMMARY_MARKER = "NOTEBOOK-TEST-SUMMARY "


@pytest.fixture(scope="module")
def kernels(tmp_path_factory) -> KernelSpecManager:
  """A kernelspec for `sys.executable`, with a glyph cache shared by this module's notebooks (not the user's)."""
  root = tmp_path_factory.mktemp("kernels")
  spec_dir = root / "kernels" / KERNEL_NAME
  spec_dir.mkdir(parents=True)
  spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
          "display_name": "metriclearn tests", "language": "python",
          "env": {"XDG_CACHE_HOME": str(root / "cache")}}
  (spec_dir / "kernel.json").write_text(json.dumps(spec))
  return KernelSpecManager(kernel_dirs=[str(root / "kernels")])


def _code(cell_id: str, source: str) -> nbformat.NotebookNode:
  return nbformat.v4.new_code_cell(source, id=cell_id)


def _execute(name: str, workdir: Path, kernels: KernelSpecManager, *, parameters: str, summary: str,
             skip_tags: frozenset[str] = frozenset()) -> tuple[nbformat.NotebookNode, dict]:
  """Runs notebook `name` in `workdir` without its cells tagged with one of `skip_tags`, with `parameters` injected.

  Returns:
    The executed notebook, and the value of `summary` (a Python expression over the notebook's variables that gives
    a JSON-serialisable dict) as printed by a cell appended at the end. A cell that raises fails the test.
  """
  notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
  notebook.cells = [cell for cell in notebook.cells if not skip_tags & set(cell.metadata.get("tags", ()))]
  position = next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", ()))
  notebook.cells.insert(position + 1, _code("injected-parameters", parameters))
  notebook.cells.append(_code("test-summary", f"import json\nprint({SUMMARY_MARKER!r} + json.dumps({summary}))"))
  manager = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernels)
  NotebookClient(notebook, km=manager, timeout=300, resources={"metadata": {"path": str(workdir)}}).execute()
  text = "".join(output.get("text", "") for output in notebook.cells[-1].outputs)
  return notebook, json.loads(text.split(SUMMARY_MARKER, 1)[1])


def _outputs(notebook: nbformat.NotebookNode, cell_id: str, mime: str) -> list:
  cell = next(cell for cell in notebook.cells if cell.get("id") == cell_id)
  return [output for output in cell.outputs if mime in output.get("data", {})]


def _code_cells(name: str) -> list[nbformat.NotebookNode]:
  notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
  return [cell for cell in notebook.cells if cell.cell_type == "code"]


@pytest.mark.parametrize("name", ["quickstart", "losses_in_your_code", "tpu_sop_metrix"])
def test_notebook_is_saved_clean_and_valid(name):
  notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
  nbformat.validate(notebook)
  for cell in (cell for cell in notebook.cells if cell.cell_type == "code"):
    assert cell.outputs == [] and cell.execution_count is None, f"{name}: cell {cell.id} was saved with outputs"
    # IPython syntax (`%pip`, `!git`) becomes Python first, as the kernel does it.
    ast.parse(TransformerManager().transform_cell(cell.source), filename=f"{name}.ipynb:{cell.id}")
  assert sum("parameters" in cell.metadata.get("tags", ()) for cell in notebook.cells) == 1


@pytest.mark.slow
def test_quickstart_trains_shows_the_run_and_retrieves(kernels, tmp_path):
  notebook, summary = _execute(
      "quickstart", tmp_path, kernels, parameters="NUM_STEPS = 40",
      summary='{"restored_recall@1": evaluate.retrieval_metrics(embeddings, test.labels)["recall@1"]}')

  run = tmp_path / "runs" / "quickstart"
  results = json.loads((run / "results.json").read_text())
  assert results["num_steps"] == 40  # the injected parameter took effect
  assert results["recall@1"] > results["untrained"]["recall@1"] + 0.03
  # The checkpoint the notebook restores embeds the test set as the run's final evaluation did.
  assert summary["restored_recall@1"] == pytest.approx(results["recall@1"], abs=1e-3)
  tables = _outputs(notebook, "results", "text/markdown")
  assert len(tables) == 1 and "| trained |" in tables[0]["data"]["text/markdown"]
  for figure in ("loss.png", "recall.png", "embeddings.png"):
    assert (run / figure).stat().st_size > 0
  assert len(_outputs(notebook, "plots", "image/png")) == 3
  assert len(_outputs(notebook, "log", "image/png")) == 1  # inline figures show despite metriclearn.plots' Agg
  assert len(_outputs(notebook, "neighbours", "image/png")) == 2


def test_losses_notebook_trains_with_a_metriclearn_loss(kernels, tmp_path):
  _, summary = _execute(
      "losses_in_your_code", tmp_path, kernels, parameters="NUM_STEPS = 150",
      summary='{"before": before["recall@1"], "after": after["recall@1"], "mixup_after": mixup_after["recall@1"], '
              '"embedding_form": float(losses.multi_similarity(embeddings, train_labels[batch])), '
              '"matrix_form": float(losses.multi_similarity_from_matrix(s, y, valid))}')

  assert summary["after"] > summary["before"] + 0.05
  assert summary["mixup_after"] > summary["before"] + 0.05  # the soft-label matrix loss trains too
  assert summary["matrix_form"] == pytest.approx(summary["embedding_form"], rel=1e-5)


def test_tpu_notebook_builds_the_sop_metrix_config(kernels, tmp_path):
  cells = _code_cells("tpu_sop_metrix")
  tagged = [cell for cell in cells if SKIP_TAGS & set(cell.metadata.get("tags", ()))]
  # The notebook trains (in a tagged cell); the untagged rest runs below, so nothing that needs a TPU or data is in it.
  assert any("train_and_evaluate(" in cell.source for cell in tagged)
  assert len(tagged) < len(cells)

  _, summary = _execute(
      "tpu_sop_metrix", tmp_path, kernels, parameters='CONFIG_ARG = "smoke"', skip_tags=SKIP_TAGS,
      summary='{"type": type(config).__name__, "dataset": config.dataset.name, "method": config.method.name, '
              '"data_dir": config.dataset.data_dir}')

  assert summary == {"type": "ConfigDict", "dataset": "sop", "method": "metrix",
                     "data_dir": "/content/data/Stanford_Online_Products"}
