"""Generation speed: MyGPT with and without its KV cache against transformers' GPT2LMHeadModel, in one process.

Every model holds the same random weights (``MyGPTForCausalLM.from_gpt2``), the same prompt (random ids, no
padding), and decodes greedily through the same ``generate`` for exactly the same number of new tokens (no
end-of-text token). Measured, in new tokens per second (batch x new tokens / wall time of ``generate``):

  1. 64-token prompt + 256 new tokens, batch 1 and 8:
       MyGPT cached | MyGPT uncached (use_cache=False: the whole sequence again every step) | GPT-2 (sdpa) cached
     ratios: MyGPT cached / GPT-2 cached (target >= 1.0), MyGPT cached / MyGPT uncached.
  2. 512 tokens of context (448-token prompt + 64 new tokens), batch 1: cached / uncached (target >= 5).
  3. Sampler overhead: MyGPT cached with our top-p chain (``strategy="top_p"``) against transformers' own
     TopPLogitsWarper (``do_sample=True, top_p=...``), batch 8 — both sample, so only the processors differ.

Models are timed in alternation (A, B, C, A, B, C, ...) and the median of the repeats kept, so a shared
machine that slows down during the run slows every model down alike. Ratios > 1 mean MyGPT is faster.

    python bench/bench_generate.py                       # every configuration, 3 repeats
    python bench/bench_generate.py --configs 0 --repeats 5 --threads 1
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
from transformers import GPT2LMHeadModel, set_seed
from transformers.utils import logging as hf_logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configuration_mygpt import MyGPTConfig  # noqa: E402
from modeling_mygpt import MyGPTForCausalLM  # noqa: E402


@dataclass(frozen=True)
class Shape:
    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int

    @property
    def label(self) -> str:
        return f"{self.n_layer}L/{self.n_head}H/{self.n_embd} V{self.vocab_size}"


# the model benchmark's configurations: nanoGPT's CPU and GPU Shakespeare-char models, and a BPE-sized vocabulary
SHAPES = [Shape(4, 4, 128, 65), Shape(6, 6, 384, 65), Shape(4, 4, 256, 16384)]
PROMPT, NEW = 64, 256
LONG_PROMPT, LONG_NEW = 448, 64  # 512 tokens of context at the end


def build_models(shape: Shape, device: str) -> tuple[MyGPTForCausalLM, GPT2LMHeadModel]:
    """GPT-2 (sdpa) with random weights, and MyGPT holding the very same weights."""
    torch.manual_seed(0)
    config = MyGPTConfig(vocab_size=shape.vocab_size, n_positions=1024, n_embd=shape.n_embd, n_layer=shape.n_layer,
                         n_head=shape.n_head, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0,
                         bos_token_id=None, eos_token_id=None, pad_token_id=0)
    gpt2 = GPT2LMHeadModel(config.to_gpt2_config()).to(device).eval()
    gpt2.set_attn_implementation("sdpa")
    return MyGPTForCausalLM.from_gpt2(gpt2).eval(), gpt2


def generate_fn(model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int, **kwargs) -> Callable[[], None]:
    """One call of ``generate`` producing exactly ``new_tokens`` tokens per row."""
    mask = torch.ones_like(prompt)

    def run() -> None:
        set_seed(0)
        out = model.generate(prompt, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             pad_token_id=0, **kwargs)
        assert out.shape[1] == prompt.shape[1] + new_tokens  # the rate below counts exactly these tokens

    return run


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def tokens_per_second(fns: dict[str, Callable[[], None]], new_tokens: int, batch: int, repeats: int,
                      device: str) -> dict[str, float]:
    """New tokens per second of each function: one warm-up each, then alternating repeats, median time."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: batch * new_tokens / statistics.median(t) for name, t in times.items()}


