"""Activation patching: recording and patching a head's output touch exactly that head; patching what a layer
computed from a clean input restores the clean prediction wherever nothing else differs; bad inputs are refused."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from configuration_mygpt import MyGPTConfig
from modeling_mygpt import MyGPTForCausalLM
from mygpt.analysis.patching import activation_patching, patch_head_outputs, record_head_outputs

N_HEAD, HEAD_DIM = 4, 8


def tiny_mygpt(n_layer: int = 2) -> MyGPTForCausalLM:
    torch.manual_seed(0)
    # large initial weights: sharp predictions, so a corrupted token moves the probabilities measurably
    config = MyGPTConfig(vocab_size=50, n_positions=32, n_embd=N_HEAD * HEAD_DIM, n_layer=n_layer, n_head=N_HEAD,
                         bos_token_id=None, eos_token_id=None, initializer_range=0.5)
    return MyGPTForCausalLM(config).eval()


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50, n_positions=32, n_embd=N_HEAD * HEAD_DIM, n_layer=2, n_head=N_HEAD,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


CLEAN = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(1))
CORRUPTED = CLEAN.clone()
CORRUPTED[:, 1] = (CLEAN[:, 1] + 7) % 50  # only token 1 differs


@pytest.mark.parametrize("make", [tiny_mygpt, tiny_gpt2])
def test_patching_every_head_with_its_own_recording_changes_nothing(make):
    model = make()
    with torch.no_grad(), record_head_outputs(model) as recorded:
        reference = model(input_ids=CLEAN).logits
    assert sorted(recorded) == [0, 1] and recorded[0].shape == (3, 12, N_HEAD * HEAD_DIM)
    every = [(layer, head) for layer in range(2) for head in range(N_HEAD)]
    with torch.no_grad(), patch_head_outputs(model, recorded, every):
        assert torch.equal(model(input_ids=CLEAN).logits, reference)


@pytest.mark.parametrize("make", [tiny_mygpt, tiny_gpt2])
def test_a_patched_head_carries_the_clean_output_and_the_others_their_own(make):
    model = make()
    with torch.no_grad(), record_head_outputs(model) as clean:
        model(input_ids=CLEAN)
    with torch.no_grad(), record_head_outputs(model) as corrupted:
        reference = model(input_ids=CORRUPTED).logits
    head = slice(2 * HEAD_DIM, 3 * HEAD_DIM)
    assert not torch.allclose(clean[0][..., head], corrupted[0][..., head])
    received = {}  # a forward hook sees the input after the pre-hooks changed it: what the projection used
    c_proj = model.transformer.h[0].attn.c_proj
    handle = c_proj.register_forward_hook(lambda module, args, output: received.setdefault("x", args[0].clone()))
    try:
        with torch.no_grad(), patch_head_outputs(model, clean, [(0, 2)]):
            patched = model(input_ids=CORRUPTED).logits
    finally:
        handle.remove()
    expected = corrupted[0].clone()
    expected[..., head] = clean[0][..., head]
    assert torch.equal(received["x"], expected)
    assert not torch.allclose(patched, reference)
    with torch.no_grad():  # the hooks are gone afterwards
        assert torch.equal(model(input_ids=CORRUPTED).logits, reference)


def test_patching_a_one_layer_models_heads_restores_the_clean_prediction_where_only_attention_differs():
    # Only token 1 differs, so at positions t >= 2 the residual stream differs only through attention: with every
    # head of the only layer patched, the logits there are the clean ones, and the restored share is 1.
    model = tiny_mygpt(n_layer=1)
    scored = torch.zeros_like(CLEAN, dtype=torch.bool)
    scored[:, 2:] = True
    result = activation_patching(model, CLEAN, CORRUPTED, scored)
    assert abs(result.clean - result.corrupted) > 1e-3
    assert result.layers[0] == pytest.approx(result.clean, rel=1e-5)
    assert result.restored(result.layers)[0] == pytest.approx(1.0, abs=1e-3)
    assert result.heads.shape == (1, N_HEAD) and result.n_scored == 3 * 9  # the last position has no next token
    rows = result.table()
    assert len(rows) == N_HEAD and all(0 <= row["probability"] <= 1 for row in rows)


def test_patching_refuses_inputs_that_predict_different_tokens_or_differ_in_shape():
    model = tiny_mygpt()
    scored = torch.zeros_like(CLEAN, dtype=torch.bool)
    scored[:, 0] = True  # position 0 predicts token 1, which the corruption changed
    with pytest.raises(ValueError, match="predict different tokens"):
        activation_patching(model, CLEAN, CORRUPTED, scored)
    with pytest.raises(ValueError, match="one shape"):
        activation_patching(model, CLEAN, CORRUPTED[:, :5], scored)
    with pytest.raises(ValueError, match="no position is scored"):
        activation_patching(model, CLEAN, CORRUPTED, torch.zeros_like(scored))
    with pytest.raises(KeyError, match="no recorded head outputs for layer 1"):
        with patch_head_outputs(model, {0: torch.zeros(3, 12, N_HEAD * HEAD_DIM)}, [(1, 0)]):
            pass
