#!/usr/bin/env python3
"""The recipe's ablation: variants of a preset trained one after the other, then one table of the results.

    python bench/ablation.py run                                  # every variant, seed 0, the default preset
    python bench/ablation.py run --variants baseline muon --seeds 0 1
    python bench/ablation.py run --preset shakespeare-char-cpu --max_steps 5 --root /tmp/abl -- --n_layer 1
    python bench/ablation.py table --root runs/ablation           # markdown table of the finished runs
    python bench/ablation.py list                                 # the variants and their flags

Each run is the train command itself, in its own process (``python train_hf.py --preset P --output_dir
<root>/<variant>-s<seed> --seed S ...``), so it measures exactly what a user gets, wall time included. Flags
after ``--`` go to every run. A variant whose folder already holds a finished run (``run_summary.json``) is
skipped, so a stopped ablation continues where it stopped; an unfinished folder is trained again from scratch
(``--overwrite``: a resumed run's wall time would not compare). Each run's output goes to ``<root>/logs/``.

Run it on a quiet machine: the wall times and tokens/s compare only between runs that shared the machine alike.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mygpt import run_artifacts  # noqa: E402
from mygpt.arguments import DEFAULT_PRESET, find_preset  # noqa: E402
from mygpt.cli import load_config_file  # noqa: E402

WSD = {"lr_scheduler_type": "warmup_stable_decay",
       # transformers 5.24's get_wsd_schedule: warmup (--warmup_steps), stable, then num_decay_steps of decay;
       # num_decay_steps is filled in per run as WSD_DECAY_FRACTION of --max_steps (see run_flags).
       "lr_scheduler_kwargs": {"decay_type": "1-sqrt", "min_lr_ratio": 0.0}}
WSD_DECAY_FRACTION = 0.2  # the last 20% of the steps (Hägele et al. 2024: a 1-sqrt cooldown of 20% matches cosine)
ALL = {"optimizer": "muon", "position_embedding": "rope", "activation_function": "relu2", **WSD}

# Each variant: the flags it changes against the preset (the baseline changes none).
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "muon": {"optimizer": "muon"},
    "rope": {"position_embedding": "rope"},
    "relu2": {"activation_function": "relu2"},
    "vocab8k": {"vocab_size": 8192},
    "wsd": WSD,
    "lr1e-3": {"learning_rate": 1e-3},
    "lr4e-3": {"learning_rate": 4e-3},
    "muon-lr4e-3": {"optimizer": "muon", "learning_rate": 4e-3},
    "rope-relu2": {"position_embedding": "rope", "activation_function": "relu2"},
    "all": ALL,
    "all-vocab8k": {**ALL, "vocab_size": 8192},
}

COLUMNS = ("variant", "seed", "test bpb", "Δ test bpb", "val bpb", "wall s", "eval s", "train tokens/s", "steps")


def preset_max_steps(preset: str) -> int | None:
    """The preset's ``max_steps`` (None when it trains for epochs)."""
    steps = load_config_file(find_preset(preset)).get("max_steps")
    return int(steps) if steps and steps > 0 else None


def run_flags(overrides: dict[str, Any], max_steps: int | None) -> list[str]:
    """The command-line flags of a variant's overrides (dicts as JSON, booleans as true/false)."""
    overrides = dict(overrides)
    if overrides.get("lr_scheduler_type") == "warmup_stable_decay":
        if max_steps is None:
            raise ValueError("the warmup_stable_decay variants need a number of steps: give --max_steps")
        kwargs = {"num_decay_steps": round(WSD_DECAY_FRACTION * max_steps), **overrides["lr_scheduler_kwargs"]}
        overrides["lr_scheduler_kwargs"] = kwargs
    flags = []
    for name, value in overrides.items():
        text = json.dumps(value) if isinstance(value, dict) else str(value).lower() if isinstance(value, bool) \
            else str(value)
        flags += [f"--{name}", text]
    return flags


