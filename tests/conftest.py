"""Shared fixtures: tiny configurations so the whole suite runs in minutes on two CPU cores."""

from __future__ import annotations

import os
import sys

# The root modules (configuration_mygpt, modeling_mygpt, ...) are importable from a source checkout too.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Tests never reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def save_tiny_mygpt(folder, text: str, seed: int = 0, **config):
    """Save in ``folder`` a tiny random MyGPT (width 32, 2 layers, 2 heads) with a character tokenizer trained on
    ``text``, as a run saves them (weights with their remote code, tokenizer, generation config); ``config``
    overrides MyGPTConfig fields. Returns the folder as a str."""
    import torch

    from configuration_mygpt import MyGPTConfig
    from modeling_mygpt import MyGPTForCausalLM
    from mygpt.tokenization import train_char_tokenizer

    tokenizer = train_char_tokenizer([text])
    settings = dict(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    MyGPTForCausalLM(MyGPTConfig(**{**settings, **config})).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
