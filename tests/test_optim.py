"""Contracts of --optimizer muon (mygpt/optim.py): who trains what, one schedule, a state that resumes exactly."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from transformers import get_scheduler

from mygpt.arguments import parse_arguments
from mygpt.optim import CombinedOptimizer, Muon, build_muon_adamw, muon_parameter_names, newton_schulz
from mygpt.train_run import run_training
from tests.test_model import random_ids, tiny_gpt2, tiny_model
from tests.tiny_runs import run_args
from tests.tiny_runs import corpus_dir, one_thread, private_cache  # noqa: F401 (fixtures)

HIDDEN = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
ADAMW = {"lr": 1e-2, "betas": (0.9, 0.99), "eps": 1e-8}


def build(model: torch.nn.Module) -> CombinedOptimizer:
    return build_muon_adamw(model, 0.1, torch.optim.AdamW, dict(ADAMW))


def trained_by(optimizer: CombinedOptimizer, model: torch.nn.Module) -> dict[str, set[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {key: {names[id(p)] for g in opt.param_groups for p in g["params"]}
            for key, opt in optimizer.optimizers.items()}


@pytest.mark.parametrize("make", [tiny_model, tiny_gpt2, lambda: tiny_model(tie_word_embeddings=False)],
                         ids=["mygpt", "gpt2-conv1d", "mygpt-untied-head"])
def test_muon_trains_the_blocks_matrices_and_adamw_everything_else_once(make):
    model = make()
    split = trained_by(build(model), model)
    names = {n for n, _ in model.named_parameters()}  # a tied head is listed once, under the embedding
    assert split["muon"] == {n for n in names if n.endswith(HIDDEN)}
    assert len(split["muon"]) == 4 * model.config.num_hidden_layers
    assert split["adamw"] == names - split["muon"] and not split["adamw"] & split["muon"]
    assert set(muon_parameter_names(model)) == split["muon"]


def test_adamw_decays_only_an_untied_head_among_its_parameters():
    model = tiny_model(tie_word_embeddings=False)
    adamw = build(model).optimizers["adamw"]
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in adamw.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {"lm_head.weight"}  # not the embeddings, norms or biases
    tied = build(tiny_model()).optimizers["adamw"]
    assert all(g["weight_decay"] == 0 for g in tied.param_groups)


def test_the_scheduler_drives_both_learning_rates():
    optimizer = build(tiny_model())
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=2, num_training_steps=10)
    seen = []
    for _ in range(5):
        optimizer.step()
        scheduler.step()
        seen.append({key: [g["lr"] for g in opt.param_groups] for key, opt in optimizer.optimizers.items()})
    for lrs in seen:
        assert len(set(lrs["adamw"] + lrs["muon"])) == 1  # one schedule for both
    assert len({lrs["muon"][0] for lrs in seen}) == 5  # and it moves


def _step(model, optimizer, ids) -> float:
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def test_a_tiny_model_learns_under_muon():
    torch.manual_seed(0)
    model = tiny_model().train()
    optimizer = build(model)
    ids = random_ids(4, 24)
    losses = [_step(model, optimizer, ids) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]


def test_state_dict_round_trip_resumes_identically():
    ids = random_ids(4, 24)
    model = tiny_model().train()
    optimizer = build(model)
    for _ in range(2):
        _step(model, optimizer, ids)
    saved = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, saved)  # as a checkpoint
    saved.seek(0)
    checkpoint = torch.load(saved, weights_only=True)  # the Trainer loads checkpoints so

    fresh = tiny_model(seed=5).train()
    fresh.load_state_dict(checkpoint["model"])
    resumed = build(fresh)
    resumed.load_state_dict(checkpoint["optimizer"])
    assert resumed.param_groups[0] is resumed.optimizers["adamw"].param_groups[0]  # still one set of groups
    _step(model, optimizer, ids)
    _step(fresh, resumed, ids)
    for (name, a), b in zip(model.named_parameters(), fresh.parameters()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="--optimizer the run was started with"):
        resumed.load_state_dict({"adamw": checkpoint["optimizer"]["adamw"]})


def test_fp32_newton_schulz_is_torchs_iteration():
    """The fp32 path (CPUs without native bf16) makes torch's update, up to bf16 rounding."""
    grad = torch.randn(48, 32, generator=torch.Generator().manual_seed(0))
    ours = newton_schulz(grad, (3.4445, -4.775, 2.0315), 5, 1e-7, torch.float32)
    singular = torch.linalg.svdvals(ours)
    assert ours.shape == grad.shape and singular.min() > 0.5 and singular.max() < 1.5  # near-orthogonal
    results = []
    for dtype in (torch.bfloat16, torch.float32):
        weight = torch.nn.Parameter(torch.ones(48, 32))
        muon = Muon([weight], lr=0.01, weight_decay=0.1, adjust_lr_fn="match_rms_adamw", ns_dtype=dtype)
        for _ in range(2):
            weight.grad = grad.clone()
            muon.step()
        results.append(weight.detach().clone())
    assert (results[0] - 1).abs().max() > 1e-3  # it moved
    torch.testing.assert_close(results[1], results[0], atol=2e-3, rtol=0)


def test_bad_optimizer_is_refused():
    with pytest.raises(ValueError, match="--optimizer must be one of adamw, muon, got 'sgd'"):
        parse_arguments(["--optimizer", "sgd"])


def test_a_muon_run_resumed_from_its_checkpoint_ends_identically(corpus_dir, tmp_path):
    """Through the Trainer: both optimizers' states go into the checkpoint and come back on resume."""
    steps = ["--optimizer", "muon", "--max_steps", "6", "--eval_steps", "3", "--save_steps", "3",
             "--keep_checkpoints", "--load_best_model_at_end", "false"]
    straight = run_training(run_args(corpus_dir, tmp_path / "straight", *steps))
    assert straight["training"]["optimizer"] == "muon"
    assert "| optimizer | Muon (torch.optim.Muon" in (tmp_path / "straight" / "README.md").read_text()
    resumed = run_training(run_args(corpus_dir, tmp_path / "resumed", *steps, "--resume_from_checkpoint",
                                    str(tmp_path / "straight" / "checkpoint-3")))
    assert resumed["results"]["steps"] == 6
    assert resumed["results"]["validation"]["loss"] == pytest.approx(straight["results"]["validation"]["loss"],
                                                                     rel=1e-6)
    state = json.loads(Path(tmp_path / "straight" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
