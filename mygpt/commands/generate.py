"""``mygpt-generate`` (``python generate.py``): sample text from a trained model.

    mygpt-generate --model runs/cpu-quick --prompt "ROMEO:"                     # as generation_config.json says
    mygpt-generate --model runs/cpu-quick --prompt "ROMEO:" --temperature 0.6   # ... a little cooler
    mygpt-generate --model runs/cpu-quick --prompt "ROMEO:" --strategy top_p --top_p 0.9 --seed 0
    mygpt-generate --model runs/cpu-quick --prompt_file prompts.txt --num_return_sequences 3
    mygpt-generate --model runs/cpu-quick --prompt "ROMEO:" --stream
    mygpt-generate --model runs/cpu-quick --prompt "ROMEO:" --compare       # every strategy, same seed
    mygpt-generate args.yaml --seed 3                                      # options from a file, flags on top

Without ``--strategy`` the model decodes as its saved ``generation_config.json`` says (what ``train_hf.py`` saved,
or a Hub model's own settings), with any knob given here on top, as transformers' ``generate`` and ``pipeline`` do.
With ``--strategy`` the project's hand-written samplers (``generation_mygpt``) decide, whatever was saved. Works
with any causal LM folder (MyGPT, GPT-2, ...) or Hub id. Each prompt (and, with ``--compare``, each strategy)
starts from the same seed, so a result can be reproduced on its own, whatever else was generated in the same run.
"""

from __future__ import annotations

import logging
import secrets
import sys
from dataclasses import dataclass, field
from typing import Any

from transformers import TextStreamer

from generation_mygpt import KNOBS, STRATEGIES, STRATEGY_PRESETS, make_sampler
from mygpt.cli import main_guard, parse, setup_logging
from mygpt.generation import generate_texts
from mygpt.loading import DTYPES, load_model_and_tokenizer
from mygpt.prompts import read_prompt_file

logger = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 200  # when neither the command line nor the saved generation config says


@dataclass
class GenerateArguments:
    """The options of ``mygpt-generate``."""

    model: str = field(metadata={"help": "Model folder (save_pretrained / train_hf.py output) or a Hub id."})
    prompt: str | None = field(default=None, metadata={"help": "The text to continue."})
    prompt_file: str | None = field(default=None, metadata={"help": "A file of prompts, one per non-empty line."})
    strategy: str | None = field(default=None, metadata={
        "help": "Decoding strategy: the project's samplers. Default: the model's generation_config.json, with the "
                "knobs below on top.", "choices": list(STRATEGIES)})
    temperature: float | None = field(default=None, metadata={
        "help": "(0, inf); composes with every sampling strategy."})
    top_k: int | None = field(default=None, metadata={"help": "Keep the k most likely tokens (k >= 1)."})
    top_p: float | None = field(default=None, metadata={"help": "Nucleus mass in (0, 1]."})
    min_p: float | None = field(default=None, metadata={
        "help": "Keep tokens >= min_p x the best one's probability, [0, 1]."})
    typical_p: float | None = field(default=None, metadata={"help": "Typical-sampling mass in (0, 1]."})
    repetition_penalty: float | None = field(default=None, metadata={
        "help": "(0, inf); 1.0 = none, >1 discourages repeats."})
    max_new_tokens: int | None = field(default=None, metadata={
        "help": f"Tokens to generate after each prompt. Default: the saved generation config's, else "
                f"{DEFAULT_MAX_NEW_TOKENS}."})
    num_return_sequences: int = field(default=1, metadata={"help": "Samples per prompt."})
    seed: int | None = field(default=None, metadata={"help": "Random seed (default: a fresh one, printed to stderr)."})
    stream: bool = field(default=False, metadata={"help": "Print tokens as they are generated."})
    compare: bool = field(default=False, metadata={"help": "Continue each prompt under every strategy, same seed."})
    device: str = field(default="auto", metadata={
        "help": "auto (cuda if available, else cpu), cpu, cuda, cuda:1, mps..."})
    dtype: str = field(default="auto", metadata={"help": "Weights dtype.", "choices": list(DTYPES)})

    def knobs(self) -> dict[str, Any]:
        """The sampling knobs given on the command line (None = not given)."""
        return {name: getattr(self, name) for name in KNOBS if getattr(self, name) is not None}


