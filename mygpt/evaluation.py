"""Compare causal language models on the same held-out text: bits per byte, perplexity, generations.

The library behind ``mygpt-evaluate`` (``evaluate_models.py``). Each model is a MyGPT run folder, a local folder of
any ``AutoModelForCausalLM`` (its own tokenizer beside it), or a Hub id (online). Every model reads the same text
with its own tokenizer:

* by default the held-out ``test`` split of the training corpus of the first model that is a ``train_hf.py``
  run (``run_summary.json``): for Shakespeare, whole plays no run has trained on;
* or ``data_files`` (local UTF-8 text) or ``dataset`` (a ``datasets`` dataset, ``dataset_split``).

Figures (computed with the project's offline ``evaluate`` modules in ``mygpt/metrics``): bits per byte (the
headline, independent of the tokenizer), bits per character, per-token perplexity with its token count and
chars per token, loss by position in the context window, and for generations from shared prompts self-BLEU,
distinct-n and the repeated n-gram rate. :func:`compare_models` returns every figure; ``mygpt.eval_report`` writes
``report.json``, ``report.md`` and the plots.

A model that cannot be loaded (e.g. a Hub id while offline) is reported and skipped; only when no model is left
is it an error.
"""

from __future__ import annotations

import datetime
import functools
import gc
import hashlib
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mygpt.generation import generate_continuations
from mygpt.loading import (DTYPES, ModelNotAvailableError, check_model_name, context_length, is_offline,
                           load_model_and_tokenizer, resolve_device, run_summary)
from mygpt.metrics import load_metric
from mygpt.progress import progress
from mygpt.prompts import pick_prompts
from mygpt.tokenization import tokenizer_digest

logger = logging.getLogger(__name__)

__all__ = ["EvaluateArguments", "compare_models", "diversity_metrics", "evaluate_model", "load_eval_text"]


