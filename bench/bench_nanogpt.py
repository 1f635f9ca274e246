#!/usr/bin/env python3
"""Our ``shakespeare-char-cpu`` preset against nanoGPT's own ``train.py`` on the same configuration.

    git clone https://github.com/karpathy/nanoGPT /tmp/nanoGPT            # not part of this project
    python bench/bench_nanogpt.py --nanogpt /tmp/nanoGPT --repeats 1

nanoGPT side: its data format is written here from ``--data`` (tiny shakespeare) exactly as its
``data/shakespeare_char/prepare.py`` does (sorted character vocabulary, first 90% train, last 10% validation, uint16
``train.bin``/``val.bin`` and ``meta.pkl``), then its ``train.py`` runs unchanged with the CPU configuration of its
README ("I only have a macbook"): ``config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
--log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000
--lr_decay_iters=2000 --dropout=0.0``. On a CPU it trains in float32 (its autocast context is a no-op there).
Its own "val loss" is an estimate from 20 random batches; its saved checkpoint is also scored here on the *whole*
validation split the way our runs are scored: non-overlapping blocks of 64 characters, every character after a
block's first predicted once (the tail block scores only characters no earlier block scored), loss averaged over
every scored character.

Our side: ``python train_hf.py --preset shakespeare-char-cpu --data_files DATA`` (plus ``--ours_args``), in the
precision the preset chooses on this machine; its validation loss is over the whole split already.

Time is the wall time of each training process, start to exit, as a user waits for it (both include start-up,
their evaluations and their checkpoint writes; neither includes data preparation: nanoGPT's prepare step is done
here untimed, and an untimed one-step run of ours fills our tokenizer and tokenized-text caches first). Sides
alternate over ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
NANOGPT_CPU = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
               "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
               "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0"]
BLOCK = 64


def prepare_nanogpt_data(text: str, folder: Path) -> tuple[np.ndarray, dict]:
    """nanoGPT's shakespeare_char files in ``folder``; returns the validation ids and the vocabulary."""
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    n = len(text)
    train = np.array([stoi[c] for c in text[: int(n * 0.9)]], dtype=np.uint16)
    val = np.array([stoi[c] for c in text[int(n * 0.9):]], dtype=np.uint16)
    folder.mkdir(parents=True, exist_ok=True)
    train.tofile(folder / "train.bin")
    val.tofile(folder / "val.bin")
    with open(folder / "meta.pkl", "wb") as handle:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, handle)
    return val, stoi


def whole_split_loss(nanogpt: Path, checkpoint: Path, val: np.ndarray) -> float:
    """Mean nats per character of nanoGPT's checkpoint over the whole validation split (our scoring protocol)."""
    sys.path.insert(0, str(nanogpt))
    from model import GPT, GPTConfig  # nanoGPT's model, from its checkout

    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = GPT(GPTConfig(**saved["model_args"]))
    state = {k.removeprefix("_orig_mod."): v for k, v in saved["model"].items()}
    model.load_state_dict(state)
    model.eval()
    ids = torch.from_numpy(val.astype(np.int64))
    starts = list(range(0, len(ids) - BLOCK + 1, BLOCK))
    nats, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(starts), 256):
            blocks = torch.stack([ids[s: s + BLOCK] for s in starts[i: i + 256]])  # (b, 64)
            logits, _ = model(blocks, blocks)  # targets given, so logits for every position: (b, 64, V)
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                                                     blocks[:, 1:].reshape(-1), reduction="sum")
            nats += loss.item()
            count += blocks[:, 1:].numel()
        covered = starts[-1] + BLOCK
        if covered < len(ids):  # the tail: the last 64 characters, scoring only what no block scored
            tail = ids[-BLOCK:][None]
            logits, _ = model(tail, tail)
            fresh = len(ids) - covered
            nats += torch.nn.functional.cross_entropy(logits[0, -fresh - 1: -1], tail[0, -fresh:],
                                                      reduction="sum").item()
            count += fresh
    return nats / count


