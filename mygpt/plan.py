"""A training run resolved once: every choice the arguments imply, checked and frozen in a :class:`RunPlan`.

Later code reads the plan and never recomputes or changes it: the network's configuration (built once, from the
preset's model fields and the tokenizer), the precision, the context, the tokens per optimizer step, the output
folder and the checkpoint to resume from, where the finished run is published, and the ``TrainingArguments`` the
``Trainer`` receives (made once from the parsed ones, which are left as parsed).

Every mistake in the arguments is found here, before anything is written, and raises ``ValueError`` naming the
option, its value and what would be valid.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PretrainedConfig, PreTrainedTokenizerBase, TrainingArguments

from configuration_mygpt import MyGPTConfig
from generation_mygpt import DEFAULT_GENERATION
from mygpt import run_artifacts, speed
from mygpt.arguments import LMTrainingArguments, RunArguments
from mygpt.data import DataArguments
from mygpt.training import choose_precision

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubTarget:
    """Where ``--push_to_hub`` publishes the finished folder."""

    repo_id: str  # "name" (in the token's namespace) or "namespace/name"
    private: bool


@dataclass(frozen=True)
class RunPlan:
    """Everything decided about a run before its first step; read, never recomputed or changed."""

    model_args: Any  # mygpt.arguments.ModelArguments
    data_args: DataArguments
    run_args: RunArguments
    training_args: LMTrainingArguments  # what the Trainer gets: precision set, pushing off (see hub)
    command: str  # the command that runs it again
    output_dir: Path
    resume_from: Path | None
    precision: str  # fp32 | bf16 | fp16
    context: int  # positions the network is built for (n_positions)
    tokens_per_step: int  # per optimizer step, all processes together
    config: PretrainedConfig  # the network: MyGPTConfig, or the GPT2Config of the same network
    generation: dict[str, Any]  # what generation_config.json holds
    hub: HubTarget | None  # where the finished folder goes, if anywhere

    @property
    def architecture(self) -> str:
        return self.model_args.architecture

    @property
    def block_size(self) -> int:
        return self.data_args.block_size

    @property
    def name(self) -> str:
        """The run's name in its summary, card and trackers."""
        return run_name(self.architecture, self.output_dir)


def run_name(architecture: str, output_dir: Path) -> str:
    """``<architecture>-<output folder>``, e.g. ``mygpt-cpu-quick``."""
    return f"{architecture}-{output_dir.name}"


# ---------------------------------------------------------------------------------------------------------------
# Checks of the arguments alone (no data, no folder)