def random_prompt(batch: int, length: int, vocab: int, device: str) -> torch.Tensor:
    # token 0 is the pad id: keep it out so nothing looks padded
    return torch.randint(1, vocab, (batch, length), generator=torch.Generator().manual_seed(batch)).to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", type=int, default=list(range(len(SHAPES))),
                        help=f"indices into {[s.label for s in SHAPES]}")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3, help="alternating timed repeats per model (median kept)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); on a busy shared machine 1 avoids "
                             "threads waiting for each other")
    parser.add_argument("--sections", nargs="+", default=["gpt2", "long", "samplers"],
                        choices=["gpt2", "long", "samplers"])
    args = parser.parse_args()
    hf_logging.set_verbosity_error()  # the table is the output
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; greedy decoding, fp32; {args.repeats} repeats, median kept")

    shapes = [SHAPES[i] for i in args.configs]
    if "gpt2" in args.sections:
        print(f"\n## {PROMPT}-token prompt + {NEW} new tokens: new tokens/s")
        print("| config | batch | MyGPT cached | MyGPT uncached | GPT-2 cached | MyGPT / GPT-2 | cached / uncached |")
        print("|---|---|---|---|---|---|---|")
        for shape in shapes:
            ours, gpt2 = build_models(shape, device)
            for batch in args.batches:
                prompt = random_prompt(batch, PROMPT, shape.vocab_size, device)
                r = tokens_per_second({
                    "cached": generate_fn(ours, prompt, NEW, do_sample=False, use_cache=True),
                    "uncached": generate_fn(ours, prompt, NEW, do_sample=False, use_cache=False),
                    "gpt2": generate_fn(gpt2, prompt, NEW, do_sample=False, use_cache=True),
                }, NEW, batch, args.repeats, device)
                print(f"| {shape.label} | {batch} | {r['cached']:,.0f} | {r['uncached']:,.0f} | {r['gpt2']:,.0f} "
                      f"| {r['cached'] / r['gpt2']:.2f} | {r['cached'] / r['uncached']:.1f} |", flush=True)

    if "long" in args.sections:
        print(f"\n## 512 tokens of context ({LONG_PROMPT}-token prompt + {LONG_NEW} new tokens), batch 1: "
              "new tokens/s (target cached / uncached >= 5)")
        print("| config | MyGPT cached | MyGPT uncached | cached / uncached | GPT-2 cached | MyGPT / GPT-2 |")
        print("|---|---|---|---|---|---|")
        for shape in shapes:
            ours, gpt2 = build_models(shape, device)
            prompt = random_prompt(1, LONG_PROMPT, shape.vocab_size, device)
            r = tokens_per_second({
                "cached": generate_fn(ours, prompt, LONG_NEW, do_sample=False, use_cache=True),
                "uncached": generate_fn(ours, prompt, LONG_NEW, do_sample=False, use_cache=False),
                "gpt2": generate_fn(gpt2, prompt, LONG_NEW, do_sample=False, use_cache=True),
            }, LONG_NEW, 1, args.repeats, device)
            print(f"| {shape.label} | {r['cached']:,.0f} | {r['uncached']:,.0f} | {r['cached'] / r['uncached']:.1f} "
                  f"| {r['gpt2']:,.0f} | {r['cached'] / r['gpt2']:.2f} |", flush=True)

    if "samplers" in args.sections:
        batch = max(args.batches)
        print(f"\n## sampler overhead: top-p 0.9, {PROMPT}-token prompt + {NEW} new tokens, batch {batch}, MyGPT "
              "cached: new tokens/s")
        print("| config | our TopPProcessor | transformers' TopPLogitsWarper | ours / theirs |")
        print("|---|---|---|---|")
        for shape in shapes:
            ours, _ = build_models(shape, device)
            prompt = random_prompt(batch, PROMPT, shape.vocab_size, device)
            r = tokens_per_second({
                "ours": generate_fn(ours, prompt, NEW, strategy="top_p", top_p=0.9),
                "theirs": generate_fn(ours, prompt, NEW, do_sample=True, top_p=0.9, top_k=None),
            }, NEW, batch, args.repeats, device)
            print(f"| {shape.label} | {r['ours']:,.0f} | {r['theirs']:,.0f} | {r['ours'] / r['theirs']:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
