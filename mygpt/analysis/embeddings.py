"""Token and position embeddings: 2-D maps of the token embeddings (UMAP, t-SNE) coloured by what kind of token
each is, cosine nearest neighbours of chosen words, and the cosine similarity between position embeddings."""

from __future__ import annotations

import collections
import logging
import os
import string
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from mygpt.files import write_text

from .core import display_token
from .plotting import heatmap, plt, save_figure

logger = logging.getLogger(__name__)

CATEGORIES = ("whitespace/newline", "punctuation", "digits", "capitalised/name-like", "frequent word", "rare",
              "other word")
CATEGORY_COLOURS = dict(zip(CATEGORIES, ("#7f7f7f", "#d62728", "#9467bd", "#ff7f0e", "#1f77b4", "#bcbd22",
                                         "#2ca02c")))
_PUNCTUATION = set(string.punctuation) | {"—", "–", "‘", "’", "“", "”", "…"}


def token_texts(tokenizer, vocab_size: int) -> list[str]:
    """Each id decoded on its own, for ids 0..vocab_size-1 (ids past the tokenizer's vocabulary give '')."""
    size = min(vocab_size, len(tokenizer))
    texts = [tokenizer.decode([i], clean_up_tokenization_spaces=False) for i in range(size)]
    return texts + [""] * (vocab_size - size)


def token_counts(input_ids: torch.Tensor, vocab_size: int) -> np.ndarray:
    """How often each token id occurs in ``input_ids`` (any shape): (vocab_size,)."""
    return np.bincount(input_ids.reshape(-1).cpu().numpy(), minlength=vocab_size)[:vocab_size]


def token_category(text: str, count: int, frequent: bool, rare_below: int = 3) -> str:
    """The category of one token, first match wins: whitespace, punctuation, digits, capitalised,
    then by frequency in the reference text (frequent word / rare / other word)."""
    core = text.strip()
    if text and not core:
        return "whitespace/newline"
    if core and all(ch in _PUNCTUATION for ch in core):
        return "punctuation"
    if any(ch.isdigit() for ch in core):
        return "digits"
    if core[:1].isupper():
        return "capitalised/name-like"
    if frequent:
        return "frequent word"
    if count < rare_below:
        return "rare"
    return "other word"


def categorise(texts: Sequence[str], counts: np.ndarray, n_frequent: int = 100, rare_below: int = 3) -> list[str]:
    """Categories for every token; "frequent" means among the ``n_frequent`` most counted lower-case words."""
    words = [i for i, t in enumerate(texts) if t.strip()[:1].islower()]
    frequent = set(sorted(words, key=lambda i: -counts[i])[:n_frequent])
    frequent = {i for i in frequent if counts[i] > 0}
    return [token_category(t, int(counts[i]), i in frequent, rare_below) for i, t in enumerate(texts)]


