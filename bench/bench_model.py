"""MyGPT against transformers' GPT2LMHeadModel (sdpa), same configuration and same weights, in one process.

For each row it measures
  * training: forward + backward + AdamW step, tokens per second;
  * generation: greedy decoding with the KV cache, new tokens per second;
  * memory: bytes of activations saved for backward in one training step (what differs between two
    implementations of the same network; parameters and optimiser state are the same), and on CUDA the peak
    allocated memory of the step.
The two models are measured in alternation (ours, reference, ours, ...) and the median of the repeats is kept,
so a machine that slows down during the run slows both down alike. Ratios > 1 mean MyGPT is faster.

    python bench/bench_model.py                 # fp32 and bf16 autocast, all rows
    python bench/bench_model.py --dtypes fp32 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import GPT2LMHeadModel
from transformers.utils import logging as hf_logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configuration_mygpt import MyGPTConfig  # noqa: E402
from modeling_mygpt import MyGPTForCausalLM  # noqa: E402


@dataclass
class Row:
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    batch_size: int
    vocab_size: int

    @property
    def label(self) -> str:
        return (
            f"{self.n_layer}L/{self.n_head}H/{self.n_embd}, ctx {self.block_size}, "
            f"batch {self.batch_size}, V {self.vocab_size}"
        )


ROWS = [Row(4, 4, 128, 64, 12, 65), Row(6, 6, 384, 256, 8, 65), Row(4, 4, 256, 256, 8, 16384)]


def build_pair(row: Row, device: str) -> tuple[MyGPTForCausalLM, GPT2LMHeadModel]:
    """GPT-2 with random weights and MyGPT holding the very same weights."""
    torch.manual_seed(0)
    config = MyGPTConfig(
        vocab_size=row.vocab_size,
        n_positions=row.block_size,
        n_embd=row.n_embd,
        n_layer=row.n_layer,
        n_head=row.n_head,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        resid_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    gpt2 = GPT2LMHeadModel(config.to_gpt2_config()).to(device)
    gpt2.set_attn_implementation("sdpa")
    ours = MyGPTForCausalLM.from_gpt2(gpt2)
    return ours, gpt2


def autocast(device: str, dtype: str):
    if dtype == "fp32":
        return torch.autocast(device, enabled=False)
    return torch.autocast(device, dtype=torch.bfloat16)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def train_step_fn(model: torch.nn.Module, batch: torch.Tensor, device: str, dtype: str) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        with autocast(device, dtype):
            loss = model(batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def generate_fn(model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int, device: str, dtype: str):
    mask = torch.ones_like(prompt)

    def run() -> None:
        model.eval()
        with torch.no_grad(), autocast(device, dtype):
            model.generate(
                prompt,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=0,
            )

    return run


def timed(fn: Callable[[], None], iterations: int, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    sync(device)
    return time.perf_counter() - start


def saved_activation_bytes(model: torch.nn.Module, batch: torch.Tensor, device: str, dtype: str) -> int:
    """Bytes of the tensors autograd keeps for backward in one forward pass (each storage counted once)."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if not isinstance(tensor, torch.nn.Parameter):
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(device, dtype):
        loss = model(batch, labels=batch).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in storages.items() if ptr not in parameters)


def cuda_peak_bytes(step: Callable[[], None]) -> int | None:
    if not torch.cuda.is_available():
        return None
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def measure_row(row: Row, dtype: str, device: str, repeats: int, train_iters: int) -> dict[str, float]:
    ours, gpt2 = build_pair(row, device)
    generator = torch.Generator().manual_seed(0)
    # Token 0 doubles as the pad id; keep it out so nothing looks padded.
    batch = torch.randint(1, row.vocab_size, (row.batch_size, row.block_size), generator=generator).to(device)
    prompt_len = row.block_size // 4
    new_tokens = row.block_size - prompt_len
    prompt = batch[:, :prompt_len]

    result: dict[str, float] = {}
    for kind in ("train", "generate"):
        fns = {}
        for name, model in (("ours", ours), ("gpt2", gpt2)):
            if kind == "train":
                fns[name] = train_step_fn(model, batch, device, dtype)
            else:
                fns[name] = generate_fn(model, prompt, new_tokens, device, dtype)
            fns[name]()  # warm-up: first-call allocations, kernel selection
        iterations = train_iters if kind == "train" else 1
        tokens = iterations * (row.batch_size * row.block_size if kind == "train" else row.batch_size * new_tokens)
        times: dict[str, list[float]] = {"ours": [], "gpt2": []}
        for _ in range(repeats):
            for name in ("ours", "gpt2"):
                times[name].append(timed(fns[name], iterations, device))
        for name in ("ours", "gpt2"):
            result[f"{kind}_{name}"] = tokens / statistics.median(times[name])
        result[f"{kind}_ratio"] = result[f"{kind}_ours"] / result[f"{kind}_gpt2"]

    for name, model in (("ours", ours), ("gpt2", gpt2)):
        result[f"saved_mib_{name}"] = saved_activation_bytes(model, batch, device, dtype) / 2**20
        peak = cuda_peak_bytes(train_step_fn(model, batch, device, dtype))
        if peak is not None:
            result[f"cuda_peak_mib_{name}"] = peak / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=5, help="alternating timed repeats per model (median kept)")
    parser.add_argument("--train_iters", type=int, default=3, help="training steps per timed repeat")
    parser.add_argument("--rows", nargs="+", type=int, default=list(range(len(ROWS))), help="row indices to run")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()  # the benchmark's own table is the output
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; repeats {args.repeats}, median kept")
    header = (
        "| config | dtype | train tok/s MyGPT | GPT-2 | ratio | gen tok/s MyGPT | GPT-2 | ratio "
        "| saved activations MiB MyGPT | GPT-2 |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for dtype in args.dtypes:
        for index in args.rows:
            row = ROWS[index]
            r = measure_row(row, dtype, device, args.repeats, args.train_iters)
            print(
                f"| {row.label} | {dtype} | {r['train_ours']:,.0f} | {r['train_gpt2']:,.0f} | {r['train_ratio']:.2f} "
                f"| {r['generate_ours']:,.0f} | {r['generate_gpt2']:,.0f} | {r['generate_ratio']:.2f} "
                f"| {r['saved_mib_ours']:.1f} | {r['saved_mib_gpt2']:.1f} |",
                flush=True,
            )
            if "cuda_peak_mib_ours" in r:
                print(f"|   CUDA peak MiB: MyGPT {r['cuda_peak_mib_ours']:.0f}, GPT-2 {r['cuda_peak_mib_gpt2']:.0f} |")


if __name__ == "__main__":
    main()
