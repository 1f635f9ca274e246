#!/usr/bin/env python3
"""Profile one training step (forward + backward + clip + AdamW) of the default preset's shape.

    python bench/profile_step.py                      # fp32 and bf16 autocast, top 12 ops by self CPU time
    python bench/profile_step.py --precisions bf16 --rows 20

The model is the one on sys.path (this tree; PYTHONPATH=<other tree> profiles another). Prints the CPU model,
whether it has native bf16, and per precision the op table after two untimed warm-up steps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(1, str(Path(__file__).resolve().parent))
from bench_step import build_step, preset_shape  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--steps", type=int, default=2, help="profiled steps")
    args = parser.parse_args()
    from mygpt.training import cpu_has_native_bf16, cpu_name
    import modeling_mygpt

    shape = preset_shape()
    print(f"CPU: {cpu_name()}; native bf16: {cpu_has_native_bf16()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; model {modeling_mygpt.__file__}; shape {shape}")
    for precision in args.precisions:
        _, step = build_step(shape, precision)
        step(), step()  # warm-up: first-call allocations
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                step()
        print(f"\n== {precision} ({args.steps} steps) ==")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=40))


if __name__ == "__main__":
    main()
