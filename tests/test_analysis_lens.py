"""Logit lens: each row is the LM head applied to that layer's normalised residual stream, the last row is the
model's own prediction, and the shapes line up with the tokens of the text."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import GPT2Config, GPT2LMHeadModel

from configuration_mygpt import MyGPTConfig
from modeling_mygpt import MyGPTForCausalLM
from mygpt.analysis.lens import lens_logits, logit_lens, save_lens_report
from mygpt.tokenization import train_char_tokenizer

TEXT = "ROMEO:\nBut soft, what light?\n"


@pytest.fixture(scope="module")
def tokenizer():
    return train_char_tokenizer([TEXT])


def tiny_mygpt(**overrides) -> MyGPTForCausalLM:
    torch.manual_seed(0)
    config = dict(vocab_size=100, n_positions=48, n_embd=32, n_layer=2, n_head=4, bos_token_id=None,
                  eos_token_id=None)
    return MyGPTForCausalLM(MyGPTConfig(**{**config, **overrides})).eval()


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=48, n_embd=32, n_layer=2, n_head=4,
                                      bos_token_id=0, eos_token_id=0)).eval()


@pytest.mark.parametrize("make_model", [tiny_mygpt, tiny_gpt2, lambda: tiny_mygpt(norm_position="post")],
                         ids=["mygpt", "gpt2", "mygpt-post-norm"])
def test_the_last_lens_row_is_the_models_own_logits(make_model, tokenizer):
    model = make_model()
    ids = torch.tensor([tokenizer(TEXT)["input_ids"]])
    rows = lens_logits(model, ids)
    assert rows.shape == (3, ids.shape[1], 100)
    with torch.no_grad():
        torch.testing.assert_close(rows[-1], model(ids).logits[0])


def test_earlier_rows_go_through_the_final_norm_then_the_head(tokenizer):
    model = tiny_mygpt()
    ids = torch.tensor([tokenizer(TEXT)["input_ids"]])
    with torch.no_grad():
        states = model(ids, output_hidden_states=True).hidden_states
        expected = model.lm_head(model.transformer.ln_f(states[1]))[0]
    torch.testing.assert_close(lens_logits(model, ids)[1], expected)


def test_lens_tables_line_up_with_the_tokens(tokenizer):
    result = logit_lens(tiny_mygpt(), tokenizer, TEXT, k=3)
    t = len(TEXT)  # one token per character
    assert result.layer_names == ["embeddings", "after block 0", "after block 1"]
    assert result.top_ids.shape == (3, t, 3) and result.top_probs.shape == (3, t, 3)
    assert np.all(np.diff(result.top_probs, axis=-1) <= 0)  # best first
    assert result.next_token_prob.shape == (3, t)
    assert np.isnan(result.next_token_prob[:, -1]).all() and not np.isnan(result.next_token_prob[:, :-1]).any()


def test_the_true_next_token_probability_is_read_at_the_right_place(tokenizer):
    model = tiny_mygpt()
    result = logit_lens(model, tokenizer, TEXT)
    ids = tokenizer(TEXT)["input_ids"]
    with torch.no_grad():
        probs = model(torch.tensor([ids])).logits[0].softmax(-1)
    assert result.next_token_prob[-1, 4] == pytest.approx(float(probs[4, ids[5]]), rel=1e-5)


def test_lens_refuses_a_text_longer_than_the_context(tokenizer):
    with pytest.raises(ValueError, match="context is 48 tokens"):
        logit_lens(tiny_mygpt(), tokenizer, "ROMEO " * 10)


def test_lens_report_writes_a_heatmap_and_a_table(tokenizer, tmp_path):
    result = logit_lens(tiny_mygpt(), tokenizer, TEXT)
    png, table = save_lens_report(result, tokenizer, str(tmp_path))
    with Image.open(png) as image:
        assert image.format == "PNG"
    text = open(table, encoding="utf-8").read()
    assert text.count("| after block") == 2 and "| embeddings |" in text
