"""Contracts of the network itself: causality, parity with GPT-2, caching, padding, attention backends, loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel

from configuration_mygpt import ACTIVATIONS, MyGPTConfig
from modeling_mygpt import MyGPTForCausalLM, alibi_slopes, sinusoidal_table

POSITION_EMBEDDINGS = ["learned", "sinusoidal", "rope", "alibi"]
BACKENDS = ["eager", "sdpa"]
VOCAB = 97


def tiny_config(**overrides) -> MyGPTConfig:
    fields = dict(
        vocab_size=VOCAB,
        n_positions=48,
        n_embd=32,
        n_layer=2,
        n_head=4,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        resid_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    fields.update(overrides)
    return MyGPTConfig(**fields)


def tiny_model(seed: int = 0, attn: str = "sdpa", **overrides) -> MyGPTForCausalLM:
    torch.manual_seed(seed)
    model = MyGPTForCausalLM(tiny_config(**overrides)).eval()
    model.set_attn_implementation(attn)
    return model


def tiny_gpt2(seed: int = 0, activation_function: str = "gelu_new") -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=48, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0,
        activation_function=activation_function,
    )
    model = GPT2LMHeadModel(config).eval()
    # Random biases and norm parameters too, so the parity check covers every tensor.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ln_" in name or name.endswith("bias"):
                param.normal_(mean=1.0 if name.endswith("weight") else 0.0, std=0.1)
    return model


def random_ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (batch, length), generator=generator)


# ---------------------------------------------------------------------------------------------------------------
# Causality


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("position_embedding", POSITION_EMBEDDINGS)
def test_future_tokens_do_not_change_past_logits(position_embedding: str, backend: str) -> None:
    model = tiny_model(attn=backend, position_embedding=position_embedding, n_kv_head=2)
    ids = random_ids(2, 20)
    changed = ids.clone()
    cut = 11
    changed[:, cut:] = random_ids(2, 20 - cut, seed=7)
    with torch.no_grad():
        logits = model(ids).logits
        logits_changed = model(changed).logits
    # Bit-exact: a masked key contributes an exact zero, whatever its value.
    assert torch.equal(logits[:, :cut], logits_changed[:, :cut])
    assert not torch.allclose(logits[:, cut:], logits_changed[:, cut:])


# ---------------------------------------------------------------------------------------------------------------
# Parity with transformers' GPT-2


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_gpt2_logits(backend: str, activation: str) -> None:
    gpt2 = tiny_gpt2(activation_function=activation)
    gpt2.set_attn_implementation(backend)
    model = MyGPTForCausalLM.from_gpt2(gpt2)
    assert model.config._attn_implementation == backend
    assert model.config.activation_function == activation
    ids = random_ids(3, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, gpt2(ids).logits, atol=1e-5, rtol=0)


def test_matches_gpt2_greedy_generation() -> None:
    gpt2 = tiny_gpt2()
    model = MyGPTForCausalLM.from_gpt2(gpt2)
    prompt = random_ids(1, 5)
    kwargs = dict(max_new_tokens=20, do_sample=False, pad_token_id=0)
    ours = model.generate(prompt, **kwargs)
    reference = gpt2.generate(prompt, **kwargs)
    assert ours.shape == (1, 25)
    assert torch.equal(ours, reference)


def test_to_gpt2_round_trips_weights_and_logits() -> None:
    model = tiny_model()
    gpt2 = model.to_gpt2()
    assert isinstance(gpt2, GPT2LMHeadModel)
    back = MyGPTForCausalLM.from_gpt2(gpt2)
    for (name, tensor), (name_back, tensor_back) in zip(model.state_dict().items(), back.state_dict().items()):
        assert name == name_back
        assert torch.equal(tensor, tensor_back)
    ids = random_ids(2, 30)
    with torch.no_grad():
        torch.testing.assert_close(gpt2(ids).logits, model(ids).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("activation", ["gelu_new", "gelu", "relu", "relu2"])
def test_every_activation_matches_gpt2_with_the_same_activation(activation: str) -> None:
    # GPT-2's MLP takes its non-linearity from transformers' ACT2FN; ours is written out: same function, same logits.
    model = tiny_model(activation_function=activation)
    gpt2 = model.to_gpt2()
    assert gpt2.config.activation_function == activation
    ids = random_ids(2, 30)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, gpt2(ids).logits, atol=1e-5, rtol=0)


def test_relu2_is_the_square_of_relu() -> None:
    mlp = tiny_model(activation_function="relu2").transformer.h[0].mlp
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0])
    torch.testing.assert_close(mlp.act(x), torch.tensor([0.0, 0.0, 0.0, 0.25, 9.0]))


@pytest.mark.parametrize(
    "overrides", [{"position_embedding": "rope"}, {"norm": "rmsnorm"}, {"n_kv_head": 2}, {"bias": False}]
)
def test_to_gpt2_refuses_settings_gpt2_lacks(overrides: dict) -> None:
    model = tiny_model(**overrides)
    with pytest.raises(ValueError, match="no GPT-2 equivalent"):
        model.to_gpt2()


def test_from_gpt2_unreachable_hub_id_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="could not load a GPT-2 model from 'no-such-user/no-such-gpt2'"):
        MyGPTForCausalLM.from_gpt2("no-such-user/no-such-gpt2")


def test_gpt2_module_names_map_one_to_one() -> None:
    ours = set(tiny_model().state_dict())
    theirs = {k for k in tiny_gpt2().state_dict() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
    assert ours == theirs


# ---------------------------------------------------------------------------------------------------------------
# Attention backends


@pytest.mark.parametrize("position_embedding", POSITION_EMBEDDINGS)
@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_eager_equals_sdpa(position_embedding: str, n_kv_head: int) -> None:
    model = tiny_model(position_embedding=position_embedding, n_kv_head=n_kv_head)
    ids = random_ids(2, 24)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # a left-padded row exercises the explicit-mask path
    with torch.no_grad():
        sdpa = model(ids, attention_mask=mask).logits
        model.set_attn_implementation("eager")
        eager = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(eager[0], sdpa[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eager[1, 5:], sdpa[1, 5:], atol=1e-5, rtol=1e-5)


def test_eager_attention_weights_are_causal_distributions() -> None:
    model = tiny_model(attn="eager")
    ids = random_ids(2, 12)
    with torch.no_grad():
        out = model(ids, output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == 2
    assert len(out.hidden_states) == 3
    for weights in out.attentions:
        assert weights.shape == (2, 4, 12, 12)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 12))
        assert torch.all(weights.triu(diagonal=1) == 0)
    # The last hidden state is after ln_f, as in GPT-2.
    torch.testing.assert_close(out.hidden_states[-1], model.transformer(ids).last_hidden_state)


def test_eager_attention_is_the_written_out_formula() -> None:
    """softmax(q k^T / sqrt(hs) + causal mask) v, checked against a direct computation for one layer."""
    model = tiny_model(attn="eager")
    attn = model.transformer.h[0].attn
    x = torch.randn(1, 6, 32)
    with torch.no_grad():
        out, weights = attn(x, attention_mask=torch.triu(torch.full((6, 6), float("-inf")), 1)[None, None])
        q, k, v = attn.c_attn(x).split(32, dim=-1)
        q, k, v = (t.view(1, 6, 4, 8).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / 8**0.5
        scores = scores.masked_fill(torch.ones(6, 6, dtype=torch.bool).triu(1), float("-inf"))
        expected_weights = scores.softmax(-1)
        expected = attn.c_proj((expected_weights @ v).transpose(1, 2).reshape(1, 6, 32))
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(out, expected)


# ---------------------------------------------------------------------------------------------------------------
# KV cache and padding


@pytest.mark.parametrize("position_embedding", POSITION_EMBEDDINGS)
def test_cached_generation_equals_full_recompute(position_embedding: str) -> None:
    model = tiny_model(position_embedding=position_embedding, n_kv_head=2)
    prompt = random_ids(2, 6)
    kwargs = dict(max_new_tokens=15, do_sample=False, pad_token_id=0, output_scores=True)
    kwargs["return_dict_in_generate"] = True
    cached = model.generate(prompt, use_cache=True, **kwargs)
    uncached = model.generate(prompt, use_cache=False, **kwargs)
    assert torch.equal(cached.sequences, uncached.sequences)
    for step_cached, step_uncached in zip(cached.scores, uncached.scores):
        torch.testing.assert_close(step_cached, step_uncached, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("position_embedding", POSITION_EMBEDDINGS)
def test_incremental_forward_with_cache_equals_full_forward(position_embedding: str) -> None:
    model = tiny_model(position_embedding=position_embedding)
    ids = random_ids(2, 16)
    with torch.no_grad():
        full = model(ids).logits
        cache = DynamicCache(config=model.config)
        first = model(ids[:, :9], cache=cache, use_cache=True)
        rest = model(ids[:, 9:], cache=first.cache, use_cache=True)
    assert rest.cache.get_seq_length() == 16
    torch.testing.assert_close(torch.cat([first.logits, rest.logits], dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("position_embedding", POSITION_EMBEDDINGS)
def test_left_padded_row_equals_unpadded_row(position_embedding: str, backend: str) -> None:
    model = tiny_model(attn=backend, position_embedding=position_embedding)
    short, long = random_ids(1, 5, seed=3), random_ids(1, 9, seed=4)
    batch = torch.cat([torch.cat([torch.zeros(1, 4, dtype=torch.long), short], dim=1), long])
    mask = torch.cat([torch.cat([torch.zeros(1, 4), torch.ones(1, 5)], dim=1), torch.ones(1, 9)]).long()
    kwargs = dict(max_new_tokens=10, do_sample=False, pad_token_id=0, output_scores=True)
    kwargs["return_dict_in_generate"] = True
    batched = model.generate(batch, attention_mask=mask, **kwargs)
    alone = model.generate(short, **kwargs)
    assert torch.equal(batched.sequences[0, 4:], alone.sequences[0])
    for step_batched, step_alone in zip(batched.scores, alone.scores):
        torch.testing.assert_close(step_batched[0], step_alone[0], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Loss and learning


def test_loss_is_shifted_cross_entropy_ignoring_minus_100() -> None:
    model = tiny_model()
    ids = random_ids(2, 12)
    labels = ids.clone()
    labels[0, :4] = -100
    with torch.no_grad():
        out = model(ids, labels=labels)
    logits = out.logits[:, :-1].reshape(-1, VOCAB)
    targets = labels[:, 1:].reshape(-1)
    keep = targets != -100
    expected = F.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(out.loss, expected)


def test_tiny_model_overfits_one_batch() -> None:
    model = tiny_model().train()
    ids = random_ids(4, 24)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = model(ids, labels=ids).loss
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert first > 4.0  # about ln(97) at the start
    assert loss.item() < 0.1


# ---------------------------------------------------------------------------------------------------------------
# Building blocks and bad input


def test_lm_head_is_tied_to_token_embedding() -> None:
    model = tiny_model()
    assert model.lm_head.weight is model.transformer.wte.weight
    untied = tiny_model(tie_word_embeddings=False)
    assert untied.lm_head.weight is not untied.transformer.wte.weight


def test_residual_projections_use_gpt2_scaled_init() -> None:
    torch.manual_seed(0)
    model = MyGPTForCausalLM(tiny_config(n_embd=128, n_layer=8))
    expected = 0.02 / (2 * 8) ** 0.5
    for block in model.transformer.h:
        for proj in (block.attn.c_proj, block.mlp.c_proj):
            assert abs(proj.weight.std().item() - expected) < 0.1 * expected
    assert abs(model.transformer.h[0].attn.c_attn.weight.std().item() - 0.02) < 0.002


def test_sinusoidal_table_follows_the_paper() -> None:
    table = sinusoidal_table(50, 16)
    pos, i = 7, 3
    assert table[pos, 2 * i].item() == pytest.approx(torch.sin(torch.tensor(pos / 10000 ** (2 * i / 16))).item())
    assert table[pos, 2 * i + 1].item() == pytest.approx(torch.cos(torch.tensor(pos / 10000 ** (2 * i / 16))).item())


def _paper_alibi_slopes(n: int) -> list[float]:
    """``get_slopes`` from the ALiBi paper's reference code (ofirpress/attention_with_linear_biases), verbatim
    in substance: a geometric sequence from 2^(-8/n) for a power of two, otherwise the next lower power's slopes
    followed by every other slope of the next higher power."""

    def get_slopes_power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        ratio = start
        return [start * ratio**i for i in range(n)]

    if math.log2(n).is_integer():
        return get_slopes_power_of_2(n)
    closest_power_of_2 = 2 ** math.floor(math.log2(n))
    return get_slopes_power_of_2(closest_power_of_2) + _paper_alibi_slopes(2 * closest_power_of_2)[0::2][
        : n - closest_power_of_2
    ]


@pytest.mark.parametrize("n_head", [1, 2, 3, 4, 5, 6, 8, 12, 16, 20])
def test_alibi_slopes_match_the_papers_reference_code(n_head: int) -> None:
    torch.testing.assert_close(alibi_slopes(n_head), torch.tensor(_paper_alibi_slopes(n_head)))


def test_alibi_slopes_for_six_heads_written_out() -> None:
    # 4 heads give 2^-2, 2^-4, 2^-6, 2^-8; the two missing ones are 8 heads' 1st and 3rd: 2^-1, 2^-3.
    expected = torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3])
    torch.testing.assert_close(alibi_slopes(6), expected)


def test_sequence_longer_than_position_table_is_a_clear_error() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="longer than n_positions=48"):
        model(random_ids(1, 49))


@pytest.mark.parametrize("position_embedding", ["rope", "alibi"])
def test_relative_encodings_stay_causal_and_cached_past_the_training_context(position_embedding: str) -> None:
    # tiny_config has n_positions=48: a 72-token sequence is half again longer than anything it was built for.
    model = tiny_model(position_embedding=position_embedding)
    ids = random_ids(2, 72)
    with torch.no_grad():
        full = model(ids).logits  # (2, 72, V)
        prefix = model(ids[:, :40]).logits
        # Incremental decoding from token 40 on, one token at a time, through the cache.
        out = model(ids[:, :40], use_cache=True)
        cache, steps = out.cache, []
        for t in range(40, 72):
            out = model(ids[:, t : t + 1], cache=cache, use_cache=True)
            cache = out.cache
            steps.append(out.logits[:, -1])
    assert torch.isfinite(full).all()
    torch.testing.assert_close(full[:, :40], prefix, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full[:, 40:], torch.stack(steps, dim=1), atol=1e-5, rtol=1e-5)


def test_rope_depends_only_on_relative_positions_past_the_training_context() -> None:
    # Shifting every position by the same offset, far beyond n_positions=48, leaves q.k (and so the logits)
    # unchanged: rotary embeddings encode i - j only.
    model = tiny_model(position_embedding="rope")
    ids = random_ids(1, 32)
    with torch.no_grad():
        base = model(ids).logits
        shifted = model(ids, position_ids=torch.arange(500, 532)[None]).logits
    torch.testing.assert_close(shifted, base, atol=1e-4, rtol=1e-4)


def test_output_attentions_under_sdpa_is_a_clear_error() -> None:
    model = tiny_model(attn="sdpa")
    with pytest.raises(ValueError, match='attn_implementation="eager"'):
        model(random_ids(1, 8), output_attentions=True)
    model.set_attn_implementation("eager")
    attentions = model(random_ids(1, 8), output_attentions=True).attentions
    assert len(attentions) == model.config.n_layer and all(a.shape == (1, 4, 8, 8) for a in attentions)


@pytest.mark.parametrize("position_embedding", POSITION_EMBEDDINGS)
def test_use_cache_false_ignores_a_filled_cache(position_embedding: str) -> None:
    # The blocks never see the cache when use_cache is off; the mask and the positions must not either, so the
    # call equals a plain forward over the new tokens (before the fix: a mask over 20 + 8 keys for 8 keys).
    model = tiny_model(position_embedding=position_embedding, attn="eager")
    ids = random_ids(1, 28)
    with torch.no_grad():
        cache = model(ids[:, :20], use_cache=True).cache
        ignored = model(ids[:, 20:], cache=cache, use_cache=False)
        plain = model(ids[:, 20:])
    torch.testing.assert_close(ignored.logits, plain.logits)
    assert ignored.cache is None and cache.get_seq_length() == 20


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"n_embd": 30, "n_head": 4}, "n_embd=30 must be divisible by n_head=4"),
        ({"n_head": 4, "n_kv_head": 3}, "n_head=4 must be divisible by n_kv_head=3"),
        ({"position_embedding": "absolute"}, "position_embedding='absolute' is not one of"),
        ({"norm": "batchnorm"}, "norm='batchnorm' is not one of"),
        ({"norm_position": "middle"}, "norm_position='middle'"),
        ({"activation_function": "swish"}, "activation_function='swish'"),
        ({"attn_pdrop": 1.0}, r"attn_pdrop=1.0 must be a probability in \[0, 1\)"),
        ({"resid_pdrop": -0.1}, "resid_pdrop=-0.1"),
        ({"n_layer": 0}, "n_layer must be a positive integer"),
        ({"n_embd": 36, "n_head": 4, "position_embedding": "rope"}, "head size"),
    ],
)
def test_invalid_config_raises_naming_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        tiny_config(**overrides)


def test_hf_alias_names_read_the_gpt2_fields() -> None:
    config = tiny_config()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (32, 2, 4)
    assert (config.max_position_embeddings, config.num_key_value_heads, config.intermediate_size) == (48, 4, 128)
