"""Head ablation: the hook removes exactly one head (the same as zeroing its slice of c_proj's weight), leaves
the model unchanged afterwards, and the loss it measures is the model's own loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import GPT2Config, GPT2LMHeadModel

from configuration_mygpt import MyGPTConfig
from modeling_mygpt import MyGPTForCausalLM
from mygpt.analysis.ablation import ablate_heads, head_ablation, mean_loss, save_ablation_report

N_HEAD, HEAD_DIM = 4, 8


def tiny_mygpt() -> MyGPTForCausalLM:
    torch.manual_seed(0)
    config = MyGPTConfig(vocab_size=100, n_positions=32, n_embd=N_HEAD * HEAD_DIM, n_layer=2, n_head=N_HEAD,
                         bos_token_id=None, eos_token_id=None)
    return MyGPTForCausalLM(config).eval()


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=100, n_positions=32, n_embd=N_HEAD * HEAD_DIM, n_layer=2, n_head=N_HEAD,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


IDS = torch.randint(0, 100, (1, 70), generator=torch.Generator().manual_seed(1))


def zero_head_weights(model: torch.nn.Module, layer: int, head: int) -> None:
    """The reference ablation: cut the head's input columns out of c_proj's weight."""
    c_proj = model.transformer.h[layer].attn.c_proj
    columns = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
    with torch.no_grad():
        if isinstance(c_proj, torch.nn.Linear):  # (out, in)
            c_proj.weight[:, columns] = 0
        else:  # GPT-2's Conv1D: (in, out)
            c_proj.weight[columns, :] = 0


@pytest.mark.parametrize("make_model", [tiny_mygpt, tiny_gpt2], ids=["mygpt", "gpt2"])
def test_the_hook_removes_one_head_exactly_as_zeroing_its_weights_would(make_model):
    model, reference = make_model(), make_model()
    zero_head_weights(reference, layer=1, head=2)
    with torch.no_grad():
        with ablate_heads(model, [(1, 2)]):
            hooked = model(IDS[:, :32]).logits
        expected = reference(IDS[:, :32]).logits
        untouched = make_model()(IDS[:, :32]).logits
    torch.testing.assert_close(hooked, expected)
    assert not torch.allclose(hooked, untouched)


def test_the_model_is_unchanged_after_the_ablation():
    model = tiny_mygpt()
    with torch.no_grad():
        before = model(IDS[:, :32]).logits
        with ablate_heads(model, [(0, 0), (1, 3)]):
            pass
        after = model(IDS[:, :32]).logits
    torch.testing.assert_close(before, after)
    assert all(not block.attn.c_proj._forward_pre_hooks for block in model.transformer.h)


def test_mean_loss_is_the_models_own_loss_on_each_window():
    model = tiny_mygpt()
    with torch.no_grad():
        first = model(IDS[:, :32], labels=IDS[:, :32]).loss
        second = model(IDS[:, 32:64], labels=IDS[:, 32:64]).loss
        third = model(IDS[:, 64:], labels=IDS[:, 64:]).loss
    # windows of 32, 32 and 6 tokens predict 31, 31 and 5 tokens
    expected = (31 * first + 31 * second + 5 * third) / 67
    assert mean_loss(model, IDS, block_size=32, batch_size=2) == pytest.approx(float(expected), rel=1e-5)


def test_head_ablation_maps_every_layer_and_head():
    model = tiny_mygpt()
    result = head_ablation(model, IDS[:, :40])
    assert result.losses.shape == (2, N_HEAD) and not np.isnan(result.losses).any()
    assert result.base_loss == pytest.approx(mean_loss(model, IDS[:, :40]))
    assert np.abs(result.delta).max() > 0  # removing a head changes the loss
    ranking = result.ranking()
    assert len(ranking) == 2 * N_HEAD and ranking[0][2] == pytest.approx(np.nanmax(result.delta))


def test_only_the_chosen_heads_are_ablated_and_bad_choices_are_refused():
    model = tiny_mygpt()
    result = head_ablation(model, IDS[:, :40], layers=[1], heads=[0, 2])
    assert np.isnan(result.losses[0]).all() and np.isnan(result.losses[1, [1, 3]]).all()
    assert not np.isnan(result.losses[1, [0, 2]]).any()
    with pytest.raises(ValueError, match="layer 2 does not exist"):
        head_ablation(model, IDS, layers=[2])
    with pytest.raises(ValueError, match="head 4 does not exist"):
        with ablate_heads(model, [(0, 4)]):
            pass
    with pytest.raises(ValueError, match="at least 2 tokens"):
        mean_loss(model, IDS[:, :1])


def test_the_ablation_map_is_written_as_a_png(tmp_path):
    result = head_ablation(tiny_mygpt(), IDS[:, :40])
    (path,) = save_ablation_report(result, str(tmp_path))
    with Image.open(path) as image:
        assert image.format == "PNG"
