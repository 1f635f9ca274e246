"""The command line of ``mygpt-train``: four dataclasses, presets as YAML files, one parse function.

Values come in layers, each overriding the one before (see :mod:`mygpt.cli`): the dataclass defaults, then the
preset (``mygpt/presets/<name>.yaml``, or any YAML/JSON file given to ``--preset``), then the command line.

The model's options are not written out here: :func:`model_arguments_class` reads them from ``MyGPTConfig``'s
signature (names, types, defaults) and its docstring (help), so a field added to the configuration is a
command-line flag and a preset key with no other edit.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from transformers import TrainingArguments

from configuration_mygpt import MyGPTConfig
from mygpt.cli import parse
from mygpt.data import DataArguments
from mygpt.optim import OPTIMIZERS

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
DEFAULT_PRESET = "cpu-quick"
ARCHITECTURES = ("mygpt", "gpt2")
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")

# Configuration fields that the run sets, not the user: the vocabulary and special tokens come from the
# tokenizer, and the saved model always keeps its KV cache on (training turns it off per call).
RUN_SET_FIELDS = ("vocab_size", "use_cache", "bos_token_id", "eos_token_id", "pad_token_id")
# Where the command line's default differs from MyGPTConfig's (GPT-2 small, dropout 0.1): a small model that
# trains on a CPU, no dropout for short runs (as nanoGPT), and a context that follows --block_size.
COMMAND_LINE_DEFAULTS: dict[str, tuple[Any, str]] = {
    "n_layer": (4, ""),
    "n_head": (4, ""),
    "n_embd": (256, ""),
    "n_positions": (None, " Default: --block_size."),
    "embd_pdrop": (0.0, ""),
    "attn_pdrop": (0.0, ""),
    "resid_pdrop": (0.0, ""),
}


def docstring_args(cls: type) -> dict[str, str]:
    """The ``Args:`` section of ``cls``'s docstring as ``{name: help}`` (a line naming several fields gives each)."""
    doc = inspect.getdoc(cls) or ""
    helps: dict[str, str] = {}
    lines = doc.split("\nArgs:\n", 1)[1].splitlines() if "\nArgs:\n" in doc else []
    entry_indent, current = None, []
    for line in lines:
        if line and not line[0].isspace():
            break  # the next section
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        entry_indent = indent if entry_indent is None else entry_indent
        found = re.match(r"\s*([\w, ]+):\s*(.*)", line) if indent == entry_indent else None
        if found:
            current = [name.strip() for name in found.group(1).split(",")]
            for name in current:
                helps[name] = found.group(2).strip()
        else:
            for name in current:
                helps[name] += " " + line.strip()
    return helps


