"""Head ablation: knock out one attention head at a time and measure how much the validation loss rises.

A head's output reaches the residual stream only through ``attn.c_proj``, whose input (B, T, nh*hs) holds
head h in columns [h*hs:(h+1)*hs]. A forward pre-hook that zeroes those columns removes exactly that head
and nothing else (zero ablation); the weights are never touched, so the model is unchanged afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from mygpt.loading import context_length
from mygpt.progress import progress
from mygpt.scoring import token_nats

from .core import check_heads, check_layers, windows
from .plotting import heatmap

logger = logging.getLogger(__name__)


def _blocks(model: torch.nn.Module):
    """The transformer blocks of a GPT-2-shaped causal LM (``model.transformer.h``)."""
    try:
        return model.transformer.h
    except AttributeError as err:
        raise TypeError(
            f"{type(model).__name__} has no transformer.h: head ablation needs a GPT-2-shaped model") from err


def _head_dim(c_proj: torch.nn.Module, n_head: int) -> int:
    # nn.Linear stores (out, in); transformers' Conv1D (GPT-2) stores (in, out).
    in_features = getattr(c_proj, "in_features", None) or c_proj.weight.shape[0]
    if in_features % n_head:
        raise ValueError(f"c_proj takes {in_features} inputs, which do not split into {n_head} heads")
    return in_features // n_head


def heads_by_layer(model: torch.nn.Module, heads: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    """``{layer: [head, ...]}`` of (layer, head) pairs, each checked against the model's sizes."""
    n_layer, n_head = model.config.n_layer, model.config.n_head
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        (layer,) = check_layers([layer], n_layer)
        check_heads([head], n_head)
        by_layer.setdefault(layer, []).append(head)
    return by_layer


@contextlib.contextmanager
def ablate_heads(model: torch.nn.Module, heads: Iterable[tuple[int, int]]) -> Iterator[None]:
    """Within the block, every (layer, head) in ``heads`` contributes nothing to the residual stream."""
    n_head = model.config.n_head
    by_layer = heads_by_layer(model, heads)
    handles = []
    try:
        for layer, layer_heads in by_layer.items():
            c_proj = _blocks(model)[layer].attn.c_proj
            hd = _head_dim(c_proj, n_head)
            mask = torch.ones(n_head * hd)
            for head in layer_heads:
                mask[head * hd : (head + 1) * hd] = 0.0

            def zero_heads(module, args, mask=mask):
                x = args[0]  # (B, T, nh*hs), heads side by side
                return (x * mask.to(device=x.device, dtype=x.dtype),) + tuple(args[1:])

            handles.append(c_proj.register_forward_pre_hook(zero_heads))
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def mean_loss(model: torch.nn.Module, input_ids: torch.Tensor, block_size: int | None = None,
              batch_size: int = 8) -> float:
    """Mean next-token cross-entropy over a long token sequence (1, N), read in windows of ``block_size``
    tokens (the context by default); every window's first token has no prediction, as in training."""
    block_size = block_size or context_length(model)
    if input_ids.shape[1] < 2:
        raise ValueError("the evaluation text needs at least 2 tokens to measure a loss")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        chunks = [w for w in windows(input_ids, block_size) if w.shape[1] >= 2]
        for start in range(0, len(chunks), batch_size):
            group = chunks[start : start + batch_size]
            for length in sorted({c.shape[1] for c in group}):  # only the last window may be shorter
                batch = torch.cat([c for c in group if c.shape[1] == length]).to(device)  # (b, length)
                logits = model(input_ids=batch, use_cache=False).logits  # (b, length, V)
                total += float(token_nats(logits, batch).double().sum())
                count += batch.shape[0] * (length - 1)
    finally:
        model.train(was_training)
    return total / count


@dataclass
class AblationResult:
    """Validation loss with every head, and with each head knocked out in turn."""

    base_loss: float
    losses: np.ndarray  # (n_layer, nh); NaN for heads not ablated
    n_tokens: int

    @property
    def delta(self) -> np.ndarray:
        """Rise in loss when the head is removed, (n_layer, nh): large means the head matters."""
        return self.losses - self.base_loss

    def ranking(self) -> list[tuple[int, int, float]]:
        """(layer, head, delta) from the most to the least important head."""
        pairs = [(int(l), int(h), float(self.delta[l, h])) for l, h in zip(*np.nonzero(~np.isnan(self.losses)))]
        return sorted(pairs, key=lambda item: -item[2])


def head_ablation(model: torch.nn.Module, input_ids: torch.Tensor, layers: Sequence[int] | None = None,
                  heads: Sequence[int] | None = None, block_size: int | None = None,
                  batch_size: int = 8) -> AblationResult:
    """Knock out each chosen head alone and measure the loss on ``input_ids`` (1, N)."""
    n_layer, n_head = model.config.n_layer, model.config.n_head
    layers, heads = check_layers(layers, n_layer), check_heads(heads, n_head)
    base = mean_loss(model, input_ids, block_size, batch_size)
    losses = np.full((n_layer, n_head), np.nan)
    for layer, head in progress([(layer, head) for layer in layers for head in heads], desc="ablating heads",
                                unit="head"):
        with ablate_heads(model, [(layer, head)]):
            losses[layer, head] = mean_loss(model, input_ids, block_size, batch_size)
    return AblationResult(base_loss=base, losses=losses, n_tokens=int(input_ids.shape[1]))


def save_ablation_report(result: AblationResult, output_dir: str) -> list[str]:
    """The layers × heads map of the rise in loss, as a PNG."""
    n_layer, n_head = result.losses.shape
    path = heatmap(
        result.delta, os.path.join(output_dir, "ablation_delta_loss.png"),
        title=f"Rise in validation loss when one head is zeroed\n(base loss {result.base_loss:.3f}, "
              f"{result.n_tokens} tokens)",
        row_labels=[f"L{i}" for i in range(n_layer)], col_labels=[f"H{h}" for h in range(n_head)],
        xlabel="head", ylabel="layer", cmap="RdBu_r", center_zero=True, colorbar_label="Δ loss (nats/token)",
        cell_text=[[("" if np.isnan(v) else f"{v:+.3f}") for v in row] for row in result.delta],
    )
    return [path]
