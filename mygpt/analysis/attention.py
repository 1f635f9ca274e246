"""Attention weights: extract them for every layer and head, show them with bertviz in a notebook (offline), or draw
them as static PNG grids (layers × heads) with the tokens on the axes.

Row ``i`` of a head's (T, T) matrix is what token ``i`` (the query) reads: how its attention is shared
among tokens ``0..i`` (the keys). The model is causal, so everything above the diagonal is zero.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from mygpt.loading import context_length

from .core import Encoded, check_heads, check_layers, display_token, encode, stacked_attentions
from .plotting import plt, save_figure
from matplotlib.colors import PowerNorm


@dataclass
class TextAttention:
    """The attention weights of every layer and head over one text."""

    encoded: Encoded
    attentions: torch.Tensor  # (n_layer, nh, T, T)

    @property
    def tokens(self) -> list[str]:
        return self.encoded.tokens


def attention_for_text(model: torch.nn.Module, tokenizer, text: str) -> TextAttention:
    """Run ``text`` through ``model`` with eager attention and keep every layer's weights.

    Raises ``ValueError`` when the text is empty or longer than the model's context.
    """
    encoded = encode(tokenizer, text, max_length=context_length(model))
    attentions = stacked_attentions(model, encoded.input_ids)  # (L, nh, T, T)
    if attentions.shape[-1] != len(encoded):
        raise RuntimeError(f"attention covers {attentions.shape[-1]} positions but the text has {len(encoded)} tokens")
    return TextAttention(encoded=encoded, attentions=attentions)


def _show(view_html: str, html_action: str):
    from IPython.display import HTML, display

    if html_action not in ("view", "return"):
        raise ValueError(f"html_action must be 'view' (show it in the notebook) or 'return', not {html_action!r}")
    if html_action == "return":
        return HTML(view_html)
    display(HTML(view_html))
    return None


def head_view(model, tokenizer, text: str, layer: int | None = None, heads: Sequence[int] | None = None,
              html_action: str = "view"):
    """bertviz's head view of ``text`` in one call, rendered offline (the libraries inlined, see
    :mod:`mygpt.analysis.bertviz_offline`); ``html_action="return"`` gives the ``IPython.display.HTML``."""
    from .bertviz_offline import head_view_html

    if layer is not None:
        check_layers([layer], model.config.n_layer)
    found = attention_for_text(model, tokenizer, text)
    return _show(head_view_html(found.attentions, found.tokens, layer=layer, heads=heads), html_action)


def model_view(model, tokenizer, text: str, include_layers: Sequence[int] | None = None,
               include_heads: Sequence[int] | None = None, html_action: str = "view"):
    """bertviz's model view (every layer × head as thumbnails) of ``text`` in one call, rendered offline."""
    from .bertviz_offline import model_view_html

    found = attention_for_text(model, tokenizer, text)
    return _show(model_view_html(found.attentions, found.tokens, include_layers=include_layers,
                                 include_heads=include_heads), html_action)


def _fits(cell_inches: float, n: int) -> float:
    """The font size (points) at which ``n`` labels fit along ``cell_inches``."""
    return float(np.clip(0.75 * cell_inches * 72 / max(n, 1), 2.5, 9.0))


# Square-root colour scale: trained heads spread much of their weight thinly (0.02-0.1 per key), which a linear
# scale would paint white; the colour bar on every figure shows the real values.
NORM = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)


def _draw_head(ax, weights: np.ndarray, tokens: list[str], xlabels: bool, ylabels: bool, title: str,
               size: float):
    n = len(tokens)
    image = ax.imshow(weights, cmap="Blues", norm=NORM, interpolation="nearest")
    # Ticks are costly to draw (hundreds per square): make them only where labels are shown.
    ax.set_xticks(range(n) if xlabels else [], labels=tokens if xlabels else [], rotation=90, fontsize=size)
    ax.set_yticks(range(n) if ylabels else [], labels=tokens if ylabels else [], fontsize=size)
    ax.tick_params(length=0)
    ax.set_title(title, fontsize=9)
    return image


def _finish(fig, axes, image, title: str, height: float) -> None:
    """Title close above the squares (no empty band) and one colour bar for all of them."""
    fig.subplots_adjust(top=1.0 - 0.8 / height, right=0.9)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight (square-root scale)")
    fig.suptitle(title)


def plot_attention_grid(attentions: torch.Tensor, tokens: Sequence[str], path: str,
                        layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
                        title: str = "Attention: rows are queries (reading), columns are keys (read)") -> str:
    """Draw chosen layers × heads of ``attentions`` (L, nh, T, T) as a grid of heatmaps and save a PNG.

    Queries run down each square, keys across; tokens label the left column and the bottom row.
    """
    n_layer, n_head, t_q, t_k = attentions.shape
    if t_q != len(tokens) or t_k != len(tokens):
        raise ValueError(f"attention is {t_q}×{t_k} but {len(tokens)} tokens were given")
    layers = check_layers(layers, n_layer)
    heads = check_heads(heads, n_head)
    labels = [display_token(t) for t in tokens]
    cell = float(np.clip(0.06 * len(tokens), 1.8, 4.0))  # inches per square: room for the token labels
    height = cell * len(layers) + 1
    fig, axes = plt.subplots(len(layers), len(heads), figsize=(cell * len(heads) + 2, height), squeeze=False)
    weights = attentions.float().numpy()
    for r, layer in enumerate(layers):
        for c, head in enumerate(heads):
            image = _draw_head(axes[r][c], weights[layer, head], labels, xlabels=r == len(layers) - 1,
                               ylabels=c == 0, title=f"layer {layer} head {head}", size=_fits(cell, len(tokens)))
    _finish(fig, axes, image, title, height)
    return save_figure(fig, path)


def plot_layer(attentions: torch.Tensor, tokens: Sequence[str], layer: int, path: str) -> str:
    """One layer's heads side by side, every square with the tokens on both axes (for reading token by token)."""
    n_layer, n_head = attentions.shape[:2]
    (layer,) = check_layers([layer], n_layer)
    labels = [display_token(t) for t in tokens]
    cols = min(n_head, 4 if len(tokens) <= 40 else 2)
    rows = math.ceil(n_head / cols)
    cell = float(np.clip(0.1 * len(tokens), 3.0, 10.0))  # ~7 pt per token label up to 100 tokens
    height = cell * rows + 1
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols + 1.5, height), squeeze=False)
    weights = attentions.float().numpy()
    for head in range(rows * cols):
        ax = axes[head // cols][head % cols]
        if head >= n_head:
            ax.axis("off")
            continue
        image = _draw_head(ax, weights[layer, head], labels, xlabels=True, ylabels=True, title=f"head {head}",
                           size=_fits(cell, len(tokens)))
    _finish(fig, axes, image, f"Layer {layer}: attention of each head (rows: query token, columns: key token)",
            height)
    return save_figure(fig, path)


def save_attention_figures(found: TextAttention, output_dir: str, layers: Sequence[int] | None = None) -> list[str]:
    """The grid of every chosen layer × head plus one detailed figure per layer; returns the PNG paths."""
    layers = check_layers(layers, found.attentions.shape[0])
    paths = [plot_attention_grid(found.attentions, found.tokens, os.path.join(output_dir, "attention_grid.png"),
                                 layers=layers)]
    for layer in layers:
        paths.append(plot_layer(found.attentions, found.tokens, layer,
                                os.path.join(output_dir, f"attention_layer{layer}.png")))
    return paths
