"""Logit lens (nostalgebraist, 2020): read each layer's residual stream as if it were the last one.

Every hidden state goes through the final norm ``ln_f`` and the LM head, giving a next-token distribution per
layer. Watching the top token settle layer by layer shows where in the network a prediction is formed.
The model's last hidden state is already normalised (it is taken after ``ln_f``), so it goes straight to the
head and its row equals the model's own output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from mygpt.files import write_text
from mygpt.loading import context_length

from .core import Encoded, display_token, encode, forward
from .plotting import heatmap


@dataclass
class LensResult:
    """Per layer and position: the top-k next tokens and the probability of the token that actually follows."""

    encoded: Encoded
    layer_names: list[str]  # n_layer + 1 rows: the embeddings, then after each block
    top_ids: np.ndarray  # (n_layer + 1, T, k)
    top_probs: np.ndarray  # (n_layer + 1, T, k)
    next_token_prob: np.ndarray  # (n_layer + 1, T); NaN at the last position, which has no next token


@torch.no_grad()
def lens_logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits of every layer's residual stream for one sequence: (1, T) -> (n_layer + 1, T, V)."""
    out = forward(model, input_ids, attentions=False, hidden_states=True)
    states = out.hidden_states  # n_layer + 1 of (1, T, C); the last already after ln_f
    ln_f, head = model.transformer.ln_f, model.get_output_embeddings()
    rows = [head(ln_f(h)) for h in states[:-1]] + [head(states[-1])]
    return torch.cat(rows).float().cpu()  # (n_layer + 1, T, V)


def logit_lens(model: torch.nn.Module, tokenizer, text: str, k: int = 5) -> LensResult:
    """Run the logit lens on ``text`` (at most the model's context)."""
    encoded = encode(tokenizer, text, max_length=context_length(model))
    probs = lens_logits(model, encoded.input_ids).softmax(-1)  # (L+1, T, V)
    top_probs, top_ids = probs.topk(k, dim=-1)
    following = encoded.input_ids[0, 1:]  # (T-1,)
    next_prob = torch.full(probs.shape[:2], float("nan"))
    next_prob[:, :-1] = probs[:, :-1].gather(-1, following.view(1, -1, 1).expand(probs.shape[0], -1, 1)).squeeze(-1)
    names = ["embeddings"] + [f"after block {i}" for i in range(probs.shape[0] - 1)]
    return LensResult(encoded=encoded, layer_names=names, top_ids=top_ids.numpy(), top_probs=top_probs.numpy(),
                      next_token_prob=next_prob.numpy())


def lens_markdown(result: LensResult, tokenizer) -> str:
    """A table per position: the top tokens at each layer (probability in brackets)."""
    decode = lambda i: display_token(tokenizer.decode([int(i)], clean_up_tokenization_spaces=False))  # noqa: E731
    tokens = result.encoded.tokens
    lines = ["# Logit lens: top next tokens per layer", "",
             "Rows are layers (the embeddings, then the residual stream after each block), columns positions; "
             "each cell is the top prediction for the *next* token.", "",
             "| layer | " + " | ".join(f"{p}:`{display_token(t)}`" for p, t in enumerate(tokens)) + " |",
             "|---" * (len(tokens) + 1) + "|"]
    for row, name in enumerate(result.layer_names):
        cells = [f"`{decode(result.top_ids[row, p, 0])}` {result.top_probs[row, p, 0]:.2f}" for p in range(len(tokens))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Top {result.top_ids.shape[-1]} per position at the last layer:", ""]
    for p, token in enumerate(tokens):
        best = ", ".join(f"`{decode(i)}` {q:.2f}" for i, q in zip(result.top_ids[-1, p], result.top_probs[-1, p]))
        lines.append(f"- {p} `{display_token(token)}` → {best}")
    return "\n".join(lines) + "\n"


def save_lens_report(result: LensResult, tokenizer, output_dir: str, max_positions: int = 64) -> list[str]:
    """logit_lens.md (all positions) and a heatmap of the first ``max_positions`` positions: colour is the
    probability given to the token that really comes next, the text is each layer's top guess."""
    shown = min(max_positions, len(result.encoded))
    decode = lambda i: display_token(tokenizer.decode([int(i)], clean_up_tokenization_spaces=False))  # noqa: E731
    cell_text = [[decode(result.top_ids[r, p, 0]) for p in range(shown)] for r in range(len(result.layer_names))]
    title = "Logit lens: top next-token guess per layer (colour: probability of the true next token)"
    if shown < len(result.encoded):
        title += f"\nfirst {shown} of {len(result.encoded)} positions"
    path = heatmap(result.next_token_prob[:, :shown], os.path.join(output_dir, "logit_lens.png"), title=title,
                   row_labels=result.layer_names, col_labels=[display_token(t) for t in result.encoded.tokens[:shown]],
                   xlabel="input token (position)", ylabel="layer", cmap="magma", vmin=0.0, vmax=1.0,
                   cell_text=cell_text, colorbar_label="p(true next token)")
    return [path, str(write_text(os.path.join(output_dir, "logit_lens.md"), lens_markdown(result, tokenizer)))]
