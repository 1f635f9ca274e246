#!/usr/bin/env python3
"""The cost of one optimizer step: AdamW alone against Muon + AdamW (mygpt/optim.py), Newton-Schulz in bf16 and fp32.

    python bench/bench_optim.py                       # the default preset's network (4 x 256, vocabulary 16,384)
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python bench/bench_optim.py   # as on a CPU without bf16

Only the update is timed (gradients are fixed random tensors), so the figures say what Muon adds to a training
step. The three optimizers alternate, and each figure is the median of ``--repeats`` steps. On a CPU without native
bf16 (AVX512-BF16/AMX) torch's bf16 Newton-Schulz is emulated; mygpt's Muon then runs it in fp32.

Measured 2026-12-03 on a shared 2-core Intel Xeon with AMX-BF16 (load average ~7, so OMP_NUM_THREADS=1; the
absolute figures are load-bound, the ratios less so): AdamW 78 ms, Muon + AdamW 131 ms with bf16 Newton-Schulz,
371 ms with fp32; with oneDNN limited to AVX2 (no bf16 instructions) bf16 Newton-Schulz took 10,610 ms and fp32
365 ms, which is why mygpt's Muon switches to fp32 there.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from configuration_mygpt import MyGPTConfig  # noqa: E402
from modeling_mygpt import MyGPTForCausalLM  # noqa: E402
from mygpt.optim import Muon, build_muon_adamw  # noqa: E402
from mygpt.training import cpu_has_native_bf16, cpu_name, decay_parameter_names  # noqa: E402

ADAMW = {"lr": 1e-3, "betas": (0.9, 0.99), "eps": 1e-8}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n_layer", type=int, default=4)
    parser.add_argument("--n_embd", type=int, default=256)
    parser.add_argument("--vocab_size", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    model = MyGPTForCausalLM(MyGPTConfig(n_layer=args.n_layer, n_head=4, n_embd=args.n_embd, n_positions=256,
                                         vocab_size=args.vocab_size, bos_token_id=0, eos_token_id=0))
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    decay = set(decay_parameter_names(model))
    named = list(model.named_parameters())
    optimizers = {
        "adamw": torch.optim.AdamW([{"params": [p for n, p in named if n in decay], "weight_decay": 0.1},
                                    {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}],
                                   **ADAMW),
    }
    for dtype in (torch.bfloat16, torch.float32):
        combined = build_muon_adamw(model, 0.1, torch.optim.AdamW, dict(ADAMW))
        muon = combined.optimizers["muon"]
        combined.optimizers["muon"] = Muon(muon.param_groups[0]["params"], lr=ADAMW["lr"], weight_decay=0.1,
                                           adjust_lr_fn="match_rms_adamw", ns_dtype=dtype)
        optimizers[f"muon+adamw (NS {str(dtype).removeprefix('torch.')})"] = combined
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for repeat in range(args.repeats + 1):
        for name, optimizer in optimizers.items():
            started = time.perf_counter()
            optimizer.step()
            if repeat:  # the first round warms up
                times[name].append(time.perf_counter() - started)
    print(f"CPU: {cpu_name()}, native bf16: {cpu_has_native_bf16()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, oneDNN ISA limit: {__import__('os').environ.get('ONEDNN_MAX_CPU_ISA', '-')}")
    base = statistics.median(times["adamw"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:28s} {median * 1e3:8.1f} ms per step  ({median / base:.2f}x AdamW)")


if __name__ == "__main__":
    main()