def select_tokens(counts: np.ndarray, max_tokens: int, seed: int = 0) -> np.ndarray:
    """Which token ids to put on the map: all of them when there are few; otherwise three quarters the most
    frequent and a quarter drawn at random from the rest, so rare tokens are on the map too."""
    vocab = len(counts)
    if vocab <= max_tokens:
        return np.arange(vocab)
    order = np.argsort(-counts, kind="stable")
    top = order[: (3 * max_tokens) // 4]
    rest = np.random.default_rng(seed).choice(order[len(top):], size=max_tokens - len(top), replace=False)
    return np.sort(np.concatenate([top, rest]))


def project(vectors: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """(N, C) vectors -> (N, 2) with UMAP (cosine metric) or t-SNE (cosine metric, PCA start)."""
    if len(vectors) < 5:
        raise ValueError(f"a 2-D map needs at least 5 points, got {len(vectors)}")
    if method == "umap":
        import umap

        reducer = umap.UMAP(n_neighbors=min(15, len(vectors) - 1), min_dist=0.1, metric="cosine",
                            random_state=seed, n_jobs=1)
        return np.asarray(reducer.fit_transform(vectors))
    if method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        perplexity = float(min(30, max(2, (len(vectors) - 1) // 3)))
        tsne = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed)
        # One OpenMP thread: with torch's OpenMP runtime loaded too, sklearn's threads fight it and t-SNE
        # runs several times slower (measured: 3.3 s against 0.46 s for 80 points).
        with threadpool_limits(limits=1, user_api="openmp"):
            return tsne.fit_transform(vectors)
    raise ValueError(f"unknown projection {method!r}: expected 'umap' or 'tsne'")


def plot_projection(coords: np.ndarray, categories: Sequence[str], labels: dict[int, str], path: str,
                    title: str) -> str:
    """Scatter the (N, 2) ``coords`` coloured by category; ``labels`` maps row -> text to write beside it."""
    fig, ax = plt.subplots(figsize=(10, 8))
    categories = np.asarray(categories)
    for name in CATEGORIES:
        rows = categories == name
        if rows.any():
            ax.scatter(coords[rows, 0], coords[rows, 1], s=9, alpha=0.75, c=CATEGORY_COLOURS[name],
                       label=f"{name} ({int(rows.sum())})")
    for row, text in labels.items():
        ax.annotate(text, coords[row], fontsize=7, alpha=0.9, xytext=(2, 2), textcoords="offset points")
    ax.legend(loc="best", fontsize=8, markerscale=2)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(fig, path)


def _unit_rows(matrix: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(matrix.float(), dim=-1)


def word_token_id(tokenizer, word: str) -> int | None:
    """The single token for ``word`` as it appears mid-sentence (' word'), else at a line start ('word');
    None when the word takes several tokens."""
    for variant in (" " + word, word):
        ids = tokenizer(variant, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            return int(ids[0])
    return None


def nearest_neighbours(embeddings: torch.Tensor, tokenizer, words: Sequence[str], k: int = 8
                       ) -> dict[str, list[tuple[str, float]] | None]:
    """For each word, the ``k`` tokens whose embeddings (V, C) are closest by cosine (the word left out).
    A word that is not a single token maps to None."""
    unit = _unit_rows(embeddings)  # (V, C)
    size = min(len(tokenizer), embeddings.shape[0])
    result: dict[str, list[tuple[str, float]] | None] = {}
    for word in words:
        token = word_token_id(tokenizer, word)
        if token is None or token >= size:
            logger.info("%r is not a single token in this vocabulary; no neighbours", word)
            result[word] = None
            continue
        similarity = unit[:size] @ unit[token]  # (V,)
        similarity[token] = -2.0  # never its own neighbour
        values, ids = similarity.topk(min(k, size - 1))
        result[word] = [(tokenizer.decode([int(i)], clean_up_tokenization_spaces=False), float(v))
                        for v, i in zip(values, ids)]
    return result


def neighbours_markdown(neighbours: dict[str, list[tuple[str, float]] | None]) -> str:
    lines = ["# Nearest neighbours of token embeddings (cosine similarity)", ""]
    for word, found in neighbours.items():
        if found is None:
            lines.append(f"- **{word}**: not a single token in this vocabulary")
        else:
            lines.append(f"- **{word}**: " + ", ".join(f"`{display_token(t)}` {s:.2f}" for t, s in found))
    return "\n".join(lines) + "\n"


def position_embedding_table(model: torch.nn.Module) -> tuple[torch.Tensor | None, str]:
    """The (n_positions, C) position vectors added to the token embeddings and their kind, or None with the
    reason when positions enter attention directly (rotary, ALiBi) instead."""
    wpe = getattr(model.transformer, "wpe", None)
    kind = getattr(model.config, "position_embedding", "learned")
    if wpe is None or getattr(wpe, "weight", None) is None:
        return None, f"{kind} positions act inside attention; there are no position vectors to compare"
    return wpe.weight.detach().float().cpu(), kind


def position_similarity(table: torch.Tensor) -> np.ndarray:
    """Cosine similarity between every pair of position vectors: (P, C) -> (P, P)."""
    unit = _unit_rows(table)
    return (unit @ unit.T).numpy()


def plot_position_similarity(similarity: np.ndarray, kind: str, path: str) -> str:
    positions = len(similarity)
    ticks = [str(p) if p % max(1, positions // 16) == 0 else "" for p in range(positions)]
    return heatmap(similarity, path, title=f"Cosine similarity between {kind} position embeddings",
                   row_labels=ticks, col_labels=ticks, xlabel="position", ylabel="position", cmap="RdBu_r",
                   vmin=-1.0, vmax=1.0, annotate=False, colorbar_label="cosine similarity", figsize=(9.0, 7.5))


@dataclass
class EmbeddingReport:
    paths: list[str]
    neighbours: dict[str, list[tuple[str, float]] | None]
    category_counts: dict[str, int]
    position_note: str


def save_embedding_report(model: torch.nn.Module, tokenizer, reference_ids: torch.Tensor, output_dir: str,
                          words: Sequence[str] = ("king", "thee", "love", "Romeo"), max_tokens: int = 2000,
                          methods: Sequence[str] = ("umap", "tsne"), n_labels: int = 40, seed: int = 0
                          ) -> EmbeddingReport:
    """Maps of the token embeddings, neighbours of ``words`` and the position similarity matrix.

    ``reference_ids`` is a tokenised reference text: token frequencies come from it ("frequent", "rare", and
    which tokens are labelled on the maps).
    """
    embeddings = model.get_input_embeddings().weight.detach().float().cpu()  # (V, C)
    vocab = embeddings.shape[0]
    texts = token_texts(tokenizer, vocab)
    counts = token_counts(reference_ids, vocab)
    categories = categorise(texts, counts)
    chosen = select_tokens(counts, max_tokens, seed)
    vectors = embeddings[chosen].numpy()
    most_frequent = [i for i in np.argsort(-counts[chosen], kind="stable")[:n_labels] if counts[chosen][i] > 0]
    labels = {int(row): display_token(texts[chosen[row]]) for row in most_frequent}
    paths = []
    for method in methods:
        coords = project(vectors, method, seed)
        paths.append(plot_projection(
            coords, [categories[i] for i in chosen], labels, os.path.join(output_dir, f"embeddings_{method}.png"),
            title=f"Token embeddings, {method.upper()} (cosine), {len(chosen)} of {vocab} tokens; "
                  f"the {len(labels)} most frequent labelled"))
    neighbours = nearest_neighbours(embeddings, tokenizer, words)
    neighbours_file = write_text(os.path.join(output_dir, "embeddings_neighbours.md"), neighbours_markdown(neighbours))
    paths.append(str(neighbours_file))
    table, kind = position_embedding_table(model)
    if table is not None:
        paths.append(plot_position_similarity(position_similarity(table), kind,
                                              os.path.join(output_dir, "position_similarity.png")))
        note = f"{kind} position embeddings, {table.shape[0]} positions"
    else:
        note = kind
    return EmbeddingReport(paths=paths, neighbours=neighbours,
                           category_counts=dict(collections.Counter(categories[i] for i in chosen)),
                           position_note=note)
