"""Tiny training runs for the tests: a corpus a tiny model can learn something from, and the arguments that keep a
run to seconds on two CPU cores."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

TINY = ["--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--block_size", "32", "--tokenizer", "char",
        "--max_steps", "12", "--eval_steps", "6", "--save_steps", "6", "--logging_steps", "2",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "16", "--learning_rate", "1e-2",
        "--warmup_steps", "2", "--sample_max_new_tokens", "8", "--num_sample_prompts", "1", "--seed", "3"]
WORDS = ("the king my lord good sir love death night sweet fair heart what thou thee shall come go hath doth "
         "not no yes blood crown sword").split()


def write_corpus(folder: Path) -> Path:
    """Eight small 'plays': speaker lines and verse from a tiny vocabulary, so a tiny model can learn something."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for i in range(8):
        lines = []
        for _ in range(120):
            lines.append(rng.choice(["KING.", "QUEEN.", "FOOL."]))
            lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))).capitalize() + ",")
        (folder / f"play{i}.txt").write_text("\n".join(lines) + "\n")
    return folder


def run_args(corpus: Path, output_dir: Path, *extra: str) -> list[str]:
    """A tiny run on ``corpus`` into ``output_dir``; ``extra`` overrides any of it."""
    return ["--data_files", str(corpus), "--output_dir", str(output_dir), *TINY, *extra]


# Fixtures: a test module that trains imports these names (pytest finds fixtures in the module's namespace).


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    """The tiny corpus, written once per test module."""
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Tokenizers and tokenized text go to the session's temporary folder, not the user's cache."""
    monkeypatch.setenv("MYGPT_CACHE", str(tmp_path_factory.getbasetemp() / "mygpt-cache"))
    # Tiny models gain nothing from threads, and on a busy machine spinning threads slow them down many times.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for the module's tiny runs (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
