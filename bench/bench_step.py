#!/usr/bin/env python3
"""One training step of the default preset, before (commit 710dcd6) and now, and its MFU.

    git worktree add /tmp/mygpt-710dcd6 710dcd6          # the old code, once
    python bench/bench_step.py --old_tree /tmp/mygpt-710dcd6 --repeats 3

A step is what the Trainer does per optimizer step: forward (under bf16 autocast when the precision is bf16),
the loss, backward, gradient clipping to 1.0, the optimizer step, zero_grad. Every side trains on the same random
batch (B 8 x T 256) from the same seed, in its own fresh process with the code of its own tree, so the old side
runs the old model code. Sides alternate, ``--repeats`` times each, and the figure per side is the median of
its repeats (each repeat: the median of ``--steps`` timed steps after ``--warmup`` untimed ones).

Sides:
  old fp32 (as run)   710dcd6's default: its ``--precision auto`` recorded bf16 but trained in fp32 (accelerate
                      read the mixed-precision setting before the run set it), so this is the step it really ran
  old bf16            710dcd6's model under bf16 autocast: the step it meant to run
  new, old shape      today's code, the old preset's model (vocab 16,384, learned positions, GELU, AdamW), bf16
  new default         today's default preset as it trains (model, optimizer and precision from the preset)

MFU = model FLOP/s / matmul peak. Model FLOPs per token: 6 x (parameters that take part in a matmul: the blocks'
weights and the LM head; not the lookup tables) + 12 x n_layer x T x n_embd for attention's two T x T products,
forward and backward (PaLM's count, causal masking not subtracted). The peak is measured here, in this run: the
best of several 2048^3 matmuls at the same precision, in a process with the same threads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

OLD_SHAPE = {"vocab_size": 16384, "n_positions": 256, "n_embd": 256, "n_layer": 4, "n_head": 4,
             "embd_pdrop": 0.0, "attn_pdrop": 0.0, "resid_pdrop": 0.0, "bos_token_id": 0, "eos_token_id": 0}
BATCH, CONTEXT = 8, 256


def new_default_side() -> dict:
    """The default preset's model, optimizer and learning rate, read from the preset file of this tree."""
    sys.path.insert(0, str(ROOT))
    from mygpt.arguments import parse_arguments

    args = parse_arguments([])
    config = {**OLD_SHAPE, **{k: v for k, v in args.model.config_kwargs().items() if v is not None}}
    config.update(vocab_size=args.data.vocab_size, n_positions=args.data.block_size, bos_token_id=0, eos_token_id=0)
    return {"config": config, "optimizer": args.training.optimizer, "lr": args.training.learning_rate}


# ---------------------------------------------------------------------------------------------------------------
# The worker: one side, in its own process, with its tree first on sys.path


def worker(spec: dict) -> dict:
    sys.path.insert(0, spec["tree"])
    import torch

    from configuration_mygpt import MyGPTConfig
    from modeling_mygpt import MyGPTForCausalLM

    torch.manual_seed(0)
    model = MyGPTForCausalLM(MyGPTConfig(**spec["config"])).train()
    # What the Trainer builds (transformers 5.24's default --optim adamw_torch_fused, the presets' betas).
    adamw_kwargs = {"lr": spec["lr"], "betas": (0.9, 0.99), "eps": 1e-8, "fused": True}
    if spec["optimizer"] == "muon":
        from mygpt.optim import build_muon_adamw

        optimizer = build_muon_adamw(model, 0.1, torch.optim.AdamW, adamw_kwargs)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), weight_decay=0.1, **adamw_kwargs)
    ids = torch.randint(0, model.config.vocab_size, (BATCH, CONTEXT), generator=torch.Generator().manual_seed(1))
    bf16 = spec["precision"] == "bf16"

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(spec["warmup"]):
        step()
    times = []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    head = model.lm_head.weight
    matmul_params = sum(p.numel() for p in model.parameters() if id(p) not in embeddings) + head.numel()
    c = model.config
    flops_per_token = 6 * matmul_params + 12 * c.n_layer * CONTEXT * c.n_embd
    return {"tokens_per_second": BATCH * CONTEXT / statistics.median(times), "flops_per_token": flops_per_token}


