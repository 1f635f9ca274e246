"""One row per run of a study (read from its ``run_summary.json``), and the findings of the study's kind."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Sequence

from mygpt.experiments.study import RunSpec, Study
from mygpt.files import write_json

logger = logging.getLogger(__name__)

# The columns of report.csv, in order (report.json has every field).
COLUMNS = ("name", "arm", "held_out", "non_embedding_parameters", "parameters", "tokens", "flops_per_token", "flops",
           "wall_seconds", "train_seconds", "steps", "train_loss", "validation_loss", "validation_bits_per_byte",
           "test_loss", "test_bits_per_byte", "tokens_per_second", "overrides")


def model_sizes(config: Any, context: int) -> dict[str, float]:
    """Parameters, non-embedding parameters and training FLOPs per token of a network of ``config``.

    The network is built on the meta device (no memory, no time). Non-embedding parameters leave out the token
    embedding and a learned position table (Kaplan et al. 2020's ``N``); the FLOPs per token are
    :func:`mygpt.training.training_flops_per_token` (``6 N' + 12 L C T``, ``N'`` the weights of every matrix
    multiplication, the LM head included), the count the run's MFU was measured with.
    """
    import torch
    from transformers import GPT2LMHeadModel

    from modeling_mygpt import MyGPTForCausalLM
    from mygpt.training import training_flops_per_token

    model_class = MyGPTForCausalLM if config.model_type == "mygpt" else GPT2LMHeadModel
    with torch.device("meta"):
        model = model_class(config)
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    wpe = getattr(model.transformer, "wpe", None)
    table = wpe.weight.numel() if isinstance(wpe, torch.nn.Embedding) else 0  # sinusoidal: a buffer, not a weight
    return {"parameters": total, "non_embedding_parameters": total - embedding - table,
            "flops_per_token": training_flops_per_token(model, context)}


def collect_record(run: RunSpec, summary: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """The report's row of one finished run: size, tokens, FLOPs, time and losses (None where not measured)."""
    from transformers import AutoConfig

    run_dir = output_dir / "runs" / run.name
    config = AutoConfig.from_pretrained(run_dir, trust_remote_code=True)
    results = summary["results"]
    sizes = model_sizes(config, summary["training"]["block_size"])
    tokens = results["tokens_seen"]

    def split(name: str, metric: str) -> float | None:
        return results.get(name, {}).get(metric)

    return {
        "name": run.name, "arm": run.arm, "held_out": run.held_out, "overrides": run.overrides,
        "run_dir": str(run_dir), "architecture": summary["architecture"],
        "position_embedding": getattr(config, "position_embedding", "learned"),
        "n_layer": config.num_hidden_layers, "n_embd": config.hidden_size, "n_head": config.num_attention_heads,
        "context": summary["training"]["block_size"], "seed": summary["training"]["seed"],
        **sizes, "tokens": tokens, "flops": sizes["flops_per_token"] * tokens,
        "wall_seconds": summary.get("wall_time_seconds"), "train_seconds": results.get("train_runtime_seconds"),
        "steps": results["steps"], "tokens_per_second": results.get("tokens_per_second"),
        "train_loss": results.get("final_train_loss"),
        "validation_loss": split("validation", "loss"),
        "validation_bits_per_byte": split("validation", "bits_per_byte"),
        "test_loss": split("test", "loss"), "test_bits_per_byte": split("test", "bits_per_byte"),
    }


def study_findings(study: Study, records: Sequence[dict[str, Any]], output_dir: Path) -> dict[str, Any]:
    """What the study's kind says about its runs (see each kind's module)."""
    options = study.analysis
    if study.kind == "scaling":
        from mygpt.experiments.runner import PREDICTION
        from mygpt.experiments.scaling import scaling_findings

        path = output_dir / PREDICTION
        prediction = json.loads(path.read_text()) if path.is_file() else None
        return scaling_findings(records, bootstrap=options.get("bootstrap", 200), seed=options.get("seed", 0),
                                compute_budget=options.get("compute_budget"), prediction=prediction)
    if study.kind == "ablation":
        from mygpt.experiments.ablation import ablation_findings

        return ablation_findings(records, options.get("reference_arm"), options.get("metric", "validation_loss"))
    if study.kind == "extrapolation":
        from mygpt.experiments.extrapolation import DEFAULT_MULTIPLIERS, evaluate_run, extrapolation_findings

        evaluations = {}
        settings = {"multipliers": list(options.get("multipliers", DEFAULT_MULTIPLIERS)),
                    "split": options.get("split", "validation"), "max_chars": options.get("max_chars", 100_000)}
        for record in records:
            path = output_dir / "evaluations" / f"{record['name']}.json"
            # Scored before (a resumed study) and still valid: the same finished run, the same settings.
            key = {**settings, "run_summary_sha256": hashlib.sha256(
                (Path(record["run_dir"]) / "run_summary.json").read_bytes()).hexdigest()}
            cached = json.loads(path.read_text()) if path.is_file() else None
            if cached is None or cached.get("key") != key:
                cached = {"key": key, **evaluate_run(record["run_dir"], settings["multipliers"],
                                                     split=settings["split"], max_chars=settings["max_chars"])}
                write_json(path, cached)
            evaluations[record["name"]] = cached
        return extrapolation_findings(evaluations)
    if study.kind == "induction" and study.data:
        from mygpt.experiments.synthetic import induction_findings

        return induction_findings(list(records), study.data)
    return {}
