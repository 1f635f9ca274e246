"""Plain text metrics: information rates (bits per byte/char, perplexity) and diversity of generations.

Everything here is a pure function of numbers or strings, with no torch and no ``evaluate``, so that the
training loop, the generation script, the ``evaluate`` metric modules in ``mygpt/metrics/`` and the tests all
share one definition.

Information rates
    A language model that assigns ``total_nats = -sum(log p(token))`` to a text has spent that many nats
    encoding it. Dividing by the text's size in *bytes* (UTF-8) or *characters* gives a rate that does not
    depend on the tokenizer, so models with different vocabularies can be compared. Per-token perplexity
    does depend on the tokenizer: always report it with its token count.

Diversity of generations
    ``distinct_n``, ``self_bleu`` and ``repeated_ngram_rate`` work on *words*, obtained with
    :func:`word_tokenize`: the regular expression ``\\w+|[^\\w\\s]`` (Unicode-aware), i.e. runs of letters,
    digits and underscores are words, and every other non-space character (punctuation) is a word of its
    own; case is kept. ``"Hark! Who's there?"`` becomes ``["Hark", "!", "Who", "'", "s", "there", "?"]``.
    Figures computed with another tokenisation (plain ``str.split``, or a model's subword tokens) are not
    comparable with these.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

__all__ = [
    "WORD_PATTERN",
    "word_tokenize",
    "ngrams",
    "bits_per_byte",
    "bits_per_char",
    "perplexity",
    "distinct_n",
    "self_bleu",
    "sentence_bleu",
    "repeated_ngram_rate",
]

# Words are runs of \w; each punctuation mark is a word of its own, so "end." and "end" share the word "end".
WORD_PATTERN = re.compile(r"\w+|[^\w\s]")


def word_tokenize(text: str) -> list[str]:
    """Split ``text`` into words with :data:`WORD_PATTERN` (``\\w+|[^\\w\\s]``), keeping case.

    >>> word_tokenize("Hark! Who's there?")
    ['Hark', '!', 'Who', "'", 's', 'there', '?']
    """
    return WORD_PATTERN.findall(text)


def ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """All contiguous ``n``-grams of ``words``, in order (empty when ``len(words) < n``)."""
    _check_order(n, "n")
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


# --------------------------------------------------------------------------------------------------
# Information rates
# --------------------------------------------------------------------------------------------------


def _check_nats(total_nats: float) -> None:
    if not math.isfinite(total_nats) or total_nats < 0:
        raise ValueError(
            f"total_nats must be a finite number >= 0 (a summed negative log-likelihood), got {total_nats!r}"
        )


def _check_count(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def bits_per_byte(total_nats: float, n_bytes: int) -> float:
    """Bits per UTF-8 byte: ``total_nats / (n_bytes * ln 2)``.

    Args:
        total_nats: summed negative log-likelihood of the text, in nats (natural log), over every scored token.
        n_bytes: size of the same text in UTF-8 bytes (``len(text.encode("utf-8"))``).

    Comparable across tokenizers, because the byte count does not depend on how the text was cut into tokens.
    """
    _check_nats(total_nats)
    _check_count(n_bytes, "n_bytes")
    return total_nats / (n_bytes * math.log(2))


def bits_per_char(total_nats: float, n_chars: int) -> float:
    """Bits per Unicode character: ``total_nats / (n_chars * ln 2)`` with ``n_chars = len(text)``."""
    _check_nats(total_nats)
    _check_count(n_chars, "n_chars")
    return total_nats / (n_chars * math.log(2))


def perplexity(total_nats: float, n_tokens: int) -> float:
    """Per-token perplexity ``exp(total_nats / n_tokens)``.

    Depends on the tokenizer (a model with longer tokens has a higher perplexity for the same text), so it
    is only comparable between models that share a tokenizer; report ``n_tokens`` beside it. Returns
    ``inf`` rather than raising when the mean loss is too large to exponentiate.
    """
    _check_nats(total_nats)
    _check_count(n_tokens, "n_tokens")
    mean = total_nats / n_tokens
    return math.exp(mean) if mean < 709.0 else math.inf  # exp overflows a float64 just above 709.78


# --------------------------------------------------------------------------------------------------
# Diversity of generations (word level, see the module docstring for the tokenisation)
# --------------------------------------------------------------------------------------------------


def _check_order(n: int, name: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {n!r}")


def _check_texts(texts: Sequence[str], minimum: int = 1) -> None:
    if isinstance(texts, str):
        raise ValueError("texts must be a sequence of strings, not a single string")
    if len(texts) < minimum:
        raise ValueError(f"need at least {minimum} text(s), got {len(texts)}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}] must be a str, got {type(text).__name__}")


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al., 2016): unique ``n``-grams / all ``n``-grams, pooled over all ``texts``.

    Words come from :func:`word_tokenize`; ``n``-grams never cross the boundary between two texts.
    1.0 means no ``n``-gram occurs twice anywhere in the set; low values mean the generations repeat
    themselves or each other. Returns 0.0 when no text has ``n`` words.
    """
    _check_order(n, "n")
    _check_texts(texts)
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        grams = ngrams(word_tokenize(text), n)
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0