def _positive(name: str, value: float | None, *, allow_zero: bool = False, integer: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (
        value >= 0 if allow_zero else value > 0) and (not integer or float(value).is_integer())
    if not ok:
        what = ("a whole number" if integer else "a number") + (" >= 0" if allow_zero else " > 0")
        raise ValueError(f"--{name} must be {what}, got {value!r}")


def check_arguments(model_args: Any, data_args: DataArguments, training_args: TrainingArguments,
                    run_args: RunArguments) -> None:
    """Refuses values that would fail later (in the optimiser, the scheduler, the loaders) or silently do nothing."""
    args = training_args
    _positive("learning_rate", args.learning_rate)
    if args.max_steps == 0 or args.max_steps < -1:
        raise ValueError(f"--max_steps must be a positive number of optimizer steps (or -1 to train for "
                         f"--num_train_epochs), got {args.max_steps}")
    if args.max_steps == -1:
        _positive("num_train_epochs", args.num_train_epochs)
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        _positive(name, getattr(args, name), integer=True)
    _positive("warmup_steps", args.warmup_steps, allow_zero=True)
    if 1 < args.warmup_steps and not float(args.warmup_steps).is_integer():
        raise ValueError(f"--warmup_steps must be a whole number of steps, or a fraction < 1 of all steps, got "
                         f"{args.warmup_steps}")
    if args.max_steps > 0 and args.warmup_steps >= 1 and args.warmup_steps > args.max_steps:
        logger.warning("--warmup_steps %g is more than --max_steps %d: the learning rate never reaches its peak "
                       "--learning_rate", args.warmup_steps, args.max_steps)
    _positive("weight_decay", args.weight_decay, allow_zero=True)
    _positive("adam_epsilon", args.adam_epsilon)
    for name in ("adam_beta1", "adam_beta2"):
        value = getattr(args, name)
        if not (isinstance(value, (int, float)) and 0 <= value < 1):
            raise ValueError(f"--{name} must be in [0, 1), got {value!r}")
    _positive("max_grad_norm", args.max_grad_norm, allow_zero=True)
    for name in ("logging_steps", "eval_steps", "save_steps"):
        value = getattr(args, name)
        if value is not None:
            _positive(name, value)
    if args.save_total_limit is not None:
        _positive("save_total_limit", args.save_total_limit, integer=True)
    _positive("dataloader_num_workers", args.dataloader_num_workers, allow_zero=True, integer=True)
    _positive("eval_sample_blocks", run_args.eval_sample_blocks, allow_zero=True, integer=True)
    _positive("early_stopping_patience", run_args.early_stopping_patience, allow_zero=True, integer=True)
    _positive("early_stopping_threshold", run_args.early_stopping_threshold, allow_zero=True)
    if run_args.early_stopping_patience and str(getattr(args.eval_strategy, "value", args.eval_strategy)) == "no":
        raise ValueError("--early_stopping_patience needs evaluations: set --eval_strategy steps (or epoch)")
    if run_args.peak_tflops is not None:
        _positive("peak_tflops", run_args.peak_tflops)
    _positive("num_sample_prompts", run_args.num_sample_prompts, allow_zero=True, integer=True)
    _positive("sample_max_new_tokens", run_args.sample_max_new_tokens, integer=True)
    if model_args.dropout is not None and not 0 <= model_args.dropout < 1:
        raise ValueError(f"--dropout must be a probability in [0, 1), got {model_args.dropout}")
    if args.prediction_loss_only:
        raise ValueError("--prediction_loss_only would drop the per-token sums that evaluation's loss, perplexity "
                         "and bits per byte are computed from; leave it unset")
    if data_args.streaming and args.max_steps <= 0:
        raise ValueError("--streaming needs --max_steps: a stream has no length to count epochs with")
    if args.push_to_hub and str(getattr(args.hub_strategy, "value", args.hub_strategy)) not in ("every_save", "end"):
        raise ValueError(f"--hub_strategy {args.hub_strategy}: mygpt-train pushes the finished folder once, after "
                         "the run; checkpoints are never pushed (leave --hub_strategy unset)")


def check_output_dir(output_dir: Path, overwrite: bool, resume: str | None) -> Path | None:
    """Decides whether the run may use ``output_dir``; returns the checkpoint to resume from, if any.

    Nothing is changed here; a refusal raises ``ValueError`` saying what to do instead.
    """
    state = run_artifacts.folder_state(output_dir)
    if state == "foreign":
        raise ValueError(f"--output_dir {output_dir} already holds files that are not a training run; choose "
                         "another folder (--overwrite only replaces a previous run)")
    if resume is not None:
        if overwrite:
            raise ValueError("--overwrite and --resume_from_checkpoint contradict each other: pick one")
        if resume.lower() in ("last", "true"):
            if state == "finished":
                raise ValueError(f"{output_dir} holds a finished run; there is nothing to resume "
                                 "(--overwrite trains again from scratch)")
            checkpoint = run_artifacts.last_complete_checkpoint(output_dir) if state == "unfinished" else None
            if checkpoint is None:
                raise ValueError(f"--resume_from_checkpoint: {output_dir} holds no complete checkpoint to resume "
                                 "from; start without it")
            return checkpoint
        checkpoint = Path(resume)
        if not (checkpoint / "trainer_state.json").is_file():
            raise ValueError(f"--resume_from_checkpoint {resume}: not a complete checkpoint folder "
                             "(no trainer_state.json); give a checkpoint-N folder or 'last'")
        return checkpoint
    if state == "finished" and not overwrite:
        raise ValueError(f"--output_dir {output_dir} holds a finished run; pass --overwrite to replace it or "
                         "choose another folder")
    if state == "unfinished" and not overwrite:
        raise ValueError(f"--output_dir {output_dir} holds an unfinished run: --resume_from_checkpoint continues "
                         "it, --overwrite starts again from scratch")
    return None


def hub_target(training_args: TrainingArguments, output_dir: Path) -> HubTarget | None:
    """Where ``--push_to_hub`` will publish, checked now so that a bad id or a missing token never costs a run.

    Raises ``ValueError`` for an invalid repository id, ``mygpt.hub.HubError`` when there is no token or the Hub is
    switched off.
    """
    if not training_args.push_to_hub:
        return None
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    from mygpt.hub import HubError, resolve_token
    from mygpt.loading import is_offline

    repo_id = training_args.hub_model_id or output_dir.resolve().name
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"--hub_model_id {repo_id!r} is not a valid model repository id: expected 'name' or "
                         f"'namespace/name' ({error})") from None
    if is_offline():
        raise HubError("--push_to_hub: the Hub is switched off here (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is "
                       "set). Train without --push_to_hub and publish the finished folder later with mygpt-push.")
    resolve_token()  # raises HubError explaining `hf auth login` / HF_TOKEN
    return HubTarget(repo_id=repo_id, private=bool(training_args.hub_private_repo))


