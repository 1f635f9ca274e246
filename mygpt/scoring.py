"""Score text under any causal language model: total nats, tokens, bytes, chars and loss by context position.

The method is the one of Hugging Face's perplexity guide ("Perplexity of fixed-length models"): a text longer
than the model's context is read through windows of ``window`` tokens whose starts move by ``stride``; each
window scores only the tokens the previous windows have not scored yet, so every token is predicted exactly
once and, after the first window, with at least ``window - stride`` tokens of context. ``stride = window - 1``
gives disjoint windows (fastest, least context); a smaller stride costs more forward passes and gives each
prediction more context.

Two choices make the figures comparable across tokenizers (bits per byte is the headline):

- Every character of the text is scored. Like lm-evaluation-harness's rolling log-likelihood, the token ids
  are preceded by a "start of text" token (the tokenizer's BOS, else its EOS — GPT-2's ``<|endoftext|>``
  separates documents in training), so the first real token is predicted too. A tokenizer with neither
  leaves its first token unscored; its characters are then left out of ``n_chars``/``n_bytes`` and counted
  in ``unscored_chars``.
- Several texts (e.g. the plays of a test split) are scored separately, each from a fresh context, and the
  sums are added: nats, tokens, chars and bytes.

Loss by context position uses every prediction of every window (position ``p`` = number of tokens before
the predicted one inside its window, the start token included), so overlapping windows sample all positions
``1 .. window - 1``, not only the ones that enter the total.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from mygpt.loading import context_length
from mygpt.progress import ProgressBar, progress
from mygpt.text_metrics import bits_per_byte, bits_per_char, perplexity

logger = logging.getLogger(__name__)

__all__ = [
    "IGNORE_INDEX",
    "LOGITS_BUDGET",
    "TextScore",
    "Window",
    "resolve_window",
    "row_nats",
    "score_continuations",
    "score_text",
    "score_texts",
    "score_token_ids",
    "sliding_windows",
    "start_token_id",
    "token_nats",
]

IGNORE_INDEX = -100  # transformers' and PyTorch's label for "no loss here"
# Upper bound on the float32 logits held at once (batch * window * vocab): 2**25 elements = 128 MiB per copy.
LOGITS_BUDGET = 2**25


# --------------------------------------------------------------------------------------------------
# The one token-scoring function: the Trainer's evaluation, the text scorer, the sampler report and the head
# ablation all compute their losses with it.
# --------------------------------------------------------------------------------------------------


def token_nats(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Nats of every next-token prediction of a causal LM over labelled rows.

    Hugging Face's label convention: ``labels`` are the input ids (shifted here, not by the caller), with
    ``-100`` where a token is not to be scored (context, padding).

    Args:
        logits: (B, T, V) the model's output for the rows.
        labels: (B, T) token ids, ``-100`` where not scored.

    Returns:
        (B, T) float32: entry ``[b, t]`` is ``-log p(labels[b, t+1] | tokens 0..t)``, and 0 at the last position
        and wherever ``labels[b, t+1]`` is -100.
    """
    batch, length, vocab = logits.shape
    # Position t predicts token t+1. The targets are shifted (and the last position given nothing to predict)
    # rather than the logits sliced: slicing (B, T, V) would copy it, and cross entropy over the contiguous
    # (B*T, V) view is twice as fast as over the class-dim-1 transpose.
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # (B, T)
    return F.cross_entropy(logits.float().reshape(batch * length, vocab), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="none").view(batch, length)


