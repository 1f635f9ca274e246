"""Length extrapolation: a model trained at context ``T`` scored at ``T``, ``2T``, ``4T`` ... on held-out text.

Scoring is the project's sliding-window scorer (:func:`mygpt.scoring.score_texts`) with disjoint windows of
``m * T`` tokens, so every window starts from nothing and the loss by position inside a window shows where the
model holds and where it breaks. To run a model past its training context it is loaded with ``n_positions`` set
to the longer window: rotary and ALiBi positions are computed for any position, and the sinusoidal table is a
formula rebuilt at load time, so they can be *run* there (whether they still *work* is the question). A learned
position table has no rows past ``n_positions``: those contexts are recorded as not applicable, with the reason.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger(__name__)

DEFAULT_MULTIPLIERS = (1, 2, 4)
POSITION_BINS = 16  # the report's table groups positions into this many equal bins


def can_extrapolate(config: Any) -> tuple[bool, str]:
    """Whether a model of ``config`` can be run past ``n_positions``, and why not."""
    if getattr(config, "model_type", None) != "mygpt":
        return False, f"{config.model_type} has a learned position table of n_positions rows"
    if config.position_embedding == "learned":
        return False, (f"learned positions: the table has n_positions={config.n_positions} rows, there is no "
                       "embedding for later positions")
    return True, ""


def bits_per_byte_by_position(score: dict[str, Any]) -> list[float]:
    """Mean bits per byte of the predictions made with ``p`` tokens of context, for each ``p`` of the curve.

    Per-position losses are per token; they are put on the byte scale with the split's bytes per token, so the
    curve's mean level matches the headline bits per byte.
    """
    bytes_per_token = score["n_bytes"] / score["n_tokens"]
    return [nats / math.log(2) / bytes_per_token for nats in score["loss_by_position"]["mean_nats"]]


def binned(values: Sequence[float], positions: Sequence[int], bins: int = POSITION_BINS) -> list[dict[str, Any]]:
    """``values`` averaged over ``bins`` equal ranges of ``positions``: ``{first, last, mean}`` each."""
    if not values:
        return []
    top = max(positions) + 1
    width = max(1, math.ceil(top / bins))
    out = []
    for start in range(0, top, width):
        chunk = [v for p, v in zip(positions, values) if start <= p < start + width]
        if chunk:
            out.append({"first": start, "last": min(start + width, top) - 1, "mean": sum(chunk) / len(chunk)})
    return out


def evaluate_run(run_dir: str | Path, multipliers: Sequence[int] = DEFAULT_MULTIPLIERS, *, split: str = "validation",
                 max_chars: int = 100_000) -> dict[str, Any]:
    """Score the model of a finished run at each ``multiplier * T`` context; ``T`` is its training block size.

    Returns ``{"context": T, "split": ..., "chars": ..., "contexts": [{"multiplier", "window", "applicable",
    "reason" | "bits_per_byte", "bits_per_byte_by_position", "positions"}...]}``. Never raises for a context the
    model cannot run: that entry is ``applicable: False`` with the reason.
    """
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from modeling_mygpt import MyGPTForCausalLM
    from mygpt.data import heldout_texts
    from mygpt.scoring import score_texts

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "run_summary.json").read_text())
    context = int(summary["training"]["block_size"])
    texts, budget = [], max_chars
    for text in heldout_texts(run_dir, split):
        if budget <= 0:
            break
        texts.append(text[:budget])
        budget -= len(texts[-1])
    config = AutoConfig.from_pretrained(run_dir, trust_remote_code=True)
    able, reason = can_extrapolate(config)
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    entries = []
    for multiplier in multipliers:
        window = int(multiplier * context)
        if window > config.n_positions and not able:
            entries.append({"multiplier": multiplier, "window": window, "applicable": False, "reason": reason})
            continue
        if config.model_type == "mygpt":
            model = MyGPTForCausalLM.from_pretrained(run_dir, n_positions=max(window, config.n_positions))
        else:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(run_dir)
        model.eval()
        with torch.inference_mode():
            score = score_texts(model, tokenizer, texts, window=window, stride=window - 1).to_dict()
        entries.append({"multiplier": multiplier, "window": window, "applicable": True,
                        "bits_per_byte": score["bits_per_byte"], "nats_per_token": score["nats_per_token"],
                        "positions": score["loss_by_position"]["context_length"],
                        "bits_per_byte_by_position": bits_per_byte_by_position(score)})
    position = getattr(config, "position_embedding", "learned")
    return {"context": context, "position_embedding": position, "split": split,
            "chars": sum(len(t) for t in texts), "contexts": entries}


def extrapolation_findings(evaluations: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per run: bits per byte at each context, and the ratio to its own training context (1.0 = holds)."""
    table = []
    for name, result in evaluations.items():
        base = next((c["bits_per_byte"] for c in result["contexts"] if c["multiplier"] == 1 and c["applicable"]),
                    None)
        for entry in result["contexts"]:
            row = {"run": name, "position_embedding": result["position_embedding"], "multiplier": entry["multiplier"],
                   "window": entry["window"], "applicable": entry["applicable"]}
            if entry["applicable"]:
                row["bits_per_byte"] = entry["bits_per_byte"]
                row["ratio_to_training_context"] = entry["bits_per_byte"] / base if base else None
                positions, values = entry["positions"], entry["bits_per_byte_by_position"]
                row["by_position"] = binned(values, positions)
            else:
                row["reason"] = entry["reason"]
            table.append(row)
    return {"table": table, "method": "disjoint windows of multiplier x T tokens over the held-out split; loss by "
                                      "position averaged over every window"}