def _model_fields(config_class: type) -> list[tuple[str, Any, dataclasses.Field]]:
    """``(name, type, field)`` for every user-settable keyword of ``config_class.__init__``."""
    hints = typing.get_type_hints(config_class.__init__)
    helps = docstring_args(config_class)
    result = []
    for name, parameter in inspect.signature(config_class.__init__).parameters.items():
        if name == "self" or name in RUN_SET_FIELDS or parameter.kind not in (
                inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            continue
        default, note = COMMAND_LINE_DEFAULTS.get(name, (parameter.default, ""))
        kind = hints.get(name, type(default))
        if default is None and not _allows_none(kind):
            kind = kind | None
        text = (helps.get(name) or f"MyGPTConfig.{name}.") + note
        result.append((name, kind, field(default=default, metadata={"help": text})))
    return result


def _allows_none(kind: Any) -> bool:
    return type(None) in typing.get_args(kind)


def model_arguments_class(config_class: type = MyGPTConfig) -> type:
    """A dataclass of the network's command-line options: every field of ``config_class`` plus four of the run's.

    The run's own: ``architecture`` (``mygpt``, or transformers' ``gpt2`` built from the same configuration),
    ``init_from`` (start from a trained model's weights: fine-tuning), ``dropout`` (sets the three dropout
    probabilities at once), ``attn_implementation``.
    """
    config_fields = _model_fields(config_class)
    fields = [
        ("architecture", str, field(default="mygpt", metadata={
            "help": "mygpt (the hand-written model) or gpt2 (transformers' GPT2LMHeadModel built from the same "
                    "configuration: the reference implementation, trained identically)."})),
        ("init_from", str | None, field(default=None, metadata={
            "help": "Fine-tune: start from the weights of this model (a Hub id such as gpt2, or a folder holding a "
                    "GPT-2 or MyGPT model) instead of random ones. Its shape and its tokenizer are used; the "
                    "preset's network fields are ignored (the log names them)."})),
        *config_fields,
        ("dropout", float | None, field(default=None, metadata={
            "help": "Sets embd_pdrop, attn_pdrop and resid_pdrop at once (0 for short runs, as nanoGPT)."})),
        ("attn_implementation", str, field(default="sdpa", metadata={"help": "sdpa | eager"})),
    ]

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"--architecture must be mygpt or gpt2, got {self.architecture!r}")
        if self.attn_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"--attn_implementation must be sdpa or eager, got {self.attn_implementation!r}")

    def config_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``config_class`` these options give (``dropout`` spread over the three)."""
        values = {name: getattr(self, name) for name, _, _ in config_fields}
        if self.dropout is not None:
            values.update(embd_pdrop=self.dropout, attn_pdrop=self.dropout, resid_pdrop=self.dropout)
        return values

    return dataclasses.make_dataclass(
        "ModelArguments", fields, namespace={
            "__doc__": f"The network: every field of {config_class.__name__} (GPT-2's names), or GPT-2 itself.",
            "__post_init__": __post_init__, "config_kwargs": config_kwargs, "__module__": __name__})


ModelArguments = model_arguments_class()


@dataclass
class RunArguments:
    """What mygpt-train does around the Trainer: presets, the output folder, precision, samples, the Hub."""

    preset: str = field(default=DEFAULT_PRESET, metadata={
        "help": "A preset (cpu-quick, shakespeare-char-cpu, shakespeare-char, gpt-small, notebook-quick) or a "
                "YAML/JSON file of arguments. The command line overrides it."})
    overwrite: bool = field(default=False, metadata={
        "help": "Delete the run already in --output_dir (finished or not) and train from scratch."})
    precision: str = field(default="auto", metadata={
        "help": "auto | fp32 | bf16 | fp16. auto: bf16 on GPUs that have it, fp16 on older GPUs, bf16 on CPUs with "
                "native bf16 instructions (AVX512-BF16/AMX), else fp32. --bf16/--fp16 also work."})
    eval_sample_blocks: int = field(default=0, metadata={
        "help": "Evaluate during training on a fixed random sample of this many validation blocks (0: the whole "
                "split), so evaluation costs little; its bits per byte scale the sample's loss by the whole split's "
                "bytes per token. The final validation and test scores are always on the whole splits."})
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
    """transformers' ``TrainingArguments`` with defaults for language-model pretraining.

    ``--push_to_hub`` uploads the finished folder once, after the run (model, card, samples, summary), to
    ``--hub_model_id`` (default: the output folder's name in your namespace); the token comes from ``HF_TOKEN``
    or ``hf auth login``, never from ``--hub_token``. ``--report_to tensorboard`` / ``trackio`` log the run.
    """

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
    optimizer: str = field(default="adamw", metadata={
        "help": "adamw | muon. muon: torch.optim.Muon for the blocks' attention and MLP weight matrices (its update "
                "scaled to AdamW's RMS, so it shares --learning_rate and --weight_decay), AdamW for the embeddings, "
                "the LM head, norms and biases (see mygpt/optim.py). --optim picks the AdamW implementation."})
    learning_rate: float = field(default=6e-4, metadata={"help": "Peak learning rate (AdamW, and Muon's)."})
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
    project: str = field(default="mygpt", metadata={
        "help": "The experiment-tracking project (trackio) that --report_to trackio logs the run under."})

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        super().__post_init__()


ARGUMENT_CLASSES = (ModelArguments, DataArguments, LMTrainingArguments, RunArguments)


class Arguments(NamedTuple):
    """The four parsed dataclasses of a training command line."""

    model: Any  # ModelArguments
    data: DataArguments
    training: LMTrainingArguments
    run: RunArguments


def find_preset(name_or_path: str) -> Path:
    """The YAML/JSON file of a preset name (``mygpt/presets/<name>.yaml``) or path; ``ValueError`` naming the choices."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
        return path
    candidate = PRESETS_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise ValueError(f"unknown preset {name_or_path!r}: expected one of {', '.join(available_presets())} "
                     "or the path of a YAML/JSON file of arguments")


def available_presets() -> list[str]:
    """The names of the presets shipped with the package."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def _derived_defaults(preset: str, values: dict[str, Any]) -> dict[str, Any]:
    # Without a GPU, say so up front: transformers then sets up CPU processes (gloo) under torchrun/accelerate
    # instead of treating each process as a lone run.
    return {"output_dir": str(Path("runs") / Path(preset).stem), "use_cpu": not torch.cuda.is_available()}


def _normalise_argv(argv: list[str]) -> list[str]:
    """A bare ``--resume_from_checkpoint`` (no value) means the last complete checkpoint."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--resume_from_checkpoint" and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            argv.insert(i + 1, "last")
            break
    return argv


def parse_arguments(argv: list[str] | None = None, prog: str | None = None) -> Arguments:
    """Parses defaults < preset < command line into the four dataclasses.

    Raises ``ValueError`` for an unknown preset, an unknown key in a preset, an invalid value, or a Hub token
    given as an argument.
    """
    argv = _normalise_argv(list(argv or []))
    if any(arg == "--hub_token" or arg.startswith("--hub_token=") for arg in argv):
        raise ValueError(_TOKEN_REFUSAL)
    model_args, data_args, training_args, run_args = parse(
        ARGUMENT_CLASSES, argv, prog=prog, description=__doc__.split("\n\n")[0], config_option="preset",
        find_config=find_preset, default_config=DEFAULT_PRESET, file_defaults=_derived_defaults)
    if training_args.hub_token is not None:  # from a config file: a file is shared and committed as easily
        raise ValueError(_TOKEN_REFUSAL)
    return Arguments(model_args, data_args, training_args, run_args)


_TOKEN_REFUSAL = ("--hub_token is not accepted (command lines and config files end up in shell histories, process "
                  "lists and logs): --push_to_hub uses the token of `hf auth login` or the HF_TOKEN environment "
                  "variable")
