"""Sliding-window perplexity and bits per byte of texts under a causal LM, as an ``evaluate`` metric.

An offline stand-in for the Hub's ``perplexity`` metric that also reports the tokenizer-independent figures.
Logic: ``mygpt.scoring.score_texts`` (and ``mygpt.loading.load_model_and_tokenizer`` when given a ``model_id``).
"""

import datasets
import evaluate

from mygpt.loading import load_model_and_tokenizer
from mygpt.scoring import score_texts

_DESCRIPTION = """\
Scores texts under a causal language model with a sliding window and a stride, as in Hugging Face's guide
"Perplexity of fixed-length models": every token is predicted once, with at least window - stride tokens of
context after the first window. Each text starts from the tokenizer's BOS (else EOS) token so that its first
token is scored too, and texts are scored separately. Returns bits per byte and per character (comparable
across tokenizers) and per-token perplexity with its token count (comparable only under one tokenizer).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the texts to score.
    model_id (str): a model folder or Hub id; or pass `model` and `tokenizer` objects instead.
    model, tokenizer: an already loaded causal LM and its tokenizer.
    window (int): tokens per forward pass; default the model's context length.
    stride (int): how far the window moves; default window // 2.
    batch_size (int): windows per forward pass; default: what keeps the logits near 128 MiB.
    device (str): for model_id, where to load it; default "cpu".
    trust_remote_code (bool): for model_id; default True for folders, False for Hub ids.
Returns:
    bits_per_byte, bits_per_char, perplexity, nats_per_token, chars_per_token, total_nats, n_tokens,
    n_chars, n_bytes, n_texts, window, stride, loss_by_position, ...: see mygpt.scoring.TextScore.to_dict.
Examples:
    >>> metric = evaluate.load("mygpt/metrics/sliding_window_perplexity")
    >>> metric.compute(predictions=["To be, or not to be"], model_id="runs/cpu-quick")["bits_per_byte"]
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SlidingWindowPerplexity(evaluate.Metric):
    """Bits per byte, bits per char and per-token perplexity of ``predictions`` under a model."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions, model_id=None, model=None, tokenizer=None, window=None, stride=None,
                 batch_size=None, device="cpu", trust_remote_code=None):
        if model is None or tokenizer is None:
            if model_id is None:
                raise ValueError("give model_id (a folder or Hub id), or both model and tokenizer")
            model, tokenizer = load_model_and_tokenizer(model_id, device=device, dtype="float32",
                                                        trust_remote_code=trust_remote_code)
        score = score_texts(model, tokenizer, list(predictions), window=window, stride=stride, batch_size=batch_size)
        return score.to_dict()