def strategy_runs(args: GenerateArguments) -> list[tuple[str | None, dict[str, Any]]]:
    """(strategy, knobs) pairs to run: the chosen one (None: the saved generation config), or with --compare every
    strategy.

    Under --compare, a strategy's own knob comes from the command line when given there (else its preset),
    temperature applies to every sampling strategy, and the repetition penalty to all of them.
    """
    given = args.knobs()
    if not args.compare:
        if args.strategy is None:
            return [(None, given)]
        return [(args.strategy, {**STRATEGY_PRESETS[args.strategy], **given})]
    runs: list[tuple[str | None, dict[str, Any]]] = []
    for strategy, preset in STRATEGY_PRESETS.items():
        shared = {"repetition_penalty"} | (set() if strategy == "greedy" else {"temperature"})
        own = {name: value for name, value in given.items() if name in preset or name in shared}
        runs.append((strategy, {**preset, **own}))
    return runs


def describe(strategy: str, knobs: dict[str, Any]) -> str:
    """``top_p (top_p=0.9, temperature=0.8)``"""
    return f"{strategy} ({', '.join(f'{k}={v}' for k, v in knobs.items())})" if knobs else strategy


def read_prompts(args: GenerateArguments) -> list[str]:
    """The prompts, checked: exactly one of --prompt / --prompt_file, and no empty prompt."""
    if (args.prompt is None) == (args.prompt_file is None):
        raise ValueError("give exactly one of --prompt TEXT or --prompt_file FILE")
    if args.prompt is not None:
        if not args.prompt.strip():
            raise ValueError("--prompt is empty: give some text to continue, e.g. --prompt 'ROMEO:'")
        return [args.prompt]
    return read_prompt_file(args.prompt_file)


def check_arguments(args: GenerateArguments) -> list[tuple[str | None, dict[str, Any]]]:
    """Everything that can be checked before loading the model; returns the strategy runs."""
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ValueError(f"--max_new_tokens must be >= 1, got {args.max_new_tokens}")
    if args.num_return_sequences < 1:
        raise ValueError(f"--num_return_sequences must be >= 1, got {args.num_return_sequences}")
    if args.stream and args.num_return_sequences > 1:
        raise ValueError("--stream prints one sequence at a time: use it with --num_return_sequences 1")
    if args.compare and args.strategy is not None:
        logger.info("--compare runs every strategy; --strategy %s is ignored", args.strategy)
    runs = strategy_runs(args)
    for strategy, knobs in runs:
        # raises ValueError naming the knob and its valid range (the temperature chain takes every knob)
        make_sampler(strategy or "temperature", **knobs)
        if strategy == "greedy" and args.num_return_sequences > 1:
            raise ValueError("greedy decoding gives the same text every time: use --num_return_sequences 1 "
                             "or a sampling strategy")
    return runs


def run(args: GenerateArguments) -> None:
    """Check the arguments, load the model, print the generations."""
    runs = check_arguments(args)
    prompts = read_prompts(args)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    if args.seed is None:
        print(f"seed: {seed} (pass --seed {seed} to get the same text again)", file=sys.stderr)
    model, tokenizer = load_model_and_tokenizer(args.model, device=args.device, dtype=args.dtype)
    max_new_tokens = args.max_new_tokens or model.generation_config.max_new_tokens or DEFAULT_MAX_NEW_TOKENS

    for i, prompt in enumerate(prompts):
        if len(prompts) > 1:
            print(f"#### prompt {i + 1}/{len(prompts)}")
        for strategy, knobs in runs:
            if args.compare:
                print(f"=== {describe(strategy, knobs)} ===", flush=True)
            streamer = TextStreamer(tokenizer, skip_special_tokens=True) if args.stream else None
            texts = generate_texts(model, tokenizer, prompt, strategy, knobs, max_new_tokens=max_new_tokens,
                                   num_return_sequences=args.num_return_sequences, seed=seed, streamer=streamer)
            if not args.stream:
                print("\n---------------\n".join(texts))
            print(flush=True)


def main(argv: list[str] | None = None) -> int:
    setup_logging(logging.WARNING)
    with main_guard():
        (args,) = parse([GenerateArguments], argv, prog="mygpt-generate", description=__doc__.split("\n\n")[0])
        run(args)
    return 0
