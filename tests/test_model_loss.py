"""Contracts of the chunked training loss: the same loss and gradients as the full logits, without the logits."""

from __future__ import annotations

import pytest
import torch

import modeling_mygpt
from configuration_mygpt import MyGPTConfig
from modeling_mygpt import MyGPTForCausalLM, chunked_linear_cross_entropy

VOCAB = 97


def tiny_model(seed: int = 0, **overrides) -> MyGPTForCausalLM:
    torch.manual_seed(seed)
    fields = dict(vocab_size=VOCAB, n_positions=48, n_embd=32, n_layer=2, n_head=4, embd_pdrop=0.0,
                  attn_pdrop=0.0, resid_pdrop=0.0, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return MyGPTForCausalLM(MyGPTConfig(**{**fields, **overrides})).train()


def batch(ignored: bool) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, VOCAB, (3, 40), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    if ignored:
        labels[0, :7] = -100  # e.g. a prompt that is not trained on
        labels[2, 30:] = -100  # e.g. padding
    return ids, labels


def loss_and_grads(model: MyGPTForCausalLM, ids, labels, **kwargs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model(ids, labels=labels, **kwargs).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    # 7 rows per chunk: 120 rows make 17 full chunks and a ragged last one.
    monkeypatch.setattr(modeling_mygpt, "LOSS_CHUNK_ROWS", 7)


@pytest.mark.parametrize("ignored", [False, True], ids=["all-targets", "with-minus-100"])
@pytest.mark.parametrize("num_items", [None, 50], ids=["mean", "num_items_in_batch"])
def test_chunked_loss_and_gradients_equal_the_full_logits_path(ignored: bool, num_items: int | None) -> None:
    model = tiny_model()
    ids, labels = batch(ignored)
    extra = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    chunked, chunked_grads = loss_and_grads(model, ids, labels, **extra)
    full, full_grads = loss_and_grads(model, ids, labels, skip_logits=False, **extra)
    torch.testing.assert_close(chunked, full, atol=1e-6, rtol=1e-6)
    assert chunked_grads.keys() == full_grads.keys()
    for name in full_grads:
        torch.testing.assert_close(chunked_grads[name], full_grads[name], atol=1e-6, rtol=1e-5, msg=name)


def test_num_items_in_batch_divides_the_sum() -> None:
    model = tiny_model()
    ids, labels = batch(ignored=True)
    mean = model(ids, labels=labels).loss
    targets = int((labels[:, 1:] != -100).sum())
    summed = model(ids, labels=labels, num_items_in_batch=10).loss
    torch.testing.assert_close(summed, mean * targets / 10, atol=1e-5, rtol=1e-6)


def test_bf16_autocast_matches_the_full_logits_path() -> None:
    model = tiny_model()
    ids, labels = batch(ignored=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chunked, chunked_grads = loss_and_grads(model, ids, labels)
        full, full_grads = loss_and_grads(model, ids, labels, skip_logits=False)
    assert chunked.dtype == full.dtype == torch.float32
    torch.testing.assert_close(chunked, full, atol=1e-4, rtol=1e-4)
    for name in full_grads:  # bf16 logits on both sides; the chunked head gradient is summed in float32
        scale = full_grads[name].abs().max()
        torch.testing.assert_close(chunked_grads[name], full_grads[name], atol=0.02 * scale, rtol=0, msg=name)


def test_tied_embedding_gets_the_head_and_the_lookup_gradients() -> None:
    model = tiny_model()
    assert model.lm_head.weight is model.transformer.wte.weight
    ids, labels = batch(ignored=False)
    _, grads = loss_and_grads(model, ids, labels)
    # Rows of tokens that never appear in the input get gradient only from the head; appearing ones from both.
    head_only = torch.ones(VOCAB, dtype=torch.bool)
    head_only[ids.unique()] = False
    assert grads["transformer.wte.weight"][head_only].abs().sum() > 0
    model.zero_grad(set_to_none=True)
    untied = tiny_model(tie_word_embeddings=False)
    untied.load_state_dict(model.state_dict(), strict=False)
    untied.lm_head.weight.data.copy_(model.transformer.wte.weight.data)
    _, untied_grads = loss_and_grads(untied, ids, labels)
    torch.testing.assert_close(grads["transformer.wte.weight"],
                               untied_grads["transformer.wte.weight"] + untied_grads["lm_head.weight"],
                               atol=1e-6, rtol=1e-5)


def test_training_with_labels_returns_no_logits_and_eval_or_no_labels_does() -> None:
    model = tiny_model()
    ids, labels = batch(ignored=False)
    assert model(ids, labels=labels).logits is None
    assert model(ids).logits.shape == (3, 40, VOCAB)  # training, no labels
    assert model(ids, labels=labels, skip_logits=False).logits.shape == (3, 40, VOCAB)
    model.eval()
    out = model(ids, labels=labels)
    assert out.logits.shape == (3, 40, VOCAB) and out.loss is not None
    assert model(ids, labels=labels, skip_logits=True).logits is None


def test_skip_logits_without_labels_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="skip_logits=True .* needs labels"):
        tiny_model()(batch(False)[0], skip_logits=True)


def test_function_equals_cross_entropy_of_the_product_under_no_grad() -> None:
    hidden = torch.randn(2, 9, 16, dtype=torch.float64)
    weight = torch.randn(11, 16, dtype=torch.float64)
    labels = torch.randint(0, 11, (2, 9))
    labels[1, 3] = -100
    with torch.no_grad():
        loss = chunked_linear_cross_entropy(hidden, weight, labels, chunk_rows=4)
    logits = (hidden @ weight.T)[:, :-1].reshape(-1, 11)
    expected = torch.nn.functional.cross_entropy(logits, labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(loss, expected.float())
