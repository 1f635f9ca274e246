"""What every analysis needs: a text turned into tokens, and one forward pass that keeps everything (attention
weights, hidden states, logits). Models are loaded with :func:`mygpt.loading.load_model_and_tokenizer`.

The analyses take ``model`` and ``tokenizer`` objects, never paths, so a notebook can hand them anything with
the GPT-2 calling interface: a ``MyGPTForCausalLM`` or a ``transformers.GPT2LMHeadModel``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

logger = logging.getLogger(__name__)


@dataclass
class Encoded:
    """A text as the model sees it.

    ``tokens`` are the tokens as text (each id decoded on its own) and ``spans`` the character range of each
    token in ``text``, so labels read from the text can be put on tokens.
    """

    text: str
    input_ids: torch.Tensor  # (1, T)
    tokens: list[str]
    spans: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.tokens)


def num_layers(model: torch.nn.Module) -> int:
    return int(model.config.n_layer)


def num_heads(model: torch.nn.Module) -> int:
    return int(model.config.n_head)


def check_layers(layers: Sequence[int] | None, n_layer: int) -> list[int]:
    """Validate layer indices (negative ones count from the end); ``None`` means every layer."""
    if layers is None:
        return list(range(n_layer))
    checked = []
    for layer in layers:
        if not isinstance(layer, int) or not -n_layer <= layer < n_layer:
            raise ValueError(
                f"layer {layer!r} does not exist: the model has {n_layer} layers, so valid layers are "
                f"0..{n_layer - 1} (or -{n_layer}..-1 from the end)"
            )
        checked.append(layer % n_layer)
    if not checked:
        raise ValueError("the list of layers is empty: name at least one layer, or pass None for all of them")
    return checked


def check_heads(heads: Sequence[int] | None, n_head: int) -> list[int]:
    """Validate head indices; ``None`` means every head."""
    if heads is None:
        return list(range(n_head))
    for head in heads:
        if not isinstance(head, int) or not 0 <= head < n_head:
            raise ValueError(f"head {head!r} does not exist: each layer has {n_head} heads, numbered 0..{n_head - 1}")
    if not heads:
        raise ValueError("the list of heads is empty: name at least one head, or pass None for all of them")
    return list(heads)


_VISIBLE = {"\n": "↵", "\t": "⇥", " ": "·"}
_READABLE = {"\n": "↵", "\t": "⇥", " ": " "}


def _shown(token: str, marks: dict[str, str]) -> str:
    if not token:
        return "∅"
    return "".join(marks.get(ch, ch if ch.isprintable() else f"\\x{ord(ch):02x}") for ch in token)


def display_token(token: str) -> str:
    """A token as a label on a plot: whitespace made visible so '\\n' and ' the' can be told apart, and
    control characters (single bytes of a byte-level vocabulary) written as escapes."""
    return _shown(token, _VISIBLE)


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet read backwards: character -> byte. Printable Latin-1 bytes stand for
    themselves; the others are shifted to chr(256 + n) in byte order, which makes a space 'Ġ' and a newline 'Ċ'."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    alphabet, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            alphabet[chr(byte)] = byte
        else:
            alphabet[chr(256 + shifted)] = byte
            shifted += 1
    return alphabet


_BYTE_LEVEL = _byte_level_alphabet()


def readable_token(token: str) -> str:
    """A token as people read it (bertviz labels): spaces as spaces, a newline as '↵', a tab as '⇥', control
    characters as escapes.

    A decoded piece (``' the'``, ``'\\n'``, what :func:`encode` gives) and the raw byte-level BPE spelling of
    ``convert_ids_to_tokens`` (``'Ġthe'``, ``'Ċ'``) read the same: a token spelled wholly in the byte-level
    alphabet with at least one shifted character (code point 256 or above, such as Ġ or Ċ) is turned back into
    its bytes first. A raw token of accented letters alone (``'Ã©'`` for é) has no such mark and is shown as
    spelled, so pass decoded pieces where the text is not plain English.
    """
    if token and any(ord(ch) >= 256 for ch in token) and all(ch in _BYTE_LEVEL for ch in token):
        token = bytes(_BYTE_LEVEL[ch] for ch in token).decode("utf-8", errors="backslashreplace")
    return _shown(token, _READABLE)


def _token_texts(tokenizer, ids: Sequence[int]) -> list[str]:
    return [tokenizer.decode([i], clean_up_tokenization_spaces=False) for i in ids]


def _spans(tokenizer, text: str, ids: list[int], pieces: list[str]) -> list[tuple[int, int]]:
    """Character range of each token in ``text``.

    Decoded pieces laid end to end give the ranges whenever they rebuild the text exactly (byte-level BPE and
    character tokenizers do, unless a character is split across tokens); otherwise the fast tokenizer's
    offset mapping is used.
    """
    if "".join(pieces) == text:
        spans, start = [], 0
        for piece in pieces:
            spans.append((start, start + len(piece)))
            start += len(piece)
        return spans
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError) as err:  # slow tokenizers have no offsets
        raise ValueError(f"cannot map tokens back to the text with {type(tokenizer).__name__}: {err}") from err
    if list(enc["input_ids"]) != ids:
        raise ValueError("the tokenizer's offset mapping does not match its own encoding of the text")
    return [tuple(span) for span in enc["offset_mapping"]]


def encode(tokenizer, text: str, max_length: int | None = None) -> Encoded:
    """Tokenise ``text`` for one forward pass.

    Raises ``ValueError`` for an empty text and for a text longer than ``max_length`` tokens (the model's
    context), rather than silently cutting it: a picture of half a text would be misread as the whole.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the text is empty: give a few lines for the model to read")
    # verbose=False: a long evaluation text is read in context-sized windows, so the length warning is noise
    ids = list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    if max_length is not None and len(ids) > max_length:
        raise ValueError(
            f"the text is {len(ids)} tokens long but the model's context is {max_length} tokens "
            f"(config.n_positions): shorten the text to at most {max_length} tokens"
        )
    pieces = _token_texts(tokenizer, ids)
    return Encoded(text=text, input_ids=torch.tensor([ids]), tokens=pieces, spans=_spans(tokenizer, text, ids, pieces))


