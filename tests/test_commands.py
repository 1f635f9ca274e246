"""Every command line is reachable both ways: the root script from a checkout and the console script setup.cfg
installs; both show their options with --help and exit 0."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIMS = sorted(p.name for p in ROOT.glob("*.py") if not p.name.endswith("_mygpt.py"))


def console_scripts() -> dict[str, str]:
    """``name -> module:function`` from setup.cfg's console_scripts."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    lines = setup["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=", 1)) for line in lines)


def run(argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_every_command_has_a_console_script_and_a_root_script():
    scripts = console_scripts()
    for name in ("mygpt-train", "mygpt-generate", "mygpt-evaluate", "mygpt-analyze", "mygpt-push",
                 "mygpt-sampler-report"):
        assert name in scripts
    for shim in ("train_hf.py", "generate.py", "evaluate_models.py", "analyze.py", "push_to_hub.py"):
        assert shim in SHIMS


@pytest.mark.slow
@pytest.mark.parametrize("shim", SHIMS)
def test_root_script_shows_its_options(shim):
    result = run([sys.executable, shim, "--help"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--" in result.stdout and "usage:" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(console_scripts()))
def test_console_script_shows_its_options(name):
    """The entry point setup.cfg declares resolves and runs; the installed script too when it is installed."""
    module, function = console_scripts()[name].split(":")
    result = run([sys.executable, "-c", f"import sys; from {module} import {function}; sys.exit({function}())",
                  "--help"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout and "(default:" in result.stdout
    installed = shutil.which(name)
    if installed:  # a checkout installed before this script existed has no executable for it yet
        result = run([installed, "--help"])
        assert result.returncode == 0 and "usage:" in result.stdout, result.stderr[-2000:]


@pytest.mark.parametrize("command", ["evaluate", "analyze", "sampler_report"])
def test_a_report_folder_in_use_is_refused_naming_the_live_process(command, tmp_path):
    """Two report commands writing one folder would publish over each other: the second is refused at once."""
    import importlib

    from conftest import save_tiny_mygpt
    from mygpt.files import FolderLock

    model = save_tiny_mygpt(tmp_path / "run", "ROMEO:\nBut soft!\nJULIET:\nAy me!\n" * 20, n_positions=64)
    out = tmp_path / "report"
    argv = {"evaluate": ["--models", str(model), "--data_files", str(tmp_path / "text.txt"), "--num_prompts", "0"],
            "analyze": ["--model", str(model), "--text", "ROMEO: But soft!"],
            "sampler_report": ["--model", str(model), "--prompt_file", str(tmp_path / "text.txt")]}[command]
    (tmp_path / "text.txt").write_text("ROMEO:\nBut soft, what light!\n" * 10)
    main = importlib.import_module(f"mygpt.commands.{command}").main
    with FolderLock(out, purpose="another report"):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--output_dir", str(out)])
    assert f"pid {os.getpid()}" in str(exit_info.value.code) and "another report" in str(exit_info.value.code)
    assert not out.exists()  # nothing was written