def run(args: argparse.Namespace, extra: list[str]) -> int:
    """Trains each (variant, seed) not yet finished; returns the number of failed runs."""
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"error: unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    root = Path(args.root)
    (root / "logs").mkdir(parents=True, exist_ok=True)
    max_steps = args.max_steps or preset_max_steps(args.preset)
    failed = 0
    for seed in args.seeds:  # a whole round per seed: a stop leaves every variant with the same seeds done
        for variant in args.variants:
            name = f"{variant}-s{seed}"
            folder = root / name
            state = run_artifacts.folder_state(folder)
            if state == "finished":
                print(f"{name}: finished already, skipped")
                continue
            command = [sys.executable, "train_hf.py", "--preset", args.preset, "--output_dir", str(folder),
                       "--seed", str(seed), *(["--max_steps", str(args.max_steps)] if args.max_steps else []),
                       *run_flags(VARIANTS[variant], max_steps), *extra,
                       *(["--overwrite"] if state == "unfinished" else [])]
            print(f"{name}: {' '.join(command[1:])}", flush=True)
            started = time.perf_counter()
            with (root / "logs" / f"{name}.txt").open("w") as log:
                done = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            seconds = time.perf_counter() - started
            if done.returncode:
                failed += 1
                print(f"{name}: FAILED (exit {done.returncode}) after {seconds:.0f} s, see {log.name}")
            else:
                print(f"{name}: done in {seconds:.0f} s")
    return failed


def read_results(root: str | Path) -> list[dict[str, Any]]:
    """One row per finished run under ``root`` (folders ``<variant>-s<seed>``), in the variants' order then seed."""
    rows = []
    for path in Path(root).glob("*/run_summary.json"):
        found = re.fullmatch(r"(.+)-s(\d+)", path.parent.name)
        if not found:
            continue
        summary = json.loads(path.read_text())
        results = summary["results"]
        rows.append({
            "variant": found.group(1), "seed": int(found.group(2)),
            "test bpb": results.get("test", {}).get("bits_per_byte"),
            "val bpb": results["validation"].get("bits_per_byte"),
            "wall s": summary.get("wall_time_seconds"),
            "eval s": results.get("evaluation_seconds"),
            "train tokens/s": results.get("tokens_per_second"),
            "steps": results["steps"],
        })
    order = {name: i for i, name in enumerate(VARIANTS)}
    return sorted(rows, key=lambda r: (order.get(r["variant"], len(order)), r["variant"], r["seed"]))


def _mean(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table, with a mean row under each variant run with several seeds.

    ``Δ test bpb`` is against the baseline's mean test bits per byte (negative: better).
    """
    baseline = _mean([r["test bpb"] for r in rows if r["variant"] == "baseline"])
    formats = {"test bpb": "{:.4f}", "Δ test bpb": "{:+.4f}", "val bpb": "{:.4f}", "wall s": "{:.1f}",
               "eval s": "{:.1f}", "train tokens/s": "{:.0f}", "steps": "{:.0f}"}

    def line(row: dict[str, Any]) -> str:
        row = {**row, "Δ test bpb": None if baseline is None or row["test bpb"] is None else
               row["test bpb"] - baseline}
        cells = [("" if row[c] is None else formats[c].format(row[c]) if c in formats else str(row[c]))
                 for c in COLUMNS]
        return "| " + " | ".join(cells) + " |"

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    for variant in variants:
        group = [r for r in rows if r["variant"] == variant]
        lines += [line(r) for r in group]
        if len(group) > 1:
            mean = {c: _mean([r[c] for r in group]) for c in COLUMNS if c not in ("variant", "seed", "Δ test bpb")}
            lines.append(line({**mean, "variant": f"**{variant}**", "seed": f"mean of {len(group)}"}))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("run", help="Train the variants not yet finished (flags after -- go to every run).")
    train.add_argument("--variants", nargs="+", default=list(VARIANTS), help=f"Default: all ({', '.join(VARIANTS)}).")
    train.add_argument("--seeds", nargs="+", type=int, default=[0])
    train.add_argument("--max_steps", type=int, default=None, help="Default: the preset's.")
    train.add_argument("--preset", default=DEFAULT_PRESET)
    train.add_argument("--root", default="runs/ablation", help="Where the runs go (one folder per variant and seed).")
    table = commands.add_parser("table", help="Print the markdown table of the finished runs under --root.")
    table.add_argument("--root", default="runs/ablation")
    commands.add_parser("list", help="Print the variants and the flags each sets.")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, overrides in VARIANTS.items():
            print(f"{name}: {' '.join(run_flags(overrides, preset_max_steps(DEFAULT_PRESET))) or '(the preset)'}")
        return 0
    if args.command == "table":
        rows = read_results(args.root)
        if not rows:
            raise SystemExit(f"error: no finished run (<variant>-s<seed>/run_summary.json) under {args.root}")
        print(markdown_table(rows))
        return 0
    failed = run(args, extra)
    print(markdown_table(read_results(args.root)) if read_results(args.root) else "no finished run")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
