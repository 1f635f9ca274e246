"""Write a model comparison to disk: ``report.json``, ``report.md`` and PNG plots.

Everything here reads one plain dictionary, the *results* that :func:`mygpt.evaluation.compare_models` builds
(documented in :func:`write_report`), so the report can be re-rendered from a saved ``report.json`` without
re-running a model. Files are written into a staging folder first and moved into place at the end,
``report.json`` last (``mygpt.files.staged_folder``): a folder is never left holding a half-written report that
looks finished.
"""

from __future__ import annotations

import html
import logging
import math
import os
from pathlib import Path
from typing import Any

from mygpt.files import staged_folder, write_json, write_text

logger = logging.getLogger(__name__)

__all__ = ["REPORT_FILES", "write_report", "render_markdown", "plot_bits_per_byte", "plot_loss_by_position"]

REPORT_FILES = ("report.md", "bits_per_byte.png", "loss_by_position.png", "report.json")  # json last: "finished"


def write_report(results: dict[str, Any], output_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``report.json``, ``report.md``, ``bits_per_byte.png`` and ``loss_by_position.png`` into ``output_dir``.

    ``results`` holds (see :func:`mygpt.evaluation.compare_models`): ``command``, ``created``, ``environment``,
    ``wall_time_seconds``, ``settings`` (window, stride, generation knobs), ``data`` (source, documents, titles,
    chars, bytes, sha256), ``models`` (one dict each: ``name``, ``description`` with parameters, ``training``
    facts, ``scores`` as :meth:`mygpt.scoring.TextScore.to_dict`, ``generation`` with ``metrics`` and
    ``samples``, ``timing``), ``reference`` (the held-out continuations' diversity figures, or None),
    ``prompts``, ``skipped`` (``{"name", "reason"}``) and ``warnings``. Other files already in ``output_dir``
    are left alone.

    Returns the paths written, by file name.
    """
    out = Path(output_dir)
    with staged_folder(out, replace=False, last="report.json") as staging:
        plot_bits_per_byte(results, staging / "bits_per_byte.png")
        plot_loss_by_position(results, staging / "loss_by_position.png")
        write_text(staging / "report.md", render_markdown(results))
        write_json(staging / "report.json", results)  # NaN (no figure) becomes null
    logger.info("report written to %s", out)
    return {name: out / name for name in REPORT_FILES}


# --------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    return plt


def plot_bits_per_byte(results: dict[str, Any], path: str | os.PathLike) -> None:
    """Bar chart of bits per byte per model (lower is better), each bar labelled with its value."""
    plt = _pyplot()
    models = results["models"]
    names = [m["name"] for m in models]
    values = [m["scores"]["bits_per_byte"] for m in models]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(names) + 2), 3.6))
    bars = ax.bar(range(len(names)), values, color=[f"C{i}" for i in range(len(names))])
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=2)
    crowded = len(names) > 3
    ax.set_xticks(range(len(names)), names, rotation=15 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylabel("bits per byte (lower is better)")
    ax.set_title(f"Bits per byte on {results['data']['description']}", fontsize=10)
    ax.set_ylim(0, max(values) * 1.18)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _log_bins(positions: list[int], nats: list[float], counts: list[int], n_bins: int = 24):
    """Average the curve over bins evenly spaced in log(position), weighting by the number of predictions.

    Neighbouring positions hold different tokens of the same windows, so the raw curve is noisy; log bins
    keep every position of the short contexts and average more of the long ones, matching the log x axis.
    Returns ``(bin centres, mean nats)``.
    """
    top = max(positions)
    edges = sorted({round(top ** (i / n_bins)) for i in range(n_bins + 1)} | {1, top + 1})
    centres, means = [], []
    by_position = {p: (n, c) for p, n, c in zip(positions, nats, counts)}
    for lo, hi in zip(edges, edges[1:]):
        inside = [by_position[p] for p in range(lo, hi) if p in by_position]
        weight = sum(c for _, c in inside)
        if weight:
            centres.append(math.sqrt(lo * (hi - 1)))
            means.append(sum(n * c for n, c in inside) / weight)
    return centres, means


def plot_loss_by_position(results: dict[str, Any], path: str | os.PathLike) -> None:
    """Loss against context position, two panels.

    Left: mean nats per token against the number of tokens of context (each model in its own tokens). Right:
    the same normalised to be comparable across tokenizers: nats / (bytes per token * ln 2) ~ bits per byte,
    against context measured in characters (position * chars per token). Positions are averaged in log-spaced
    bins (see :func:`_log_bins`); ``report.json`` keeps every position.
    """
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for i, model in enumerate(results["models"]):
        scores = model["scores"]
        curve = scores["loss_by_position"]
        if not curve["context_length"]:
            continue
        centres, means = _log_bins(curve["context_length"], curve["mean_nats"], curve["predictions"])
        bytes_per_token = scores["n_bytes"] / scores["n_tokens"]
        left.plot(centres, means, color=f"C{i}", label=model["name"], lw=1.4, marker=".", ms=3)
        right.plot([p * scores["chars_per_token"] for p in centres],
                   [n / (bytes_per_token * math.log(2)) for n in means], color=f"C{i}", label=model["name"], lw=1.4,
                   marker=".", ms=3)
    left.set_xlabel("context length (tokens of the model's own tokenizer)")
    left.set_ylabel("mean loss (nats per token)")
    left.set_title("Loss by position in the context window", fontsize=10)
    right.set_xlabel("context length (characters, ~ position x chars/token)")
    right.set_ylabel("~ bits per byte (nats / bytes-per-token / ln 2)")
    right.set_title("Normalised for the tokenizer", fontsize=10)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    """A string made safe inside a markdown table cell: HTML-escaped, pipes escaped, newlines as <br>."""
    return html.escape(text, quote=False).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _count(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _curve_summary(scores: dict[str, Any]) -> tuple[float | None, float | None]:
    """Mean loss over the first and the last tenth of the context positions (nats per token)."""
    nats = scores["loss_by_position"]["mean_nats"]
    counts = scores["loss_by_position"]["predictions"]
    if len(nats) < 10:
        return None, None
    tenth = len(nats) // 10

    def mean(lo: int, hi: int) -> float:
        return sum(n * c for n, c in zip(nats[lo:hi], counts[lo:hi])) / sum(counts[lo:hi])

    return mean(0, tenth), mean(len(nats) - tenth, len(nats))


def render_markdown(results: dict[str, Any]) -> str:
    """The human-readable report: framing, tables, plots, generations side by side, skipped models."""
    models = results["models"]
    data = results["data"]
    best = min(models, key=lambda m: m["scores"]["bits_per_byte"])
    lines = [f"# Language model comparison: {', '.join(m['name'] for m in models)}", ""]
    lines += [
        f"All models read the same text, **{data['description']}** ({data['documents']} document(s), "
        f"{data['characters']:,} characters, {data['bytes']:,} UTF-8 bytes), each with its own tokenizer. "
        f"**Bits per byte** is the headline: it divides what a model spent on the text by the text's size, so it "
        f"does not depend on how the text was cut into tokens. Lowest here: **{best['name']}, "
        f"{best['scores']['bits_per_byte']:.4f} bits/byte**.",
        "",
    ]
    for warning in results.get("warnings", []):
        lines += [f"> **Warning:** {warning}", ""]

    lines += ["## How to read this", ""]
    lines += _framing(results)
    lines += [""]

    lines += ["## Models", ""]
    rows = []
    for m in models:
        d, t = m["description"], m["training"]
        rows.append([
            f"`{m['name']}`", d["class"], _count(d["parameters"]), _count(d["non_embedding_parameters"]),
            f"{d['tokenizer_vocab_size']:,}", str(d["context_length"]),
            _cell(t.get("data") or "unknown"), _count(t.get("tokens_seen")),
        ])
    lines += _table(["model", "class", "parameters", "non-embedding", "vocabulary", "context", "trained on",
                     "tokens seen"], rows)
    lines += [""]

    lines += ["## Information rates on the held-out text", ""]
    rows = []
    for m in models:
        s, timing = m["scores"], m["timing"]
        own = m["training"].get("reported_test_bits_per_byte")
        rows.append([
            f"`{m['name']}`", f"**{s['bits_per_byte']:.4f}**", f"{s['bits_per_char']:.4f}", f"{s['n_tokens']:,}",
            f"{s['chars_per_token']:.3f}", f"{s['perplexity']:.2f}", f"{s['window']} / {s['stride']}",
            f"{own:.4f}" if own is not None else "–", f"{timing['score_seconds']:.1f}",
        ])
    lines += _table(["model", "bits/byte ↓", "bits/char", "tokens", "chars/token", "perplexity per own token",
                     "window / stride", "run's own test bits/byte †", "scoring time (s)"], rows)
    lines += [
        "",
        "Per-token perplexity is only comparable between models that share a tokenizer: a tokenizer with longer "
        "tokens (more chars/token) has fewer, harder-to-predict tokens and so a higher perplexity for the same "
        "text. Each text was read with a sliding window (window / stride above, as in Hugging Face's perplexity "
        "guide), every token predicted exactly once, starting from the tokenizer's start-of-text token so the "
        "first token counts too.",
        "",
        "† Computed by `train_hf.py` at the end of training, on that run's whole test split, with non-overlapping "
        "blocks of its training context (each token sees less context on average, so it is a little higher). It "
        "checks this report only when the report reads the same split in full"
        + (" — this one does not (see the text above)." if data.get("source") != "run_split" or data.get("max_chars")
           else "."),
        "",
        "![bits per byte](bits_per_byte.png)",
        "",
        "## Loss by position in the context window",
        "",
        "Mean loss of the predictions made with *p* tokens of context, over every window; a model that uses "
        "longer context well keeps falling to the right. Left in each model's own tokens; right normalised to "
        "about bits per byte against characters of context.",
        "",
        "![loss by context position](loss_by_position.png)",
        "",
    ]
    rows = []
    for m in models:
        early, late = _curve_summary(m["scores"])
        if early is not None:
            rows.append([f"`{m['name']}`", f"{early:.3f}", f"{late:.3f}", f"{early - late:+.3f}"])
    if rows:
        lines += _table(["model", "loss, first tenth of positions", "loss, last tenth", "gain from context"], rows)
        lines += [""]

    lines += _generation_section(results)

    if results.get("skipped"):
        lines += ["## Models that could not be evaluated", ""]
        lines += [f"- `{s['name']}`: {s['reason']}" for s in results["skipped"]]
        lines += [""]

    env = results["environment"]
    lines += [
        "## Reproduce",
        "",
        f"```\n{results['command']}\n```",
        "",
        f"Wall time {results['wall_time_seconds']:.1f} s on {env['device']} ({env['cpu_threads']} CPU threads), "
        f"torch {env['torch']}, transformers {env['transformers']}; created {results['created']}. Every figure "
        "is in `report.json`.",
        "",
    ]
    return "\n".join(lines)


def _framing(results: dict[str, Any]) -> list[str]:
    """Bullet points that say plainly what differs between the models, from the facts in ``results``."""
    models = results["models"]
    lines = []
    sizes = ", ".join(f"`{m['name']}` {_count(m['description']['parameters'])}" for m in models)
    if len(models) == 1:
        lines.append(f"- One model: {sizes} parameters. The figures have meaning against other models scored the "
                     "same way on the same text (see report.json for the text's sha256).")
    elif len({m["description"]["parameters"] for m in models}) > 1:
        lines.append(f"- **Sizes differ**: {sizes} parameters. A bigger model is expected to do better; this is "
                     "not a comparison at equal size.")
    else:
        lines.append(f"- Sizes are equal: {sizes} parameters.")
    seen = []
    for m in models:
        t = m["training"]
        what = t.get("data") or "unknown data (no run_summary.json beside it: not a finished run of this project)"
        tokens = f"{_count(t['tokens_seen'])} tokens" if t.get("tokens_seen") else "an unknown number of tokens"
        seen.append(f"`{m['name']}` on {what}, {tokens}")
    facts = {(m["training"].get("data"), m["training"].get("tokens_seen")) for m in models}
    if len(models) > 1 and (len(facts) > 1 or None in {f[0] for f in facts}):
        lines.append("- **Training data and tokens seen differ** (or are unknown): " + "; ".join(seen) + ". A model "
                     "trained on the same kind of text as the evaluation text has an advantage that says nothing "
                     "about its architecture.")
    else:
        lines.append("- Training: " + "; ".join(seen) + ".")
    digests = {m["description"].get("tokenizer_digest") for m in models}
    if len(models) > 1 and len(digests) == 1 and None not in digests:
        lines.append("- The models share one tokenizer (same vocabulary, merges and special tokens): per-token "
                     "perplexity is comparable between them too, and agrees in ranking with bits per byte.")
    elif len(models) > 1:
        lines.append("- **Tokenizers differ** (or cannot be compared): compare bits per byte, not per-token "
                     "perplexity.")
    windows = {m["scores"]["window"] for m in models}
    if len(windows) > 1:
        lines.append(f"- **Context windows differ** ({', '.join(str(w) for w in sorted(windows))} tokens): a longer "
                     "window gives each prediction more to go on.")
    lines.append("- Generations are random samples: with "
                 f"{results['settings']['generation'].get('num_generations', 0)} generations per model the "
                 "diversity figures are rough, and they mean little without the bits per byte beside them (random "
                 "text is very diverse).")
    return lines


def _generation_section(results: dict[str, Any]) -> list[str]:
    models = results["models"]
    gen = results["settings"]["generation"]
    if not results.get("prompts"):
        return ["## Generations", "", "No prompts: generation was skipped.", ""]
    lines = [
        "## Generations from shared prompts",
        "",
        f"{len(results['prompts'])} prompt(s) taken from the held-out text, {gen['samples_per_prompt']} sample(s) "
        f"each, sampling with temperature {gen['temperature']} and top-p {gen['top_p']} (no top-k), seed "
        f"{gen['seed']}; each continuation is cut to {gen['generation_chars']} characters so all models are measured "
        "on the same amount of text. Figures are over the continuations only (not the prompts); words are split "
        "with `\\w+|[^\\w\\s]`. The held-out text row is the text that really follows each prompt: the "
        "figures a model would have if it wrote like the author.",
        "",
    ]
    rows = []
    entries = [(f"`{m['name']}`", m["generation"]["metrics"]) for m in models]
    if results.get("reference"):
        entries.append(("held-out text (reference)", results["reference"]))
    keys = list(dict.fromkeys(k for _, metrics in entries for k in metrics))  # self-BLEU needs 2+ texts
    for name, metrics in entries:
        rows.append([name] + [f"{metrics[k]:.3f}" if k in metrics else "–" for k in keys])
    lines += _table(["model"] + [k.replace("_", " ") for k in keys], rows)
    lines += ["", "Self-BLEU lower = more varied across samples; distinct-n higher = fewer repeated n-grams over all "
              "samples; repeated n-gram rate lower = less looping inside a sample.", ""]
    lines += ["### Side by side", ""]
    for p, prompt in enumerate(results["prompts"]):
        lines += [f"**Prompt {p + 1}:** {_cell(prompt['prompt'])}", ""]
        header = [f"`{m['name']}`" for m in models] + (["held-out text"] if prompt.get("reference") else [])
        cells = [_cell(m["generation"]["samples"][p]["continuations"][0]) for m in models]
        if prompt.get("reference"):
            cells.append(_cell(prompt["reference"]))
        lines += _table(header, [cells]) + [""]
    return lines
