"""Bits per byte, bits per character and per-token perplexity from summed nats, as an ``evaluate`` metric.

Logic: ``mygpt.text_metrics`` (``bits_per_byte``, ``bits_per_char``, ``perplexity``).
"""

import datasets
import evaluate

from mygpt.text_metrics import bits_per_byte, bits_per_char, perplexity

_DESCRIPTION = """\
Information rates of a language model on a text, from what it spent on it. Each row is one scored text (or
batch): its summed negative log-likelihood in nats, its predicted tokens, and its size in characters and UTF-8
bytes. Rows are summed, then
    bits_per_byte = total_nats / (n_bytes * ln 2)   -- the headline: independent of the tokenizer
    bits_per_char = total_nats / (n_chars * ln 2)
    perplexity    = exp(total_nats / n_tokens)      -- per token: only comparable under one tokenizer
"""

_KWARGS_DESCRIPTION = """
Args:
    total_nats (list of float): summed negative log-likelihood of each text, in nats.
    n_tokens (list of int): predicted tokens of each text.
    n_chars (list of int): characters of each text.
    n_bytes (list of int): UTF-8 bytes of each text.
Returns:
    bits_per_byte, bits_per_char, perplexity, nats_per_token, chars_per_token (float);
    total_nats (float); n_tokens, n_chars, n_bytes (int).
Examples:
    >>> metric = evaluate.load("mygpt/metrics/bits_per_byte")
    >>> metric.compute(total_nats=[2772.6], n_tokens=[1000], n_chars=[4000], n_bytes=[4000])["bits_per_byte"]
    1.0000...
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BitsPerByte(evaluate.Metric):
    """Bits per byte/char and perplexity from per-text sums."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "total_nats": datasets.Value("float64"),
                    "n_tokens": datasets.Value("int64"),
                    "n_chars": datasets.Value("int64"),
                    "n_bytes": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, total_nats, n_tokens, n_chars, n_bytes):
        nats, tokens, chars, n_bytes_ = float(sum(total_nats)), int(sum(n_tokens)), int(sum(n_chars)), int(sum(n_bytes))
        return {
            "bits_per_byte": bits_per_byte(nats, n_bytes_),
            "bits_per_char": bits_per_char(nats, chars),
            "perplexity": perplexity(nats, tokens),
            "nats_per_token": nats / tokens,
            "chars_per_token": chars / tokens,
            "total_nats": nats,
            "n_tokens": tokens,
            "n_chars": chars,
            "n_bytes": n_bytes_,
        }
