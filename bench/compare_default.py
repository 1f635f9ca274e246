#!/usr/bin/env python3
"""Today's default run against the default run of commit 710dcd6, back to back on this machine.

    git worktree add /tmp/mygpt-710dcd6 710dcd6
    python bench/compare_default.py --old_tree /tmp/mygpt-710dcd6 --output_dir runs/compare-default

Each side is ``python train_hf.py --output_dir DIR`` run from its own tree, exactly as a user types it (the
default preset of that tree, ``--precision auto``), timed start to exit. Their tokenizer and tokenized-corpus
caches are filled first by an untimed one-step run of each side, so neither pays for data preparation.

Both trees split Shakespeare's works the same way (by play, seed 1234), so the test plays are the same. Each run
reports its own test bits per byte; both finished models are then also scored by one scorer, this tree's
``evaluate_models.py --split test`` (sliding windows over the test plays' text), so the comparison does not rest
on two versions of the evaluation code. Bits per byte does not depend on the tokenizer, so models with different
vocabularies compare directly.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def train(tree: Path, output_dir: Path, extra: list[str]) -> float:
    """Runs one side's default training into ``output_dir``; returns its wall seconds."""
    shutil.rmtree(output_dir, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "train_hf.py", "--output_dir", str(output_dir), *extra], cwd=tree,
                            env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"training in {tree} failed:\n{result.stderr[-3000:]}")
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old_tree", type=Path, required=True, help="a checkout of 710dcd6")
    parser.add_argument("--output_dir", type=Path, default=ROOT / "runs" / "compare-default")
    parser.add_argument("--order", choices=("old-first", "new-first"), default="old-first")
    args = parser.parse_args()
    if not (args.old_tree / "train_hf.py").is_file():
        parser.error(f"--old_tree {args.old_tree} is not a checkout of the project (no train_hf.py)")
    sys.path.insert(0, str(ROOT))
    import torch

    from mygpt.training import cpu_has_native_bf16, cpu_name

    print(f"CPU: {cpu_name()}; native bf16: {cpu_has_native_bf16()}; torch {torch.__version__}", flush=True)
    out = args.output_dir.resolve()
    sides = {"710dcd6": args.old_tree.resolve(), "now": ROOT}
    for name, tree in sides.items():  # untimed: fill the caches
        train(tree, out / f"warm-{name}", ["--max_steps", "1", "--eval_steps", "1", "--save_steps", "1"])
        shutil.rmtree(out / f"warm-{name}")
    order = list(sides) if args.order == "old-first" else list(sides)[::-1]
    walls = {}
    for name in order:
        walls[name] = train(sides[name], out / name, [])
        print(f"{name}: {walls[name]:.0f} s", flush=True)

    report = out / "scored"
    result = subprocess.run([sys.executable, "evaluate_models.py", "--models", str(out / "710dcd6"),
                             str(out / "now"), "--split", "test", "--output_dir", str(report),
                             "--num_prompts", "0"], cwd=ROOT, capture_output=True, text=True)
    scored = {}
    if result.returncode == 0:
        for row in json.loads((report / "report.json").read_text())["models"]:
            scored[Path(row["name"]).name] = row["scores"]["bits_per_byte"]
    else:
        print(f"(scoring with evaluate_models.py failed: {result.stderr[-1500:]})")

    print("\n| run | preset as shipped | wall | steps | tokens/s (train) | precision | test bpb (own) | "
          "test bpb (one scorer) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in sides:
        summary = json.loads((out / name / "run_summary.json").read_text())
        r, t = summary["results"], summary["training"]
        print(f"| {name} | {summary.get('preset')} | {walls[name] / 60:.1f} min | {r['steps']} | "
              f"{r.get('tokens_per_second') or 0:,.0f} | {t.get('precision')} | {r['test']['bits_per_byte']:.4f} | "
              f"{scored.get(name, float('nan')):.4f} |")
    print(f"\nwall time now / 710dcd6: {walls['now'] / walls['710dcd6']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
