"""Contracts with the Hugging Face ecosystem: Auto classes, save/load, remote code, pipelines, training features."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PreTrainedTokenizerFast, pipeline

from configuration_mygpt import MyGPTConfig
from modeling_mygpt import MyGPTForCausalLM, MyGPTModel
from tests.isolation import block_project_prelude
from tests.test_model import POSITION_EMBEDDINGS, VOCAB, random_ids, tiny_model

ROOT = Path(__file__).resolve().parent.parent


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer over printable ASCII, built offline with `tokenizers`."""
    alphabet = [chr(c) for c in range(32, 127)]
    vocab = {"<|endoftext|>": 0, **{ch: i + 1 for i, ch in enumerate(alphabet)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.decoder = decoders.Fuse()  # characters are joined back without spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def test_auto_classes_know_mygpt() -> None:
    config = AutoConfig.for_model("mygpt", vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=4, n_positions=16)
    assert isinstance(config, MyGPTConfig)
    assert isinstance(AutoModelForCausalLM.from_config(config), MyGPTForCausalLM)
    assert isinstance(AutoModel.from_config(config), MyGPTModel)


@pytest.mark.parametrize("position_embedding", POSITION_EMBEDDINGS)
def test_save_then_load_gives_identical_outputs(tmp_path: Path, position_embedding: str) -> None:
    model = tiny_model(position_embedding=position_embedding, n_kv_head=2)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, MyGPTForCausalLM)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    ids = random_ids(2, 20)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_saved_folder_carries_code_and_auto_map(tmp_path: Path) -> None:
    tiny_model().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "mygpt"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_mygpt.MyGPTConfig",
        "AutoModelForCausalLM": "modeling_mygpt.MyGPTForCausalLM",
    }
    for name in ("configuration_mygpt.py", "modeling_mygpt.py", "generation_mygpt.py", "model.safetensors"):
        assert (tmp_path / name).is_file(), name
    # Tied weights are stored once.
    from safetensors import safe_open

    with safe_open(tmp_path / "model.safetensors", framework="pt") as f:
        assert "lm_head.weight" not in set(f.keys())


def test_isolation_prelude_hides_the_installed_project(tmp_path: Path) -> None:
    """The remote-code tests below are only proofs if their interpreter really cannot import the project."""
    script = block_project_prelude() + textwrap.dedent(
        """
        try:
            import modeling_mygpt
        except ModuleNotFoundError as error:
            print("BLOCKED", error)
        import json
        print("STDLIB OK", json.dumps([1]))
        """
    )
    # PYTHONPATH at the checkout makes the project importable even without an (editable) install.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "BLOCKED modeling_mygpt belongs to the project" in result.stdout
    assert "STDLIB OK [1]" in result.stdout


@pytest.mark.slow
def test_remote_code_loads_in_a_process_that_cannot_import_the_project(tmp_path: Path) -> None:
    """How the Hub serves the model: a fresh interpreter, another working directory, no project on sys.path."""
    model_dir, elsewhere = tmp_path / "model", tmp_path / "elsewhere"
    elsewhere.mkdir()
    model = tiny_model(position_embedding="rope", n_kv_head=2)
    model.save_pretrained(model_dir)
    char_tokenizer().save_pretrained(model_dir)
    ids = random_ids(1, 10)
    with torch.no_grad():
        expected = model(ids).logits[0, -1]
    torch.save({"ids": ids, "expected": expected}, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModelForCausalLM, pipeline
        model = AutoModelForCausalLM.from_pretrained({str(model_dir)!r}, trust_remote_code=True).eval()
        assert type(model).__name__ == "MyGPTForCausalLM" and model.config.model_type == "mygpt"
        data = torch.load({str(tmp_path / 'expected.pt')!r})
        with torch.no_grad():
            got = model(data["ids"]).logits[0, -1]
        torch.testing.assert_close(got, data["expected"], atol=0, rtol=0)
        out = model.generate(data["ids"], strategy="top_k", top_k=5, max_new_tokens=4, pad_token_id=0)
        assert out.shape == (1, 14), out.shape
        generator = pipeline("text-generation", model={str(model_dir)!r}, trust_remote_code=True)
        print("OK", generator("ab", max_new_tokens=3, do_sample=False)[0]["generated_text"][:2])
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, "-c", block_project_prelude() + script],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK ab" in result.stdout


def test_text_generation_pipeline_runs_on_a_saved_folder(tmp_path: Path) -> None:
    tiny_model(vocab_size=96).save_pretrained(tmp_path)
    char_tokenizer().save_pretrained(tmp_path)
    generator = pipeline("text-generation", model=str(tmp_path))
    text = generator("To be", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert text.startswith("To be") and len(text) == 10


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    ids = random_ids(2, 16)
    grads = []
    for checkpointing in (False, True):
        model = tiny_model().train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(ids, labels=ids).loss.backward()
        grads.append(model.transformer.h[0].attn.c_attn.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_resize_token_embeddings_keeps_the_tie_and_old_rows() -> None:
    model = tiny_model()
    old = model.transformer.wte.weight[:VOCAB].clone()
    model.resize_token_embeddings(VOCAB + 7)
    assert model.config.vocab_size == VOCAB + 7
    assert model.lm_head.weight is model.transformer.wte.weight
    assert torch.equal(model.transformer.wte.weight[:VOCAB], old)
    assert model(random_ids(1, 5)).logits.shape == (1, 5, VOCAB + 7)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_forward_and_backward(dtype: torch.dtype) -> None:
    model = tiny_model(position_embedding="alibi", n_kv_head=2).train()
    ids = random_ids(2, 16)
    with torch.autocast("cpu", dtype=dtype):
        assert model(ids, labels=ids, skip_logits=False).logits.dtype == dtype
        out = model(ids, labels=ids)  # training: the chunked loss, computed in the autocast dtype
    assert out.logits is None and out.loss.dtype == torch.float32
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(model.transformer.wte.weight.grad).all()
    with torch.no_grad():
        full = model.eval()(ids, labels=ids).loss
    assert abs(out.loss.item() - full.item()) < 0.05


@pytest.mark.slow
def test_torch_compile_matches_eager_forward() -> None:
    model = tiny_model()
    compiled = torch.compile(model)
    ids = random_ids(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids).logits, model(ids).logits, atol=1e-5, rtol=1e-5)
