"""Sampling strategies for MyGPT, written out by hand as transformers ``LogitsProcessor``s.

Every strategy is a function from next-token logits to next-token logits: it rescales them (temperature,
repetition penalty) or sets the tokens it rules out to ``-inf`` (greedy, top-k, top-p, min-p, typical).
Because each one is a ``LogitsProcessor``, they slot into ``model.generate`` and compose as a chain:

    repetition penalty -> temperature -> top-k -> top-p -> min-p -> typical -> (greedy)

which is the order transformers applies its own warpers in, so a chain of ours keeps the same tokens as the
same chain of theirs. ``generate`` then draws the next token from ``softmax(scores)`` (or takes the argmax
for greedy decoding).

Entry points:
    make_sampler("top_p", top_p=0.9, temperature=0.8)           -> LogitsProcessorList
    strategy_generate_kwargs("top_p", {"top_p": 0.9, ...})        -> keyword arguments for ``generate``
    model.generate(input_ids, strategy="top_p", top_p=0.9)        (MyGPTForCausalLM calls the function above)

This module travels with the model's remote code, so it imports only torch, transformers and the stdlib.
"""

from __future__ import annotations

import copy
import math
import numbers
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

__all__ = [
    "GreedyProcessor",
    "TemperatureProcessor",
    "TopKProcessor",
    "TopPProcessor",
    "MinPProcessor",
    "TypicalProcessor",
    "RepetitionPenaltyProcessor",
    "KNOBS",
    "STRATEGIES",
    "STRATEGY_PRESETS",
    "DEFAULT_GENERATION",
    "make_sampler",
    "strategy_generate_kwargs",
]

FILTERED = -float("inf")  # a filtered token gets probability exactly 0 after the softmax


# ----------------------------------------------------------------------------------------------------------
# Checking knobs: every bad value raises ValueError naming the knob, the value and the valid range.


