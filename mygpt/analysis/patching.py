"""Activation patching (causal tracing): which heads carry the information a prediction needs.

Run the model on a *clean* input, where it predicts the right token, and on a *corrupted* input that differs
only in the information under study, where it cannot. Then run the corrupted input again with one head's output
replaced by what that head produced on the clean input. The share of the clean-vs-corrupted gap in the correct
token's probability that this one replacement restores measures how much of the needed information flows
through that head (Meng et al., 2022, "Locating and editing factual associations in GPT"; Wang et al., 2023,
"Interpretability in the wild").

A head's output reaches the residual stream only through ``attn.c_proj``, whose input (B, T, nh*hs) holds head h
in columns [h*hs:(h+1)*hs] (see :mod:`mygpt.analysis.ablation`). Recording and patching are forward pre-hooks
on that projection: the weights are never touched, and the model is unchanged afterwards.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

from mygpt.scoring import token_nats

from .ablation import _blocks, _head_dim, heads_by_layer


@contextlib.contextmanager
def record_head_outputs(model: torch.nn.Module) -> Iterator[dict[int, torch.Tensor]]:
    """Within the block, every forward pass stores each layer's head outputs, the input of ``attn.c_proj``:
    ``{layer: (B, T, nh*hs)}`` (the last pass overwrites earlier ones)."""
    recorded: dict[int, torch.Tensor] = {}
    handles = []

    def record(module, args, layer):
        recorded[layer] = args[0].detach().clone()

    try:
        for layer, block in enumerate(_blocks(model)):
            handles.append(block.attn.c_proj.register_forward_pre_hook(
                lambda module, args, layer=layer: record(module, args, layer)))
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def patch_head_outputs(model: torch.nn.Module, source: dict[int, torch.Tensor],
                       heads: Iterable[tuple[int, int]]) -> Iterator[None]:
    """Within the block, each (layer, head) in ``heads`` outputs what ``source`` recorded for it (from
    :func:`record_head_outputs` on an input of the same shape) instead of what it computes; every other head,
    and every later layer, computes as usual on the patched residual stream."""
    n_head = model.config.n_head
    by_layer = heads_by_layer(model, heads)
    missing = sorted(set(by_layer) - set(source))
    if missing:
        raise KeyError(f"no recorded head outputs for layer {missing[0]}; recorded: {sorted(source)}")
    handles = []
    try:
        for layer, layer_heads in by_layer.items():
            c_proj = _blocks(model)[layer].attn.c_proj
            hd = _head_dim(c_proj, n_head)
            columns = torch.zeros(n_head * hd, dtype=torch.bool)
            for head in layer_heads:
                columns[head * hd : (head + 1) * hd] = True

            def patch(module, args, columns=columns, replacement=source[layer]):
                x = args[0]  # (B, T, nh*hs)
                if x.shape != replacement.shape:
                    raise ValueError(f"patching needs inputs of one shape: recorded {tuple(replacement.shape)}, "
                                     f"got {tuple(x.shape)}")
                mask = columns.to(x.device)
                return (torch.where(mask, replacement.to(device=x.device, dtype=x.dtype), x),) + tuple(args[1:])

            handles.append(c_proj.register_forward_pre_hook(patch))
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class PatchingResult:
    """Mean probability of the correct next token at the scored positions, per patched head and per layer."""

    clean: float  # on the clean input
    corrupted: float  # on the corrupted input, nothing patched
    heads: np.ndarray  # (n_layer, nh): corrupted input with that one head's clean output patched in
    layers: np.ndarray  # (n_layer,): corrupted input with all heads of that layer patched in
    n_scored: int  # positions scored

    def restored(self, values: np.ndarray) -> np.ndarray:
        """Share of the clean-vs-corrupted gap that ``values`` close: 0 = nothing restored, 1 = all of it."""
        gap = self.clean - self.corrupted
        return (np.asarray(values) - self.corrupted) / gap if gap else np.full(np.shape(values), np.nan)

    def table(self) -> list[dict]:
        restored = self.restored(self.heads)
        return [{"layer": int(layer), "head": int(head), "probability": float(self.heads[layer, head]),
                 "restored": float(restored[layer, head])}
                for layer in range(self.heads.shape[0]) for head in range(self.heads.shape[1])]


@torch.no_grad()
def _correct_probability(model: torch.nn.Module, input_ids: torch.Tensor, scored: torch.Tensor) -> float:
    """Mean probability of token t+1 at the scored positions t; ``scored`` (B, T) bool."""
    logits = model(input_ids=input_ids, use_cache=False).logits  # (B, T, V)
    nats = token_nats(logits, input_ids)  # (B, T): entry t is the loss of token t+1 (the last entry is unused)
    return float(torch.exp(-nats.float())[scored].mean())


def activation_patching(model: torch.nn.Module, clean_ids: torch.Tensor, corrupted_ids: torch.Tensor,
                        scored: torch.Tensor) -> PatchingResult:
    """Patch every head (and every layer's heads together) from the clean run into the corrupted one.

    ``clean_ids`` and ``corrupted_ids`` (B, T) must predict the same tokens at the ``scored`` positions (B, T bool:
    position t scores token t+1), so that "correct" means the same thing in both runs.
    """
    if clean_ids.shape != corrupted_ids.shape or scored.shape != clean_ids.shape:
        raise ValueError(f"clean {tuple(clean_ids.shape)}, corrupted {tuple(corrupted_ids.shape)} and scored "
                         f"{tuple(scored.shape)} must have one shape")
    scored = scored.bool().clone()
    scored[:, -1] = False  # the last position has no next token
    if not scored.any():
        raise ValueError("no position is scored")
    following = scored[:, :-1]  # (B, T-1): the scored positions, read against the tokens after them
    if not torch.equal(clean_ids[:, 1:][following], corrupted_ids[:, 1:][following]):
        raise ValueError("the clean and corrupted inputs predict different tokens at the scored positions")
    was_training = model.training
    model.eval()
    try:
        with record_head_outputs(model) as recorded:
            clean = _correct_probability(model, clean_ids, scored)
        corrupted = _correct_probability(model, corrupted_ids, scored)
        n_layer, n_head = model.config.n_layer, model.config.n_head
        heads = np.zeros((n_layer, n_head))
        layers = np.zeros(n_layer)
        for layer in range(n_layer):
            for head in range(n_head):
                with patch_head_outputs(model, recorded, [(layer, head)]):
                    heads[layer, head] = _correct_probability(model, corrupted_ids, scored)
            with patch_head_outputs(model, recorded, [(layer, head) for head in range(n_head)]):
                layers[layer] = _correct_probability(model, corrupted_ids, scored)
    finally:
        model.train(was_training)
    return PatchingResult(clean=clean, corrupted=corrupted, heads=heads, layers=layers, n_scored=int(scored.sum()))
