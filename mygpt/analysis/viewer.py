"""A self-contained HTML attention viewer that opens without a network.

bertviz's pages load require.js, d3 and jquery from a CDN and stay blank offline. This page is one file:
a small plain-JavaScript viewer (``viewer_template.html``, SVG lines in the style of bertviz's head view plus
a layers × heads overview) with the attention weights inlined as JSON.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Sequence

import torch

from mygpt.files import write_text

from .core import display_token

TEMPLATE = "viewer_template.html"


def attention_payload(attentions: torch.Tensor, tokens: Sequence[str]) -> dict:
    """The JSON the page reads: tokens and, per layer and head, each query's weights over keys 0..query in
    thousandths (whole numbers and only the causal part keep the file small). ``attentions`` is (n_layer, nh, T, T)."""
    if attentions.dim() != 4 or attentions.shape[-1] != attentions.shape[-2]:
        raise ValueError(f"attentions must be (n_layer, nh, T, T), got {tuple(attentions.shape)}")
    n_layer, n_head, t, _ = attentions.shape
    if t != len(tokens):
        raise ValueError(f"attention covers {t} tokens but {len(tokens)} tokens were given")
    weights = (attentions.float() * 1000).round().int().tolist()
    causal = [[[row[: q + 1] for q, row in enumerate(head)] for head in layer] for layer in weights]
    return {"tokens": [display_token(tok) for tok in tokens], "n_layer": n_layer, "n_head": n_head,
            "attention": causal}


def render_attention_html(attentions: torch.Tensor, tokens: Sequence[str], title: str = "Attention") -> str:
    """The viewer page as a string."""
    data = json.dumps(attention_payload(attentions, tokens), separators=(",", ":"))
    # "</" would end the <script> element early if a token contained "</script>".
    data = data.replace("</", "<\\/")
    template = resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    return template.replace("__TITLE__", html.escape(title)).replace("__DATA__", data)


def write_attention_html(attentions: torch.Tensor, tokens: Sequence[str], path: str,
                         title: str = "Attention") -> str:
    """Write the viewer for ``attentions`` (n_layer, nh, T, T) over ``tokens`` to ``path``."""
    return str(write_text(path, render_attention_html(attentions, tokens, title=title)))
