"""Linear probes: can a logistic regression read a property of the text off a layer's hidden states?

The properties are labelled from the text itself, so any text works:

- ``speaker_line``: the token is inside a speaker's name line ("ROMEO:" or "Romeo." alone on a line after a
  blank line, as in tiny shakespeare and the Gutenberg plays);
- ``next_is_newline``: the token that follows starts with a newline;
- ``starts_word``: the token's first non-space character is a letter that begins a word.

Each probe is trained on the first part of the text and scored on the rest (a contiguous split, so the test
tokens are unseen text). The same probe on a randomly initialised model of the same shape says how much of the
accuracy comes from training rather than from the token identity that even random embeddings carry.
"""

from __future__ import annotations

import copy
import csv
import io
import logging
import os
import re
from dataclasses import dataclass

import numpy as np
import torch

from mygpt.files import write_text
from mygpt.loading import context_length
from mygpt.progress import progress

from .core import Encoded, forward, windows
from .plotting import plt, save_figure

logger = logging.getLogger(__name__)

PROPERTIES = ("speaker_line", "next_is_newline", "starts_word")
MIN_PROBE_TOKENS = 30  # 70 % to fit, 30 % to score: fewer gives no test tokens worth the name
PROPERTY_TITLES = {
    "speaker_line": "inside a speaker's name line",
    "next_is_newline": "the next token is a newline",
    "starts_word": "this token starts a word",
}
# Single capitalised words on their own line that are stage directions, not speakers.
_STAGE_WORDS = {"enter", "exit", "exeunt", "re-enter", "flourish", "alarum", "alarums", "scene", "act", "epilogue",
                "prologue", "finis", "sennet", "retreat", "manet", "manent", "dies", "dumb", "song", "music"}
_NAME_WORD = re.compile(r"^(?:[A-Z][A-Za-z'\-]*|of|the|and|de|la|le|du)$")


def speaker_line_spans(text: str) -> list[tuple[int, int]]:
    """Character ranges of the speaker-name lines in ``text``: a line of one to four capitalised words
    (small joining words like "of" allowed) ending in ':' or '.', at the start of the text or after a blank line,
    and followed by a non-blank line. Stage directions ("Exit.", "Enter Romeo.") are left out."""
    spans = []
    lines = text.split("\n")
    start = 0
    for i, line in enumerate(lines):
        stripped = line.strip()
        after_blank = i == 0 or not lines[i - 1].strip()
        before_text = i + 1 < len(lines) and lines[i + 1].strip() != ""
        if after_blank and before_text and 1 < len(stripped) <= 40 and stripped[-1] in ":.":
            words = stripped[:-1].split()
            if (1 <= len(words) <= 4 and all(_NAME_WORD.match(w) for w in words)
                    and words[0][:1].isupper() and words[0].lower() not in _STAGE_WORDS):
                offset = start + line.index(stripped)
                spans.append((offset, offset + len(stripped)))
        start += len(line) + 1
    return spans


def text_labels(encoded: Encoded) -> dict[str, np.ndarray]:
    """The three properties as a 0/1 array per property, one entry per token of ``encoded``."""
    text, spans = encoded.text, encoded.spans
    n = len(encoded)
    in_name = np.zeros(len(text) + 1, dtype=bool)
    for start, end in speaker_line_spans(text):
        in_name[start:end] = True
    speaker = np.array([in_name[s:e].any() for s, e in spans], dtype=np.int64)
    following = encoded.tokens[1:] + [""]
    next_newline = np.array([t.startswith("\n") for t in following], dtype=np.int64)
    starts_word = np.zeros(n, dtype=np.int64)
    for i, (s, e) in enumerate(spans):
        piece = text[s:e]
        first = s + (len(piece) - len(piece.lstrip()))  # the first non-space character of the token
        if first < e and text[first].isalpha():
            before = text[first - 1] if first > 0 else " "
            starts_word[i] = not (before.isalpha() or before in "'’-")
    return {"speaker_line": speaker, "next_is_newline": next_newline, "starts_word": starts_word}


@torch.no_grad()
def corpus_hidden_states(model: torch.nn.Module, input_ids: torch.Tensor, block_size: int | None = None
                         ) -> np.ndarray:
    """Hidden states of every layer for a long sequence (1, N), read in context-sized windows:
    (n_layer + 1, N, C) as float32."""
    block_size = block_size or context_length(model)
    parts = []
    for chunk in windows(input_ids, block_size):
        out = forward(model, chunk, attentions=False, hidden_states=True)
        parts.append(torch.stack([h[0] for h in out.hidden_states]).float().cpu())  # (L+1, t, C)
    return torch.cat(parts, dim=1).numpy()


@dataclass
class ProbeScores:
    """Test accuracy per layer for each property (trained model and random model) and the baselines."""

    accuracy: dict[str, np.ndarray]  # property -> (n_layer + 1,)
    balanced_accuracy: dict[str, np.ndarray]
    random_accuracy: dict[str, np.ndarray]
    random_balanced_accuracy: dict[str, np.ndarray]
    majority: dict[str, float]  # accuracy of always guessing the commoner class on the test part
    positives: dict[str, int]  # how many tokens have the property (train + test)
    n_train: int
    n_test: int
    skipped: dict[str, str]  # property -> why it could not be probed


