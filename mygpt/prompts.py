"""Prompts for generation: cut from held-out text (with the text that really follows them), or read from a file.

One picker serves every report that generates from held-out text — the sampler report (prompts of an exact number
of tokens), the model comparison and a run's ``samples.md`` (prompts of at most so many characters) — so they all
draw prompts the same way: from seeded random line starts, never overlapping, never repeated.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Prompt", "pick_prompts", "read_prompt_file"]


@dataclass
class Prompt:
    """A prompt and, when cut from a text, what follows it there (the reference a generation is compared with)."""

    text: str
    reference: str | None = None
    ids: list[int] | None = None  # the prompt's tokens, when it was cut by tokens
    reference_ids: list[int] | None = None
    document: int | None = None  # which of the texts it was cut from
    start: int | None = None  # the character where it starts there


def _line_starts(texts: Sequence[str]) -> list[tuple[int, int]]:
    """(document, character) of every line that follows a newline and starts with a visible character."""
    return [(d, i + 1) for d, text in enumerate(texts) for i, ch in enumerate(text)
            if ch == "\n" and i + 1 < len(text) and not text[i + 1].isspace()]


def _cut_chars(text: str, start: int, length: int, end: str) -> int | None:
    """Where a prompt of at most ``length`` characters from ``start`` ends: after its last whole line
    (``end="line"``), or before its last space or newline (``"word"``, also the fallback when the first line is
    longer than ``length``); never inside a word. None when the text ends before ``length`` characters."""
    stop = start + length
    if stop >= len(text):
        return None
    if end == "line":
        cut = text.rfind("\n", start + 1, stop) + 1
        if cut > start + 1:
            return cut
    cut = max(text.rfind(" ", start + 1, stop + 1), text.rfind("\n", start + 1, stop + 1))
    return cut if cut > start else stop


def pick_prompts(texts: Sequence[str], count: int, *, length: int, seed: int = 0, reference_length: int = 0,
                 tokenizer: Any = None, end: str = "word", strict: bool = False) -> list[Prompt]:
    """``count`` prompts starting at seeded random line starts of ``texts``, in the order they appear there.

    Args:
        texts: the documents to cut from.
        count: how many prompts.
        length: with a ``tokenizer``, every prompt is exactly this many tokens (prompts of equal length batch
            without padding); without one, at most this many characters, ending at a line end (``end="line"``) or
            before a space (``end="word"``).
        seed: which line starts are tried first.
        reference_length: this many tokens (characters without a tokenizer) of the text that follows each prompt
            are kept as its ``reference``; a prompt without that much text after it is not used.
        tokenizer: cut by this tokenizer's tokens (``ids`` and ``reference_ids`` are filled in).
        end: ``"word"`` or ``"line"``, for prompts cut by characters.
        strict: raise when fewer than ``count`` prompts can be cut (else return the ones found).

    Prompts never overlap each other (prompt and reference included) and are never the same text twice (a
    repeated speaker's name would inflate similarity figures).

    Raises:
        ValueError: a bad ``count``/``length``/``end``, or (``strict``) a text too short for ``count`` prompts.
    """
    if count < 0 or length < 1 or reference_length < 0:
        raise ValueError(f"need count >= 0, length >= 1 and reference_length >= 0, got {count}, {length}, "
                         f"{reference_length}")
    if end not in ("word", "line"):
        raise ValueError(f"end must be 'word' or 'line', got {end!r}")
    starts = _line_starts(texts)
    random.Random(seed).shuffle(starts)
    prompts: list[Prompt] = []
    taken: list[tuple[int, int, int]] = []  # (document, first, last + 1 character) of each prompt + reference
    for d, start in starts:
        if len(prompts) == count:
            break
        text = texts[d]
        if tokenizer is not None:
            needed = length + reference_length
            piece = text[start : start + 16 * needed]  # 16 characters per token is more than any tokenizer needs
            ids = tokenizer(piece, add_special_tokens=False, verbose=False)["input_ids"]
            if len(ids) < needed + 1:  # + 1: the last token of a cut piece may be a partial word
                continue
            prompt_ids, reference_ids = list(ids[:length]), list(ids[length:needed])
            prompt = Prompt(tokenizer.decode(prompt_ids), tokenizer.decode(reference_ids) if reference_length else None,
                            prompt_ids, reference_ids if reference_length else None, d, start)
        else:
            cut = _cut_chars(text, start, length, end)
            if cut is None or cut + reference_length > len(text):
                continue
            prompt = Prompt(text[start:cut], text[cut : cut + reference_length] if reference_length else None,
                            document=d, start=start)
        span = (d, start, start + len(prompt.text) + len(prompt.reference or ""))
        if not prompt.text.strip() or any(p.text == prompt.text for p in prompts):
            continue
        if any(d == other and span[1] < last and first < span[2] for other, first, last in taken):
            continue
        taken.append(span)
        prompts.append(prompt)
    if strict and len(prompts) < count:
        unit = "tokens" if tokenizer is not None else "characters"
        raise ValueError(f"the text gives only {len(prompts)} prompts of {length} + {reference_length} {unit} that "
                         f"do not overlap, {count} asked for: ask for fewer or shorter prompts, or give more text")
    return sorted(prompts, key=lambda p: (p.document, p.start))


def read_prompt_file(path: str | os.PathLike) -> list[str]:
    """The prompts in a UTF-8 file, one per non-empty line (the line's own spaces are kept).

    Raises ValueError naming the file when it does not exist or holds no prompt.
    """
    if not os.path.isfile(path):
        raise ValueError(f"prompt file {os.fspath(path)!r} does not exist")
    with open(path, encoding="utf-8") as handle:
        prompts = [line.rstrip("\n") for line in handle if line.strip()]
    if not prompts:
        raise ValueError(f"prompt file {os.fspath(path)!r} holds no prompt (every line is empty)")
    return prompts