@dataclass
class EvaluateArguments:
    """The options of a model comparison (the flags of ``mygpt-evaluate``)."""

    models: list[str] = field(metadata={
        "help": "Models to compare: MyGPT run folders, folders of any AutoModelForCausalLM, or Hub ids (online)."})
    output_dir: str = field(default="reports/compare", metadata={
        "help": "Where report.json, report.md and the plots go (other files there are left alone)."})
    data_files: list[str] | None = field(default=None, metadata={
        "help": "Evaluate on these local UTF-8 text files (files, globs or folders of .txt) instead of a run's "
                "held-out split."})
    dataset: str | None = field(default=None, metadata={
        "help": "Evaluate on a datasets dataset instead: a Hub id (online) or a local dataset folder."})
    dataset_config: str | None = field(default=None, metadata={"help": "The dataset's configuration name."})
    dataset_split: str = field(default="test", metadata={"help": "The dataset split to evaluate on."})
    text_column: str = field(default="text", metadata={"help": "The dataset column that holds the text."})
    rows_are_documents: bool = field(default=False, metadata={
        "help": "Score each --dataset row as a document of its own. Default: join the rows with blank lines into "
                "one text, as HF's perplexity guide does for wikitext (whose rows are lines)."})
    split: str = field(default="test", metadata={
        "help": "Which held-out split of the run's corpus (when neither --data_files nor --dataset): test or "
                "validation."})
    max_chars: int | None = field(default=None, metadata={
        "help": "Evaluate on at most this many characters of the text (documents in order, the last one cut): "
                "for quick runs. Default: all of it."})
    window: int | None = field(default=None, metadata={
        "help": "Tokens per forward pass. Default: each model's own context length (a larger value is capped "
                "at it)."})
    stride: int | None = field(default=None, metadata={
        "help": "How far the window moves (HF perplexity guide). Default: half the window. window - 1 = disjoint "
                "windows (fastest)."})
    batch_size: int | None = field(default=None, metadata={
        "help": "Windows per forward pass. Default: as many as keep the logits near 128 MiB."})
    num_prompts: int = field(default=6, metadata={
        "help": "Prompts cut from the evaluation text at line starts chosen with --seed (never overlapping), for "
                "the generations. 0 skips generation."})
    prompts: list[str] | None = field(default=None, metadata={"help": "Use these prompts instead."})
    prompt_chars: int = field(default=120, metadata={"help": "Length of each drawn prompt, in characters."})
    samples_per_prompt: int = field(default=2, metadata={"help": "Generations per prompt and model."})
    generation_chars: int = field(default=400, metadata={
        "help": "Each continuation is cut to this many characters, so every model is measured on as much text."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling threshold (1.0 = off)."})
    seed: int = field(default=1234, metadata={
        "help": "Seed for the prompts and the sampling (the same for every model)."})
    device: str = field(default="auto", metadata={"help": "auto (cuda when available, else cpu), cpu, cuda, ..."})
    dtype: str = field(default="float32", metadata={
        "help": "Weights' precision: float32 (default, exact scores), bfloat16 or float16 (faster on GPUs), or auto "
                "(as each model was saved).", "choices": list(DTYPES)})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Run modeling code that comes with Hub models. Local folders (MyGPT runs) always may."})

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("--models needs at least one model (a folder or a Hub id)")
        if self.data_files and self.dataset:
            raise ValueError("give either --data_files or --dataset, not both")
        if self.split not in ("test", "validation"):
            raise ValueError(f"--split must be test or validation, got {self.split!r}")
        for name in ("max_chars", "window", "stride", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be a positive integer, got {value}")
        for name in ("num_prompts",):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name in ("prompt_chars", "samples_per_prompt", "generation_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"--temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top_p must be in (0, 1], got {self.top_p}")
        if self.prompts is not None and not any(p.strip() for p in self.prompts):
            raise ValueError("--prompts are all empty")


# --------------------------------------------------------------------------------------------------
# The evaluation text
# --------------------------------------------------------------------------------------------------


def _run_summary(path: str) -> dict[str, Any] | None:
    """The ``run_summary.json`` of a ``train_hf.py`` run folder, or None for anything else (never a Hub lookup)."""
    return run_summary(path) if os.path.isdir(path) else None


def load_eval_text(args: EvaluateArguments) -> tuple[list[str], list[str], dict[str, Any]]:
    """``(texts, titles, info)`` of the evaluation text, one entry per document; raises ValueError when empty."""
    if args.data_files:
        from mygpt import corpus

        files = corpus.resolve_data_files(args.data_files)
        documents = corpus.read_text_files(files, purpose="evaluate")
        texts, titles = [d["text"] for d in documents], [d["title"] for d in documents]
        info = {"source": "data_files", "files": [str(f) for f in files],
                "description": f"{len(files)} local file(s) ({', '.join(f.name for f in files[:3])}"
                               f"{', ...' if len(files) > 3 else ''})"}
    elif args.dataset:
        texts, titles, info = _load_dataset_text(args)
    else:
        run = next((m for m in args.models if _run_summary(m) is not None), None)
        if run is None:
            missing = [m for m in args.models if not os.path.isdir(m)]
            note = (f" ({', '.join(repr(m) for m in missing)}: no such folder here)" if missing else "")
            raise ValueError(f"no evaluation text: none of --models is a train_hf.py run folder (with "
                             f"run_summary.json) whose held-out split could be used{note}; pass the folder of a "
                             "finished run, or --data_files or --dataset")
        from mygpt.data import heldout_texts

        texts = heldout_texts(run, args.split)
        split_info = _run_summary(run)["data"]["splits"].get(args.split, {})
        titles = list(split_info.get("titles") or [f"{args.split} document {i + 1}" for i in range(len(texts))])
        source = _run_summary(run)["data"].get("source")
        what = "plays" if source == "shakespeare" else "documents"
        info = {"source": "run_split", "run": run, "split": args.split, "corpus_source": source,
                "description": f"the {args.split} {what} of {Path(run).name}'s corpus"}
    if args.max_chars is not None:
        texts, titles = _first_chars(texts, titles, args.max_chars)
        info["max_chars"] = args.max_chars
    kept = [(t, title) for t, title in zip(texts, titles) if t.strip()]
    if not kept:
        raise ValueError(f"the evaluation text ({info['description']}) is empty: {len(texts)} document(s), none with "
                         "any non-space character; give a text with something to score")
    texts, titles = [t for t, _ in kept], [title for _, title in kept]
    joined = "\n".join(texts).encode("utf-8")
    info.update({"documents": len(texts), "titles": titles, "characters": sum(len(t) for t in texts),
                 "bytes": sum(len(t.encode("utf-8")) for t in texts), "sha256": hashlib.sha256(joined).hexdigest()})
    return texts, titles, info


def _load_dataset_text(args: EvaluateArguments) -> tuple[list[str], list[str], dict[str, Any]]:
    import datasets

    if not os.path.exists(args.dataset) and is_offline():
        raise ValueError(f"cannot load dataset {args.dataset!r}: there is no local folder of that name, and the "
                         "Hub is switched off (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE). Give a local dataset folder or "
                         "--data_files.")
    try:
        ds = datasets.load_dataset(args.dataset, args.dataset_config, split=args.dataset_split)
    except Exception as error:  # noqa: BLE001 - datasets raises many kinds; all mean "cannot load it"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot load split {args.dataset_split!r} of dataset {args.dataset!r}: {first_line}. "
                         "Offline, only a local dataset folder or --data_files work.") from None
    if args.text_column not in ds.column_names:
        raise ValueError(f"--text_column {args.text_column!r} is not a column of {args.dataset!r}; its columns are "
                         f"{ds.column_names}")
    texts = [t for t in ds[args.text_column] if isinstance(t, str)]
    if args.rows_are_documents:
        titles = [f"{args.dataset_split} row {i}" for i in range(len(texts))]
    else:
        texts, titles = ["\n\n".join(texts)], [f"{args.dataset_split} split, {len(texts)} rows joined"]
    info = {"source": "dataset", "dataset": args.dataset, "config": args.dataset_config,
            "split": args.dataset_split, "rows_are_documents": args.rows_are_documents,
            "description": f"the {args.dataset_split} split of {args.dataset}"}
    return texts, titles, info


def _first_chars(texts: list[str], titles: list[str], budget: int) -> tuple[list[str], list[str]]:
    """The documents in order up to ``budget`` characters in all, the last one cut."""
    kept_texts, kept_titles = [], []
    for text, title in zip(texts, titles):
        if budget <= 0:
            break
        kept_texts.append(text[:budget])
        kept_titles.append(title)
        budget -= len(text)
    return kept_texts, kept_titles


# --------------------------------------------------------------------------------------------------
# One model
# --------------------------------------------------------------------------------------------------


def describe_model(name: str, model: torch.nn.Module, tokenizer: Any) -> dict[str, Any]:
    """Size and shape facts: parameters, non-embedding parameters, vocabulary, context length, classes."""
    return {
        "path": os.path.abspath(name) if os.path.isdir(name) else None,
        "source": "local folder" if os.path.isdir(name) else "Hub",
        "class": type(model).__name__,
        "model_type": getattr(model.config, "model_type", None),
        "parameters": model.num_parameters(),
        "non_embedding_parameters": model.num_parameters(exclude_embeddings=True),
        "vocab_size": getattr(model.config, "vocab_size", None),
        "context_length": context_length(model),
        "tokenizer_class": type(tokenizer).__name__,
        "tokenizer_vocab_size": len(tokenizer),
        "tokenizer_digest": tokenizer_digest(tokenizer),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
    }


def training_facts(name: str) -> dict[str, Any]:
    """What is known of how a model was trained: from its ``run_summary.json`` when it is a run of this project."""
    summary = _run_summary(name)
    if summary is None:
        return {"run": False, "data": None, "tokens_seen": None}
    data, results = summary.get("data", {}), summary.get("results", {})
    train = data.get("splits", {}).get("train", {})
    source = data.get("source")
    corpus = {"shakespeare": "Shakespeare's works", "data_files": "local text files"}.get(
        source, f"dataset {data.get('dataset')}" if source == "dataset" else str(source))
    described = f"{corpus}, train split" + (f" ({train['documents']} documents, {train['characters'] / 1e6:.2f}M "
                                             f"characters)" if "documents" in train and "characters" in train else "")
    return {
        "run": True,
        "architecture": summary.get("architecture"),
        "preset": summary.get("preset"),
        "data": described,
        "data_source": source,
        "train_titles": train.get("titles"),
        "tokens_seen": results.get("tokens_seen"),
        "steps": results.get("steps"),
        "training_wall_time_seconds": summary.get("wall_time_seconds"),
        "best_validation_loss": results.get("best_validation_loss"),
        "reported_test_bits_per_byte": (results.get("test") or {}).get("bits_per_byte"),
        "command": summary.get("command"),
    }


def sample_continuations(model: torch.nn.Module, tokenizer: Any, prompts: list[str], *, samples: int,
                         generation_chars: int, chars_per_token: float, temperature: float, top_p: float,
                         seed: int) -> list[dict[str, Any]]:
    """Sample ``samples`` continuations of each prompt, each cut to ``generation_chars`` characters.

    The same plain sampling (temperature, top-p, no top-k, no repetition penalty: the project's samplers, which
    switch off whatever sampling a model's saved ``generation_config`` asks for) for every model, so the
    diversity figures compare models and not decoding settings. Enough tokens are generated for
    ``generation_chars`` characters at this model's chars per token.
    """
    context = context_length(model)
    wanted = math.ceil(generation_chars / chars_per_token * 1.5) + 8  # margin: generated text may be wordier
    # Prompt and continuation must fit the context: keep each prompt's end, at least half the context of it.
    encoded = [tokenizer(p, add_special_tokens=False, verbose=False)["input_ids"] for p in prompts]
    prompt_budget = max(context - wanted, min(max(map(len, encoded)), context // 2))
    encoded = [ids[-prompt_budget:] for ids in encoded]
    max_new = min(wanted, context - max(map(len, encoded)))
    generated = generate_continuations(model, tokenizer, encoded, strategy="top_p",
                                       knobs={"top_p": top_p, "temperature": temperature}, max_new_tokens=max_new,
                                       num_return_sequences=samples, seed=seed, desc="generating")
    return [{"prompt": prompt, "continuations": [tokenizer.decode(ids, skip_special_tokens=True)[:generation_chars]
                                                 for ids in rows],
             "prompt_tokens": len(ids), "max_new_tokens": max_new}
            for prompt, ids, rows in zip(prompts, encoded, generated)]


@functools.lru_cache(maxsize=None)
def _metric(name: str):
    """Each evaluate module is loaded once per process."""
    return load_metric(name)


def diversity_metrics(texts: list[str]) -> dict[str, float]:
    """Self-BLEU, distinct-1/2/3 and the repeated 4-gram rate of ``texts``, through the project's evaluate modules."""
    figures: dict[str, float] = {}
    if len(texts) >= 2:
        figures.update(_metric("self_bleu").compute(predictions=texts))
    figures.update(_metric("distinct_n").compute(predictions=texts, n=[1, 2, 3]))
    figures.update(_metric("repeated_ngram_rate").compute(predictions=texts, n=4))
    return figures


def evaluate_model(name: str, args: EvaluateArguments, texts: list[str], prompts: list[dict[str, Any]],
                   device: torch.device) -> dict[str, Any]:
    """Load, score and sample one model; raises ModelNotAvailableError or ValueError when it cannot be evaluated."""
    timing: dict[str, float] = {}
    started = time.perf_counter()
    trust_remote_code = True if os.path.isdir(name) else args.trust_remote_code  # a local folder is your own code
    model, tokenizer = load_model_and_tokenizer(name, device=device, dtype=args.dtype,
                                                trust_remote_code=trust_remote_code)
    timing["load_seconds"] = time.perf_counter() - started
    try:
        description = describe_model(name, model, tokenizer)
        window = min(args.window, description["context_length"]) if args.window else None
        if args.window and args.window > description["context_length"]:
            logger.warning("%s: --window %d is longer than its context, using %d", name, args.window, window)
        stride = args.stride
        if stride is not None and stride >= (window or description["context_length"]):
            stride = (window or description["context_length"]) - 1
            logger.warning("%s: --stride %d is not shorter than the window, using %d", name, args.stride, stride)
        logger.info("%s: scoring %d document(s)", name, len(texts))
        started = time.perf_counter()
        scores = _metric("sliding_window_perplexity").compute(
            predictions=texts, model=model, tokenizer=tokenizer, window=window, stride=stride,
            batch_size=args.batch_size)
        timing["score_seconds"] = time.perf_counter() - started
        logger.info("%s: %.4f bits/byte over %d tokens (%.1f s)", name, scores["bits_per_byte"], scores["n_tokens"],
                    timing["score_seconds"])
        started = time.perf_counter()
        samples = sample_continuations(
            model, tokenizer, [p["prompt"] for p in prompts], samples=args.samples_per_prompt,
            generation_chars=args.generation_chars, chars_per_token=scores["chars_per_token"],
            temperature=args.temperature, top_p=args.top_p, seed=args.seed) if prompts else []
        continuations = [c for s in samples for c in s["continuations"]]
        metrics = diversity_metrics(continuations) if continuations else {}
        timing["generate_seconds"] = time.perf_counter() - started
    finally:
        del model
        gc.collect()
    return {"name": name, "description": description, "training": training_facts(name), "scores": scores,
            "generation": {"metrics": metrics, "samples": samples}, "timing": timing}


# --------------------------------------------------------------------------------------------------
# The whole comparison
# --------------------------------------------------------------------------------------------------


def _leak_warnings(models: list[dict[str, Any]], data: dict[str, Any]) -> list[str]:
    """Warn when a model's training split holds documents with the evaluation text's titles (same corpus kind)."""
    warnings = []
    corpus_source = data.get("corpus_source") or data["source"]
    for m in models:
        t = m["training"]
        if not t.get("run") or not t.get("train_titles") or t.get("data_source") != corpus_source:
            continue
        overlap = sorted(set(t["train_titles"]) & set(data["titles"]))
        if overlap:
            warnings.append(f"`{m['name']}` trained on {len(overlap)} document(s) with the same titles as the "
                            f"evaluation text ({', '.join(overlap[:5])}{', ...' if len(overlap) > 5 else ''}): "
                            "its figures are not held-out figures.")
    return warnings


def _environment(device: torch.device) -> dict[str, Any]:
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {"device": f"{device} ({name})", "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def _available(models: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    """The models that can be looked for here, and ``{"name", "reason"}`` for each that cannot (a typo'd folder,
    a Hub id while offline and not cached): named before any text is read or any model loaded."""
    usable, skipped = [], []
    for name in models:
        try:
            check_model_name(name)
        except ModelNotAvailableError as error:
            logger.warning("skipping %s: %s", name, error)
            skipped.append({"name": name, "reason": str(error)})
        else:
            usable.append(name)
    return usable, skipped


def _nothing_left(skipped: list[dict[str, str]]) -> ValueError:
    reasons = "; ".join(f"{s['name']}: {s['reason']}" for s in skipped)
    return ValueError(f"none of the models could be evaluated ({reasons}); nothing was written")


def compare_models(args: EvaluateArguments, command: str) -> dict[str, Any]:
    """Evaluate every model of ``args`` on the same text; returns the results ``mygpt.eval_report`` writes.

    ``command`` is the command line to print under "Reproduce". Raises ``ValueError`` naming every model and why
    when none can be evaluated, or when there is no evaluation text.
    """
    started = time.perf_counter()
    device = resolve_device(args.device)
    names, skipped = _available(args.models)
    if not names:
        raise _nothing_left(skipped)
    texts, titles, data = load_eval_text(args)
    logger.info("evaluation text: %s, %d document(s), %d characters", data["description"], data["documents"],
                data["characters"])
    if args.prompts:
        prompts = [{"prompt": p, "reference": None} for p in args.prompts if p.strip()]
    else:
        prompts = [{"prompt": p.text, "reference": p.reference, "document": p.document}
                   for p in pick_prompts(texts, args.num_prompts, length=args.prompt_chars,
                                         reference_length=args.generation_chars, seed=args.seed)]

    models = []
    for name in progress(names, desc="models", unit="model"):
        try:
            models.append(evaluate_model(name, args, texts, prompts, device))
        except (ModelNotAvailableError, ValueError) as error:
            logger.warning("skipping %s: %s", name, error)
            skipped.append({"name": name, "reason": str(error)})
    if not models:
        raise _nothing_left(skipped)

    reference_texts = [p["reference"] for p in prompts if p.get("reference")]
    results = {
        "command": command,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": _environment(device),
        "settings": {
            "arguments": asdict(args),
            "window": args.window or "each model's context length",
            "stride": args.stride or "half the window",
            "generation": {"temperature": args.temperature, "top_p": args.top_p, "top_k": None,
                           "samples_per_prompt": args.samples_per_prompt, "generation_chars": args.generation_chars,
                           "seed": args.seed, "num_generations": len(prompts) * args.samples_per_prompt},
        },
        "data": data,
        "prompts": prompts,
        "reference": diversity_metrics(reference_texts) if reference_texts else None,
        "models": models,
        "skipped": skipped,
        "warnings": _leak_warnings(models, data),
    }
    results["wall_time_seconds"] = time.perf_counter() - started
    return results
