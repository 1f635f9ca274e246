"""Generating text with any causal LM: the one path every command and report takes.

* :func:`generate` — ``model.generate`` for any model class (MyGPT, ``GPT2LMHeadModel``, anything loaded by
  :func:`mygpt.loading.load_model_and_tokenizer`): with ``strategy=`` the project's hand-written samplers
  (``generation_mygpt``) run as logits processors, exactly as ``MyGPTForCausalLM.generate(strategy=...)`` runs
  them; without it, transformers' own decoding as the model's ``generation_config.json`` describes it. Callers
  never branch on the model class.
* :func:`generate_texts` — continue one prompt (``generate.py``).
* :func:`generate_continuations` — continue many prompts in left-padded batches, with a progress bar (the sampler
  report, the model comparison, the samples of a run).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import set_seed
from transformers.generation.streamers import BaseStreamer

from generation_mygpt import strategy_generate_kwargs
from mygpt.loading import context_length
from mygpt.progress import ProgressBar, progress

__all__ = ["SAMPLING_KNOBS", "check_fits", "generate", "generate_continuations", "generate_texts",
           "special_token_kwargs"]

# Knobs that only mean something when sampling (transformers' GenerationConfig has fields of the same names).
SAMPLING_KNOBS = ("temperature", "top_k", "top_p", "min_p", "typical_p")


def special_token_kwargs(model: Any, tokenizer: Any) -> dict[str, int]:
    """pad/eos ids for ``generate``: stop at the tokenizer's end-of-text when the model's config names none."""
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


def generate(model: Any, input_ids: torch.Tensor, *, strategy: str | None = None, tokenizer: Any = None,
             **kwargs: Any) -> torch.Tensor:
    """Generate after ``input_ids`` (B, T) with any causal LM; returns (B * num_return_sequences, T + new).

    Args:
        model: a causal LM with ``GenerationMixin.generate``.
        input_ids: (B, T) prompt ids (left-padded, with an ``attention_mask`` in ``kwargs``, for a batch).
        strategy: one of ``generation_mygpt.STRATEGIES``: the project's samplers, with the knobs of ``KNOBS`` in
            ``kwargs`` (every other saved sampling setting is switched off). ``None``: the model's own
            ``generation_config`` (as saved in ``generation_config.json``), with the knobs in ``kwargs`` on top of
            it, as transformers' ``generate`` and ``pipeline`` apply them; a sampling knob turns sampling on.
        tokenizer: when given, its end-of-text and pad ids are used where the model's config names none.
        **kwargs: any other ``generate`` argument (``max_new_tokens``, ``num_return_sequences``, ``streamer``...).
            The KV cache is on unless ``use_cache=False`` is passed, whatever a saved configuration says (a
            training run may have saved ``use_cache=False``).

    Raises:
        ValueError: an unknown strategy, or a knob outside its valid range (see ``generation_mygpt.make_sampler``).
    """
    kwargs.setdefault("use_cache", True)
    if tokenizer is not None:
        kwargs = {**special_token_kwargs(model, tokenizer), **kwargs}
    if strategy is not None:
        kwargs = strategy_generate_kwargs(strategy, kwargs)
    elif any(kwargs.get(name) is not None for name in SAMPLING_KNOBS):
        kwargs.setdefault("do_sample", True)  # a temperature or a filter means "sample", as in pipeline()
    return model.generate(input_ids, **kwargs)


@torch.inference_mode()
def generate_texts(model: Any, tokenizer: Any, prompt: str, strategy: str | None, knobs: dict[str, Any], *,
                   max_new_tokens: int, num_return_sequences: int = 1, seed: int = 0,
                   streamer: BaseStreamer | None = None) -> list[str]:
    """Continue ``prompt`` (see :func:`generate` for ``strategy`` and ``knobs``); returns prompt + continuation
    for each sequence.

    Raises ValueError when the prompt gives no token or prompt + max_new_tokens exceeds the model's context.
    """
    encoded = tokenizer(prompt, return_tensors="pt")
    input_ids = encoded["input_ids"].to(model.device)  # (1, T)
    if input_ids.shape[1] == 0:
        raise ValueError(f"the prompt {prompt!r} gives no token with this tokenizer")
    check_fits(model, input_ids.shape[1], max_new_tokens, "the prompt")
    set_seed(seed)
    sequences = generate(model, input_ids, strategy=strategy, tokenizer=tokenizer, **knobs,
                         attention_mask=encoded["attention_mask"].to(model.device), max_new_tokens=max_new_tokens,
                         num_return_sequences=num_return_sequences, streamer=streamer)  # (n, T + new)
    return tokenizer.batch_decode(sequences, skip_special_tokens=True)


def check_fits(model: Any, prompt_tokens: int, max_new_tokens: int, what: str = "the prompt") -> None:
    """Raise ValueError when ``prompt_tokens + max_new_tokens`` does not fit the model's context."""
    context = context_length(model)
    if prompt_tokens + max_new_tokens > context:
        raise ValueError(f"{what} ({prompt_tokens} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                         f"context of {context} tokens; shorten one of them")


class _StepCounter(BaseStreamer):
    """Advances a progress bar by one for every generation step (``generate`` hands a streamer each new token)."""

    def __init__(self, bar: ProgressBar) -> None:
        self.bar = bar
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if self.prompt_seen:
            self.bar.update(1)
        self.prompt_seen = True  # the first call hands over the prompt

    def end(self) -> None:
        pass


@torch.inference_mode()
def generate_continuations(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], *, strategy: str | None,
                           knobs: dict[str, Any], max_new_tokens: int, num_return_sequences: int = 1, seed: int = 0,
                           batch_size: int | None = None, desc: str = "generating") -> list[list[list[int]]]:
    """Continue every prompt ``num_return_sequences`` times, from one seed.

    Args:
        prompts: the prompts as token ids (they may differ in length: batches are left-padded, and each row's
            result equals the prompt continued alone under greedy decoding).
        strategy, knobs: as :func:`generate`.
        max_new_tokens: tokens generated after each prompt (fewer when an end-of-text token comes first).
        batch_size: prompts per ``generate`` call (default: all of them at once).
        desc: the progress bar's label; the bar counts generation steps.

    Returns:
        For each prompt, ``num_return_sequences`` lists of generated ids, each up to and including the first
        end-of-text token.

    Raises:
        ValueError: no prompt, an empty prompt, or a prompt + ``max_new_tokens`` longer than the model's context.
    """
    if not prompts or min(len(p) for p in prompts) == 0:
        raise ValueError("every prompt needs at least one token (and there must be at least one prompt)")
    check_fits(model, max(len(p) for p in prompts), max_new_tokens, "the longest prompt")
    device = next(model.parameters()).device
    specials = special_token_kwargs(model, tokenizer)
    pad = specials.get("pad_token_id", model.generation_config.pad_token_id)
    pad = 0 if pad is None else pad
    eos = specials.get("eos_token_id", model.generation_config.eos_token_id)
    eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    batch_size = batch_size or len(prompts)
    batches = [prompts[i : i + batch_size] for i in range(0, len(prompts), batch_size)]
    set_seed(seed)
    continuations: list[list[list[int]]] = []
    with progress(desc=desc, total=len(batches) * max_new_tokens, unit="step") as bar:
        for done, batch in enumerate(batches, start=1):
            width = max(len(p) for p in batch)
            input_ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in batch], device=device)  # (B, T)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)  # (B, T)
            out = generate(model, input_ids, strategy=strategy, **specials, **knobs, attention_mask=mask,
                           max_new_tokens=max_new_tokens, num_return_sequences=num_return_sequences,
                           streamer=_StepCounter(bar))  # (B * n, T + new), each prompt's samples together
            bar.update(done * max_new_tokens - bar.n)  # an end-of-text may have stopped the batch early
            rows = out[:, width:].tolist()
            for i in range(len(batch)):
                samples = []
                for row in rows[i * num_return_sequences : (i + 1) * num_return_sequences]:
                    ends = [j for j, token in enumerate(row) if token in eos_ids]
                    samples.append(row[: ends[0] + 1] if ends else row)
                continuations.append(samples)
    return continuations