def run_nanogpt(nanogpt: Path, work: Path, val: np.ndarray, extra: list[str]) -> dict:
    out = work / "nanogpt-out"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "train.py", *NANOGPT_CPU, f"--out_dir={out}", *extra]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"nanoGPT failed:\n{result.stderr[-3000:]}")
    reported = re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", result.stdout)
    return {"wall_seconds": wall, "estimate": float(reported[-1][2]) if reported else None,
            "whole_split": whole_split_loss(nanogpt, out / "ckpt.pt", val)}


def run_ours(data: Path, work: Path, extra: list[str]) -> dict:
    out = work / "ours"
    command = [sys.executable, str(ROOT / "train_hf.py"), "--preset", "shakespeare-char-cpu", "--data_files",
               str(data), "--output_dir", str(out), "--overwrite", *extra]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"our run failed:\n{result.stderr[-3000:]}")
    summary = json.loads((out / "run_summary.json").read_text())
    return {"wall_seconds": wall, "estimate": None, "whole_split": summary["results"]["validation"]["loss"],
            "train_seconds": summary["results"]["train_runtime_seconds"], "precision": summary["training"]["precision"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nanogpt", type=Path, required=True, help="a checkout of karpathy/nanoGPT")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="tiny shakespeare (input.txt)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--nanogpt_args", default="", help="extra flags for nanoGPT's train.py (e.g. a shorter smoke)")
    parser.add_argument("--ours_args", default="", help="extra flags for our train_hf.py")
    args = parser.parse_args()
    if not (args.nanogpt / "train.py").is_file():
        parser.error(f"--nanogpt {args.nanogpt} holds no train.py: give a checkout of karpathy/nanoGPT")
    if not args.data.is_file():
        parser.error(f"--data {args.data} does not exist")

    sys.path.insert(0, str(ROOT))
    from mygpt.training import cpu_has_native_bf16, cpu_name

    print(f"CPU: {cpu_name()}; native bf16: {cpu_has_native_bf16()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    results: dict[str, list[dict]] = {"nanoGPT train.py": [], "mygpt shakespeare-char-cpu": []}
    with tempfile.TemporaryDirectory(prefix="bench-nanogpt-") as tmp:
        work = Path(tmp)
        for name in ("train.py", "model.py", "configurator.py", "config"):
            source = args.nanogpt / name
            (shutil.copytree if source.is_dir() else shutil.copy)(source, work / name)
        val, _ = prepare_nanogpt_data(args.data.read_text(encoding="utf-8"), work / "data" / "shakespeare_char")
        # Untimed: fill our tokenizer and tokenized-text caches (nanoGPT's equivalent is the prepare step above).
        run_ours(args.data, work, ["--max_steps", "1", "--eval_steps", "1", "--save_steps", "1"])
        for repeat in range(args.repeats):
            sides = [("nanoGPT train.py", lambda: run_nanogpt(args.nanogpt, work, val,
                                                               shlex.split(args.nanogpt_args))),
                     ("mygpt shakespeare-char-cpu", lambda: run_ours(args.data, work, shlex.split(args.ours_args)))]
            for name, run in (sides if repeat % 2 == 0 else sides[::-1]):
                result = run()
                results[name].append(result)
                print(f"  repeat {repeat + 1}: {name}: {result['wall_seconds']:.1f} s, validation loss "
                      f"{result['whole_split']:.4f} (whole split)", flush=True)
    print("\n| side | precision | wall s (median) | val loss, own estimate | val loss, whole split |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        estimate = runs[-1]["estimate"]
        print(f"| {name} | {runs[-1].get('precision', 'fp32')} | "
              f"{statistics.median(r['wall_seconds'] for r in runs):.1f} | "
              f"{'%.4f' % estimate if estimate is not None else '(whole split)'} | "
              f"{statistics.median(r['whole_split'] for r in runs):.4f} |")
    ours = statistics.median(r["wall_seconds"] for r in results["mygpt shakespeare-char-cpu"])
    theirs = statistics.median(r["wall_seconds"] for r in results["nanoGPT train.py"])
    print(f"\nwall time ours / nanoGPT: {ours / theirs:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