def probe_accuracy(states: np.ndarray, labels: np.ndarray, n_train: int, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Fit a logistic regression on each layer's first ``n_train`` tokens and score it on the rest.
    states (n_layers, N, C), labels (N,) -> accuracy and balanced accuracy, each (n_layers,)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    accuracy, balanced = [], []
    for layer_states in states:
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
        probe.fit(layer_states[:n_train], labels[:n_train])
        predicted = probe.predict(layer_states[n_train:])
        accuracy.append(float((predicted == labels[n_train:]).mean()))
        balanced.append(float(balanced_accuracy_score(labels[n_train:], predicted)))
    return np.array(accuracy), np.array(balanced)


def random_model_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised model of the same class and configuration (the probes' control)."""
    with torch.random.fork_rng(devices=[]):  # a fixed seed here must not reset the caller's random state
        torch.manual_seed(seed)
        # A copy of the config: switching the control's attention backend must not switch the model's.
        control = type(model)(copy.deepcopy(model.config))
    return control.to(next(model.parameters()).device).eval()


def run_probes(model: torch.nn.Module, encoded: Encoded, train_fraction: float = 0.7, seed: int = 0,
               block_size: int | None = None) -> ProbeScores:
    """Probe every layer of ``model`` and of a random model of the same shape on ``encoded`` (a long text)."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be between 0 and 1, got {train_fraction}")
    n = len(encoded)
    n_train = int(n * train_fraction)
    if n < MIN_PROBE_TOKENS or n_train < 1 or n - n_train < 1:
        raise ValueError(f"the probe text has {n} tokens; probes need at least {MIN_PROBE_TOKENS} "
                         "(pass a longer evaluation text)")
    labels = text_labels(encoded)
    trained = corpus_hidden_states(model, encoded.input_ids, block_size)
    control = corpus_hidden_states(random_model_like(model, seed), encoded.input_ids, block_size)
    result = ProbeScores({}, {}, {}, {}, {}, {}, n_train, n - n_train, {})
    for name in progress(PROPERTIES, desc="probes", unit="property"):  # each: two probes per layer
        y = labels[name]
        result.positives[name] = int(y.sum())
        if len(set(y[:n_train])) < 2 or len(set(y[n_train:])) < 2:
            result.skipped[name] = (f"only one class in the {'training' if len(set(y[:n_train])) < 2 else 'test'} "
                                    f"part ({int(y.sum())} of {n} tokens have the property)")
            logger.warning("probe %s skipped: %s", name, result.skipped[name])
            continue
        result.accuracy[name], result.balanced_accuracy[name] = probe_accuracy(trained, y, n_train, seed)
        result.random_accuracy[name], result.random_balanced_accuracy[name] = probe_accuracy(control, y, n_train, seed)
        test = y[n_train:]
        result.majority[name] = float(max(test.mean(), 1 - test.mean()))
    return result


def save_probe_report(result: ProbeScores, output_dir: str) -> list[str]:
    """probes.png (accuracy per layer, trained vs random model, majority baseline) and probes.csv."""
    names = [n for n in PROPERTIES if n in result.accuracy]
    paths = []
    if names:
        fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False, layout="constrained")
        for ax, name in zip(axes[0], names):
            layers = np.arange(len(result.accuracy[name]))
            ax.plot(layers, result.accuracy[name], "o-", label="trained model")
            ax.plot(layers, result.random_accuracy[name], "s--", label="random model, same shape")
            ax.axhline(result.majority[name], color="grey", linestyle=":", label="always the commoner class")
            ax.set_title(f"{PROPERTY_TITLES[name]}\n({result.positives[name]} positive tokens)", fontsize=10)
            ax.set_xlabel("layer (0 = embeddings)")
            ax.set_ylabel("test accuracy")
            ax.set_xticks(layers)
            ax.set_ylim(min(0.5, ax.get_ylim()[0]), 1.0)
            ax.legend(fontsize=8)
        fig.suptitle(f"Linear probes per layer ({result.n_train} training tokens, {result.n_test} test tokens)")
        paths.append(save_figure(fig, os.path.join(output_dir, "probes.png")))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["property", "layer", "accuracy", "balanced_accuracy", "random_accuracy",
                     "random_balanced_accuracy", "majority_baseline"])
    for name in names:
        for layer in range(len(result.accuracy[name])):
            writer.writerow([name, layer, f"{result.accuracy[name][layer]:.4f}",
                             f"{result.balanced_accuracy[name][layer]:.4f}",
                             f"{result.random_accuracy[name][layer]:.4f}",
                             f"{result.random_balanced_accuracy[name][layer]:.4f}", f"{result.majority[name]:.4f}"])
    paths.append(str(write_text(os.path.join(output_dir, "probes.csv"), buffer.getvalue())))
    return paths
