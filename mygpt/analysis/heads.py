"""Head taxonomy: what kind of pattern each attention head draws.

Every score is a number in [0, 1] per head, computed from attention weights alone, so each scorer takes a
tensor (..., T, T) — any leading dimensions, typically (n_layer, nh) — and can be checked on patterns
built by hand. Rows are queries, columns keys. The scores:

- previous-token: attention from token i to token i-1;
- first-token (attention sink): attention from token i to token 0;
- local window: attention kept within the last ``window`` tokens *and spread evenly over them*
  (window mass × normalised entropy inside the window), so a head fixed on one neighbour scores ~0 here;
- duplicate-token: attention to earlier copies of the current token;
- induction (Olsson et al., 2022, "In-context learning and induction heads"): attention to the token that
  *followed* an earlier copy of the current token — on ``A B ... A`` the second ``A`` looks at ``B``.
  Measured on a random token sequence repeated twice, where nothing but copying can predict the second half.

The first two positions are left out of the previous- and first-token scores: at query 1 the previous
token *is* the first token, so counting it would blur the two.

Beside the scores, each head's **attention entropy** (normalised, 0 to 1) says how spread its attention is:
0 when every query reads a single key, 1 when it reads all earlier tokens evenly. A low-entropy head whose
previous-token or first-token score is low reads one token chosen by *content*, not by position; a high-entropy
head averages.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from mygpt.files import write_text
from mygpt.loading import context_length
from mygpt.scoring import token_nats

from .core import encode_corpus, forward, windows
from .plotting import heatmap

logger = logging.getLogger(__name__)

SCORE_NAMES = ("previous_token", "first_token", "local_window", "duplicate_token", "induction")

HEAD_TYPE_SENTENCES = {
    "previous_token": "A previous-token head makes each token read the one just before it, copying "
                      "'what came before me' into the current position; induction heads are built on it.",
    "first_token": "A first-token head (an attention sink) parks its attention on the first token when it has "
                   "nothing useful to read, which lets the head do almost nothing without breaking softmax.",
    "local_window": "A local-window head spreads its attention evenly over the last few tokens, a blurred summary "
                    "of the current phrase rather than a single source.",
    "duplicate_token": "A duplicate-token head looks at earlier copies of the current token, telling the model "
                       "'this token has appeared before'.",
    "induction": "An induction head finds the earlier copy of the current token and attends to the token that "
                 "followed it, so after 'A B ... A' it predicts 'B': copying from context, the basis of "
                 "in-context learning.",
    "mixed": "A mixed head has no score above the threshold: its pattern depends on content in ways these "
             "five tests do not capture.",
}


def _check_square(attention: torch.Tensor, min_tokens: int, what: str) -> int:
    if attention.dim() < 2 or attention.shape[-1] != attention.shape[-2]:
        raise ValueError(f"attention must be (..., T, T), got shape {tuple(attention.shape)}")
    t = attention.shape[-1]
    if t < min_tokens:
        raise ValueError(f"the {what} score needs at least {min_tokens} tokens, got {t}")
    return t


def previous_token_score(attention: torch.Tensor) -> torch.Tensor:
    """Mean attention from token i to token i-1 over queries i >= 2. (..., T, T) -> (...)."""
    t = _check_square(attention, 3, "previous-token")
    rows = torch.arange(2, t)
    return attention[..., rows, rows - 1].mean(-1)


def first_token_score(attention: torch.Tensor) -> torch.Tensor:
    """Mean attention from token i to token 0 over queries i >= 2. (..., T, T) -> (...)."""
    _check_square(attention, 3, "first-token")
    return attention[..., 2:, 0].mean(-1)


def local_window_score(attention: torch.Tensor, window: int = 4) -> torch.Tensor:
    """How much attention stays within the last ``window`` tokens (the query included) and how evenly it is
    spread there: mean over queries i >= window-1 of mass × entropy(in-window distribution) / log(window).
    A head spread uniformly over the window scores 1; a head fixed on one token scores 0. (..., T, T) -> (...).
    """
    if window < 2:
        raise ValueError(f"window must be at least 2 tokens, got {window}")
    t = _check_square(attention, window, "local-window")
    rows = torch.arange(window - 1, t)
    offsets = torch.arange(window)
    in_window = attention[..., rows[:, None], rows[:, None] - offsets]  # (..., queries, window)
    mass = in_window.sum(-1)
    p = in_window / mass.clamp_min(1e-12).unsqueeze(-1)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
    return (mass * entropy / math.log(window)).mean(-1)


def attention_entropy(attention: torch.Tensor) -> torch.Tensor:
    """Mean normalised entropy of each query's attention, ``H(row i) / log(i + 1)`` over queries i >= 1 (query 0
    has one key and no choice): 0 when every query reads one key, 1 when each reads all its keys evenly.
    (..., T, T) -> (...)."""
    t = _check_square(attention, 2, "attention-entropy")
    rows = attention[..., 1:, :].float()  # (..., T-1, T)
    entropy = -(rows * rows.clamp_min(1e-12).log()).sum(-1)  # (..., T-1)
    return (entropy / torch.arange(2, t + 1, dtype=torch.float32).log()).mean(-1)


def _masked_score(attention: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Attention mass on ``targets`` (T, T bool), averaged over the queries that have at least one target."""
    has_target = targets.any(-1)
    if not has_target.any():
        return torch.full(attention.shape[:-2], float("nan"))
    mass = (attention * targets.to(attention.dtype)).sum(-1)  # (..., T)
    return mass[..., has_target].mean(-1)


