"""Head taxonomy: each score finds its own pattern built by hand (1) and ignores the others (~0), and the
model-level scoring finds a hand-made induction head in a model."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from mygpt.analysis.heads import (
    SCORE_NAMES,
    duplicate_token_score,
    first_token_score,
    head_scores,
    induction_score,
    local_window_score,
    previous_token_score,
    repeated_random_tokens,
    save_head_report,
)

N = 10  # length of the random sequence; with the start token the repeated sequence is 2N + 1 tokens
BOS = 99
IDS = torch.cat([torch.tensor([BOS]), torch.arange(N), torch.arange(N)])  # start token, distinct tokens shown twice


def pattern(target) -> torch.Tensor:
    """A (T, T) attention pattern where query i puts all its weight on key target(i) (clamped to 0..i)."""
    t = len(IDS)
    attention = torch.zeros(t, t)
    for i in range(t):
        attention[i, min(max(target(i), 0), i)] = 1.0
    return attention


def local_pattern(window: int = 4) -> torch.Tensor:
    t = len(IDS)
    attention = torch.zeros(t, t)
    for i in range(t):
        keys = range(max(0, i - window + 1), i + 1)
        attention[i, list(keys)] = 1.0 / len(keys)
    return attention


def induction_pattern() -> torch.Tensor:
    # the second copy reads the token after its earlier copy; the first copy has nothing to copy, reads itself
    return pattern(lambda i: i - N + 1 if i > N else i)


def duplicate_pattern() -> torch.Tensor:
    return pattern(lambda i: i - N if i > N else i)


def all_scores(attention: torch.Tensor) -> dict[str, float]:
    return {
        "previous_token": float(previous_token_score(attention)),
        "first_token": float(first_token_score(attention)),
        "local_window": float(local_window_score(attention)),
        "duplicate_token": float(duplicate_token_score(attention, IDS)),
        "induction": float(induction_score(attention, IDS)),
    }


PATTERNS = {
    "previous_token": lambda: pattern(lambda i: i - 1),
    "first_token": lambda: pattern(lambda i: 0),
    "local_window": local_pattern,
    "duplicate_token": duplicate_pattern,
    "induction": induction_pattern,
}


@pytest.mark.parametrize("name", SCORE_NAMES)
def test_a_perfect_pattern_scores_one_on_its_score_and_about_zero_on_the_others(name):
    scores = all_scores(PATTERNS[name]())
    assert scores[name] == pytest.approx(1.0, abs=1e-6)
    for other, value in scores.items():
        if other == name:
            continue
        if (name, other) == ("local_window", "previous_token"):
            # spreading evenly over 4 tokens really does give the previous token a quarter
            # (a little more at queries 2 and 3, whose windows are shorter)
            assert value == pytest.approx(0.25, abs=0.01)
        else:
            assert value < 0.1, (other, value)


def test_uniform_attention_is_not_mistaken_for_any_single_pattern():
    t = len(IDS)
    uniform = torch.tril(torch.ones(t, t))
    uniform = uniform / uniform.sum(-1, keepdim=True)
    scores = all_scores(uniform)
    assert max(v for k, v in scores.items() if k != "local_window") < 0.25


def test_scores_keep_leading_layer_and_head_dimensions():
    stacked = torch.stack([torch.stack([PATTERNS[n]() for n in SCORE_NAMES])] * 3)  # (3 layers, 5 heads, T, T)
    assert previous_token_score(stacked).shape == (3, 5)
    induction = induction_score(stacked, IDS)
    assert induction.shape == (3, 5)
    assert int(induction[0].argmax()) == SCORE_NAMES.index("induction")


def test_scores_without_anything_to_measure_are_nan_not_zero():
    distinct = torch.arange(8)
    attention = torch.tril(torch.ones(8, 8)) / torch.arange(1, 9).view(-1, 1)
    assert torch.isnan(duplicate_token_score(attention, distinct))
    assert torch.isnan(induction_score(attention, distinct))


def test_bad_attention_shapes_get_clear_errors():
    with pytest.raises(ValueError, match="at least 3 tokens"):
        previous_token_score(torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"\(\.\.\., T, T\)"):
        first_token_score(torch.ones(4, 5))
    with pytest.raises(ValueError, match="input_ids has 5 tokens"):
        induction_score(induction_pattern(), torch.arange(5))


def test_repeated_random_tokens_are_distinct_then_repeated():
    ids = repeated_random_tokens(vocab_size=50, length=12, batch=3, seed=1, exclude={0, 1})
    assert ids.shape == (3, 24)
    assert torch.equal(ids[:, :12], ids[:, 12:])
    for row in ids[:, :12]:
        assert len(set(row.tolist())) == 12 and not {0, 1} & set(row.tolist())
    with pytest.raises(ValueError, match="distinct tokens"):
        repeated_random_tokens(vocab_size=10, length=11, batch=1)


class HandMadeInductionModel(torch.nn.Module):
    """A stand-in model whose layer 1 head 2 is an induction head and layer 0 head 1 a previous-token head
    (every other head attends uniformly). Its logits copy like an induction circuit would: on a repeated
    sequence the second copy is predicted, the first is not."""

    def __init__(self, vocab_size: int = 96, n_layer: int = 2, n_head: int = 3) -> None:
        super().__init__()
        self.config = SimpleNamespace(n_layer=n_layer, n_head=n_head, vocab_size=vocab_size, n_positions=64,
                                      _attn_implementation="sdpa")
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def set_attn_implementation(self, name: str) -> None:
        self.config._attn_implementation = name

    def forward(self, input_ids, output_attentions=False, output_hidden_states=False, use_cache=False, **_):
        batch, t = input_ids.shape
        uniform = torch.tril(torch.ones(t, t)) / torch.arange(1, t + 1).view(-1, 1)
        layers = [uniform.expand(batch, self.config.n_head, t, t).clone() for _ in range(self.config.n_layer)]
        logits = torch.zeros(batch, t, self.config.vocab_size)
        for b in range(batch):
            ids = input_ids[b]
            prev = torch.zeros(t, t)
            prev[0, 0] = 1
            prev[torch.arange(1, t), torch.arange(t - 1)] = 1
            layers[0][b, 1] = prev
            induction = torch.zeros(t, t)
            for i in range(t):
                earlier = [j for j in range(1, i) if ids[j - 1] == ids[i]]
                induction[i, earlier[-1] if earlier else i] = 1.0
                if earlier:
                    logits[b, i, ids[earlier[-1]]] = 20.0  # predict the token that followed last time
            layers[1][b, 2] = induction
        eager = self.config._attn_implementation == "eager"
        return SimpleNamespace(logits=logits, attentions=tuple(layers) if output_attentions and eager else None)


class CharTokenizer:
    """Enough of a tokenizer for head_scores: one token per character of a fixed alphabet."""

    all_special_ids: list[int] = []

    def __init__(self, vocab_size: int = 96) -> None:
        self.vocab_size = vocab_size

    def __len__(self) -> int:
        return self.vocab_size

    def __call__(self, text, add_special_tokens=False, **kwargs):
        return {"input_ids": [ord(c) - 32 for c in text]}

    def decode(self, ids, clean_up_tokenization_spaces=False):
        return "".join(chr(i + 32) for i in ids)


TEXT = "the cat sat on the mat. the cat sat."


def test_head_scores_find_the_induction_and_previous_token_heads_of_a_model():
    result = head_scores(HandMadeInductionModel(), CharTokenizer(), TEXT, repeat_length=12, repeat_batch=2)
    for name in SCORE_NAMES:
        assert result.scores[name].shape == (2, 3)
    induction = result.scores["induction"]
    assert np.unravel_index(induction.argmax(), induction.shape) == (1, 2)
    assert induction[1, 2] == pytest.approx(1.0)
    assert result.scores["previous_token"][0, 1] == pytest.approx(1.0)
    types = result.head_types()
    assert types[1, 2] == "induction" and types[0, 1] == "previous_token"
    # the copying logits make the repeat far easier than the first copy
    assert result.repeat_loss_second < result.repeat_loss_first - 1.0


def test_a_text_longer_than_the_context_is_scored_window_by_window():
    model, tokenizer = HandMadeInductionModel(), CharTokenizer()
    text = TEXT * 4  # one token per character: windows of 64, 64 and the rest (16 tokens)
    last = len(text) - 128
    assert last >= 4
    whole = head_scores(model, tokenizer, text, repeat_length=12, repeat_batch=2)
    parts = [head_scores(model, tokenizer, text[i : i + 64], repeat_length=12, repeat_batch=2) for i in (0, 64, 128)]
    for name in ("previous_token", "first_token", "local_window"):
        expected = (64 * parts[0].scores[name] + 64 * parts[1].scores[name] + last * parts[2].scores[name]) / len(text)
        np.testing.assert_allclose(whole.scores[name], expected, rtol=1e-6)
    assert whole.text_tokens == len(text) and whole.scores["previous_token"][0, 1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="head scores need at least 4"):
        head_scores(model, tokenizer, "ab")


def test_head_report_writes_a_table_a_heatmap_per_score_and_a_sentence_per_type(tmp_path):
    result = head_scores(HandMadeInductionModel(), CharTokenizer(), TEXT, repeat_length=12, repeat_batch=2)
    paths = save_head_report(result, str(tmp_path))
    names = {os.path.basename(p) for p in paths}
    assert names == {"heads.csv", "heads.md"} | {f"heads_{n}.png" for n in SCORE_NAMES}
    for path in paths:
        if path.endswith(".png"):
            with Image.open(path) as image:
                image.verify()
    csv_lines = (tmp_path / "heads.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 2 * 3
    markdown = (tmp_path / "heads.md").read_text()
    assert "L1H2" in markdown and "induction" in markdown and "previous_token" in markdown


def test_attention_entropy_is_zero_for_one_key_and_one_for_even_attention():
    from mygpt.analysis.heads import attention_entropy

    t = len(IDS)
    uniform = torch.ones(t, t).tril()
    uniform = uniform / uniform.sum(-1, keepdim=True)
    assert float(attention_entropy(uniform)) == pytest.approx(1.0)
    for name in ("previous_token", "first_token", "induction"):  # one key per query, positional or by content
        assert float(attention_entropy(PATTERNS[name]())) == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < float(attention_entropy(local_pattern())) < 1.0
    stacked = torch.stack([uniform, PATTERNS["first_token"]()])  # (2, T, T): leading dimensions are kept
    assert attention_entropy(stacked).shape == (2,)


def test_head_table_has_an_attention_entropy_column(tmp_path):
    result = head_scores(HandMadeInductionModel(), CharTokenizer(), TEXT, repeat_length=12, repeat_batch=2)
    assert result.entropy.shape == (2, 3) and ((0 <= result.entropy) & (result.entropy <= 1 + 1e-6)).all()
    assert result.entropy[0, 1] == pytest.approx(0.0, abs=1e-3)  # the hand-made previous-token head: one key
    assert all("attention_entropy" in row for row in result.table())
    save_head_report(result, str(tmp_path))
    assert "attention_entropy" in (tmp_path / "heads.csv").read_text().splitlines()[0]
    assert "attention_entropy" in (tmp_path / "heads.md").read_text()
