"""Sample text from a trained model with the project's hand-written samplers.

    python generate.py --model runs/cpu-quick --prompt "ROMEO:" --strategy top_p --top_p 0.9 \
        --temperature 0.8 --max_new_tokens 200 --seed 0
    python generate.py --model runs/cpu-quick --prompt_file prompts.txt --num_return_sequences 3
    python generate.py --model runs/cpu-quick --prompt "ROMEO:" --stream
    python generate.py --model runs/cpu-quick --prompt "ROMEO:" --compare       # every strategy, same seed
    python generate.py args.yaml                                                # the same options from a file

Works with any causal LM folder (MyGPT, GPT-2, ...) or Hub id: the samplers are passed to ``generate`` as
logits processors (``generation_mygpt.strategy_generate_kwargs``), so the model class does not matter.
Each prompt (and, with ``--compare``, each strategy) starts from the same seed, so a result can be reproduced
on its own, whatever else was generated in the same run.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, HfArgumentParser, TextStreamer, set_seed

from generation_mygpt import KNOBS, STRATEGIES, STRATEGY_PRESETS, make_sampler, strategy_generate_kwargs

logger = logging.getLogger(__name__)

DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class GenerateArguments:
    """Options of generate.py (command line, or a .yaml/.json file given as the only argument)."""

    model: str = field(metadata={"help": "Model folder (save_pretrained / train_hf.py output) or a Hub id."})
    prompt: str | None = field(default=None, metadata={"help": "The text to continue."})
    prompt_file: str | None = field(default=None, metadata={"help": "A file of prompts, one per non-empty line."})
    strategy: str = field(default="top_p", metadata={"help": "Decoding strategy.", "choices": list(STRATEGIES)})
    temperature: float | None = field(default=None, metadata={"help": "(0, inf); composes with every sampling strategy."})
    top_k: int | None = field(default=None, metadata={"help": "Keep the k most likely tokens (k >= 1)."})
    top_p: float | None = field(default=None, metadata={"help": "Nucleus mass in (0, 1]."})
    min_p: float | None = field(default=None, metadata={"help": "Keep tokens >= min_p x the best one's probability, [0, 1]."})
    typical_p: float | None = field(default=None, metadata={"help": "Typical-sampling mass in (0, 1]."})
    repetition_penalty: float | None = field(default=None, metadata={"help": "(0, inf); 1.0 = none, >1 discourages repeats."})
    max_new_tokens: int = field(default=200, metadata={"help": "Tokens to generate after each prompt."})
    num_return_sequences: int = field(default=1, metadata={"help": "Samples per prompt."})
    seed: int | None = field(default=None, metadata={"help": "Random seed (default: a fresh one, printed to stderr)."})
    stream: bool = field(default=False, metadata={"help": "Print tokens as they are generated."})
    compare: bool = field(default=False, metadata={"help": "Continue each prompt under every strategy, same seed."})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available, else cpu), cpu, cuda, cuda:1, mps..."})
    dtype: str = field(default="auto", metadata={"help": "Weights dtype.", "choices": list(DTYPES)})

    def knobs(self) -> dict[str, Any]:
        """The sampling knobs given on the command line (None = not given)."""
        return {name: getattr(self, name) for name in KNOBS if getattr(self, name) is not None}


# ----------------------------------------------------------------------------------------------------------
# Loading (also used by mygpt.sampler_report)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else as given (ValueError if torch cannot use it)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r}: expected auto, cpu, cuda, cuda:N or mps ({error})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU here; use --device cpu or auto")
    return resolved


def load_model_and_tokenizer(name_or_path: str, device: str | torch.device = "cpu", dtype: str = "auto") -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from a local folder or a Hub id, in eval mode on ``device``.

    Raises:
        FileNotFoundError: a folder that is not a saved model, or a name that is neither a folder nor a
            reachable Hub id; the message says which, and what would be valid.
    """
    try:  # registers the "mygpt" type with the Auto classes, so a MyGPT folder also loads without remote code
        import modeling_mygpt  # noqa: F401
    except ImportError:
        logger.debug("modeling_mygpt is not importable; MyGPT folders load through their remote code")
    if os.path.isdir(name_or_path):
        if not os.path.isfile(os.path.join(name_or_path, "config.json")):
            raise FileNotFoundError(f"{name_or_path!r} is not a model folder: it has no config.json (expected a "
                                    "folder written by save_pretrained or train_hf.py)")
    elif os.path.exists(name_or_path):
        raise FileNotFoundError(f"{name_or_path!r} is a file, not a model folder")
    elif name_or_path.startswith((".", "/", "~")):  # a path, not a Hub id
        raise FileNotFoundError(f"model folder {name_or_path!r} does not exist")
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, trust_remote_code=True, dtype=DTYPES[dtype])
    except (OSError, ValueError, KeyError) as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false")
        where = ("the Hub is switched off here (HF_HUB_OFFLINE is set)" if offline
                 else "is the name right and the Hub reachable?")
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FileNotFoundError(f"could not load a causal language model from {name_or_path!r}: not a local model "
                                f"folder, and not loadable as a Hub id ({where}). It said: {first_line}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError, KeyError) as error:
        raise FileNotFoundError(f"{name_or_path!r} has a model but no loadable tokenizer "
                                f"(save the tokenizer next to the model): {str(error).strip().splitlines()[0]}") from None
    return model.to(resolve_device(device) if isinstance(device, str) else device).eval(), tokenizer


def model_context_length(model: Any) -> int | None:
    """The longest sequence the model was built for (None when its config does not say)."""
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def special_token_kwargs(model: Any, tokenizer: Any) -> dict[str, int]:
    """pad/eos ids for generate: stop at the tokenizer's end-of-text when the model's config names none."""
    kwargs: dict[str, int] = {}
    eos = model.generation_config.eos_token_id
    if eos is None and tokenizer.eos_token_id is not None:
        kwargs["eos_token_id"] = eos = tokenizer.eos_token_id
    pad = model.generation_config.pad_token_id
    if pad is None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        if pad is not None:
            kwargs["pad_token_id"] = int(pad[0] if isinstance(pad, list) else pad)
    return kwargs


# ----------------------------------------------------------------------------------------------------------
# Generating


def strategy_runs(args: GenerateArguments) -> list[tuple[str, dict[str, Any]]]:
    """(strategy, knobs) pairs to run: the chosen one, or with --compare every strategy.

    Under --compare, a strategy's own knob comes from the command line when given there (else its preset),
    temperature applies to every sampling strategy, and the repetition penalty to all of them.
    """
    given = args.knobs()
    if not args.compare:
        return [(args.strategy, {**STRATEGY_PRESETS[args.strategy], **given})]
    runs = []
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
    if not os.path.isfile(args.prompt_file):
        raise ValueError(f"--prompt_file {args.prompt_file!r} does not exist")
    with open(args.prompt_file, encoding="utf-8") as f:
        prompts = [line.rstrip("\n") for line in f if line.strip()]
    if not prompts:
        raise ValueError(f"--prompt_file {args.prompt_file!r} holds no prompt (every line is empty)")
    return prompts


def check_arguments(args: GenerateArguments) -> list[tuple[str, dict[str, Any]]]:
    """Everything that can be checked before loading the model; returns the strategy runs."""
    if args.max_new_tokens < 1:
        raise ValueError(f"--max_new_tokens must be >= 1, got {args.max_new_tokens}")
    if args.num_return_sequences < 1:
        raise ValueError(f"--num_return_sequences must be >= 1, got {args.num_return_sequences}")
    if args.stream and args.num_return_sequences > 1:
        raise ValueError("--stream prints one sequence at a time: use it with --num_return_sequences 1")
    if args.compare and args.strategy != "top_p":
        logger.info("--compare runs every strategy; --strategy %s is ignored", args.strategy)
    runs = strategy_runs(args)
    for strategy, knobs in runs:
        make_sampler(strategy, **knobs)  # raises ValueError naming the knob and its valid range
        if strategy == "greedy" and args.num_return_sequences > 1:
            raise ValueError("greedy decoding gives the same text every time: use --num_return_sequences 1 "
                             "or a sampling strategy")
    return runs


@torch.inference_mode()
def generate_texts(model: Any, tokenizer: Any, prompt: str, strategy: str, knobs: dict[str, Any], *,
                   max_new_tokens: int, num_return_sequences: int = 1, seed: int = 0,
                   streamer: TextStreamer | None = None) -> list[str]:
    """Continue ``prompt`` under a strategy; returns prompt + continuation for each sequence.

    Raises ValueError when the prompt gives no token or prompt + max_new_tokens exceeds the model's context.
    """
    encoded = tokenizer(prompt, return_tensors="pt")
    input_ids = encoded["input_ids"].to(model.device)  # (1, T)
    if input_ids.shape[1] == 0:
        raise ValueError(f"the prompt {prompt!r} gives no token with this tokenizer")
    context = model_context_length(model)
    if context is not None and input_ids.shape[1] + max_new_tokens > context:
        raise ValueError(f"the prompt ({input_ids.shape[1]} tokens) + --max_new_tokens ({max_new_tokens}) exceeds "
                         f"the model's context of {context} tokens; shorten one of them")
    set_seed(seed)
    kwargs = strategy_generate_kwargs(strategy, {
        **knobs,
        "attention_mask": encoded["attention_mask"].to(model.device),
        "max_new_tokens": max_new_tokens,
        "num_return_sequences": num_return_sequences,
        "streamer": streamer,
        "use_cache": True,  # whatever a saved generation_config says (a training run may have saved False)
        **special_token_kwargs(model, tokenizer),
    })
    sequences = model.generate(input_ids, **kwargs)  # (num_return_sequences, T + new)
    return tokenizer.batch_decode(sequences, skip_special_tokens=True)


def run(args: GenerateArguments) -> None:
    """Check the arguments, load the model, print the generations."""
    runs = check_arguments(args)
    prompts = read_prompts(args)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    if args.seed is None:
        print(f"seed: {seed} (pass --seed {seed} to get the same text again)", file=sys.stderr)
    model, tokenizer = load_model_and_tokenizer(args.model, args.device, args.dtype)

    for i, prompt in enumerate(prompts):
        if len(prompts) > 1:
            print(f"#### prompt {i + 1}/{len(prompts)}")
        for strategy, knobs in runs:
            if args.compare:
                print(f"=== {describe(strategy, knobs)} ===", flush=True)
            streamer = TextStreamer(tokenizer, skip_special_tokens=True) if args.stream else None
            texts = generate_texts(model, tokenizer, prompt, strategy, knobs, max_new_tokens=args.max_new_tokens,
                                   num_return_sequences=args.num_return_sequences, seed=seed, streamer=streamer)
            if not args.stream:
                print("\n---------------\n".join(texts))
            print(flush=True)


def parse_arguments(argv: list[str] | None = None) -> GenerateArguments:
    parser = HfArgumentParser(GenerateArguments, description=__doc__.split("\n\n")[0])
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml", ".json")):
        if not os.path.isfile(argv[0]):
            parser.error(f"options file {argv[0]!r} does not exist")
        load = parser.parse_yaml_file if argv[0].endswith((".yaml", ".yml")) else parser.parse_json_file
        (args,) = load(os.path.abspath(argv[0]))
        return args
    (args,) = parser.parse_args_into_dataclasses(argv)
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_arguments(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
