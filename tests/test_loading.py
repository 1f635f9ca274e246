"""Contracts of mygpt.loading: one loader for every command, one error, one offline rule."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from configuration_mygpt import MyGPTConfig
from modeling_mygpt import MyGPTForCausalLM
from mygpt.loading import (ModelNotAvailableError, context_length, is_offline, load_model_and_tokenizer,
                           resolve_device, resolve_dtype)
from mygpt.tokenization import train_char_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return train_char_tokenizer(["abcdefghij klmnop\n"])


@pytest.fixture(scope="module")
def mygpt_dir(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("mygpt")
    torch.manual_seed(0)
    config = MyGPTConfig(vocab_size=len(tokenizer), n_positions=16, n_embd=16, n_layer=1, n_head=2,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    MyGPTForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_loads_a_run_folder_in_eval_mode_with_the_same_weights(mygpt_dir):
    model, tok = load_model_and_tokenizer(mygpt_dir, device="cpu")
    assert not model.training and model.device.type == "cpu"
    reference = MyGPTForCausalLM.from_pretrained(mygpt_dir).eval()
    ids = torch.tensor([[3, 4, 5, 6]])
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=0, atol=0)
    assert len(tok) == model.config.vocab_size


def test_dtype_and_attention_are_honoured(mygpt_dir):
    model, _ = load_model_and_tokenizer(mygpt_dir, dtype="bfloat16", attn_implementation="eager")
    assert model.dtype == torch.bfloat16 and model.config._attn_implementation == "eager"


def test_loads_a_gpt2_folder(tmp_path, tokenizer):
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=16, n_embd=16, n_layer=1,
                               n_head=2)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, _ = load_model_and_tokenizer(tmp_path)
    assert isinstance(model, GPT2LMHeadModel) and context_length(model) == 16


def test_no_prompt_and_no_warning_when_loading_a_run_folder_in_process(mygpt_dir, monkeypatch, caplog):
    monkeypatch.setattr(sys, "stdin", None)  # an interactive "run custom code? [y/N]" question would fail
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model_and_tokenizer(mygpt_dir)
    assert not [r for r in caplog.records if r.levelno >= 30], [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("kind", ["missing_path", "not_a_model", "a_file", "offline_hub_id"])
def test_one_clear_error_for_everything_that_is_not_a_model(tmp_path, kind, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = {"missing_path": str(tmp_path / "nope"), "not_a_model": str(tmp_path),
            "a_file": str(tmp_path / "f.txt"), "offline_hub_id": "someone/no-such-model-xyz"}[kind]
    (tmp_path / "f.txt").write_text("x")
    expected = {"missing_path": "does not exist", "not_a_model": "no config.json", "a_file": "is a file",
                "offline_hub_id": "Hub is switched off"}[kind]
    with pytest.raises(ModelNotAvailableError, match=expected):
        load_model_and_tokenizer(name)


def test_offline_follows_huggingface_hub_and_both_variables(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    assert not is_offline()
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert is_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not is_offline()  # huggingface_hub reads HF_HUB_OFFLINE first
    monkeypatch.setenv("HF_HUB_OFFLINE", "yes")
    assert is_offline()


def test_device_dtype_and_context_resolution():
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert resolve_dtype("float32") is torch.float32 and resolve_dtype("auto") == "auto"
    with pytest.raises(ValueError, match="unknown dtype 'half'.*float32"):
        resolve_dtype("half")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu0")
    assert context_length(MyGPTConfig(n_positions=33, n_embd=16, n_layer=1, n_head=2)) == 33
    with pytest.raises(ValueError, match="context length"):
        context_length(object())