def _check_real(name: str, value: Any, *, low: float, high: float = math.inf, include_low: bool = False) -> float:
    """Return ``value`` as a float if it lies in (low, high] (or [low, high]), else raise ValueError saying so."""
    interval = f"{'[' if include_low else '('}{low:g}, " + ("inf)" if high == math.inf else f"{high:g}]")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    value = float(value)
    if not ((value >= low if include_low else value > low) and value <= high and math.isfinite(value)):
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def _check_min_tokens_to_keep(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"min_tokens_to_keep must be an integer >= 1, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------------------------------------
# The samplers. Each takes scores (B, V) and returns new scores (B, V); none modifies its input in place.


class _Sampler(LogitsProcessor):
    """A LogitsProcessor that prints with its knobs, e.g. ``TopPProcessor(top_p=0.9, min_tokens_to_keep=1)``."""

    def __repr__(self) -> str:
        knobs = ", ".join(f"{name}={value!r}" for name, value in vars(self).items())
        return f"{type(self).__name__}({knobs})"


class GreedyProcessor(_Sampler):
    """Greedy decoding: keep only the most likely token (the first one on a tie, as ``torch.argmax`` does).

    ``generate(do_sample=False)`` takes the argmax itself; this processor makes greedy a member of the chain
    like the others, so that sampling from its output is greedy decoding too.
    """

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        best = scores.argmax(dim=-1, keepdim=True)  # (B, 1)
        return torch.full_like(scores, FILTERED).scatter(-1, best, scores.gather(-1, best))  # (B, V)


class TemperatureProcessor(_Sampler):
    """Divide the logits by a temperature: below 1 sharpens the distribution, above 1 flattens it.

    Args:
        temperature: a number in (0, inf). 1.0 leaves the distribution unchanged.
    """

    def __init__(self, temperature: float):
        self.temperature = _check_real("temperature", temperature, low=0.0)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        return scores / self.temperature  # (B, V)


class TopKProcessor(_Sampler):
    """Keep the k most likely tokens (Fan et al. 2018).

    Tokens tied with the k-th most likely one are kept too, so that the result does not depend on how a sort
    orders equal values (this is also what transformers' ``TopKLogitsWarper`` does).

    Args:
        top_k: an integer >= 1; larger than the vocabulary keeps everything.
        min_tokens_to_keep: never keep fewer tokens than this.
    """

    def __init__(self, top_k: int, min_tokens_to_keep: int = 1):
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
        self.top_k = max(int(top_k), _check_min_tokens_to_keep(min_tokens_to_keep))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        k = min(self.top_k, scores.shape[-1])
        kth_best = scores.topk(k, dim=-1).values[..., -1:]  # (B, 1)
        return scores.masked_fill(scores < kth_best, FILTERED)  # (B, V)


class TopPProcessor(_Sampler):
    """Nucleus sampling (Holtzman et al. 2019): keep the most likely tokens whose total probability reaches p.

    Said the other way round, which is how it is computed: drop the largest tail of least likely tokens whose
    total probability is at most 1 - p. Among tokens tied exactly at that boundary, which ones survive depends
    on the order an ascending ``torch.sort`` gives them; we sort exactly as transformers' ``TopPLogitsWarper``
    does, so both keep the same tokens.

    Args:
        top_p: a number in (0, 1]. 1.0 keeps every token with non-zero probability.
        min_tokens_to_keep: never keep fewer tokens than this.
    """

    def __init__(self, top_p: float, min_tokens_to_keep: int = 1):
        self.top_p = _check_real("top_p", top_p, low=0.0, high=1.0)
        self.min_tokens_to_keep = _check_min_tokens_to_keep(min_tokens_to_keep)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        sorted_scores, order = torch.sort(scores, descending=False)  # (B, V), least likely first
        tail_mass = sorted_scores.softmax(dim=-1).cumsum(dim=-1)  # (B, V) mass of this token and all below it
        drop_sorted = tail_mass <= 1 - self.top_p  # (B, V)
        drop_sorted[..., -self.min_tokens_to_keep:] = False  # the most likely tokens always stay
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # (B, V) back in vocabulary order
        return scores.masked_fill(drop, FILTERED)


class MinPProcessor(_Sampler):
    """Min-p sampling (Nguyen et al. 2024): keep tokens at least ``min_p`` times as likely as the best one.

    The cut-off follows the model's confidence: a peaked distribution keeps few tokens, a flat one many.

    Args:
        min_p: a number in [0, 1]. 0 keeps everything, 1 keeps only the most likely token(s).
        min_tokens_to_keep: never keep fewer tokens than this.
    """

    def __init__(self, min_p: float, min_tokens_to_keep: int = 1):
        self.min_p = _check_real("min_p", min_p, low=0.0, high=1.0, include_low=True)
        self.min_tokens_to_keep = _check_min_tokens_to_keep(min_tokens_to_keep)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        probs = scores.softmax(dim=-1)  # (B, V)
        threshold = self.min_p * probs.amax(dim=-1, keepdim=True)  # (B, 1)
        drop = probs < threshold  # (B, V)
        k = min(self.min_tokens_to_keep, scores.shape[-1])
        drop = drop.scatter(-1, probs.topk(k, dim=-1).indices, False)
        return scores.masked_fill(drop, FILTERED)


class TypicalProcessor(_Sampler):
    """Locally typical sampling (Meister et al. 2022): keep the tokens whose surprisal is closest to the entropy.

    A token's surprisal is -log p; the entropy H is the expected surprisal. Tokens are ranked by |-log p - H|
    and the most typical ones are kept until their total probability reaches ``typical_p``. Unlike top-p, this
    can drop the single most likely token when it is far more predictable than the distribution as a whole.

    Args:
        typical_p: a number in (0, 1]. 1.0 keeps every token.
        min_tokens_to_keep: never keep fewer tokens than this.
    """

    def __init__(self, typical_p: float, min_tokens_to_keep: int = 1):
        self.typical_p = _check_real("typical_p", typical_p, low=0.0, high=1.0)
        self.min_tokens_to_keep = _check_min_tokens_to_keep(min_tokens_to_keep)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if self.typical_p == 1.0:
            return scores  # all the mass: nothing to cut (a cumulative sum could round short of 1.0)
        log_probs = scores.log_softmax(dim=-1)  # (B, V)
        probs = log_probs.exp()
        # nansum: a token already filtered contributes -inf * 0 = nan, which must count as 0
        entropy = -(log_probs * probs).nansum(dim=-1, keepdim=True)  # (B, 1)
        atypicality = (-log_probs - entropy).abs()  # (B, V) distance of each surprisal from the entropy
        sorted_atypicality, order = torch.sort(atypicality)  # (B, V), most typical first
        mass = scores.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)  # (B, V)
        # the first token whose running mass reaches typical_p is the last one kept; ties with it stay too
        last = (mass < self.typical_p).sum(dim=-1, keepdim=True).clamp(max=scores.shape[-1] - 1)  # (B, 1)
        drop = atypicality > sorted_atypicality.gather(-1, last)  # (B, V)
        drop = drop.scatter(-1, order[..., : self.min_tokens_to_keep], False)
        return scores.masked_fill(drop, FILTERED)