def matmul_peak(precision: str) -> float:
    """Best FLOP/s of a 2048^3 matmul at ``precision`` in this process."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    n = 2048
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    best = min(_timed(lambda: a @ b) for _ in range(8))
    return 2 * n**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------------------
# The driver


def run_side(spec: dict) -> dict:
    result = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                            text=True, cwd=spec["tree"], env={**os.environ, "PYTHONPATH": spec["tree"]})
    if result.returncode != 0:
        raise SystemExit(f"side {spec['name']} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old_tree", required=False, help="a checkout of 710dcd6 (git worktree add DIR 710dcd6)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if not args.old_tree or not (Path(args.old_tree) / "modeling_mygpt.py").is_file():
        parser.error("--old_tree must be a checkout of 710dcd6: git worktree add /tmp/mygpt-710dcd6 710dcd6")

    sys.path.insert(0, str(ROOT))
    import torch

    from mygpt.training import cpu_has_native_bf16, cpu_name

    print(f"CPU: {cpu_name()}; native bf16: {cpu_has_native_bf16()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    new = new_default_side()
    common = {"steps": args.steps, "warmup": args.warmup}
    old_tree, new_tree = str(Path(args.old_tree).resolve()), str(ROOT)
    sides = [
        {"name": "old fp32 (as run)", "tree": old_tree, "config": OLD_SHAPE, "optimizer": "adamw", "lr": 2e-3,
         "precision": "fp32"},
        {"name": "old bf16", "tree": old_tree, "config": OLD_SHAPE, "optimizer": "adamw", "lr": 2e-3,
         "precision": "bf16"},
        {"name": "new, old shape", "tree": new_tree, "config": OLD_SHAPE, "optimizer": "adamw", "lr": 2e-3,
         "precision": "bf16"},
        {"name": "new default", "tree": new_tree, "config": new["config"], "optimizer": new["optimizer"],
         "lr": new["lr"], "precision": "bf16" if cpu_has_native_bf16() else "fp32"},
    ]
    print("new default: " + ", ".join(f"{k}={new['config'][k]}" for k in (
        "vocab_size", "position_embedding", "activation_function", "norm") if k in new["config"])
        + f", optimizer={new['optimizer']}")
    rates: dict[str, list[float]] = {s["name"]: [] for s in sides}
    flops: dict[str, float] = {}
    for repeat in range(args.repeats):
        order = sides if repeat % 2 == 0 else sides[::-1]  # alternate, so a change in load hits every side
        for spec in order:
            result = run_side({**spec, **common})
            rates[spec["name"]].append(result["tokens_per_second"])
            flops[spec["name"]] = result["flops_per_token"]
            print(f"  repeat {repeat + 1}: {spec['name']:<18} {result['tokens_per_second']:8.0f} tokens/s",
                  flush=True)
    peaks = {p: matmul_peak(p) for p in ("fp32", "bf16")}
    print(f"\nmatmul peak measured here (2048^3): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s")
    base = statistics.median(rates["old fp32 (as run)"])
    print(f"\n| side | precision | tokens/s (median of {args.repeats}) | x old as run | x old bf16 | MFU |")
    print("|---|---|---|---|---|---|")
    old_bf16 = statistics.median(rates["old bf16"])
    for spec in sides:
        rate = statistics.median(rates[spec["name"]])
        mfu = rate * flops[spec["name"]] / peaks[spec["precision"]]
        print(f"| {spec['name']} | {spec['precision']} | {rate:,.0f} | {rate / base:.2f} | {rate / old_bf16:.2f} "
              f"| {mfu:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
