#!/usr/bin/env python3
"""Training throughput of mygpt-train's Trainer against a plain PyTorch loop over the same model and batches.

    python bench/bench_train.py                                   # shakespeare-char-cpu on tiny shakespeare
    python bench/bench_train.py --preset cpu-quick --steps 60     # the default preset
    python bench/bench_train.py --precisions fp32 bf16            # also compare bf16 autocast

Both sides start from the same weights (same seed), see the very same batches in the same order, and do the same
work per step: forward, loss, backward, gradient clipping, AdamW with the same parameter groups, the same
learning-rate schedule. The Trainer side is mygpt-train's own (``build_trainer``: callbacks, collator, logging
every ``logging_steps``), with evaluation and checkpoints switched off so only training is timed. After an untimed
warm-up of each side, runs alternate (Trainer then loop, loop then Trainer, ...) so that a change in the machine's
load hits both. Each step is timed on its own (the Trainer by mygpt-train's throughput meter, step end to step end;
the loop around its body), and tokens/s is reported three ways: whole runs (median over runs), the median step,
and the fastest decile of steps. On a shared machine the step statistics are the robust ones: another process's
burst slows a few steps, not the median.
Target: Trainer tokens/s >= 0.9 x the plain loop.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import get_scheduler, set_seed  # noqa: E402

from mygpt.arguments import parse_arguments  # noqa: E402
from mygpt.train_run import build_model, build_trainer, prepare_run  # noqa: E402
from mygpt.training import decay_parameter_names  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


def prepare(preset: str, data_files: list[str] | None, steps: int, precision: str, extra: list[str]):
    out = tempfile.mkdtemp(prefix="bench-train-")
    argv = ["--preset", preset, "--output_dir", out, "--overwrite", "--max_steps", str(steps),
            "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
            "--precision", precision, "--disable_tqdm", "true", *extra]
    if data_files:
        argv = ["--data_files", *data_files, *argv]
    return prepare_run(parse_arguments(argv), argv)


def time_trainer(run) -> list[float]:
    """Seconds of each optimizer step of mygpt-train's Trainer (its own meter: step end to step end)."""
    trainer = build_trainer(run)
    trainer.train()
    return trainer.meter.step_seconds


def time_plain_loop(run) -> list[float]:
    """Seconds of each step of a hand-written loop: same init, batches, optimizer, schedule and clipping."""
    args = run.plan.training_args
    set_seed(args.seed)
    # The very batches the Trainer draws (its dataloader, its sampler, its seed), taken before the clock starts.
    loader = build_trainer(run).get_train_dataloader()
    batches = [batch for batch, _ in zip(loader, range(args.max_steps))]
    set_seed(args.seed)
    model = build_model(run.plan).train()  # the same initial weights as the Trainer's
    decay = set(decay_parameter_names(model))
    groups = [{"params": [p for n, p in model.named_parameters() if n in decay], "weight_decay": args.weight_decay},
              {"params": [p for n, p in model.named_parameters() if n not in decay], "weight_decay": 0.0}]
    # The Trainer's default optimizer (adamw_torch_fused): the same fused kernel here.
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                  eps=args.adam_epsilon, fused=True)
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=int(args.warmup_steps),
                              num_training_steps=args.max_steps, scheduler_specific_kwargs=args.lr_scheduler_kwargs)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=run.plan.precision == "bf16")
    seconds = []
    for batch in batches:
        start = time.perf_counter()
        with autocast:
            loss = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - start)
    return seconds


def _rates(runs: list[list[float]], tokens_per_step: int) -> dict[str, float]:
    pooled = sorted(s for run in runs for s in run)
    return {"runs": statistics.median(tokens_per_step * len(r) / sum(r) for r in runs),
            "median step": tokens_per_step / statistics.median(pooled),
            "p10 step": tokens_per_step / pooled[len(pooled) // 10]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="shakespeare-char-cpu")
    parser.add_argument("--data_files", nargs="*", default=None,
                        help=f"text to train on (default for char presets: {DEFAULT_DATA})")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side (alternating)")
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args, extra = parser.parse_known_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data_files = args.data_files
    if data_files is None and args.preset.startswith("shakespeare-char"):
        data_files = [str(DEFAULT_DATA)]
    print(f"bench_train: preset {args.preset}, {args.steps} steps x {args.repeats} runs, torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} (the machine is shared: rerun if busy)")
    print(f"{'precision':<10} {'run':>4} {'Trainer tok/s':>14} {'plain loop tok/s':>17}")
    summary = {}
    for precision in args.precisions:
        warmup = prepare(args.preset, data_files, min(args.steps, 20), precision, extra)
        time_trainer(warmup), time_plain_loop(warmup)  # untimed: first-call allocations and caches
        run = prepare(args.preset, data_files, args.steps, precision, extra)
        tokens = run.plan.tokens_per_step
        trainer_steps, loop_steps = [], []
        for repeat in range(args.repeats):
            # alternate which side goes first, so a drift in the machine's load favours neither
            if repeat % 2 == 0:
                trainer_steps.append(time_trainer(run))
                loop_steps.append(time_plain_loop(run))
            else:
                loop_steps.append(time_plain_loop(run))
                trainer_steps.append(time_trainer(run))
            print(f"{precision:<10} {repeat:>4} {tokens * len(trainer_steps[-1]) / sum(trainer_steps[-1]):>14.0f} "
                  f"{tokens * len(loop_steps[-1]) / sum(loop_steps[-1]):>17.0f}", flush=True)
        summary[precision] = [_rates(trainer_steps, tokens), _rates(loop_steps, tokens)]
    print()
    print("tokens/s from the whole runs (median of runs), and from the median and the fastest decile of all step")
    print("times pooled (robust to other processes' bursts on a shared machine):")
    for precision, (trainer, loop) in summary.items():
        for key in ("runs", "median step", "p10 step"):
            print(f"{precision} {key:<12}: Trainer {trainer[key]:>7.0f} tok/s, plain loop {loop[key]:>7.0f} tok/s, "
                  f"ratio {trainer[key] / loop[key]:.3f} (target >= 0.9)")
    if len(summary) == 2:
        print(f"bf16 / fp32 (plain loop, median step): "
              f"{summary['bf16'][1]['median step'] / summary['fp32'][1]['median step']:.3f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
