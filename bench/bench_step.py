#!/usr/bin/env python3
"""One training step of the default preset's shape: today's code (710dcd6) against this tree, same batch, same seed.

    python bench/bench_step.py                          # old side from `git archive 710dcd6` in a temp folder
    python bench/bench_step.py --old_tree /work/wt/baseline --repeats 5

The step is what the Trainer does per optimizer step: forward with labels (the model's own loss), backward,
gradient clipping to 1.0, fused AdamW, zero_grad. Both sides run this very file in worker mode (``--worker``),
each in a fresh subprocess whose PYTHONPATH and working directory are its tree, so each imports its own
``modeling_mygpt`` (and, on the new side, the process tuning of ``mygpt.speed`` if it exists). Runs alternate
old/new (and which goes first), >= 3 repeats each; a run times ``--steps`` steps after ``--warmup`` untimed ones
and reports the median step. Printed: medians over runs of tokens/s per side and precision, the ratio new/old,
and an MFU counted as ``6 N + 12 L C T`` FLOPs per token (``N``: matmul weights, LM head included;
``mygpt.training.training_flops_per_token``) over a matmul peak measured here at the same precision.

Note on the old side: 710dcd6's ``--precision auto`` recorded bf16 but trained in fp32 (fixed on main), so
"old fp32" is the old default as it ran; old bf16 autocast is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
OLD_COMMIT = "710dcd6"
PRESET = ROOT / "mygpt" / "presets" / "cpu-quick.yaml"


def preset_shape(path: Path = PRESET) -> dict[str, int]:
    """The model and batch shape of a preset: n_layer, n_head, n_embd, vocab_size, block_size, batch."""
    import yaml

    preset = yaml.safe_load(path.read_text())
    shape = {key: preset[key] for key in ("n_layer", "n_head", "n_embd", "vocab_size", "block_size")}
    shape["batch"] = preset["per_device_train_batch_size"]
    return shape


def build_step(shape: dict[str, int], precision: str, seed: int = 0):
    """(model, step function) for the modeling_mygpt on sys.path; ``step()`` returns the loss as a float."""
    from configuration_mygpt import MyGPTConfig
    from modeling_mygpt import MyGPTForCausalLM

    torch.manual_seed(seed)
    config = MyGPTConfig(vocab_size=shape["vocab_size"], n_positions=shape["block_size"], n_embd=shape["n_embd"],
                         n_layer=shape["n_layer"], n_head=shape["n_head"], embd_pdrop=0.0, attn_pdrop=0.0,
                         resid_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    model = MyGPTForCausalLM(config).train()
    ids = torch.randint(0, shape["vocab_size"], (shape["batch"], shape["block_size"]),
                        generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.99), weight_decay=0.1, fused=True)

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return model, step


def worker(shape: dict[str, int], precision: str, steps: int, warmup: int) -> None:
    """Time ``steps`` steps after ``warmup`` untimed ones; print one JSON line."""
    try:  # the new tree's process tuning (absent in the old tree)
        from mygpt.speed import tune_process
    except ImportError:
        tune_process = None
    if tune_process is not None:
        tune_process()
    _, step = build_step(shape, precision)
    for _ in range(warmup):
        step()
    seconds, cpu_seconds, losses = [], [], []
    for _ in range(steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        losses.append(step())
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "first_loss": losses[0]}))


def run_side(tree: Path, shape: dict, precision: str, steps: int, warmup: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(shape), "--precision",
               precision, "--steps", str(steps), "--warmup", str(warmup)]
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker in {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def matmul_peak(precision: str, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the best of ``repeats`` n x n x n matmuls at this precision."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def old_tree_from_git(target: Path) -> Path:
    """Today's code as a plain folder: ``git archive 710dcd6`` unpacked into ``target``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", OLD_COMMIT], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old_tree", type=Path, default=None,
                        help=f"a checkout of {OLD_COMMIT} (default: git archive of it into a temp folder)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side and precision")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per run")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker), args.precision, args.steps, args.warmup)
        return

    sys.path.insert(0, str(ROOT))
    from mygpt.training import cpu_has_native_bf16, cpu_name, training_flops_per_token

    print(f"CPU: {cpu_name()}; native bf16: {cpu_has_native_bf16()}; torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.1f} (a shared machine: compare only within this run)")
    shape = preset_shape()
    tokens = shape["batch"] * shape["block_size"]
    model, _ = build_step(shape, "fp32")
    flops_per_token = training_flops_per_token(model, shape["block_size"])
    del model
    print(f"shape {shape}: {tokens} tokens/step, {flops_per_token / 1e6:.1f} MFLOP/token (6N + 12 L C T)")

    with tempfile.TemporaryDirectory(prefix="bench-step-old-") as temp:
        old_tree = args.old_tree.resolve() if args.old_tree else old_tree_from_git(Path(temp))
        print(f"old: {old_tree}; new: {ROOT}")
        rates: dict[tuple[str, str], list[float]] = {}
        cpu_rates: dict[tuple[str, str], list[float]] = {}  # less sensitive to other processes than wall time
        for repeat in range(args.repeats):
            sides = [("old", old_tree), ("new", ROOT)]
            for side, tree in sides if repeat % 2 == 0 else sides[::-1]:
                for precision in args.precisions:
                    result = run_side(tree, shape, precision, args.steps, args.warmup)
                    rate = tokens / statistics.median(result["seconds"])
                    cpu_rate = tokens / statistics.median(result["cpu_seconds"])
                    rates.setdefault((side, precision), []).append(rate)
                    cpu_rates.setdefault((side, precision), []).append(cpu_rate)
                    print(f"run {repeat} {side} {precision}: {rate:7.0f} tok/s (median step), {cpu_rate:7.0f} "
                          f"tok per CPU-second, first loss {result['first_loss']:.4f}, "
                          f"load {os.getloadavg()[0]:.1f}", flush=True)

    print()
    for precision in args.precisions:
        peak = matmul_peak(precision)
        old, new = (statistics.median(rates[(side, precision)]) for side in ("old", "new"))
        label = "(as the old default ran)" if precision == "fp32" else "(autocast)"
        print(f"{precision}: old {old:7.0f} tok/s {label}, new {new:7.0f} tok/s, new/old {new / old:.2f}; "
              f"matmul peak {peak / 1e9:.0f} GFLOP/s (2048^3 {precision}); MFU old {old * flops_per_token / peak:.3f}, "
              f"new {new * flops_per_token / peak:.3f}")
        old_cpu, new_cpu = (statistics.median(cpu_rates[(side, precision)]) for side in ("old", "new"))
        print(f"{precision}: per CPU-second (all threads' time): old {old_cpu:7.0f}, new {new_cpu:7.0f}, "
              f"new/old {new_cpu / old_cpu:.2f}")
    if "fp32" in args.precisions and "bf16" in args.precisions:
        old_fp32 = statistics.median(rates[("old", "fp32")])
        new_bf16 = statistics.median(rates[("new", "bf16")])
        print(f"new bf16 (main's default on this CPU) / old fp32 (710dcd6's default as it ran): "
              f"{new_bf16 / old_fp32:.2f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