def duplicate_token_score(attention: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Attention from token i to earlier positions j < i holding the same token, averaged over the queries
    that have an earlier copy (NaN if none does). attention (..., T, T), input_ids (T,) -> (...)."""
    t = _check_square(attention, 2, "duplicate-token")
    ids = _check_ids(input_ids, t)
    earlier = torch.ones(t, t, dtype=torch.bool).tril(-1)
    return _masked_score(attention, (ids[:, None] == ids[None, :]) & earlier)


def induction_score(attention: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Attention from token i to positions j < i whose *previous* token equals token i (the token after an
    earlier copy), averaged over the queries that have such a position (NaN if none does).
    attention (..., T, T), input_ids (T,) -> (...)."""
    t = _check_square(attention, 3, "induction")
    ids = _check_ids(input_ids, t)
    targets = torch.zeros(t, t, dtype=torch.bool)
    # key j qualifies for query i when ids[j-1] == ids[i] and j < i
    targets[:, 1:] = ids[:, None] == ids[None, :-1]
    targets &= torch.ones(t, t, dtype=torch.bool).tril(-1)
    return _masked_score(attention, targets)


def _check_ids(input_ids: torch.Tensor, t: int) -> torch.Tensor:
    ids = input_ids.reshape(-1)
    if ids.numel() != t:
        raise ValueError(f"input_ids has {ids.numel()} tokens but the attention covers {t}")
    return ids.cpu()


def repeated_random_tokens(vocab_size: int, length: int, batch: int, seed: int = 0,
                           exclude: set[int] | None = None, start_token: int | None = None) -> torch.Tensor:
    """``batch`` sequences of ``length`` distinct random tokens, each followed by itself: (batch, 2*length),
    or (batch, 1 + 2*length) behind ``start_token`` (as in Olsson et al., so the first random token is not
    also the first position, where attention sinks look)."""
    allowed = torch.tensor([i for i in range(vocab_size) if i not in (exclude or set())])
    if len(allowed) < length:
        raise ValueError(f"cannot draw {length} distinct tokens from a vocabulary of {len(allowed)}")
    generator = torch.Generator().manual_seed(seed)
    rows = [allowed[torch.randperm(len(allowed), generator=generator)[:length]] for _ in range(batch)]
    first = torch.stack(rows)  # (batch, length)
    parts = [first, first] if start_token is None else [torch.full((batch, 1), start_token), first, first]
    return torch.cat(parts, dim=1)


@dataclass
class HeadScores:
    """Scores per layer and head for each head type, and what the repeated-sequence test measured."""

    scores: dict[str, np.ndarray]  # name -> (n_layer, nh)
    threshold: float
    repeat_loss_first: float  # mean next-token loss on the first copy of the random sequence
    repeat_loss_second: float  # ... and on its repeat: much lower when induction heads work
    text_tokens: int = 0  # tokens of text behind the previous-token, first-token and local-window scores
    repeat_length: int = 0  # length of the random sequence shown twice
    entropy: np.ndarray | None = None  # (n_layer, nh) normalised attention entropy on the text, 0..1

    def head_types(self) -> np.ndarray:
        """Per head, the name of its strongest score when it clears ``threshold``, else "mixed"."""
        stacked = np.stack([np.nan_to_num(self.scores[n], nan=-1.0) for n in SCORE_NAMES])  # (5, L, nh)
        best = stacked.argmax(0)
        names = np.array(SCORE_NAMES, dtype=object)[best]
        names[stacked.max(0) < self.threshold] = "mixed"
        return names

    def table(self) -> list[dict]:
        types = self.head_types()
        n_layer, n_head = types.shape
        return [
            {"layer": layer, "head": head, **{n: float(self.scores[n][layer, head]) for n in SCORE_NAMES},
             **({"attention_entropy": float(self.entropy[layer, head])} if self.entropy is not None else {}),
             "type": str(types[layer, head])}
            for layer in range(n_layer)
            for head in range(n_head)
        ]


def head_scores(model: torch.nn.Module, tokenizer, text: str, window: int = 4, repeat_length: int = 50,
                repeat_batch: int = 8, threshold: float = 0.4, seed: int = 0, max_windows: int = 16) -> HeadScores:
    """Score every head of ``model``.

    Previous-token, first-token and local-window scores come from ``text``, read in context-sized windows
    (at most ``max_windows``) and averaged, weighted by window length: a long held-out text gives scores that
    describe the model rather than one sentence. Duplicate-token and induction scores come from
    ``repeat_batch`` random sequences of ``repeat_length`` distinct tokens shown twice, so every token of the
    second half has exactly one earlier copy and only copying predicts it.
    """
    encoded = encode_corpus(tokenizer, text)
    shortest = max(3, window)
    chunks = [c for c in windows(encoded.input_ids, context_length(model)) if c.shape[1] >= shortest][:max_windows]
    if not chunks:
        raise ValueError(f"the text has {len(encoded)} tokens; head scores need at least {shortest}")
    per_window: dict[str, list[np.ndarray]] = {"previous_token": [], "first_token": [], "local_window": [],
                                               "entropy": []}
    for chunk in chunks:
        attention = _attentions(model, chunk)[0]  # (L, nh, t, t)
        per_window["previous_token"].append(previous_token_score(attention).numpy())
        per_window["first_token"].append(first_token_score(attention).numpy())
        per_window["local_window"].append(local_window_score(attention, window).numpy())
        per_window["entropy"].append(attention_entropy(attention).numpy())
    lengths = [c.shape[1] for c in chunks]
    scores = {name: np.average(np.stack(values), axis=0, weights=lengths) for name, values in per_window.items()}
    entropy = scores.pop("entropy")
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    vocab = min(model.config.vocab_size, len(tokenizer))
    start = getattr(tokenizer, "bos_token_id", None)
    start = start if isinstance(start, int) and 0 <= start < vocab else None
    length = min(repeat_length, (context_length(model) - (start is not None)) // 2)
    ids = repeated_random_tokens(vocab, length, repeat_batch, seed=seed, exclude=special, start_token=start)
    repeated = _attentions(model, ids)  # (B, L, nh, 2n, 2n)
    scores["duplicate_token"] = torch.stack(
        [duplicate_token_score(repeated[b], ids[b]) for b in range(len(ids))]).mean(0).numpy()
    scores["induction"] = torch.stack([induction_score(repeated[b], ids[b]) for b in range(len(ids))]).mean(0).numpy()
    first, second = _half_losses(model, ids, length, offset=int(start is not None))
    return HeadScores(scores=scores, threshold=threshold, repeat_loss_first=first, repeat_loss_second=second,
                      text_tokens=sum(lengths), repeat_length=length, entropy=entropy)


def _attentions(model, input_ids: torch.Tensor) -> torch.Tensor:
    out = forward(model, input_ids, attentions=True, hidden_states=False)
    return torch.stack(out.attentions, dim=1).float().cpu()  # (B, L, nh, T, T)


@torch.no_grad()
def _half_losses(model, ids: torch.Tensor, length: int, offset: int = 0) -> tuple[float, float]:
    """Mean next-token loss on the first copy (its tokens 2..n) and on the repeat (its tokens 2..n; the repeat's
    first token follows the end of the first copy, which no earlier context predicts). ``offset`` is 1 when
    a start token precedes the first copy."""
    logits = forward(model, ids, attentions=False, hidden_states=False).logits.cpu()  # (B, 2n, V)
    losses = token_nats(logits, ids)[:, :-1]  # (B, T-1): entry t is the loss of predicting token t+1
    first = losses[:, offset : offset + length - 1]  # targets offset+1 .. offset+n-1
    second = losses[:, offset + length :]  # targets offset+n+1 .. offset+2n-1
    return float(first.mean()), float(second.mean())


def save_head_report(result: HeadScores, output_dir: str) -> list[str]:
    """Write heads.csv, one layers × heads heatmap per score and heads.md (table + one sentence per type)."""
    os.makedirs(output_dir, exist_ok=True)
    rows = result.table()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows([{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows])
    paths = [str(write_text(os.path.join(output_dir, "heads.csv"), buffer.getvalue()))]
    n_layer, n_head = result.scores[SCORE_NAMES[0]].shape
    for name in SCORE_NAMES:
        paths.append(heatmap(
            result.scores[name], os.path.join(output_dir, f"heads_{name}.png"),
            title=f"{name.replace('_', '-')} score per head", row_labels=[f"L{i}" for i in range(n_layer)],
            col_labels=[f"H{h}" for h in range(n_head)], xlabel="head", ylabel="layer", vmin=0.0, vmax=1.0,
            colorbar_label="score (0 none, 1 perfect)",
        ))
    paths.append(str(write_text(os.path.join(output_dir, "heads.md"), head_report_markdown(result))))
    return paths


def head_report_markdown(result: HeadScores) -> str:
    """The head table and one sentence per head type, in Markdown."""
    types = result.head_types()
    lines = ["# Attention head taxonomy", "",
             f"A head's type is its strongest score when that score is at least {result.threshold}; otherwise "
             "it is *mixed*.", "",
             f"Previous-token, first-token and local-window scores: {result.text_tokens} tokens of text. "
             f"Duplicate-token and induction scores: random sequences of {result.repeat_length} tokens shown twice; "
             f"next-token loss {result.repeat_loss_first:.3f} on the first copy, {result.repeat_loss_second:.3f} on "
             "the repeat (a large drop means the model copies from context).", ""]
    columns = list(SCORE_NAMES)
    if result.entropy is not None:
        columns.append("attention_entropy")
        lines += ["attention_entropy: how spread each head's attention is on the text, 0 (every query reads one "
                  "key) to 1 (each reads all earlier tokens evenly). A low-entropy head with low previous-token and "
                  "first-token scores picks its key by content, not by position; a high-entropy head averages.", ""]
    lines += ["| layer | head | " + " | ".join(columns) + " | type |", "|---" * (len(columns) + 3) + "|"]
    for row in result.table():
        lines.append(f"| {row['layer']} | {row['head']} | "
                     + " | ".join(f"{row[n]:.2f}" for n in columns) + f" | {row['type']} |")
    lines += ["", "## What each type means", ""]
    for name, sentence in HEAD_TYPE_SENTENCES.items():
        found = [f"L{layer}H{head}" for layer, head in zip(*np.nonzero(types == name))]
        lines.append(f"- **{name}** ({', '.join(found) if found else 'none found'}): {sentence}")
    return "\n".join(lines) + "\n"
