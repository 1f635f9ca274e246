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
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F

from mygpt.text_metrics import bits_per_byte, bits_per_char, perplexity

logger = logging.getLogger(__name__)

__all__ = [
    "Window",
    "TextScore",
    "sliding_windows",
    "model_context_length",
    "resolve_window",
    "start_token_id",
    "score_token_ids",
    "score_text",
    "score_texts",
    "ModelNotAvailableError",
    "hub_reachable",
    "load_causal_lm",
]

# Upper bound on the float32 logits held at once (batch * window * vocab): 2**25 elements = 128 MiB per copy.
LOGITS_BUDGET = 2**25


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


def model_context_length(model: torch.nn.Module) -> int:
    """The number of positions the model was built for, read from its config (``n_positions`` and aliases)."""
    config = model.config
    for name in ("n_positions", "max_position_embeddings", "n_ctx", "max_seq_len", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 1:
            return value
    raise ValueError(
        f"cannot tell the context length of {type(model).__name__}: its config has none of n_positions, "
        "max_position_embeddings, n_ctx; pass the window explicitly"
    )


def start_token_id(tokenizer: Any) -> int | None:
    """The token that stands for "start of text": the tokenizer's BOS, else its EOS, else ``None``."""
    for token_id in (getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if token_id is not None:
            return int(token_id)
    return None


def resolve_window(model: torch.nn.Module, window: int | None, stride: int | None) -> tuple[int, int]:
    """Fill in the defaults (window: the model's context length; stride: half the window) and check them."""
    context = model_context_length(model)
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
) -> tuple[torch.Tensor, TextScore]:
    """Nats of every token after the first, read through sliding windows.

    Args:
        model: any causal LM whose forward takes ``input_ids`` (B, T) and returns ``.logits`` (B, T, V).
        token_ids: (L,) ids; position 0 is context only (put a start token there to score the whole text).
        window: tokens per forward pass; default and maximum: the model's context length.
        stride: how far each window moves; default ``window // 2`` (HF's guide uses 512 for GPT-2's 1024).
        batch_size: windows per forward pass; default: as many as keep the logits within ~128 MiB.

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
        vocab = output.weight.shape[0] if output is not None else getattr(model.config, "vocab_size", 50_000)
        batch_size = max(1, LOGITS_BUDGET // (window * vocab))

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nats = torch.zeros(len(ids) - 1, dtype=torch.float64)
    score = TextScore(window=window, stride=stride)
    position_nats = torch.zeros(window, dtype=torch.float64)
    position_counts = torch.zeros(window, dtype=torch.long)
    try:
        for batch in _batches(windows, batch_size):
            inputs = torch.stack([ids[w.begin : w.end] for w in batch]).to(device)  # (B, T)
            logits = model(input_ids=inputs).logits[:, :-1].float()  # (B, T-1, V): predicts inputs[:, 1:]
            token_nats = F.cross_entropy(logits.transpose(1, 2), inputs[:, 1:], reduction="none")  # (B, T-1)
            token_nats = token_nats.double().cpu()
            length = inputs.shape[1]
            # Every prediction feeds the position curve: prediction j sees j + 1 tokens of context.
            position_nats[1:length] += token_nats.sum(0)
            position_counts[1:length] += len(batch)
            for row, w in enumerate(batch):
                first = w.first_target - w.begin - 1  # index in token_nats of the first new target
                nats[w.first_target - 1 : w.end - 1] = token_nats[row, first:]
            score.n_forward_tokens += inputs.numel()
    finally:
        model.train(was_training)
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
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("the text to score is empty (or only whitespace): nothing to score")
    ids, first_token_chars = _encode(tokenizer, text)
    start = start_token_id(tokenizer)
    if start is not None:
        ids, scored_text = [start] + ids, text
    else:
        scored_text = text[first_token_chars:]
        if len(ids) < 2 or not scored_text:
            raise ValueError(
                "the text is a single token and the tokenizer has no BOS/EOS token to start from: nothing to score"
            )
    _, score = score_token_ids(model, ids, window=window, stride=stride, batch_size=batch_size)
    score.n_chars = len(scored_text)
    score.n_bytes = len(scored_text.encode("utf-8"))
    score.unscored_chars = len(text) - len(scored_text)
    score.n_texts = 1
    return score


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

    Raises ``ValueError`` when there is no text at all or all texts are empty.
    """
    if isinstance(texts, str):
        texts = [texts]
    non_empty = [t for t in texts if isinstance(t, str) and t.strip()]
    if not non_empty:
        raise ValueError(f"no text to score: got {len(texts)} text(s), all empty")
    if len(non_empty) < len(texts):
        logger.info("skipping %d empty text(s) of %d", len(texts) - len(non_empty), len(texts))
    window, stride = resolve_window(model, window, stride)
    total = TextScore(window=window, stride=stride)
    for text in non_empty:
        score = score_text(model, tokenizer, text, window=window, stride=stride, batch_size=batch_size)
        total.add(score)
    return total



# --------------------------------------------------------------------------------------------------
# Loading any causal LM by folder or Hub id
# --------------------------------------------------------------------------------------------------


class ModelNotAvailableError(ValueError):
    """A model named on the command line cannot be loaded; the message says why and what would work."""


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers at all: ``False`` in offline mode or when its host cannot be reached.

    A quick socket check, so that an offline machine learns it in seconds rather than after the
    Hub client's retries.
    """
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def load_causal_lm(
    name_or_path: str,
    *,
    trust_remote_code: bool | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.nn.Module, Any]:
    """Load ``(model, tokenizer)`` from a local folder (a MyGPT run, any saved ``AutoModelForCausalLM``) or a Hub id.

    Args:
        name_or_path: a folder holding ``config.json`` and a tokenizer, or a Hub id such as ``gpt2``.
        trust_remote_code: run the modeling code saved with the model. Default: yes for local folders (your
            own files; MyGPT folders carry their code), no for Hub ids (someone else's code).
        device, dtype: where and in what precision to put the weights (float32 keeps scores comparable).

    Raises:
        ModelNotAvailableError: a folder without a model, or a name that is neither a folder nor reachable on
            the Hub (the message says the Hub cannot be reached when that is the reason).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:  # registers "mygpt" in-process, so MyGPT folders load even without their code files
        import modeling_mygpt  # noqa: F401
    except ImportError:
        pass
    is_folder = os.path.isdir(name_or_path)
    if is_folder and not os.path.isfile(os.path.join(name_or_path, "config.json")):
        raise ModelNotAvailableError(
            f"{name_or_path} is a folder but holds no model (no config.json): give a folder written by "
            "save_pretrained (e.g. a finished train_hf.py run) or a Hub id"
        )
    if trust_remote_code is None:
        trust_remote_code = is_folder
    offline = not is_folder and not hub_reachable()
    kwargs = {"trust_remote_code": trust_remote_code, "local_files_only": offline}
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, **kwargs)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if is_folder:
            raise ModelNotAvailableError(f"cannot load the model in {name_or_path}: {reason}") from None
        if offline:
            raise ModelNotAvailableError(
                f"cannot load model {name_or_path!r}: there is no local folder of that name, it is not in the "
                "local Hugging Face cache, and the Hugging Face Hub cannot be reached (offline). Give the path of "
                "a saved model folder instead, or run where huggingface.co is reachable."
            ) from None
        raise ModelNotAvailableError(
            f"cannot load model {name_or_path!r}: no local folder of that name, and the Hub says: {reason}"
        ) from None
    model.to(device)
    model.eval()
    return model, tokenizer
