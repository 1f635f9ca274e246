"""Progress bars: every loop that runs longer than a few seconds shows one on a terminal, and none is drawn when
stderr is not a terminal or when progress bars are switched off (huggingface_hub's switch)."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import torch

import mygpt.progress
from configuration_mygpt import MyGPTConfig
from modeling_mygpt import MyGPTForCausalLM
from mygpt.tokenization import train_char_tokenizer

ROOT = Path(__file__).resolve().parent.parent
TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n\nJULIET:\nAy me!\n\n" * 8


@pytest.fixture(scope="module")
def tiny():
    tokenizer = train_char_tokenizer([TEXT])
    torch.manual_seed(0)
    model = MyGPTForCausalLM(MyGPTConfig(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                         bos_token_id=tokenizer.bos_token_id,
                                         eos_token_id=tokenizer.eos_token_id)).eval()
    return model, tokenizer


@pytest.fixture
def bars(monkeypatch):
    """Every bar made while the test runs, as ``{desc: (total, count at close)}``, drawn into a buffer."""
    shown: dict[str, tuple[float | None, float]] = {}

    class Recorder(mygpt.progress.ProgressBar):
        def __init__(self, *args, **kwargs):
            kwargs.update(disable=False, file=io.StringIO())  # as on a terminal
            super().__init__(*args, **kwargs)

        def close(self):
            if not self.disable:
                shown[self.desc] = (self.total, self.n)
            super().close()

    monkeypatch.setattr(mygpt.progress, "ProgressBar", Recorder)
    return shown


def test_scoring_counts_every_token_of_every_text(tiny, bars):
    from mygpt.scoring import score_texts

    model, tokenizer = tiny
    score = score_texts(model, tokenizer, [TEXT, TEXT[:200]], window=32, stride=16)
    assert bars["scoring"] == (score.n_tokens, score.n_tokens)


def test_generation_for_the_reports_counts_its_steps(tiny, bars):
    from mygpt.generation import generate_continuations

    model, tokenizer = tiny
    prompts = [tokenizer("ROMEO:")["input_ids"], tokenizer("JULIET:\nAy")["input_ids"]]
    generate_continuations(model, tokenizer, prompts, strategy="top_k", knobs={}, max_new_tokens=9, batch_size=1)
    assert bars["generating"] == (18, 18)


def test_ablation_probes_and_the_analysis_report_show_their_progress(tiny, bars, tmp_path):
    from mygpt.analysis.report import run_analyses

    model, tokenizer = tiny
    run_analyses(model, tokenizer, TEXT[:50], str(tmp_path / "report"), eval_text=TEXT,
                 analyses=["ablation", "probes", "lens"])
    assert bars["analyses"] == (3, 3)
    assert bars["ablating heads"] == (4, 4)  # 2 layers x 2 heads
    assert bars["probes"] == (3, 3)


def test_the_sampler_grid_and_the_model_comparison_show_their_progress(tiny, bars, tmp_path):
    from mygpt.commands import evaluate, sampler_report
    from mygpt.sampler_report import grid_settings

    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "prompts.txt").write_text("ROMEO:\nJULIET:\n")
    (tmp_path / "text.txt").write_text(TEXT)
    sampler_report.main(["--model", str(tmp_path / "model"), "--prompt_file", str(tmp_path / "prompts.txt"),
                         "--grid", "small", "--max_new_tokens", "6", "--output_dir", str(tmp_path / "samplers")])
    settings = len(grid_settings("small"))
    assert bars["sampler grid"] == (settings, settings)
    evaluate.main(["--models", str(tmp_path / "model"), "--data_files", str(tmp_path / "text.txt"),
                   "--num_prompts", "1", "--samples_per_prompt", "1", "--generation_chars", "20",
                   "--output_dir", str(tmp_path / "compare")])
    assert bars["models"] == (1, 1) and bars["scoring"][0] == bars["scoring"][1] > 0


SCRIPT = """
import torch
from configuration_mygpt import MyGPTConfig
from modeling_mygpt import MyGPTForCausalLM
from mygpt.scoring import score_token_ids
model = MyGPTForCausalLM(MyGPTConfig(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2)).eval()
score_token_ids(model, torch.randint(0, 50, (400,)), window=32, stride=8, batch_size=1)
print("done")
"""


def stderr_of_scoring(on_terminal: bool, **env: str) -> str:
    """Run a scoring in a fresh process with stderr on a pseudo-terminal (or a pipe) and return what it wrote."""
    environment = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    environment.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", **env)
    if not on_terminal:
        result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=environment,
                                timeout=300)
        assert result.returncode == 0 and "done" in result.stdout, result.stderr
        return result.stderr
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 x 100, as a real one
    process = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=terminal,
                               env=environment)
    os.close(terminal)
    written = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 300)
        if not ready:
            break
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        written += chunk
    assert process.wait(timeout=300) == 0 and b"done" in process.stdout.read()
    os.close(controller)
    return written.decode(errors="replace")


@pytest.mark.slow
def test_a_bar_is_drawn_on_a_terminal_only_and_not_when_switched_off():
    drawn = stderr_of_scoring(on_terminal=True)
    assert "scoring: " in drawn and "%|" in drawn  # tqdm's bar: "scoring:  50%|█████     | 200/399 ..."
    assert "scoring" not in stderr_of_scoring(on_terminal=False)
    assert "scoring" not in stderr_of_scoring(on_terminal=True, HF_HUB_DISABLE_PROGRESS_BARS="1")