class RepetitionPenaltyProcessor(_Sampler):
    """Make tokens already in the sequence less likely (Keskar et al. 2019, CTRL).

    A seen token's logit is divided by the penalty when positive and multiplied by it when negative, so a
    penalty > 1 always lowers it and < 1 always raises it; each token is penalised once however often it
    appeared. The prompt counts as seen.

    Args:
        penalty: a number in (0, inf). 1.0 does nothing, 1.1-1.3 is a usual range.
        prompt_ignore_length: leading positions not to count as seen: an int for every row, or a (B,) tensor
            per row (``strategy_generate_kwargs`` passes the left-padding length of each row so that pad
            tokens are not penalised). When generate repeats each row for ``num_return_sequences``, a (B,)
            tensor is repeated to match.
    """

    def __init__(self, penalty: float, prompt_ignore_length: int | torch.Tensor | None = None):
        self.penalty = _check_real("repetition_penalty", penalty, low=0.0)
        if isinstance(prompt_ignore_length, torch.Tensor):
            if prompt_ignore_length.dim() != 1:
                raise ValueError(f"prompt_ignore_length must be an int or a 1-D tensor, got shape "
                                 f"{tuple(prompt_ignore_length.shape)}")
        elif prompt_ignore_length is not None and (not isinstance(prompt_ignore_length, numbers.Integral)
                                                   or prompt_ignore_length < 0):
            raise ValueError(f"prompt_ignore_length must be an integer >= 0, got {prompt_ignore_length!r}")
        self.prompt_ignore_length = prompt_ignore_length

    def _ignored_positions(self, input_ids: torch.LongTensor) -> torch.Tensor | None:
        """(B, T) True where a position must not count as seen, or None when every position counts."""
        ignore = self.prompt_ignore_length
        if ignore is None:
            return None
        batch, length = input_ids.shape
        if isinstance(ignore, torch.Tensor):
            if batch != ignore.shape[0]:
                if batch % ignore.shape[0]:
                    raise ValueError(f"prompt_ignore_length has {ignore.shape[0]} rows but the batch has {batch}")
                ignore = ignore.repeat_interleave(batch // ignore.shape[0])  # generate's row expansion
            ignore = ignore.to(input_ids.device)[:, None]  # (B, 1)
        positions = torch.arange(length, device=input_ids.device)[None, :]  # (1, T)
        return positions < ignore  # (B, T)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        vocab = scores.shape[-1]
        # ids the head cannot produce (and ignored positions) go to an extra column that is cut off below
        ids = input_ids.clamp(max=vocab)  # (B, T)
        ignored = self._ignored_positions(input_ids)
        if ignored is not None:
            ids = ids.masked_fill(ignored, vocab)
        seen = torch.zeros(scores.shape[0], vocab + 1, dtype=torch.bool, device=scores.device)
        seen = seen.scatter(-1, ids, True)[:, :vocab]  # (B, V)
        penalized = torch.where(scores < 0, scores * self.penalty, scores / self.penalty)  # (B, V)
        return torch.where(seen, penalized, scores)


# ----------------------------------------------------------------------------------------------------------
# Building chains from a strategy name.

STRATEGIES: tuple[str, ...] = ("greedy", "temperature", "top_k", "top_p", "min_p", "typical")

KNOBS: tuple[str, ...] = ("repetition_penalty", "temperature", "top_k", "top_p", "min_p", "typical_p")
"""The knob names ``make_sampler`` understands, in the order their processors run."""

# Each strategy's own knob: filled from STRATEGY_PRESETS when the caller leaves it out.
_PRIMARY_KNOB: dict[str, str | None] = {
    "greedy": None, "temperature": "temperature", "top_k": "top_k",
    "top_p": "top_p", "min_p": "min_p", "typical": "typical_p",
}

STRATEGY_PRESETS: dict[str, dict[str, Any]] = {
    "greedy": {},
    "temperature": {"temperature": 0.8},  # nanoGPT's sampling default: a little sharper than the model
    "top_k": {"top_k": 50},  # transformers' default k
    "top_p": {"top_p": 0.9},  # Holtzman et al.'s recommended range is 0.9-0.95
    "min_p": {"min_p": 0.1},  # in the 0.05-0.1 range Nguyen et al. recommend
    "typical": {"typical_p": 0.9},  # Meister et al. find 0.2-0.95 works; 0.9 stays close to the model
}
"""A sensible default knob set per strategy; each holds only the strategy's own knob, so that combining a
preset with a caller's knobs never adds a knob the caller did not ask for."""

DEFAULT_GENERATION: dict[str, Any] = {
    "do_sample": True,
    **STRATEGY_PRESETS["temperature"],
    **STRATEGY_PRESETS["top_k"],
    "max_new_tokens": 200,
}
"""The sampling defaults of a trained model: its ``generation_config.json`` holds these, so ``generate()`` with no
sampling arguments samples sensibly in any client (they are transformers' own warper settings). Temperature and k
come from ``STRATEGY_PRESETS``: one source for sampling defaults."""

_KNOB_PROCESSORS = {
    "repetition_penalty": RepetitionPenaltyProcessor,
    "temperature": TemperatureProcessor,
    "top_k": TopKProcessor,
    "top_p": TopPProcessor,
    "min_p": MinPProcessor,
    "typical_p": TypicalProcessor,
}


def make_sampler(strategy: str, *, prompt_ignore_length: int | torch.Tensor | None = None,
                 **knobs: Any) -> LogitsProcessorList:
    """Build the chain of processors for a decoding strategy.

    Args:
        strategy: one of ``STRATEGIES``.
        prompt_ignore_length: passed to the repetition penalty (see ``RepetitionPenaltyProcessor``).
        **knobs: any of ``KNOBS``; a knob set to None counts as not given. The strategy's own knob defaults to
            ``STRATEGY_PRESETS[strategy]``. Other sampling knobs compose with it (``make_sampler("top_p",
            top_p=0.9, top_k=50, temperature=0.8)``); greedy accepts only ``repetition_penalty``, since a
            temperature or a filter cannot change which token is most likely (or, for typical, would change it
            behind the caller's back).

    Returns:
        The processors in the order of ``KNOBS``, then ``GreedyProcessor`` for greedy decoding.

    Raises:
        ValueError: an unknown strategy or knob, a knob greedy cannot use, or a knob outside its valid range.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid strategies: {', '.join(STRATEGIES)}")
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise ValueError(f"unknown sampling knob(s) {', '.join(unknown)}; valid knobs: {', '.join(KNOBS)}")
    given = {name: value for name, value in knobs.items() if value is not None}
    if strategy == "greedy":
        sampling_knobs = sorted(set(given) - {"repetition_penalty"})
        if sampling_knobs:
            raise ValueError(f"greedy decoding takes the most likely token, so {', '.join(sampling_knobs)} "
                             "would have no effect; greedy accepts only repetition_penalty "
                             f"(or pick a sampling strategy: {', '.join(STRATEGIES[1:])})")
    chosen = {**STRATEGY_PRESETS[strategy], **given}

    chain = LogitsProcessorList()
    for name in KNOBS:
        if name not in chosen:
            continue
        if name == "repetition_penalty":
            chain.append(RepetitionPenaltyProcessor(chosen[name], prompt_ignore_length=prompt_ignore_length))
        elif name == "temperature" and _check_real("temperature", chosen[name], low=0.0) == 1.0:
            continue  # dividing by one changes nothing; leave it out of the chain
        else:
            chain.append(_KNOB_PROCESSORS[name](chosen[name]))
    if strategy == "greedy":
        chain.append(GreedyProcessor())
    return chain


# transformers' own knobs set to values that add no processor, so ours are the only ones that run. Without
# this, generate(do_sample=True) would add its default TopKLogitsWarper(top_k=50) after our chain, and a
# generation_config.json that sets e.g. temperature would be applied a second time.
_NEUTRAL_HF_KNOBS: dict[str, Any] = {
    "temperature": 1.0, "top_k": None, "top_p": 1.0, "min_p": None, "typical_p": 1.0,
    "repetition_penalty": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "top_h": None,
}


def strategy_generate_kwargs(strategy: str, generate_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Turn ``generate(..., strategy=..., <knobs>)`` keyword arguments into ones transformers understands.

    Our knobs (``KNOBS``) are taken out of the arguments and built into a chain with ``make_sampler``; the
    chain runs after any ``logits_processor`` the caller passed. ``do_sample`` is set (False for greedy, True
    otherwise) and transformers' own warpers are switched off, so every other ``generate`` argument
    (``max_new_tokens``, ``num_return_sequences``, ``streamer``, ``stopping_criteria``, an attention mask for
    left-padded batches, ...) works as usual. With ``repetition_penalty`` and an ``attention_mask``, the left
    padding of each row is not counted as seen.

    Args:
        strategy: one of ``STRATEGIES``.
        generate_kwargs: the keyword arguments given to ``generate`` (not modified).

    Returns:
        A new dict of keyword arguments for ``GenerationMixin.generate``.

    Raises:
        ValueError: as ``make_sampler``; also for ``do_sample`` contradicting the strategy, or beam search.
    """
    kwargs = dict(generate_kwargs)
    knobs = {name: kwargs.pop(name) for name in KNOBS if name in kwargs}

    do_sample = strategy != "greedy"
    if kwargs.get("do_sample") is not None and bool(kwargs["do_sample"]) != do_sample:
        raise ValueError(f"do_sample={kwargs['do_sample']} contradicts strategy={strategy!r} "
                         f"(which samples: {do_sample}); leave do_sample out when giving a strategy")
    generation_config: GenerationConfig | None = kwargs.get("generation_config")
    num_beams = kwargs.get("num_beams", getattr(generation_config, "num_beams", None))
    if num_beams is not None and num_beams > 1:
        raise ValueError(f"strategy={strategy!r} decodes one sequence at a time; beam search (num_beams="
                         f"{num_beams}) is not supported with it; drop num_beams or drop strategy")

    prompt_ignore_length = None
    mask = kwargs.get("attention_mask")
    if knobs.get("repetition_penalty") is not None and isinstance(mask, torch.Tensor) and mask.dim() == 2:
        # left padding: the number of leading zeros in each row of the mask
        prompt_ignore_length = (mask != 0).int().argmax(dim=1)  # (B,)

    chain = make_sampler(strategy, prompt_ignore_length=prompt_ignore_length, **knobs)
    kwargs["logits_processor"] = LogitsProcessorList([*(kwargs.get("logits_processor") or []), *chain])

    settings = {"do_sample": do_sample, **_NEUTRAL_HF_KNOBS}
    if generation_config is not None:
        # generate warns when a generation_config comes with loose generation arguments: set them on a copy
        generation_config = copy.deepcopy(generation_config)
        for name, value in settings.items():
            if hasattr(generation_config, name):
                setattr(generation_config, name, value)
        kwargs["generation_config"] = generation_config
        kwargs.pop("do_sample", None)
    else:
        defaults = GenerationConfig()
        kwargs.update({name: value for name, value in settings.items() if hasattr(defaults, name)})
    return kwargs
