"""The sampler report: which decoding strategy works best for a trained model?

For prompts cut from held-out text, every strategy runs over a grid of its knob (temperature 0.5 ... 1.5, top-k
k in {5, 20, 50, 200}, top-p p in {0.5, 0.8, 0.9, 0.95}, min-p, typical, and greedy with a repetition penalty).
Each setting continues every prompt once, from the same seed, and is measured on its continuations:

- diversity: distinct-1/2/3 (unique n-grams / all n-grams, pooled), self-BLEU (how much the continuations of
  *different* prompts resemble each other; lower = more diverse), repeated 4-gram rate (looping inside a text);
  words as ``mygpt.text_metrics.word_tokenize`` splits them;
- quality: mean log-likelihood per token of the continuations under the model itself (of its generated
  tokens, from the unfiltered distribution), and under a *judge* model when one is given (another causal LM,
  e.g. the GPT-2 twin of the run, or ``gpt2`` from the Hub when online; per judge token, continuation given
  the prompt).

The held-out continuation of each prompt is measured the same way: that row is the target (human text is
neither as repetitive as greedy decoding nor as incoherent as sampling at a high temperature).

Outputs in ``--output_dir``: ``sampler_report.json`` (all figures, all continuations), ``sampler_report.md``
(table, examples, findings) and ``sampler_report.png`` (quality against diversity, one curve per strategy).

    mygpt-sampler-report --model runs/cpu-quick --judge runs/cpu-quick-gpt2 --output_dir reports/samplers
    python -m mygpt.sampler_report --model runs/cpu-quick --prompt_file prompts.txt --grid small   # the same

This module is the report; its command line is ``mygpt.commands.sampler_report``.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from generation_mygpt import make_sampler
from mygpt.files import staged_folder, write_json, write_text
from mygpt.generation import check_fits, generate_continuations
from mygpt.loading import load_model_and_tokenizer
from mygpt.progress import progress
from mygpt.prompts import Prompt, pick_prompts, read_prompt_file
from mygpt.scoring import score_continuations
from mygpt.text_metrics import distinct_n, repeated_ngram_rate, self_bleu

logger = logging.getLogger(__name__)

# (curve, strategy, knob varied along the curve, values). A curve is one line of the plot.
FULL_GRID: list[tuple[str, str, str | None, list[Any]]] = [
    ("greedy", "greedy", None, [None]),
    ("temperature", "temperature", "temperature", [0.5, 0.7, 0.9, 1.0, 1.2, 1.5]),
    ("top_k", "top_k", "top_k", [5, 20, 50, 200]),
    ("top_p", "top_p", "top_p", [0.5, 0.8, 0.9, 0.95]),
    ("min_p", "min_p", "min_p", [0.3, 0.2, 0.1, 0.05, 0.02]),
    ("typical", "typical", "typical_p", [0.2, 0.5, 0.9, 0.95]),
    ("greedy + repetition penalty", "greedy", "repetition_penalty", [1.1, 1.2, 1.3, 1.5]),
]
SMALL_GRID: list[tuple[str, str, str | None, list[Any]]] = [
    ("greedy", "greedy", None, [None]),
    ("temperature", "temperature", "temperature", [0.7, 1.2]),
    ("top_k", "top_k", "top_k", [5, 50]),
    ("top_p", "top_p", "top_p", [0.5, 0.95]),
    ("min_p", "min_p", "min_p", [0.2, 0.05]),
    ("typical", "typical", "typical_p", [0.5, 0.95]),
    ("greedy + repetition penalty", "greedy", "repetition_penalty", [1.3]),
]
GRIDS = {"full": FULL_GRID, "small": SMALL_GRID}
REFERENCE = "held-out text"


@dataclass
class SamplerReportArguments:
    """Options of the sampler report (``mygpt-sampler-report``; flags, or a YAML/JSON file of them)."""

    model: str = field(metadata={"help": "The model to study: a folder (e.g. runs/cpu-quick) or a Hub id."})
    output_dir: str = field(default="reports/samplers", metadata={"help": "Where the JSON, markdown and PNG go."})
    run_dir: str | None = field(default=None, metadata={
        "help": "Finished training run whose held-out split gives the prompts (default: --model)."})
    split: str = field(default="test", metadata={"help": "Held-out split to cut prompts from.",
                                                  "choices": ["test", "validation"]})
    prompt_file: str | None = field(default=None, metadata={
        "help": "Prompts, one per non-empty line, instead of held-out text (then there is no reference row)."})
    num_prompts: int = field(default=24, metadata={"help": "Prompts cut from the held-out text."})
    prompt_tokens: int = field(default=32, metadata={"help": "Length of each held-out prompt, in model tokens."})
    max_new_tokens: int = field(default=128, metadata={"help": "Tokens generated per prompt and setting."})
    judge: str | None = field(default=None, metadata={
        "help": "A second causal LM scoring the continuations: a local folder, or a Hub id such as gpt2 (online)."})
    grid: str = field(default="full", metadata={"help": "Knob grid.", "choices": list(GRIDS)})
    seed: int = field(default=0, metadata={"help": "Seed for the prompt choice and for every setting's sampling."})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu, cuda, ..."})
    threads: int | None = field(default=None, metadata={
        "help": "torch CPU threads (default: torch's choice); on a busy shared machine 1 is often fastest."})

    def __post_init__(self) -> None:
        for name in ("num_prompts", "prompt_tokens", "max_new_tokens", "threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.prompt_file is None and self.num_prompts < 2:
            raise ValueError("--num_prompts must be >= 2: self-BLEU compares continuations of different prompts")


# ----------------------------------------------------------------------------------------------------------
# Generation and scoring


def grid_settings(grid: str) -> list[dict[str, Any]]:
    """The settings of a grid: ``{"curve", "strategy", "knob", "value", "knobs"}``, each checked by make_sampler."""
    settings = []
    for curve, strategy, knob, values in GRIDS[grid]:
        for value in values:
            knobs = {} if knob is None else {knob: value}
            make_sampler(strategy, **knobs)
            settings.append({"curve": curve, "strategy": strategy, "knob": knob, "value": value, "knobs": knobs})
    return settings


def text_rows(tokenizer: Any, prompts: Sequence[str], continuations: Sequence[str]) -> list[tuple[list[int], list[int]]]:
    """(context, target) ids of each continuation given its prompt, in another model's tokenizer.

    Prompt and continuation are tokenized separately, so every target token belongs to the continuation.
    """
    start = [tid for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id) if tid is not None][:1]
    rows = []
    for prompt, continuation in zip(prompts, continuations):
        context = tokenizer(prompt, add_special_tokens=False)["input_ids"] or start
        if not context:
            raise ValueError("the judge's tokenizer gives no token for a prompt and has no BOS/EOS to start from")
        rows.append((context, tokenizer(continuation, add_special_tokens=False)["input_ids"]))
    return rows


def text_metrics(texts: list[str]) -> dict[str, float]:
    """Diversity of a set of continuations (see the module docstring)."""
    return {
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "distinct_3": distinct_n(texts, 3),
        "self_bleu": self_bleu(texts, max_n=4) if len(texts) > 1 else math.nan,
        "repeated_4gram_rate": repeated_ngram_rate(texts, 4),
    }


def measure(model: Any, tokenizer: Any, judge: tuple[Any, Any] | None, prompts: list[Prompt],
            continuations: list[list[int]]) -> tuple[dict[str, float], list[str]]:
    """All metrics of one setting (or of the reference), and the continuation texts."""
    texts = tokenizer.batch_decode(continuations, skip_special_tokens=True)
    metrics = text_metrics(texts)
    nats, count = score_continuations(model, [(p.ids, c) for p, c in zip(prompts, continuations)])
    metrics["loglik_model"] = -nats / count if count else math.nan
    if judge is not None:
        nats, count = score_continuations(judge[0], text_rows(judge[1], [p.text for p in prompts], texts))
        metrics["loglik_judge"] = -nats / count if count else math.nan
    metrics["mean_new_tokens"] = sum(map(len, continuations)) / len(continuations)
    return metrics, texts


# ----------------------------------------------------------------------------------------------------------
# Findings, markdown and plot


def findings(report: dict[str, Any]) -> list[str]:
    """Plain sentences a reader can check against the table."""
    settings, reference = report["settings"], report["reference"]
    quality = "loglik_judge" if report["judge"] else "loglik_model"
    judge_name = "the judge" if report["judge"] else "the model itself"
    lines = []
    if reference is not None:
        def distance(m: dict[str, float]) -> float:
            # relative gaps to the held-out text in diversity, looping and quality, added up
            return (abs(m["distinct_2"] - reference["distinct_2"]) / max(reference["distinct_2"], 1e-9)
                    + abs(m["repeated_4gram_rate"] - reference["repeated_4gram_rate"])
                    / max(reference["repeated_4gram_rate"], 0.01)
                    + abs(m[quality] - reference[quality]) / max(abs(reference[quality]), 1e-9))

        ranked = sorted(settings, key=lambda s: distance(s["metrics"]))
        best = ", ".join(f"{label(s)} ({distance(s['metrics']):.2f})" for s in ranked[:3])
        lines.append(f"Closest to the held-out text (sum of relative gaps in distinct-2, repeated 4-gram rate and "
                     f"log-likelihood under {judge_name}; 0 = indistinguishable on these three): {best}.")
        loops = [label(s) for s in settings
                 if s["metrics"]["repeated_4gram_rate"] > 2 * reference["repeated_4gram_rate"] + 0.02]
        if loops:
            lines.append(f"Loop (repeated 4-gram rate more than twice the held-out text's "
                         f"{reference['repeated_4gram_rate']:.3f}): {', '.join(loops)}.")
    top = max(settings, key=lambda s: s["metrics"][quality])
    diverse = max(settings, key=lambda s: s["metrics"]["distinct_2"])
    lines.append(f"Highest log-likelihood under {judge_name}: {label(top)} ({top['metrics'][quality]:.3f} nats/token); "
                 f"most diverse (distinct-2): {label(diverse)} ({diverse['metrics']['distinct_2']:.3f}).")
    return lines


def label(setting: dict[str, Any]) -> str:
    if setting["knob"] is None:
        return setting["curve"]
    return f"{setting['curve']} {setting['knob']}={setting['value']}"


def _cell(text: str, limit: int = 110) -> str:
    text = text.replace("|", "\\|").replace("\n", " ⏎ ").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_markdown(report: dict[str, Any]) -> str:
    has_judge = report["judge"] is not None
    columns = ["curve", "knob", "distinct-1", "distinct-2", "distinct-3", "self-BLEU", "rep. 4-gram",
               "log-lik model"] + (["log-lik judge"] if has_judge else []) + ["new tokens", "example (prompt 1)"]
    args = report["arguments"]
    source = f"held-out {args['split']} split" if report["reference"] else f"from {args['prompt_file']}"
    setup = (f"{len(report['prompts'])} prompts ({source}), {args['max_new_tokens']} new tokens each, seed "
             f"{args['seed']}, one continuation per prompt and setting. Judge: {report['judge'] or 'none'}. "
             "Log-likelihoods are mean nats per token (higher = more likely); self-BLEU is between the "
             "continuations of different prompts (lower = more diverse). "
             f"Generated in {report['seconds']:.0f} s on {report['device']}.")
    lines = [
        f"# Sampler report: {report['model']}", "", setup, "",
        "![quality against diversity](sampler_report.png)", "",
        "## Findings", "", *[f"- {line}" for line in report["findings"]], "",
        "## All settings", "",
        "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
    ]

    def row(curve: str, knob: str, m: dict[str, float], example: str) -> str:
        cells = [curve, knob, *(f"{m[k]:.3f}" for k in ("distinct_1", "distinct_2", "distinct_3", "self_bleu",
                                                          "repeated_4gram_rate", "loglik_model"))]
        cells += [f"{m['loglik_judge']:.3f}"] if has_judge else []
        return "| " + " | ".join(cells + [f"{m['mean_new_tokens']:.0f}", _cell(example)]) + " |"

    if report["reference"] is not None:
        lines.append(row(f"**{REFERENCE}**", "", report["reference"], report["prompts"][0]["reference"]))
    for s in report["settings"]:
        lines.append(row(s["curve"], "" if s["knob"] is None else f"{s['knob']}={s['value']}", s["metrics"],
                         s["continuations"][0]))
    first = report["prompts"][0]
    lines += ["", "## One prompt under every setting", "", "Prompt:", "", "```text", first["text"], "```", ""]
    if first["reference"] is not None:
        lines += [f"{REFERENCE}:", "", "```text", first["reference"], "```", ""]
    for s in report["settings"]:
        lines += [f"{label(s)}:", "", "```text", s["continuations"][0], "```", ""]
    return "\n".join(lines)


def render_plot(report: dict[str, Any], path: Path) -> None:
    """Quality (log-likelihood) against diversity (distinct-2): one curve per strategy, the held-out text a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("loglik_model", "log-likelihood under the model (nats/token)")]
    if report["judge"] is not None:
        panels.append(("loglik_judge", f"log-likelihood under the judge {Path(report['judge']).name} (nats/token)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5.5), squeeze=False)
    curves: dict[str, list[dict[str, Any]]] = {}
    for s in report["settings"]:
        curves.setdefault(s["curve"], []).append(s)
    for ax, (key, title) in zip(axes[0], panels):
        for curve, points in curves.items():
            xs = [p["metrics"]["distinct_2"] for p in points]
            ys = [p["metrics"][key] for p in points]
            line, = ax.plot(xs, ys, marker="o", label=curve)
            for p, x, y in zip(points, xs, ys):
                if p["knob"] is not None:
                    ax.annotate(f"{p['value']}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                                color=line.get_color())
        if report["reference"] is not None:
            ax.plot(report["reference"]["distinct_2"], report["reference"][key], marker="*", markersize=16,
                    color="black", linestyle="none", label=REFERENCE)
        ax.set_xlabel("diversity: distinct-2 of the continuations")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Quality against diversity: {report['model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------
# Putting it together


def _prompts(args: SamplerReportArguments, tokenizer: Any) -> list[Prompt]:
    if args.prompt_file is not None:
        return [Prompt(line, ids=tokenizer(line, add_special_tokens=False)["input_ids"])
                for line in read_prompt_file(args.prompt_file)]
    from mygpt.data import heldout_texts

    run_dir = args.run_dir or args.model
    try:
        texts = heldout_texts(run_dir, args.split)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error}: prompts come from a finished training run's held-out text; pass "
                                "--run_dir RUN, or --prompt_file FILE") from None
    try:
        return pick_prompts(texts, args.num_prompts, length=args.prompt_tokens, reference_length=args.max_new_tokens,
                            tokenizer=tokenizer, seed=args.seed, strict=True)
    except ValueError as error:
        raise ValueError(f"{error} (--num_prompts, --prompt_tokens, --max_new_tokens)") from None


def build_report(args: SamplerReportArguments) -> dict[str, Any]:
    """Run every setting of the grid and measure it; returns the JSON-able report."""
    settings = grid_settings(args.grid)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model_and_tokenizer(args.model, device=args.device)
    judge = None
    if args.judge is not None:
        try:
            judge = load_model_and_tokenizer(args.judge, device=model.device)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"--judge: {error}") from None
    if args.prompt_file is None:  # before any prompt is cut: the held-out prompts are all this long
        check_fits(model, args.prompt_tokens, args.max_new_tokens, "--prompt_tokens")
    prompts = _prompts(args, tokenizer)
    check_fits(model, max(len(p.ids) for p in prompts), args.max_new_tokens, "the longest prompt")

    started = time.perf_counter()
    reference = None
    if all(p.reference_ids is not None for p in prompts):
        reference, _ = measure(model, tokenizer, judge, prompts, [p.reference_ids for p in prompts])
    for setting in progress(settings, desc="sampler grid", unit="setting"):
        logger.info("setting: %s", label(setting))
        continuations = generate_continuations(model, tokenizer, [p.ids for p in prompts],
                                               strategy=setting["strategy"], knobs=setting["knobs"],
                                               max_new_tokens=args.max_new_tokens, seed=args.seed,
                                               desc=label(setting))
        setting["metrics"], setting["continuations"] = measure(model, tokenizer, judge, prompts,
                                                               [samples[0] for samples in continuations])
    report = {
        "model": args.model,
        "judge": args.judge,
        "arguments": asdict(args),
        "device": str(model.device),
        "seconds": time.perf_counter() - started,
        "metric_definitions": {
            "distinct_n": "unique word n-grams / all word n-grams over the continuations (mygpt.text_metrics)",
            "self_bleu": "mean BLEU-4 of each continuation against the others (lower = more diverse)",
            "repeated_4gram_rate": "share of word 4-grams repeating an earlier 4-gram of the same continuation",
            "loglik_model": "mean log p(token) of the generated tokens under the unfiltered model, nats/token",
            "loglik_judge": "mean log p(token) of the continuation text given the prompt under the judge, "
                            "nats per judge token",
        },
        "prompts": [{"text": p.text, "reference": p.reference} for p in prompts],
        "reference": reference,
        "settings": settings,
    }
    report["findings"] = findings(report)
    return report


REPORT_FILES = ("sampler_report.png", "sampler_report.md", "sampler_report.json")  # the JSON last: "finished"


def write_report(report: dict[str, Any], output_dir: str | os.PathLike) -> list[Path]:
    """Write PNG, markdown and JSON into ``output_dir``: built aside and moved in only when all three are written
    (the JSON last), so no half-written report is left. Other files there are left alone."""
    out = Path(output_dir)
    with staged_folder(out, replace=False, last="sampler_report.json") as staging:
        render_plot(report, staging / "sampler_report.png")
        write_text(staging / "sampler_report.md", render_markdown(report))
        write_json(staging / "sampler_report.json", report, indent=1)
    return [out / name for name in REPORT_FILES]


def main(argv: list[str] | None = None) -> int:
    """``python -m mygpt.sampler_report``: the command ``mygpt-sampler-report`` (``mygpt.commands.sampler_report``)."""
    from mygpt.commands.sampler_report import main as command_main  # the command, only when run as one

    return command_main(argv)


if __name__ == "__main__":
    sys.exit(main())
