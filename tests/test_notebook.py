"""The notebook is a deliverable: it must run top to bottom. CI executes it headless in its quick mode."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "mygpt.ipynb"


def test_notebook_imports_the_project_instead_of_defining_it() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    for definition in ("class MyGPT", "def eager_attention_forward", "class TopPProcessor", "nn.Module)"):
        assert definition not in code, f"the notebook re-defines {definition!r}; import it from the modules"
    assert "import modeling_mygpt" in code and "import generation_mygpt" in code


def test_committed_notebook_was_executed_top_to_bottom_without_errors() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    counts = [cell.get("execution_count") for cell in code_cells]
    assert all(counts), "some cells were not executed"
    assert counts == sorted(counts), "cells were executed out of order"
    assert not any(
        output.get("output_type") == "error" for cell in code_cells for output in cell.get("outputs", [])
    ), "the committed notebook holds an error"
    text = json.dumps([cell.get("outputs", []) for cell in code_cells])
    assert "MODE=" in text, "the outputs must say which mode produced them"


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_in_quick_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYGPT_NOTEBOOK_MODE", "quick")
    monkeypatch.setenv("MYGPT_NOTEBOOK_OUTPUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    )
    client.execute()  # raises CellExecutionError, with the failing cell, if any cell fails
    assert (tmp_path / "runs" / "notebook-quick" / "run_summary.json").is_file()
    assert (tmp_path / "reports" / "notebook-quick" / "compare" / "report.md").is_file()
