"""The command line of ``train_hf.py``: four dataclasses, presets as YAML files, one parse function.

Values come in layers, each overriding the one before: the dataclass defaults, then the preset
(``configs/<name>.yaml``, or any YAML/JSON file given to ``--preset``), then the command line. Every field of
every dataclass can be set at every layer.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import HfArgumentParser, TrainingArguments

from mygpt.data import DataArguments

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_PRESET = "cpu-quick"


@dataclass
class ModelArguments:
    """The network: MyGPT's configuration fields (GPT-2's names), or GPT-2 itself as the reference."""

    architecture: str = field(default="mygpt", metadata={
        "help": "mygpt (the hand-written model) or gpt2 (transformers' GPT2LMHeadModel built from the same "
                "MyGPTConfig: the reference implementation, trained identically)."})
    n_layer: int = field(default=4, metadata={"help": "Transformer blocks."})
    n_head: int = field(default=4, metadata={"help": "Attention heads."})
    n_kv_head: int | None = field(default=None, metadata={"help": "Key/value heads (grouped-query); default n_head."})
    n_embd: int = field(default=256, metadata={"help": "Width of the residual stream."})
    n_inner: int | None = field(default=None, metadata={"help": "MLP width; default 4 * n_embd."})
    n_positions: int | None = field(default=None, metadata={
        "help": "Longest sequence the model is built for; default --block_size."})
    activation_function: str = field(default="gelu_new", metadata={"help": "gelu_new | gelu | relu"})
    position_embedding: str = field(default="learned", metadata={"help": "learned | sinusoidal | rope | alibi"})
    norm: str = field(default="layernorm", metadata={"help": "layernorm | rmsnorm"})
    norm_position: str = field(default="pre", metadata={"help": "pre | post"})
    bias: bool = field(default=True, metadata={"help": "Biases in the linear layers and norms."})
    dropout: float = field(default=0.0, metadata={
        "help": "Dropout on embeddings, attention weights and residual branches (0 for short runs, as nanoGPT)."})
    initializer_range: float = field(default=0.02, metadata={"help": "Std of the normal initialisation."})
    tie_word_embeddings: bool = field(default=True, metadata={"help": "Share the LM head with the token embedding."})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa | eager"})

    def __post_init__(self) -> None:
        if self.architecture not in ("mygpt", "gpt2"):
            raise ValueError(f"--architecture must be mygpt or gpt2, got {self.architecture!r}")


@dataclass
class RunArguments:
    """What ``train_hf.py`` does around the Trainer: presets, the output folder, precision, samples."""

    preset: str = field(default=DEFAULT_PRESET, metadata={
        "help": "A preset in configs/ (cpu-quick, shakespeare-char-cpu, shakespeare-char, gpt-small) or a "
                "YAML/JSON file of arguments. The command line overrides it."})
    overwrite: bool = field(default=False, metadata={
        "help": "Delete the run already in --output_dir (finished or not) and train from scratch."})
    precision: str = field(default="auto", metadata={
        "help": "auto | fp32 | bf16 | fp16. auto: bf16 on GPUs that have it, fp16 on older GPUs, bf16 on CPUs with "
                "native bf16 instructions (AVX512-BF16/AMX), else fp32. --bf16/--fp16 also work."})
    early_stopping_patience: int = field(default=0, metadata={
        "help": "Stop after this many evaluations without a better validation loss (0: never stop early)."})
    early_stopping_threshold: float = field(default=0.0, metadata={
        "help": "How much lower the validation loss must be to count as better."})
    peak_tflops: float | None = field(default=None, metadata={
        "help": "Peak TFLOP/s of one device for the MFU estimate (default: a table for known GPUs, cores x clock "
                "x SIMD width for CPUs)."})
    sample_prompts: list[str] | None = field(default=None, metadata={
        "help": "Prompts for samples.md (default: line beginnings from the validation text)."})
    num_sample_prompts: int = field(default=2, metadata={"help": "How many validation prompts for samples.md."})
    sample_max_new_tokens: int = field(default=120, metadata={"help": "Tokens per sample in samples.md."})
    keep_checkpoints: bool = field(default=False, metadata={
        "help": "Keep the checkpoint-* folders after a finished run (default: delete them; the best model is "
                "saved at the top of --output_dir)."})


@dataclass
class LMTrainingArguments(TrainingArguments):
    """transformers' ``TrainingArguments`` with defaults for language-model pretraining."""

    output_dir: str | None = field(default=None, metadata={"help": "Where the run goes (default runs/<preset>)."})
    eval_strategy: str = field(default="steps", metadata={"help": "When to evaluate: steps | epoch | no."})
    eval_steps: float | None = field(default=250, metadata={"help": "Evaluate every N optimizer steps."})
    save_strategy: str = field(default="steps", metadata={"help": "When to checkpoint: steps | epoch | no."})
    save_steps: float = field(default=250, metadata={"help": "Checkpoint every N steps (a multiple of eval_steps)."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept (the best is never deleted)."})
    logging_steps: float = field(default=10, metadata={"help": "Log the training loss every N steps."})
    logging_first_step: bool = field(default=True, metadata={"help": "Log the loss of the very first step."})
    load_best_model_at_end: bool = field(default=True, metadata={
        "help": "End with the checkpoint of lowest validation loss."})
    metric_for_best_model: str | None = field(default="eval_loss", metadata={"help": "The metric for the best model."})
    greater_is_better: bool | None = field(default=False, metadata={"help": "Lower loss is better."})
    learning_rate: float = field(default=6e-4, metadata={"help": "Peak learning rate (AdamW)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule after warmup."})
    warmup_steps: float = field(default=100, metadata={"help": "Linear warmup steps (or a fraction < 1 of all steps)."})
    weight_decay: float = field(default=0.1, metadata={
        "help": "AdamW weight decay, applied to the weight matrices only (not biases, norms or embeddings)."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2 (GPT-3 and nanoGPT use 0.95)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip the gradient norm to this."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Blocks per device per micro-step."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Blocks per device per evaluation step."})
    ddp_find_unused_parameters: bool | None = field(default=False, metadata={
        "help": "Every parameter takes part in every step, so DDP need not search for unused ones."})
    dataloader_num_workers: int = field(default=0, metadata={
        "help": "DataLoader processes; the blocks are already tensors in memory, so 0 is fastest."})


ARGUMENT_CLASSES = (ModelArguments, DataArguments, LMTrainingArguments, RunArguments)


def find_preset(name_or_path: str) -> Path:
    """The YAML/JSON file of a preset name (``configs/<name>.yaml``) or path; ``ValueError`` naming the choices."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
        return path
    candidate = CONFIGS_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise ValueError(f"unknown preset {name_or_path!r}: expected one of {', '.join(available_presets())} "
                     "or the path of a YAML/JSON file of arguments")


def available_presets() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def load_preset(name_or_path: str) -> dict[str, Any]:
    path = find_preset(name_or_path)
    text = path.read_text(encoding="utf-8")
    values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of argument names to values, not {type(values).__name__}")
    return values


def _normalise_argv(argv: list[str]) -> list[str]:
    """Small conveniences: a lone YAML/JSON file is a preset; a bare ``--resume_from_checkpoint`` means the last one."""
    argv = list(argv)
    if argv and not argv[0].startswith("-") and Path(argv[0]).suffix in (".yaml", ".yml", ".json"):
        argv = ["--preset", argv[0], *argv[1:]]
    for i, arg in enumerate(argv):
        if arg == "--resume_from_checkpoint" and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            argv.insert(i + 1, "last")
            break
    return argv


def parse_arguments(argv: list[str]) -> tuple[ModelArguments, DataArguments, LMTrainingArguments, RunArguments]:
    """Parses defaults < preset < command line into the four dataclasses.

    Raises ``ValueError`` for an unknown preset, an unknown key in a preset, or an invalid value.
    """
    argv = _normalise_argv(argv)
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    preset_parser = HfArgumentParser(RunArguments, add_help=False)  # --help is the full parser's job
    run_only, _ = preset_parser.parse_known_args(argv)
    preset = load_preset(run_only.preset)
    known = {f.name for cls in ARGUMENT_CLASSES for f in fields(cls) if f.init}
    unknown = sorted(set(preset) - known)
    if unknown:
        raise ValueError(f"preset {run_only.preset!r} sets unknown argument(s) {', '.join(unknown)}")
    preset.setdefault("output_dir", os.path.join("runs", Path(run_only.preset).stem))
    # Without a GPU, say so up front: transformers then sets up CPU processes (gloo) under torchrun/accelerate
    # instead of treating each process as a lone run.
    preset.setdefault("use_cpu", not torch.cuda.is_available())
    parser.set_defaults(**preset)
    model_args, data_args, training_args, run_args, rest = parser.parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True)
    if rest:
        raise ValueError(f"unknown argument(s): {' '.join(rest)} (see --help)")
    return model_args, data_args, training_args, run_args
