"""The notebook is a deliverable: it must run top to bottom. CI executes it headless in its quick mode."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "mygpt.ipynb"


def _notebook_code() -> list[ast.Module]:
    """Each code cell parsed as Python (IPython's %magics and !shell lines left out)."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    return [
        ast.parse("\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))))
        for cell in notebook.cells
        if cell.cell_type == "code"
    ]


def _project_definitions() -> set[str]:
    """Names of every class and top-level function of the model's own modules (the remote code)."""
    names: set[str] = set()
    for path in ROOT.glob("*_mygpt.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
    return names


def test_notebook_imports_the_project_instead_of_defining_it() -> None:
    cells = _notebook_code()
    nodes = [node for tree in cells for node in ast.walk(tree)]
    classes = [node.name for node in nodes if isinstance(node, ast.ClassDef)]
    assert not classes, f"the notebook defines classes {classes}; the model and samplers live in the modules"
    project = _project_definitions()
    assert {"MyGPTForCausalLM", "eager_attention_forward", "TopPProcessor"} <= project, "the collector misses names"
    redefined = [
        node.name for node in nodes
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in project
    ]
    assert not redefined, f"the notebook re-defines {redefined}; import them from the modules"
    imported = {
        alias.name if isinstance(node, ast.Import) else node.module
        for node in nodes if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert {"modeling_mygpt", "generation_mygpt", "configuration_mygpt"} <= imported, imported


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


def _output_text(cell) -> str:
    """Everything a code cell printed or displayed, as text (streams, text/plain, text/markdown, HTML)."""
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", "") if isinstance(output.get("text"), str) else "".join(output.get("text", [])))
        for kind in ("text/plain", "text/markdown", "text/html"):
            value = output.get("data", {}).get(kind, "")
            parts.append(value if isinstance(value, str) else "".join(value))
    return "\n".join(parts)


FIGURE = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")  # a decimal figure such as 2.4817 (not 1e-5 or v1.2.3)


def test_every_decimal_figure_in_the_markdown_is_printed_by_the_outputs() -> None:
    """Prose may quote a measured figure only where an output of the committed notebook shows it."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    printed = "\n".join(_output_text(cell) for cell in notebook.cells if cell.cell_type == "code")
    prose = [re.sub(r"`[^`]*`", "", line) for cell in notebook.cells if cell.cell_type == "markdown"
             for line in cell.source.splitlines() if not line.startswith("#")]  # headings and code spans: no figures
    quoted = {figure for line in prose for figure in FIGURE.findall(line)}
    missing = sorted(figure for figure in quoted if figure not in printed)
    assert not missing, f"the markdown quotes figures that no output prints: {missing}"


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
