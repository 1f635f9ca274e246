"""Attention extraction: one (T, T) causal distribution per layer and head, tokens that line up with it, the
model's attention backend restored afterwards, clear errors for bad input, and PNG grids that open."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import GPT2Config, GPT2LMHeadModel

from configuration_mygpt import MyGPTConfig
from modeling_mygpt import MyGPTForCausalLM
from mygpt.analysis.attention import (
    attention_for_text,
    head_view,
    model_view,
    plot_attention_grid,
    save_attention_figures,
)
from mygpt.analysis.core import check_layers, display_token, encode
from mygpt.tokenization import train_char_tokenizer

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n\nJULIET:\nAy me!\n"


@pytest.fixture(scope="module")
def tokenizer():
    return train_char_tokenizer([TEXT + "abcdefghijklmnopqrstuvwxyz.,;:!?'\n"])


def tiny_mygpt(**overrides) -> MyGPTForCausalLM:
    torch.manual_seed(0)
    config = dict(vocab_size=100, n_positions=96, n_embd=32, n_layer=2, n_head=4, bos_token_id=None,
                  eos_token_id=None)
    return MyGPTForCausalLM(MyGPTConfig(**{**config, **overrides})).eval()


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=96, n_embd=32, n_layer=2, n_head=4,
                                      bos_token_id=0, eos_token_id=0)).eval()


@pytest.mark.parametrize("make_model", [tiny_mygpt, tiny_gpt2], ids=["mygpt", "gpt2"])
def test_every_layer_and_head_gives_a_causal_distribution_over_the_text_tokens(make_model, tokenizer):
    model = make_model()
    found = attention_for_text(model, tokenizer, TEXT)
    t = len(tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    assert len(found.tokens) == t and "".join(found.tokens) == TEXT
    assert found.attentions.shape == (2, 4, t, t)
    torch.testing.assert_close(found.attentions.sum(-1), torch.ones(2, 4, t))
    assert torch.all(found.attentions.triu(1) == 0)  # nothing reads the future


@pytest.mark.parametrize("position_embedding", ["rope", "alibi"])
def test_attention_is_extracted_for_every_position_encoding(position_embedding, tokenizer):
    found = attention_for_text(tiny_mygpt(position_embedding=position_embedding), tokenizer, TEXT)
    torch.testing.assert_close(found.attentions.sum(-1), torch.ones(found.attentions.shape[:-1]))


def test_the_attention_backend_is_restored_after_extraction(tokenizer):
    model = tiny_mygpt()
    before = model.config._attn_implementation
    assert before != "eager"  # the default is the fused kernel, which returns no weights
    attention_for_text(model, tokenizer, TEXT)
    assert model.config._attn_implementation == before


def test_dropout_is_off_while_extracting_and_training_mode_is_kept(tokenizer):
    model = tiny_mygpt(attn_pdrop=0.5).train()
    first = attention_for_text(model, tokenizer, TEXT).attentions
    second = attention_for_text(model, tokenizer, TEXT).attentions
    torch.testing.assert_close(first, second)
    assert model.training


def test_a_text_longer_than_the_context_is_refused_with_the_lengths(tokenizer):
    with pytest.raises(ValueError, match=r"is 120 tokens long but the model's context is 96"):
        attention_for_text(tiny_mygpt(), tokenizer, "a" * 120)


def test_an_empty_text_is_refused(tokenizer):
    with pytest.raises(ValueError, match="empty"):
        encode(tokenizer, "  \n")


def test_a_layer_that_does_not_exist_is_refused_with_the_valid_range():
    with pytest.raises(ValueError, match=r"layer 2 does not exist: the model has 2 layers, so valid layers are 0\.\.1"):
        check_layers([2], 2)
    assert check_layers([-1, 0], 2) == [1, 0]
    attentions = torch.rand(2, 4, 3, 3)
    with pytest.raises(ValueError, match="layer 5 does not exist"):
        plot_attention_grid(attentions, ["a", "b", "c"], "unused.png", layers=[5])
    with pytest.raises(ValueError, match="head 4 does not exist"):
        plot_attention_grid(attentions, ["a", "b", "c"], "unused.png", heads=[4])


def test_grid_refuses_tokens_that_do_not_match_the_attention():
    with pytest.raises(ValueError, match="attention is 3×3 but 2 tokens"):
        plot_attention_grid(torch.rand(1, 1, 3, 3), ["a", "b"], "unused.png")


def test_attention_pngs_are_written_and_open_as_images(tokenizer, tmp_path):
    found = attention_for_text(tiny_mygpt(), tokenizer, "JULIET:\nAy me!\n")  # short: ticks are slow to draw
    paths = save_attention_figures(found, str(tmp_path), layers=[0, 1])
    assert [p.split("/")[-1] for p in paths] == ["attention_grid.png", "attention_layer0.png", "attention_layer1.png"]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 300
    assert not list(tmp_path.glob(".tmp-*"))  # nothing half-written left behind


def test_bertviz_views_are_one_call_with_a_model_a_tokenizer_and_a_text(tokenizer):
    import json
    import re

    model = tiny_mygpt()
    short = "But soft!\n"
    html = head_view(model, tokenizer, short, html_action="return").data
    # bertviz inlines its data as JSON: the tokens, and one (nh, T, T) block per layer
    data = json.loads(re.search(r"const params = (\{.*?\});", html, re.S).group(1))
    assert data["attention"][0]["left_text"] == ["B", "u", "t", " ", "s", "o", "f", "t", "!", "↵"]  # as people read
    assert len(data["attention"][0]["attn"]) == 2  # layers
    assert len(data["attention"][0]["attn"][0]) == 4  # heads
    from mygpt.analysis.bertviz_offline import libraries_html

    assert html.startswith(libraries_html())  # offline: the libraries are inlined, and the CDN loads are gone
    view = html.removeprefix(libraries_html())
    assert "cdnjs" not in view and "require.config" not in view
    html = model_view(model, tokenizer, short, include_layers=[1], html_action="return").data
    assert "include_layers" in html and '"include_layers": [1]' in html
    with pytest.raises(ValueError, match="layer 3 does not exist"):
        head_view(model, tokenizer, short, layer=3, html_action="return")


def test_display_tokens_make_whitespace_visible():
    assert display_token(" king") == "·king"
    assert display_token("\n") == "↵"
    assert display_token("") == "∅"
    assert display_token("\x07") == "\\x07"  # a lone control byte has no glyph in any font
