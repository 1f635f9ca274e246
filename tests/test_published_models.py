"""MYGPT_MODEL_ID (and MYGPT_TWIN_ID) make the notebook load published models instead of training: tested offline,
with local folders and with a Hub id served from a local Hugging Face cache (no network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from conftest import ROOT, save_tiny_mygpt
from modeling_mygpt import MyGPTForCausalLM
from mygpt.loading import ModelNotAvailableError, published_models

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\nJULIET:\nAy me!\n" * 4
SUMMARY = {"architecture": "mygpt", "results": {"best_validation_loss": 1.234}}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A MyGPT run folder (with its run_summary.json) and a GPT-2 twin folder with the same tokenizer."""
    root = tmp_path_factory.mktemp("published")
    main = save_tiny_mygpt(root / "mygpt", TEXT)
    (root / "mygpt" / "run_summary.json").write_text(json.dumps(SUMMARY), encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(main, trust_remote_code=True)
    torch.manual_seed(1)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2)
                    ).save_pretrained(root / "twin")
    tokenizer.save_pretrained(root / "twin")
    return main, str(root / "twin")


def test_no_model_named_means_train_as_usual():
    assert published_models(environ={}) is None
    assert published_models(environ={"MYGPT_MODEL_ID": "  ", "MYGPT_TWIN_ID": ""}) is None
    with pytest.raises(ValueError, match="MYGPT_TWIN_ID='gpt2' is set but MYGPT_MODEL_ID is not"):
        published_models(environ={"MYGPT_TWIN_ID": "gpt2"})


def test_named_folders_load_as_the_saved_models_with_their_summary(folders):
    main, twin = folders
    loaded = published_models(device="cpu", environ={"MYGPT_MODEL_ID": main, "MYGPT_TWIN_ID": twin})
    assert isinstance(loaded.main.model, MyGPTForCausalLM) and not loaded.main.model.training
    assert isinstance(loaded.twin.model, GPT2LMHeadModel) and loaded.twin.name == twin
    assert loaded.main.summary == SUMMARY and loaded.twin.summary is None
    ids = loaded.main.tokenizer("But soft", return_tensors="pt").input_ids
    reference = MyGPTForCausalLM.from_pretrained(main).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.main.model(ids).logits, reference(ids).logits, rtol=0, atol=0)
    only_main = published_models(device="cpu", attn_implementation="eager", environ={"MYGPT_MODEL_ID": main})
    assert only_main.twin is None and only_main.main.model.config._attn_implementation == "eager"


def test_a_name_that_cannot_be_loaded_is_named(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="is a folder but holds no model"):
        published_models(environ={"MYGPT_MODEL_ID": str(tmp_path)})


def _fake_hub_cache(cache, repo_id: str, folder: str) -> None:
    """Lay ``folder`` out as huggingface_hub caches a downloaded repository (refs/main -> snapshots/<commit>)."""
    commit = "0" * 40
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in os.listdir(folder):
        (snapshot / name).write_bytes(open(os.path.join(folder, name), "rb").read())


@pytest.mark.slow
def test_a_hub_id_loads_from_the_local_cache_offline(folders, tmp_path):
    """What `MYGPT_MODEL_ID=you/mygpt-shakespeare` does on a machine that downloaded it once, with the Hub off
    (a fresh process: huggingface_hub reads its cache location when it is imported)."""
    main, twin = folders
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, "you/mygpt-shakespeare", main)
    _fake_hub_cache(cache, "you/mygpt-shakespeare-gpt2", twin)
    script = textwrap.dedent("""
        import json
        from mygpt.loading import ModelNotAvailableError, published_models
        loaded = published_models(device="cpu")
        print(json.dumps([type(loaded.main.model).__name__, type(loaded.twin.model).__name__, loaded.main.summary]))
        try:
            published_models(environ={"MYGPT_MODEL_ID": "you/never-downloaded"})
        except ModelNotAvailableError as error:
            print(error)
    """)
    env = {**os.environ, "PYTHONPATH": ROOT, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "MYGPT_MODEL_ID": "you/mygpt-shakespeare", "MYGPT_TWIN_ID": "you/mygpt-shakespeare-gpt2"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = result.stdout.strip().splitlines()[-2:]
    assert json.loads(first) == ["MyGPTForCausalLM", "GPT2LMHeadModel", SUMMARY]
    assert "'you/never-downloaded'" in second and "HF_HUB_OFFLINE" in second
