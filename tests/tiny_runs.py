"""Tiny training runs for the tests: a corpus a tiny model can learn something from, and the arguments that keep a
run to seconds on two CPU cores."""

from __future__ import annotations

import random
from pathlib import Path

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