def encode_corpus(tokenizer, text: str) -> Encoded:
    """Tokenise a text of any length (for evaluation and probes, which read it in context-sized windows)."""
    return encode(tokenizer, text, max_length=None)


def windows(input_ids: torch.Tensor, block_size: int) -> list[torch.Tensor]:
    """Cut ``input_ids`` (1, N) into consecutive windows of at most ``block_size`` tokens, each (1, <=block_size)."""
    return [input_ids[:, start : start + block_size] for start in range(0, input_ids.shape[1], block_size)]


@contextlib.contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Switch ``model`` to eager attention (the only backend that returns weights), restoring it afterwards."""
    before = getattr(model.config, "_attn_implementation", None)
    if before != "eager":
        model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        if before is not None and before != "eager":
            model.set_attn_implementation(before)


@torch.no_grad()
def forward(model: torch.nn.Module, input_ids: torch.Tensor, attentions: bool = True, hidden_states: bool = True):
    """One forward pass in eval mode that keeps attention weights and hidden states.

    Returns the model output; ``output.attentions`` is a tuple of n_layer tensors (B, nh, T, T) and
    ``output.hidden_states`` n_layer + 1 tensors (B, T, C).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with eager_attention(model) if attentions else contextlib.nullcontext():
            out = model(
                input_ids=input_ids.to(device),
                output_attentions=attentions,
                output_hidden_states=hidden_states,
                use_cache=False,
            )
    finally:
        model.train(was_training)
    if attentions and (not out.attentions or any(a is None for a in out.attentions)):
        raise RuntimeError(
            f"{type(model).__name__} returned no attention weights even with eager attention; "
            "it must support model.set_attn_implementation('eager')"
        )
    return out


def stacked_attentions(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Attention weights of every layer and head for one sequence, (n_layer, nh, T, T), as float32 on the CPU."""
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"expected input_ids of shape (1, T), got {tuple(input_ids.shape)}")
    out = forward(model, input_ids, attentions=True, hidden_states=False)
    return torch.stack([a[0] for a in out.attentions]).float().cpu()  # (L, nh, T, T)