# ---------------------------------------------------------------------------------------------------------------
# Resolution


def tokenizer_kind(model_args: Any, data_args: DataArguments) -> str:
    """``--tokenizer``, except that ``--init_from`` brings its own tokenizer (the weights are trained on its ids).

    Raises ``ValueError`` for ``--init_from`` with a tokenizer of another kind than the checkpoint's.
    """
    if not model_args.init_from:
        return data_args.tokenizer
    if data_args.tokenizer not in ("bpe", model_args.init_from):
        raise ValueError(f"--init_from {model_args.init_from} comes with its own tokenizer; --tokenizer "
                         f"{data_args.tokenizer!r} would feed it ids it was not trained on (leave --tokenizer unset)")
    return model_args.init_from


def resolve_context(model_args: Any, data_args: DataArguments) -> int:
    """The positions the network is built for: ``--n_positions``, by default ``--block_size``."""
    context = model_args.n_positions or data_args.block_size
    if data_args.block_size > context:
        raise ValueError(f"--block_size {data_args.block_size} is larger than --n_positions {context}: the model "
                         f"cannot attend that far; use --block_size <= {context} or a larger --n_positions")
    return context


def resolve_precision(training_args: TrainingArguments, run_args: RunArguments) -> str:
    """``--bf16``/``--fp16`` when given, else ``--precision`` (``auto`` picks for this hardware)."""
    if training_args.bf16:
        return "bf16"
    if training_args.fp16:
        return "fp16"
    return choose_precision(run_args.precision, training_args.use_cpu)


def trainer_arguments(parsed: LMTrainingArguments, precision: str, run_name: str) -> LMTrainingArguments:
    """The ``TrainingArguments`` the Trainer gets, made from the parsed ones (which are left as they are).

    The Trainer itself never pushes (the finished folder is published once, after the run, see ``hub_target``)
    and never sees a token. ``--torch_compile`` on a CPU without a C++ compiler trains eagerly, with one warning
    (``mygpt.speed.compile_fallback``). The model's configuration keeps ``use_cache`` on: transformers copies
    ``args.use_cache`` into it, and training turns the cache off per forward call instead.
    """
    changes: dict[str, Any] = {
        "bf16": precision == "bf16", "fp16": precision == "fp16",
        "push_to_hub": False, "hub_token": None,
        "run_name": parsed.run_name or run_name,
    }
    on_cpu = not torch.cuda.is_available() or parsed.use_cpu
    if on_cpu:
        changes["dataloader_pin_memory"] = False  # pinning is for copies to a GPU
    changes.update(speed.compile_fallback(parsed.torch_compile, parsed.torch_compile_backend, on_cpu))
    if "use_cache" in {f.name for f in dataclasses.fields(parsed)}:
        changes["use_cache"] = True
    return dataclasses.replace(parsed, **changes)


