"""Every documented way to load a trained model runs as written: no interactive question, no warning.

The README's loading example is run as a user who copied it would run it: in a fresh interpreter that cannot
import the project (only the files saved with the model), with stdin closed (a "Do you wish to run the custom
code? [y/N]" question fails instead of waiting), against a saved tiny run folder. Python warnings and
transformers' logged warnings must be silent.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import save_tiny_mygpt
from tests.isolation import block_project_prelude

ROOT = Path(__file__).resolve().parent.parent
TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\nJULIET:\nAy me!\n" * 5


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A tiny MyGPT saved as a run saves it: weights with their remote code, tokenizer, generation config."""
    return Path(save_tiny_mygpt(tmp_path_factory.mktemp("documented") / "run", TEXT, n_positions=256))


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def without_progress_bars(stderr: str) -> str:
    """stderr less transformers' loading bars ("Loading weights: 100%|████| 28/28 ..."), which are not warnings."""
    lines = re.split(r"[\r\n]+", stderr)
    return "\n".join(line for line in lines if line.strip() and not re.search(r"\d+%\|", line))


def run_as_a_user(code: str, cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter without the project, stdin closed, every warning printed as ``WARNED:``."""
    script = block_project_prelude() + textwrap.dedent("""
        import logging, sys, warnings
        warnings.simplefilter("always")
        logging.captureWarnings(False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exec(compile(sys.argv[1], "documented example", "exec"), {"__name__": "__main__"})
        for w in caught:
            print(f"WARNED: {w.category.__name__}: {w.message}", file=sys.stderr)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    return subprocess.run([sys.executable, "-c", script, code], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)


def test_the_readme_loading_example_runs_without_a_question_or_a_warning(run_folder, tmp_path):
    examples = [b for b in python_blocks((ROOT / "README.md").read_text()) if "from_pretrained(" in b]
    assert examples, "the README has no loading example any more"
    for example in examples:
        # the README loads runs/cpu-quick: give it the tiny run under that name
        (tmp_path / "runs").mkdir(exist_ok=True)
        if not (tmp_path / "runs" / "cpu-quick").exists():
            os.symlink(run_folder, tmp_path / "runs" / "cpu-quick")
        result = run_as_a_user(example, tmp_path, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "custom code" not in result.stderr + result.stdout  # no "Do you wish to run the custom code?"
        assert without_progress_bars(result.stderr) == "", result.stderr[-3000:]  # no warning of any kind
        assert result.stdout.strip(), "the example printed nothing"


@pytest.mark.slow
def test_the_commands_load_a_run_without_a_question_or_a_warning(run_folder, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "generate.py"), "--model", str(run_folder), "--prompt",
                             "ROMEO:", "--max_new_tokens", "5", "--seed", "0"], cwd=tmp_path, env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ROMEO:")
    assert without_progress_bars(result.stderr) == "", result.stderr[-3000:]


def test_the_notebooks_auto_loads_all_trust_the_remote_code():
    # The notebook runs in the project's own kernel, so a missing trust_remote_code=True would not fail there;
    # a reader who copies the line into a fresh environment would meet the interactive question. Check the calls.
    import ast

    import nbformat

    notebook = nbformat.read(ROOT / "notebooks" / "mygpt.ipynb", as_version=4)
    loads = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(source)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "from_pretrained" and isinstance(node.func.value, ast.Name)
                    and node.func.value.id.startswith("Auto")):
                trusted = any(k.arg == "trust_remote_code" for k in node.keywords)
                loads.append((index, node.func.value.id, trusted))
    assert loads, "the notebook no longer loads a saved model with the Auto classes"
    assert all(trusted for _, _, trusted in loads), [load for load in loads if not load[2]]
