"""Contracts of --optimizer muon: which parameters Muon takes, one schedule for both halves, exact resume."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, get_scheduler

from configuration_mygpt import MyGPTConfig
from modeling_mygpt import MyGPTForCausalLM
from mygpt.arguments import parse_arguments
from mygpt.optim import MuonWithAdamW, muon_parameter_names
from mygpt.plan import check_arguments
from mygpt.training import decay_parameter_names

VOCAB = 40


def tiny_mygpt(seed: int = 0, **overrides) -> MyGPTForCausalLM:
    torch.manual_seed(seed)
    config = MyGPTConfig(vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=2, n_head=2, embd_pdrop=0.0,
                         attn_pdrop=0.0, resid_pdrop=0.0, bos_token_id=0, eos_token_id=0, **overrides)
    return MyGPTForCausalLM(config)


def make_optimizer(model: torch.nn.Module, lr: float = 1e-2) -> MuonWithAdamW:
    return MuonWithAdamW(model, lr=lr, weight_decay=0.1, decay_names=decay_parameter_names(model))


def batch(seed: int = 0) -> torch.Tensor:
    return torch.randint(1, VOCAB, (4, 12), generator=torch.Generator().manual_seed(seed))


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor) -> float:
    loss = model(ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest() -> None:
    model = tiny_mygpt()
    expected = {f"transformer.h.{i}.{name}.weight" for i in range(2)
                for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    assert set(muon_parameter_names(model)) == expected
    optimizer = make_optimizer(model)
    muon = {id(p) for g in optimizer.muon.param_groups for p in g["params"]}
    adamw = {id(p) for g in optimizer.adamw.param_groups for p in g["params"]}
    assert muon == {id(p) for n, p in model.named_parameters() if n in expected}
    # every parameter exactly once; the tied head is the embedding, so it is not counted twice
    assert not muon & adamw and muon | adamw == {id(p) for p in model.parameters()}
    assert model.lm_head.weight is model.transformer.wte.weight and id(model.lm_head.weight) in adamw


def test_an_untied_head_and_gpt2s_conv1d_weights_are_split_the_same_way() -> None:
    untied = tiny_mygpt(tie_word_embeddings=False)
    assert "lm_head.weight" not in muon_parameter_names(untied)
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=2, n_head=2))
    names = set(muon_parameter_names(gpt2))
    assert names == {f"transformer.h.{i}.{name}.weight" for i in range(2)
                     for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}


def test_one_scheduler_drives_both_learning_rates() -> None:
    model = tiny_mygpt()
    optimizer = make_optimizer(model, lr=1e-2)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=2, num_training_steps=10)
    ids = batch()
    for _ in range(4):
        train_step(model, optimizer, ids)
        scheduler.step()
    expected = scheduler.get_last_lr()[0]
    assert 0 < expected < 1e-2
    inner = optimizer.muon.param_groups + optimizer.adamw.param_groups
    assert [g["lr"] for g in inner] == pytest.approx([expected] * len(inner))


def test_the_loss_falls_under_muon() -> None:
    model = tiny_mygpt()
    optimizer = make_optimizer(model, lr=1e-2)
    ids = batch()
    losses = [train_step(model, optimizer, ids) for _ in range(40)]
    assert losses[-1] < 0.5 * losses[0]


def test_state_dict_round_trip_resumes_exactly() -> None:
    model = tiny_mygpt()
    optimizer = make_optimizer(model)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=1, num_training_steps=10)
    for step in range(3):
        train_step(model, optimizer, batch(step))
        scheduler.step()
    saved_model, saved_optimizer = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    saved_scheduler = copy.deepcopy(scheduler.state_dict())

    resumed = tiny_mygpt(seed=1)  # other weights, until the checkpoint is loaded
    resumed.load_state_dict(saved_model)
    resumed_optimizer = make_optimizer(resumed)
    resumed_scheduler = get_scheduler("cosine", resumed_optimizer, num_warmup_steps=1, num_training_steps=10)
    resumed_optimizer.load_state_dict(saved_optimizer)
    resumed_scheduler.load_state_dict(saved_scheduler)
    assert resumed_optimizer.muon.state and resumed_optimizer.adamw.state  # momentum buffers and moments came back

    for step in range(3, 6):
        train_step(model, optimizer, batch(step))
        scheduler.step()
        train_step(resumed, resumed_optimizer, batch(step))
        resumed_scheduler.step()
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    # the scheduler still reaches the inner optimizers after a load
    assert resumed_optimizer.muon.param_groups[0]["lr"] == resumed_scheduler.get_last_lr()[0]


def test_an_adamw_checkpoint_is_refused_with_a_clear_error() -> None:
    model = tiny_mygpt()
    adamw = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match="another --optimizer"):
        make_optimizer(model).load_state_dict(adamw.state_dict())


def test_optimizer_flag_is_validated() -> None:
    args = parse_arguments(["--optimizer", "lion"])
    with pytest.raises(ValueError, match="--optimizer must be one of adamw, muon, got 'lion'"):
        check_arguments(*args)
    assert parse_arguments(["--optimizer", "muon"]).training.optimizer == "muon"