def row_nats(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row, the summed nats of :func:`token_nats` and the number of scored targets.

    Args:
        logits: (B, T, V); labels: (B, T), -100 where not scored.
    Returns:
        (B, 2) float64: ``[:, 0]`` summed nats, ``[:, 1]`` scored targets (``labels[:, 1:] != -100``); two numbers
        per row, which is what a distributed evaluation gathers across processes.
    """
    nats = token_nats(logits, labels)  # (B, T)
    counted = labels[:, 1:] != IGNORE_INDEX  # (B, T-1)
    return torch.stack([nats.sum(1).double(), counted.sum(1).double()], dim=1)


@dataclass(frozen=True)
class Window:
    """One forward pass: tokens ``[begin, end)`` of the sequence; targets ``[first_target, end)`` enter the total."""

    begin: int
    end: int
    first_target: int


def sliding_windows(n_tokens: int, window: int, stride: int) -> list[Window]:
    """Windows over a sequence of ``n_tokens`` ids, as in HF's perplexity guide.

    Starts move by ``stride``; each window's targets are the positions after the previous window's end
    (and never position 0, which has no context). Together they score positions ``1 .. n_tokens - 1``
    exactly once. ``1 <= stride <= window - 1`` so that the first target of every window has context.
    """
    if window < 2:
        raise ValueError(f"window must be at least 2 tokens (one of context, one to predict), got {window}")
    if not 1 <= stride <= window - 1:
        raise ValueError(
            f"stride must be between 1 and window - 1 = {window - 1} (window - 1 gives disjoint windows), got {stride}"
        )
    if n_tokens < 2:
        raise ValueError(f"need at least 2 tokens to score one prediction, got {n_tokens}")
    windows = []
    previous_end = 1  # position 0 is context only
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        windows.append(Window(begin, end, previous_end))
        previous_end = end
        if end == n_tokens:
            break
    return windows


@dataclass
class TextScore:
    """What a model spent on a text (or a set of texts): sums that add across texts.

    ``nats_by_position[p]`` / ``predictions_by_position[p]`` is the mean loss of predictions made with ``p``
    tokens of context inside a window, over every window (see the module docstring).
    """

    window: int
    stride: int
    total_nats: float = 0.0
    n_tokens: int = 0  # predicted tokens (the start token is not counted)
    n_chars: int = 0
    n_bytes: int = 0
    n_texts: int = 0
    unscored_chars: int = 0
    n_forward_tokens: int = 0  # tokens fed through the model, overlaps included: the cost of the stride
    nats_by_position: list[float] = field(default_factory=list)
    predictions_by_position: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.nats_by_position:
            self.nats_by_position = [0.0] * self.window
            self.predictions_by_position = [0] * self.window

    def add(self, other: "TextScore") -> "TextScore":
        """Add ``other``'s sums into this score (same window and stride) and return ``self``."""
        if (other.window, other.stride) != (self.window, self.stride):
            raise ValueError(
                f"cannot add scores made with window/stride {other.window}/{other.stride} "
                f"to scores made with {self.window}/{self.stride}"
            )
        self.total_nats += other.total_nats
        self.n_tokens += other.n_tokens
        self.n_chars += other.n_chars
        self.n_bytes += other.n_bytes
        self.n_texts += other.n_texts
        self.unscored_chars += other.unscored_chars
        self.n_forward_tokens += other.n_forward_tokens
        for p in range(self.window):
            self.nats_by_position[p] += other.nats_by_position[p]
            self.predictions_by_position[p] += other.predictions_by_position[p]
        return self

    @property
    def bits_per_byte(self) -> float:
        return bits_per_byte(self.total_nats, self.n_bytes)

    @property
    def bits_per_char(self) -> float:
        return bits_per_char(self.total_nats, self.n_chars)

    @property
    def nats_per_token(self) -> float:
        return self.total_nats / self.n_tokens

    @property
    def perplexity(self) -> float:
        """Per-token perplexity: only comparable between models that share a tokenizer."""
        return perplexity(self.total_nats, self.n_tokens)

    @property
    def chars_per_token(self) -> float:
        return self.n_chars / self.n_tokens

    def loss_by_position(self) -> list[tuple[int, float, int]]:
        """``(context length p, mean nats, number of predictions)`` for every position with predictions."""
        return [
            (p, nats / count, count)
            for p, (nats, count) in enumerate(zip(self.nats_by_position, self.predictions_by_position))
            if count
        ]

    def to_dict(self) -> dict[str, Any]:
        """Every figure as plain JSON-ready values (the position curve as parallel lists)."""
        curve = self.loss_by_position()
        return {
            "bits_per_byte": self.bits_per_byte,
            "bits_per_char": self.bits_per_char,
            "nats_per_token": self.nats_per_token,
            "perplexity": self.perplexity,
            "total_nats": self.total_nats,
            "n_tokens": self.n_tokens,
            "n_chars": self.n_chars,
            "n_bytes": self.n_bytes,
            "chars_per_token": self.chars_per_token,
            "n_texts": self.n_texts,
            "unscored_chars": self.unscored_chars,
            "window": self.window,
            "stride": self.stride,
            "n_forward_tokens": self.n_forward_tokens,
            "loss_by_position": {
                "context_length": [p for p, _, _ in curve],
                "mean_nats": [m for _, m, _ in curve],
                "predictions": [c for _, _, c in curve],
            },
        }


def start_token_id(tokenizer: Any) -> int | None:
    """The token that stands for "start of text": the tokenizer's BOS, else its EOS, else ``None``."""
    for token_id in (getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if token_id is not None:
            return int(token_id)
    return None


def resolve_window(model: torch.nn.Module, window: int | None, stride: int | None) -> tuple[int, int]:
    """Fill in the defaults (window: the model's context length; stride: half the window) and check them."""
    context = context_length(model)
    window = context if window is None else window
    if not 2 <= window <= context:
        raise ValueError(f"window must be between 2 and the model's context length {context}, got {window}")
    stride = max(window // 2, 1) if stride is None else stride
    if not 1 <= stride <= window - 1:
        raise ValueError(
            f"stride must be between 1 and window - 1 = {window - 1} (window - 1 gives disjoint windows), got {stride}"
        )
    return window, stride


def _batches(windows: Sequence[Window], batch_size: int) -> Iterable[list[Window]]:
    """Group windows of equal length (all but possibly the last) into batches of at most ``batch_size``."""
    batch: list[Window] = []
    for w in windows:
        if batch and (len(batch) == batch_size or w.end - w.begin != batch[0].end - batch[0].begin):
            yield batch
            batch = []
        batch.append(w)
    if batch:
        yield batch


@torch.inference_mode()
def score_token_ids(
    model: torch.nn.Module,
    token_ids: Sequence[int] | torch.Tensor,
    *,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int | None = None,
    bar: ProgressBar | None = None,
) -> tuple[torch.Tensor, TextScore]:
    """Nats of every token after the first, read through sliding windows.

    Args:
        model: any causal LM whose forward takes ``input_ids`` (B, T) and returns ``.logits`` (B, T, V).
        token_ids: (L,) ids; position 0 is context only (put a start token there to score the whole text).
        window: tokens per forward pass; default and maximum: the model's context length.
        stride: how far each window moves; default ``window // 2`` (HF's guide uses 512 for GPT-2's 1024).
        batch_size: windows per forward pass; default: as many as keep the logits within ~128 MiB.
        bar: a progress bar to advance by the tokens scored (default: one of its own).

    Returns:
        ``(nats, score)``: ``nats`` (L - 1,) float64, ``nats[i]`` = -log p(token i+1 | its window's context);
        ``score`` holds their sum, the token count, the window/stride and the loss by position (chars and
        bytes are left at 0 for the caller, who knows the text).
    """
    ids = torch.as_tensor(token_ids, dtype=torch.long).flatten()  # (L,)
    window, stride = resolve_window(model, window, stride)
    windows = sliding_windows(len(ids), window, stride)
    if batch_size is None:
        output = model.get_output_embeddings()
        vocab = output.weight.shape[0] if output is not None else model.config.vocab_size
        batch_size = max(1, LOGITS_BUDGET // (window * vocab))

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nats = torch.zeros(len(ids) - 1, dtype=torch.float64)
    score = TextScore(window=window, stride=stride)
    position_nats = torch.zeros(window, dtype=torch.float64)
    position_counts = torch.zeros(window, dtype=torch.long)
    own_bar = progress(desc="scoring", total=len(nats), unit="tok", unit_scale=True) if bar is None else None
    try:
        for batch in _batches(windows, batch_size):
            inputs = torch.stack([ids[w.begin : w.end] for w in batch]).to(device)  # (B, T)
            # (B, T-1): entry j is the loss of predicting inputs[:, j+1], with j + 1 tokens of context
            batch_nats = token_nats(model(input_ids=inputs).logits, inputs)[:, :-1].double().cpu()
            length = inputs.shape[1]
            # Every prediction feeds the position curve: prediction j sees j + 1 tokens of context.
            position_nats[1:length] += batch_nats.sum(0)
            position_counts[1:length] += len(batch)
            for row, w in enumerate(batch):
                first = w.first_target - w.begin - 1  # index in batch_nats of the first new target
                nats[w.first_target - 1 : w.end - 1] = batch_nats[row, first:]
            score.n_forward_tokens += inputs.numel()
            (bar or own_bar).update(sum(w.end - w.first_target for w in batch))
    finally:
        model.train(was_training)
        if own_bar is not None:
            own_bar.close()
    score.total_nats = float(nats.sum())
    score.n_tokens = len(nats)
    score.nats_by_position = position_nats.tolist()
    score.predictions_by_position = position_counts.tolist()
    return nats, score


def _encode(tokenizer: Any, text: str) -> tuple[list[int], int]:
    """Token ids of ``text`` without special tokens, and how many leading characters the first id covers."""
    encoding = tokenizer(text, add_special_tokens=False, verbose=False,
                         return_offsets_mapping=getattr(tokenizer, "is_fast", False))
    ids = list(encoding["input_ids"])
    if not ids:
        return ids, 0
    if "offset_mapping" in encoding:
        first_token_chars = int(encoding["offset_mapping"][0][1])
    else:  # slow tokenizer: fall back to the decoded text of the first token
        first_token_chars = len(tokenizer.decode(ids[:1]))
    return ids, first_token_chars


def _prepare(tokenizer: Any, text: str) -> tuple[list[int], str]:
    """The ids to score for ``text`` (start token first, see the module docstring) and the part of the text they
    score. Raises ``ValueError`` for an empty text, or one that gives no token to predict."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("the text to score is empty (or only whitespace): nothing to score")
    ids, first_token_chars = _encode(tokenizer, text)
    start = start_token_id(tokenizer)
    if start is not None:
        return [start] + ids, text
    scored_text = text[first_token_chars:]
    if len(ids) < 2 or not scored_text:
        raise ValueError(
            "the text is a single token and the tokenizer has no BOS/EOS token to start from: nothing to score"
        )
    return ids, scored_text


def _score_prepared(model: torch.nn.Module, text: str, ids: list[int], scored_text: str, *, window: int | None,
                    stride: int | None, batch_size: int | None, bar: ProgressBar | None) -> TextScore:
    _, score = score_token_ids(model, ids, window=window, stride=stride, batch_size=batch_size, bar=bar)
    score.n_chars = len(scored_text)
    score.n_bytes = len(scored_text.encode("utf-8"))
    score.unscored_chars = len(text) - len(scored_text)
    score.n_texts = 1
    return score


def score_text(
    model: torch.nn.Module,
    tokenizer: Any,
    text: str,
    *,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int | None = None,
) -> TextScore:
    """Score one text with the model's own tokenizer (start token prepended, see the module docstring).

    Raises ``ValueError`` for an empty text, or one that gives no token to predict.
    """
    ids, scored_text = _prepare(tokenizer, text)
    return _score_prepared(model, text, ids, scored_text, window=window, stride=stride, batch_size=batch_size,
                           bar=None)


def score_texts(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int | None = None,
) -> TextScore:
    """Score each text separately (fresh context) and add the sums; empty texts in the list are skipped.

    One progress bar counts the tokens of all the texts. Raises ``ValueError`` when there is no text at all or
    all texts are empty.
    """
    if isinstance(texts, str):
        texts = [texts]
    non_empty = [t for t in texts if isinstance(t, str) and t.strip()]
    if not non_empty:
        raise ValueError(f"no text to score: got {len(texts)} text(s), all empty")
    if len(non_empty) < len(texts):
        logger.info("skipping %d empty text(s) of %d", len(texts) - len(non_empty), len(texts))
    window, stride = resolve_window(model, window, stride)
    prepared = [(text, *_prepare(tokenizer, text)) for text in non_empty]
    total = TextScore(window=window, stride=stride)
    with progress(desc="scoring", total=sum(len(ids) - 1 for _, ids, _ in prepared), unit="tok",
                  unit_scale=True) as bar:
        for text, ids, scored_text in prepared:
            total.add(_score_prepared(model, text, ids, scored_text, window=window, stride=stride,
                                      batch_size=batch_size, bar=bar))
    return total


@torch.inference_mode()
def score_continuations(model: torch.nn.Module,
                        rows: Sequence[tuple[Sequence[int], Sequence[int]]]) -> tuple[float, int]:
    """Total nats of each row's target tokens given its context, and the number of targets scored.

    Each row is ``(context ids, target ids)``; a row without targets is skipped, and a row whose context is empty
    scores its targets from the second one on (the first has nothing to be predicted from). A row longer than
    the model's context keeps its last tokens. Rows are right-padded into batches that keep the logits within
    ``LOGITS_BUDGET``.
    """
    device = next(model.parameters()).device
    limit = context_length(model)
    vocab = model.get_output_embeddings().weight.shape[0]
    rows = [(list(c), list(t)) for c, t in rows if len(t)]
    width = min(max((len(c) + len(t) for c, t in rows), default=1), limit)
    per_batch = max(1, LOGITS_BUDGET // (width * vocab))
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for first in range(0, len(rows), per_batch):
            chunk = rows[first : first + per_batch]
            batch = [(c + t)[-limit:] for c, t in chunk]
            n_targets = [min(len(t), len(seq) - 1) for seq, (_, t) in zip(batch, chunk)]
            length = max(len(seq) for seq in batch)
            ids = torch.tensor([seq + [0] * (length - len(seq)) for seq in batch], device=device)  # (B, T)
            mask = torch.tensor([[1] * len(seq) + [0] * (length - len(seq)) for seq in batch], device=device)
            # only the last n tokens of each row are scored: its targets (context and padding are -100)
            labels = torch.tensor([[IGNORE_INDEX] * (len(seq) - n) + seq[len(seq) - n :]
                                   + [IGNORE_INDEX] * (length - len(seq)) for seq, n in zip(batch, n_targets)],
                                  device=device)  # (B, T)
            sums = row_nats(model(input_ids=ids, attention_mask=mask).logits, labels)  # (B, 2)
            total += float(sums[:, 0].sum())
            count += int(sums[:, 1].sum())
    finally:
        model.train(was_training)
    return total, count
