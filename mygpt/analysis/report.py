"""Run every analysis on one model and write a folder a learner can browse: PNG figures, the offline attention
viewer, CSV/Markdown tables, ``summary.json`` with the numbers and ``README.md`` that ties them together.

The folder is built aside and published whole (``mygpt.files.staged_folder``), so a failed run never leaves a
half-written report where a finished one is expected (and an earlier report is only replaced by a complete one).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from mygpt.files import staged_folder, write_json, write_text
from mygpt.loading import context_length
from mygpt.progress import progress

from .ablation import head_ablation, save_ablation_report
from .attention import TextAttention, attention_for_text, save_attention_figures
from .core import Encoded, check_layers, encode, encode_corpus
from .embeddings import save_embedding_report
from .heads import HEAD_TYPE_SENTENCES, SCORE_NAMES, head_scores, save_head_report
from .lens import logit_lens, save_lens_report
from .probes import MIN_PROBE_TOKENS, PROPERTY_TITLES, run_probes, save_probe_report
from .viewer import write_attention_html

logger = logging.getLogger(__name__)

ANALYSES = ("attention", "viewer", "heads", "ablation", "embeddings", "lens", "probes")
DEFAULT_WORDS = ("king", "thee", "love", "Romeo")


def _check_analyses(analyses: Sequence[str]) -> list[str]:
    unknown = [a for a in analyses if a not in ANALYSES]
    if unknown or not analyses:
        raise ValueError(f"unknown analyses {unknown}: choose from {', '.join(ANALYSES)}")
    return [a for a in ANALYSES if a in analyses]


def _relative(paths: list[str], folder: str) -> list[str]:
    return [os.path.relpath(p, folder) for p in paths]


def run_analyses(model: torch.nn.Module, tokenizer, text: str, output_dir: str, eval_text: str | None = None,
                 analyses: Sequence[str] = ANALYSES, layers: Sequence[int] | None = None,
                 words: Sequence[str] = DEFAULT_WORDS, embedding_tokens: int = 2000,
                 projections: Sequence[str] = ("umap", "tsne"), eval_max_tokens: int = 8192, seed: int = 0,
                 model_name: str = "model", eval_source: str = "evaluation text") -> dict:
    """Analyse ``model`` on ``text`` (attention, heads, lens; at most the model's context) and ``eval_text``
    (ablation losses, probes and token frequencies; any length, cut to ``eval_max_tokens``; ``text`` when None).
    ``eval_source`` says in the report where ``eval_text`` came from.

    Everything is checked before any work starts: an empty or too long text, an unknown analysis or a layer
    the model does not have raises ``ValueError``. Returns the summary also written to ``summary.json``.
    """
    analyses = _check_analyses(analyses)
    encoded = encode(tokenizer, text, max_length=context_length(model))
    layers = check_layers(layers, model.config.n_layer)
    bad_projections = [p for p in projections if p not in ("umap", "tsne")]
    if bad_projections:
        raise ValueError(f"unknown projections {bad_projections}: choose from umap, tsne")
    if eval_max_tokens < 2:
        raise ValueError(f"eval_max_tokens must be at least 2, got {eval_max_tokens}")
    if eval_text is None:
        eval_text, eval_source = text, "the text itself"
    reference = _encode_prefix(tokenizer, eval_text, eval_max_tokens)
    if "heads" in analyses and len(reference) < 4:
        raise ValueError(f"head scores need at least 4 tokens of evaluation text and {eval_source} has "
                         f"{len(reference)}: pass a longer evaluation text")
    if "probes" in analyses and len(reference) < MIN_PROBE_TOKENS:
        raise ValueError(f"probes need at least {MIN_PROBE_TOKENS} tokens of evaluation text and {eval_source} "
                         f"has {len(reference)}: pass a longer evaluation text, or leave probes out of the analyses")

    summary: dict = {"model": model_name, "n_layer": model.config.n_layer, "n_head": model.config.n_head,
                     "text_tokens": len(encoded), "eval_tokens": len(reference),
                     "eval_source": eval_source, "files": {}}
    job = _Job(model, tokenizer, text, reference, layers, words, embedding_tokens, projections, seed, model_name)
    with staged_folder(output_dir) as folder:
        job.folder = str(folder)
        for name in progress(analyses, desc="analyses", unit="analysis"):
            with _stage(name):
                files, numbers = STAGES[name](job)
            summary["files"][name] = _relative(files, job.folder)
            if numbers is not None:
                summary[name] = numbers
        write_json(folder / "summary.json", summary)  # NaN (a score with nothing to measure) becomes null
        write_text(folder / "README.md", readme(summary))
    return summary


@dataclass
class _Job:
    """What every analysis stage reads."""

    model: torch.nn.Module
    tokenizer: object
    text: str
    reference: Encoded  # the evaluation text
    layers: list[int]
    words: Sequence[str]
    embedding_tokens: int
    projections: Sequence[str]
    seed: int
    model_name: str
    folder: str = ""
    _attention: TextAttention | None = None

    def attention(self) -> TextAttention:
        """The text's attention weights, computed once for the figures and the viewer."""
        if self._attention is None:
            self._attention = attention_for_text(self.model, self.tokenizer, self.text)
        return self._attention


def _attention_figures(job: _Job) -> tuple[list[str], None]:
    return save_attention_figures(job.attention(), job.folder, job.layers), None


def _viewer(job: _Job) -> tuple[list[str], None]:
    found = job.attention()
    path = write_attention_html(found.attentions, found.tokens, os.path.join(job.folder, "attention.html"),
                                title=f"Attention of {job.model_name}")
    return [path], None


def _heads(job: _Job) -> tuple[list[str], dict]:
    # The evaluation text, not the few lines on show: thousands of tokens give scores that describe the model.
    scores = head_scores(job.model, job.tokenizer, job.reference.text, seed=job.seed)
    return save_head_report(scores, job.folder), {
        "table": scores.table(), "repeat_loss_first": scores.repeat_loss_first,
        "repeat_loss_second": scores.repeat_loss_second, "threshold": scores.threshold,
        "text_tokens": scores.text_tokens, "repeat_length": scores.repeat_length}


def _ablation(job: _Job) -> tuple[list[str], dict]:
    result = head_ablation(job.model, job.reference.input_ids)
    return save_ablation_report(result, job.folder), {
        "base_loss": result.base_loss, "delta": result.delta.tolist(), "ranking": result.ranking()}


def _embeddings(job: _Job) -> tuple[list[str], dict]:
    report = save_embedding_report(job.model, job.tokenizer, job.reference.input_ids, job.folder, words=job.words,
                                   max_tokens=job.embedding_tokens, methods=job.projections, seed=job.seed)
    return report.paths, {"neighbours": report.neighbours, "categories": report.category_counts,
                          "positions": report.position_note}


def _lens(job: _Job) -> tuple[list[str], dict]:
    lens = logit_lens(job.model, job.tokenizer, job.text)
    return save_lens_report(lens, job.tokenizer, job.folder), {
        "mean_next_token_prob": np.nanmean(lens.next_token_prob, axis=1).tolist(), "layers": lens.layer_names}


def _probes(job: _Job) -> tuple[list[str], dict]:
    probes = run_probes(job.model, job.reference, seed=job.seed)
    return save_probe_report(probes, job.folder), {
        "n_train": probes.n_train, "n_test": probes.n_test, "skipped": probes.skipped,
        "positives": probes.positives, "majority": probes.majority,
        **{key: {n: v.tolist() for n, v in getattr(probes, key).items()}
           for key in ("accuracy", "balanced_accuracy", "random_accuracy", "random_balanced_accuracy")},
    }


STAGES = {"attention": _attention_figures, "viewer": _viewer, "heads": _heads, "ablation": _ablation,
          "embeddings": _embeddings, "lens": _lens, "probes": _probes}


def _encode_prefix(tokenizer, text: str, max_tokens: int):
    """The first ``max_tokens`` tokens of ``text``, without tokenising all of a long held-out split: try a
    prefix of 8 characters per token, double it until it is long enough, then cut at a token boundary."""
    chars = 8 * max_tokens
    while True:
        encoded = encode_corpus(tokenizer, text[:chars])
        if len(encoded) >= max_tokens or chars >= len(text):
            break
        chars *= 2
    if len(encoded) > max_tokens:
        encoded = encode_corpus(tokenizer, encoded.text[: encoded.spans[max_tokens - 1][1]])
    return encoded


@contextlib.contextmanager
def _stage(name: str) -> Iterator[None]:
    """Log how long each analysis took: on a CPU some take minutes, and a learner should know which."""
    logger.info("%s ...", name)
    start = time.perf_counter()
    yield
    logger.info("%s done in %.1f s", name, time.perf_counter() - start)


def readme(summary: dict) -> str:
    """The index page of the report: every figure in reading order with what it shows."""
    files = summary["files"]
    lines = [f"# What {summary['model']} has learned", "",
             f"{summary['n_layer']} layers × {summary['n_head']} heads. The text has {summary['text_tokens']} "
             f"tokens; ablation, probes and token frequencies use {summary['eval_tokens']} tokens of "
             f"{summary['eval_source']}.", ""]
    if "attention" in files:
        lines += ["## Attention", "", "Rows are the tokens that read (queries), columns the tokens read (keys).", ""]
        lines += [f"![{f}]({f})" for f in files["attention"]] + [""]
    if "viewer" in files:
        lines += [f"Interactive view, works offline: [{files['viewer'][0]}]({files['viewer'][0]})", ""]
    if "heads" in summary:
        heads = summary["heads"]
        lines += ["## Head types", "", f"Previous-token, first-token and local-window scores over "
                  f"{heads['text_tokens']} tokens of {summary['eval_source']}. "
                  f"Random tokens shown twice: next-token loss {heads['repeat_loss_first']:.3f} "
                  f"on the first copy, {heads['repeat_loss_second']:.3f} on the repeat. "
                  "Table: [heads.md](heads.md).", ""]
        for name in SCORE_NAMES:
            best = max(heads["table"], key=lambda row: -1 if np.isnan(row[name]) else row[name])
            lines.append(f"- **{name}** (strongest: layer {best['layer']} head {best['head']}, "
                         f"{best[name]:.2f}): {HEAD_TYPE_SENTENCES[name]}")
        lines += [""] + [f"![heads_{n}](heads_{n}.png)" for n in SCORE_NAMES] + [""]
    if "ablation" in summary:
        top = summary["ablation"]["ranking"][:3]
        lines += ["## Which heads matter", "", f"Base loss {summary['ablation']['base_loss']:.3f}; zeroing one head "
                  "raises it most for " + ", ".join(f"L{l}H{h} (+{d:.3f})" for l, h, d in top) + ".", "",
                  "![ablation](ablation_delta_loss.png)", ""]
    if "embeddings" in summary:
        lines += ["## Embeddings", "", f"Positions: {summary['embeddings']['positions']}. "
                  "Nearest neighbours: [embeddings_neighbours.md](embeddings_neighbours.md).", ""]
        lines += [f"![{f}]({f})" for f in files["embeddings"] if f.endswith(".png")] + [""]
    if "lens" in summary:
        probs = ", ".join(f"{p:.3f}" for p in summary["lens"]["mean_next_token_prob"])
        lines += ["## Logit lens", "", f"Mean probability of the true next token, layer by layer: {probs}. "
                  "Table: [logit_lens.md](logit_lens.md).", "", "![logit lens](logit_lens.png)", ""]
    if "probes" in summary:
        probes = summary["probes"]
        lines += ["## Probes", ""]
        for name, acc in probes["accuracy"].items():
            lines.append(f"- {PROPERTY_TITLES[name]}: best layer accuracy {max(acc):.3f} (random model "
                         f"{max(probes['random_accuracy'][name]):.3f}, commoner class {probes['majority'][name]:.3f})")
        lines += [f"- {name}: not probed, {why}" for name, why in probes["skipped"].items()]
        if "probes.png" in " ".join(files["probes"]):
            lines += ["", "![probes](probes.png)"]
        lines.append("")
    return "\n".join(lines)