def repeated_ngram_rate(texts: Sequence[str], n: int) -> float:
    """Share of ``n``-gram occurrences that repeat an ``n``-gram seen earlier *in the same text*.

    Counts, within each text separately, every occurrence of an ``n``-gram after its first; sums those
    repeats and the ``n``-gram totals over ``texts`` and returns the ratio. This measures looping inside a
    generation (degeneration), unlike :func:`distinct_n`, which also counts overlap between texts.
    ``"a b a b a"`` with ``n=2`` has 4 bigrams of which 2 repeat: 0.5. Returns 0.0 when no text has ``n`` words.
    """
    _check_order(n, "n")
    _check_texts(texts)
    repeats = total = 0
    for text in texts:
        grams = ngrams(word_tokenize(text), n)
        repeats += len(grams) - len(set(grams))
        total += len(grams)
    return repeats / total if total else 0.0


def sentence_bleu(hypothesis: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> float:
    """BLEU (Papineni et al., 2002) of one tokenised hypothesis against tokenised references.

    - Modified precision ``p_k`` for ``k = 1..max_n``: each hypothesis ``k``-gram count is clipped by its
      largest count in any single reference.
    - Smoothing (Lin & Och, 2004, "add one"; NLTK's ``method2``): for ``k >= 2`` both numerator and
      denominator get +1, so a short text or one missing 4-gram match does not zero the score; ``p_1``
      is not smoothed. A perfect match therefore still scores exactly 1, even for texts shorter than
      ``max_n`` words: an order the hypothesis is too short to have counts as (0+1)/(0+1) = 1. That is
      the one difference from NLTK (which counts it as 0/1, smoothed to 1/2); for hypotheses of at
      least ``max_n`` words the two agree exactly.
    - Brevity penalty ``BP = 1`` if the hypothesis is longer than the closest reference length
      (ties go to the shorter reference), else ``exp(1 - r / c)``.
    - ``BLEU = BP * exp(mean_k log p_k)`` (uniform weights). An empty hypothesis, or one with no
      unigram in any reference, scores 0.
    """
    _check_order(max_n, "max_n")
    if not references:
        raise ValueError("sentence_bleu needs at least one reference")
    return _bleu(_ngram_counts(hypothesis, max_n), [_ngram_counts(r, max_n) for r in references], max_n)


def _ngram_counts(words: Sequence[str], max_n: int) -> tuple[int, list[Counter]]:
    """``(len(words), [Counter of k-grams for k = 1..max_n])``, computed once per text."""
    return len(words), [Counter(ngrams(words, k)) for k in range(1, max_n + 1)]


def _bleu(hyp: tuple[int, list[Counter]], refs: Sequence[tuple[int, list[Counter]]], max_n: int) -> float:
    """BLEU from precomputed n-gram counts; see :func:`sentence_bleu` for the definition."""
    hyp_len, hyp_counts = hyp
    if hyp_len == 0:
        return 0.0
    log_precision_sum = 0.0
    for k in range(1, max_n + 1):
        max_ref_counts: Counter = Counter()
        for _, ref_counts in refs:
            max_ref_counts |= ref_counts[k - 1]  # | keeps the larger count of each n-gram
        matches = sum(min(count, max_ref_counts[gram]) for gram, count in hyp_counts[k - 1].items())
        candidates = max(hyp_len - k + 1, 0)
        if k >= 2:
            matches, candidates = matches + 1, candidates + 1
        if matches == 0:
            return 0.0
        log_precision_sum += math.log(matches / candidates)
    closest_ref_len = min((r_len for r_len, _ in refs), key=lambda r_len: (abs(r_len - hyp_len), r_len))
    brevity = 1.0 if hyp_len > closest_ref_len else math.exp(1.0 - closest_ref_len / hyp_len)
    return brevity * math.exp(log_precision_sum / max_n)


def self_bleu(texts: Sequence[str], max_n: int = 4) -> float:
    """Self-BLEU (Zhu et al., 2018, Texygen): BLEU of each text against all the *other* texts, averaged.

    Words come from :func:`word_tokenize`; BLEU is :func:`sentence_bleu` (add-one smoothing for orders
    ``>= 2``, see there). 1.0 when all texts are identical; lower means more diverse generations.
    Needs at least two texts. Cost grows with the square of ``len(texts)``.
    """
    _check_order(max_n, "max_n")
    _check_texts(texts, minimum=2)
    counts = [_ngram_counts(word_tokenize(text), max_n) for text in texts]
    scores = [_bleu(hyp, counts[:i] + counts[i + 1 :], max_n) for i, hyp in enumerate(counts)]
    return sum(scores) / len(scores)