def build_config(model_args: Any, context: int, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """The network's configuration, built once: the preset's model fields, the context, the tokenizer's ids.

    Raises ``ValueError`` naming the field for impossible values (``MyGPTConfig`` checks them). With
    ``--architecture gpt2`` the network is GPT-2's nearest to the preset's: settings GPT-2 does not have (RoPE,
    RMSNorm, ...) give way to GPT-2's own, and the log says which; everything else (sizes, optimiser, schedule,
    data, seed) stays the preset's. With ``--init_from`` the configuration is that model's (see
    :func:`pretrained_config`).
    """
    if model_args.init_from:
        return pretrained_config(model_args, context, tokenizer)
    config = MyGPTConfig(
        **{**model_args.config_kwargs(), "n_positions": context},
        vocab_size=len(tokenizer), use_cache=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    if model_args.architecture != "gpt2":
        return config
    differences = config.gpt2_incompatibilities()
    if differences:
        logger.warning("--architecture gpt2: the GPT-2 twin keeps GPT-2's own architecture where the preset's "
                       "MyGPT leaves it: %s", "; ".join(differences))
    return config.to_gpt2_config(strict=False)


def checkpoint_config(source: str) -> PretrainedConfig:
    """The configuration of the checkpoint ``--init_from`` names; ``ValueError`` saying why when it cannot be read."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=True)
    except (OSError, ValueError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"--init_from {source!r}: cannot read its configuration ({first}); give a Hub id such as "
                         "gpt2 (with the Hub reachable) or a folder holding config.json") from error


def pretrained_config(model_args: Any, context: int, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """The configuration of the model ``--init_from`` names, as the chosen architecture reads it.

    A GPT-2 checkpoint becomes a ``MyGPTConfig`` for ``--architecture mygpt`` (the weights map one to one); a MyGPT
    checkpoint cannot become a ``GPT2LMHeadModel``. ``--dropout`` still applies; the other network fields of the
    preset are ignored, with a warning naming those that differ from the checkpoint's.

    Raises ``ValueError`` when the checkpoint cannot be read, is neither GPT-2 nor MyGPT, has a vocabulary of
    another size than the tokenizer, or cannot attend as far as the context.
    """
    from transformers import GPT2Config

    source = model_args.init_from
    loaded = checkpoint_config(source)
    if isinstance(loaded, GPT2Config):
        config = loaded if model_args.architecture == "gpt2" else MyGPTConfig.from_gpt2_config(loaded)
    elif loaded.model_type == MyGPTConfig.model_type and model_args.architecture != "gpt2":
        config = MyGPTConfig.from_dict(loaded.to_dict())
    else:
        raise ValueError(f"--init_from {source!r} is a {loaded.model_type} model; --architecture "
                         f"{model_args.architecture} can start from GPT-2"
                         f"{' or MyGPT' if model_args.architecture != 'gpt2' else ''} checkpoints only")
    if config.vocab_size != len(tokenizer):
        raise ValueError(f"--init_from {source!r} has a vocabulary of {config.vocab_size} but the tokenizer has "
                         f"{len(tokenizer)} tokens: fine-tune with the checkpoint's own tokenizer (leave --tokenizer "
                         "unset)")
    if context > config.n_positions:
        raise ValueError(f"--init_from {source!r} attends over {config.n_positions} positions, fewer than the "
                         f"context {context}: use --block_size <= {config.n_positions}")
    ignored = {name: value for name, value in model_args.config_kwargs().items()
               if name in config.to_dict() and value is not None and value != getattr(config, name)
               and name not in ("embd_pdrop", "attn_pdrop", "resid_pdrop", "n_positions")}
    if ignored:
        logger.warning("--init_from %s: the network is the checkpoint's; these settings are ignored: %s", source,
                       ", ".join(f"{k}={v!r} (checkpoint: {getattr(config, k)!r})" for k, v in sorted(ignored.items())))
    if model_args.dropout is not None:
        config.embd_pdrop = config.attn_pdrop = config.resid_pdrop = model_args.dropout
    config.pad_token_id = tokenizer.pad_token_id
    config.use_cache = True
    return config


def generation_defaults(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """``generation_config.json`` of a trained model: ``generation_mygpt.DEFAULT_GENERATION``, the tokenizer's ids,
    and the pad token suppressed: it is never a training target, yet a briefly trained model still gives it some
    probability, and a sampled pad reads as padding to the next forward call (GPT-2 then warns about a mask)."""
    suppressed = [tokenizer.pad_token_id] if tokenizer.pad_token_id not in (None, tokenizer.eos_token_id) else None
    return {**DEFAULT_GENERATION, "use_cache": True, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
            "suppress_tokens": suppressed}


def command_line(prog: str, argv: list[str]) -> str:
    """The shell command that runs ``argv`` again."""
    return shlex.join([prog, *argv])
