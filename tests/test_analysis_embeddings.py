"""Embeddings: token categories, nearest neighbours by cosine, position similarity for each kind of position
encoding, and the 2-D maps (t-SNE fast; UMAP on a few hundred points, marked slow)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from configuration_mygpt import MyGPTConfig
from modeling_mygpt import MyGPTForCausalLM
from mygpt.analysis.embeddings import (
    categorise,
    nearest_neighbours,
    position_embedding_table,
    position_similarity,
    project,
    save_embedding_report,
    select_tokens,
    token_category,
    word_token_id,
)
from mygpt.tokenization import train_bpe_tokenizer

PLAY = """KING HENRY:
Now, good my lord, the king is come to thee with love.

ROMEO:
My love, my king, thee I love; the king loves thee 1 2 3.

""" * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer([PLAY], vocab_size=300, min_frequency=2)


def tiny_model(vocab_size: int, **overrides) -> MyGPTForCausalLM:
    torch.manual_seed(0)
    config = dict(vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=None,
                  eos_token_id=None)
    return MyGPTForCausalLM(MyGPTConfig(**{**config, **overrides})).eval()


@pytest.mark.parametrize("text, count, frequent, expected", [
    ("\n", 10, False, "whitespace/newline"),
    ("  ", 10, False, "whitespace/newline"),
    (",", 10, False, "punctuation"),
    (" --", 10, False, "punctuation"),
    (" 42", 10, False, "digits"),
    (" Romeo", 1, False, "capitalised/name-like"),
    (" the", 500, True, "frequent word"),
    (" quietus", 1, False, "rare"),
    (" sword", 40, False, "other word"),
])
def test_token_categories(text, count, frequent, expected):
    assert token_category(text, count, frequent) == expected


def test_frequent_words_are_the_most_counted_lower_case_words():
    texts = [" the", " and", " zounds", "The", ","]
    counts = np.array([50, 30, 1, 99, 99])
    assert categorise(texts, counts, n_frequent=2) == [
        "frequent word", "frequent word", "rare", "capitalised/name-like", "punctuation"]


def test_selection_keeps_frequent_tokens_and_some_of_the_rest():
    counts = np.arange(1000)[::-1].copy()  # token 0 most frequent
    chosen = select_tokens(counts, max_tokens=100, seed=0)
    assert len(chosen) == 100 and len(set(chosen)) == 100
    assert set(range(75)) <= set(chosen)  # the 75 most frequent
    assert (chosen >= 75).sum() == 25  # and 25 others
    assert (select_tokens(counts[:50], max_tokens=100) == np.arange(50)).all()


def test_nearest_neighbour_finds_a_planted_twin(tokenizer):
    king, thee = word_token_id(tokenizer, "king"), word_token_id(tokenizer, "thee")
    assert king is not None and thee is not None
    embeddings = torch.randn(len(tokenizer), 32, generator=torch.Generator().manual_seed(0))
    embeddings[thee] = 3.0 * embeddings[king] + 0.01 * torch.randn(32)  # same direction, other length
    found = nearest_neighbours(embeddings, tokenizer, ["king", "thee", "nonexistentword"], k=3)
    assert found["king"][0][0] == " thee" and found["king"][0][1] == pytest.approx(1.0, abs=1e-3)
    assert found["thee"][0][0] == " king"
    assert all(token != " king" for token, _ in found["king"])  # never its own neighbour
    assert found["nonexistentword"] is None


def test_learned_position_similarity_is_a_cosine_matrix():
    table, kind = position_embedding_table(tiny_model(300))
    assert kind == "learned" and table.shape == (64, 32)
    similarity = position_similarity(table)
    assert similarity.shape == (64, 64)
    np.testing.assert_allclose(np.diag(similarity), 1.0, atol=1e-5)
    np.testing.assert_allclose(similarity, similarity.T, atol=1e-6)


def test_sinusoidal_positions_are_more_alike_when_closer():
    table, kind = position_embedding_table(tiny_model(300, position_embedding="sinusoidal"))
    assert kind == "sinusoidal"
    similarity = position_similarity(table)
    # a fixed property of Vaswani's table: similarity falls off with distance, the same at any offset
    assert similarity[10, 11] > similarity[10, 14] > similarity[10, 30]
    assert similarity[10, 11] == pytest.approx(similarity[40, 41], abs=1e-5)


@pytest.mark.parametrize("kind", ["rope", "alibi"])
def test_positions_inside_attention_have_no_table_and_say_why(kind):
    table, reason = position_embedding_table(tiny_model(300, position_embedding=kind))
    assert table is None and "inside attention" in reason


def test_projection_refuses_unknown_methods_and_too_few_points():
    with pytest.raises(ValueError, match="unknown projection 'pca'"):
        project(np.zeros((10, 4)), "pca")
    with pytest.raises(ValueError, match="at least 5 points"):
        project(np.zeros((3, 4)), "tsne")


def test_tsne_report_writes_a_map_the_neighbours_and_the_position_matrix(tokenizer, tmp_path):
    model = tiny_model(len(tokenizer))
    ids = torch.tensor([tokenizer(PLAY)["input_ids"]])
    report = save_embedding_report(model, tokenizer, ids, str(tmp_path), methods=("tsne",), max_tokens=80)
    names = sorted(os.path.basename(p) for p in report.paths)
    assert names == ["embeddings_neighbours.md", "embeddings_tsne.png", "position_similarity.png"]
    for path in report.paths:
        if path.endswith(".png"):
            with Image.open(path) as image:
                image.verify()
    assert sum(report.category_counts.values()) == 80
    assert report.neighbours["king"] is not None and len(report.neighbours["king"]) == 8
    assert "**king**" in (tmp_path / "embeddings_neighbours.md").read_text()


@pytest.mark.slow
def test_umap_maps_a_few_hundred_tokens(tokenizer):
    vectors = torch.randn(300, 32, generator=torch.Generator().manual_seed(0)).numpy()
    vectors[:150] += 4.0  # two clusters must stay apart on the map
    coords = project(vectors, "umap", seed=0)
    assert coords.shape == (300, 2) and np.isfinite(coords).all()
    a, b = coords[:150].mean(0), coords[150:].mean(0)
    spread = max(coords[:150].std(0).max(), coords[150:].std(0).max())
    assert np.linalg.norm(a - b) > 2 * spread
