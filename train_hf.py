#!/usr/bin/env python3
"""Train a GPT from raw text with one command, on a laptop CPU or on GPUs.

    python train_hf.py                                   # cpu-quick: Shakespeare by play, BPE, ~12 min on 2 cores
    python train_hf.py --preset shakespeare-char-cpu --data_files tinyshakespeare.txt
    python train_hf.py --architecture gpt2 --output_dir runs/cpu-quick-gpt2   # the same run with HF's GPT-2
    accelerate launch --config_file configs/accelerate/ddp.yaml train_hf.py --preset gpt-small
    torchrun --nproc_per_node 2 train_hf.py ...          # data parallel (gloo on CPU, nccl on GPUs)
    python train_hf.py --output_dir runs/x --resume_from_checkpoint     # continue a stopped run

Every argument (``--help``) can also come from a preset in ``configs/`` or a YAML/JSON file (``--preset FILE``).
The output folder receives the model (safetensors + config + code, loadable with ``trust_remote_code=True``),
the tokenizer, ``generation_config.json``, ``training_log.csv``, ``train.log``, ``loss_curve.png``,
``samples.md``, a model card ``README.md`` and, last, ``run_summary.json``: a folder without it is not a
finished run.
"""

from __future__ import annotations

import logging
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors.torch import load_file
from transformers import (AutoTokenizer, EarlyStoppingCallback, GPT2LMHeadModel, PreTrainedTokenizerBase,
                          TrainerState, default_data_collator, set_seed)
from transformers.trainer_utils import load_sharded_checkpoint

from configuration_mygpt import MyGPTConfig
from modeling_mygpt import MyGPTForCausalLM
from mygpt import run_artifacts
from mygpt.arguments import LMTrainingArguments, ModelArguments, RunArguments, parse_arguments
from mygpt.corpus import cache_dir
from mygpt.data import DataArguments, data_arguments_record, load_text_splits, tokenize_and_pack
from mygpt.tokenization import build_tokenizer, iter_texts
from mygpt.training import (CsvLogCallback, LMTrainer, ThroughputMeter, choose_precision, cpu_name,
                            peak_flops_per_device, training_flops_per_token, untied_missing_keys, write_log_csv)

logger = logging.getLogger("train_hf")


@dataclass
class PreparedRun:
    """Everything checked and built before the first training step."""

    model_args: ModelArguments
    data_args: DataArguments
    training_args: LMTrainingArguments
    run_args: RunArguments
    argv: list[str]
    output_dir: Path
    resume_from: Path | None
    precision: str
    tokenizer: PreTrainedTokenizerBase
    texts: Any  # the raw text splits: a DatasetDict (its train split an IterableDataset when streaming)
    data_info: dict[str, Any]
    packed: dict[str, Any]
    token_stats: dict[str, dict[str, int]]


# ---------------------------------------------------------------------------------------------------------------
# Checks and preparation: every mistake in the input is found here, before anything is written.


def model_config(model_args: ModelArguments, n_positions: int,
                 tokenizer: PreTrainedTokenizerBase | None) -> MyGPTConfig:
    """The ``MyGPTConfig`` of the run (``ValueError`` naming the field for impossible values)."""
    vocab_size = len(tokenizer) if tokenizer is not None else 256
    return MyGPTConfig(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=model_args.n_embd, n_layer=model_args.n_layer,
        n_head=model_args.n_head, n_kv_head=model_args.n_kv_head, n_inner=model_args.n_inner,
        activation_function=model_args.activation_function, position_embedding=model_args.position_embedding,
        norm=model_args.norm, norm_position=model_args.norm_position, bias=model_args.bias,
        embd_pdrop=model_args.dropout, attn_pdrop=model_args.dropout, resid_pdrop=model_args.dropout,
        initializer_range=model_args.initializer_range, tie_word_embeddings=model_args.tie_word_embeddings,
        use_cache=True,
        bos_token_id=tokenizer.bos_token_id if tokenizer is not None else None,
        eos_token_id=tokenizer.eos_token_id if tokenizer is not None else None,
        pad_token_id=tokenizer.pad_token_id if tokenizer is not None else None,
    )


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


def barrier(training_args: LMTrainingArguments) -> None:
    if training_args.world_size > 1:
        training_args.distributed_state.wait_for_everyone()


def prepare_run(argv: list[str]) -> PreparedRun:
    """Parses and checks the arguments, the output folder and the data; builds the tokenizer and the blocks.

    Raises ``ValueError`` / ``FileNotFoundError`` / ``RuntimeError`` with a message for the user. The output
    folder is only touched at the very end, once everything else has been found valid.
    """
    model_args, data_args, training_args, run_args = parse_arguments(argv)
    n_positions = model_args.n_positions or data_args.block_size
    if data_args.block_size > n_positions:
        raise ValueError(f"--block_size {data_args.block_size} is larger than --n_positions {n_positions}: the model "
                         f"cannot attend that far; use --block_size <= {n_positions} or a larger --n_positions")
    config = model_config(model_args, n_positions, None)  # invalid model settings fail now, not after the data
    if model_args.architecture == "gpt2":
        config.to_gpt2_config()
    if data_args.streaming and training_args.max_steps <= 0:
        raise ValueError("--streaming needs --max_steps: a stream has no length to count epochs with")
    if not training_args.bf16 and not training_args.fp16:
        precision = choose_precision(run_args.precision, training_args.use_cpu)
        training_args.bf16, training_args.fp16 = precision == "bf16", precision == "fp16"
    if not torch.cuda.is_available() or training_args.use_cpu:
        training_args.dataloader_pin_memory = False  # pinning is for copies to a GPU
    precision = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32"

    output_dir = Path(training_args.output_dir)
    resume_from = check_output_dir(output_dir, run_args.overwrite, training_args.resume_from_checkpoint)
    barrier(training_args)  # every process has looked at the folder before the main one changes it

    with training_args.main_process_first(desc="loading the text"):
        texts, data_info = load_text_splits(data_args)
    with training_args.main_process_first(desc="building the tokenizer"):
        if resume_from is not None:
            tokenizer = AutoTokenizer.from_pretrained(str(resume_from))  # the very tokenizer the run started with
        else:
            budget = data_args.tokenizer_train_bytes
            if budget is None and data_args.streaming:
                budget = 100_000_000  # a stream may be endless: learn the vocabulary from its first 100 MB
            training_text = iter_texts((row["text"] for row in texts["train"]), budget)
            tokenizer = build_tokenizer(data_args.tokenizer, training_text, data_args.vocab_size,
                                        cache_dir() / "tokenizers")
        tokenizer.model_max_length = n_positions
    with training_args.main_process_first(desc="tokenizing"):
        packed, token_stats = tokenize_and_pack(texts, tokenizer, data_args.block_size,
                                                data_args.preprocessing_num_workers, data_args.train_stride)

    if training_args.process_index == 0:
        if run_args.overwrite and run_artifacts.folder_state(output_dir) in ("finished", "unfinished"):
            logger.info("--overwrite: deleting the previous run in %s", output_dir)
            run_artifacts.clear_run(output_dir)
        run_artifacts.mark_incomplete(output_dir, [sys.executable, *sys.argv[:1], *argv])
    barrier(training_args)
    return PreparedRun(model_args, data_args, training_args, run_args, argv, output_dir, resume_from, precision,
                       tokenizer, texts, data_info, packed, token_stats)


# ---------------------------------------------------------------------------------------------------------------
# Training


def build_model(run: PreparedRun) -> torch.nn.Module:
    n_positions = run.model_args.n_positions or run.data_args.block_size
    config = model_config(run.model_args, n_positions, run.tokenizer)
    config.use_cache = False  # training and evaluation never reuse keys/values; saved with True at the end
    if run.model_args.architecture == "gpt2":
        gpt2_config = config.to_gpt2_config()
        return GPT2LMHeadModel._from_config(gpt2_config, attn_implementation=run.model_args.attn_implementation)
    return MyGPTForCausalLM._from_config(config, attn_implementation=run.model_args.attn_implementation)


def build_trainer(run: PreparedRun) -> LMTrainer:
    """The model and the ``LMTrainer`` of a prepared run, with its callbacks (also used by bench/bench_train.py)."""
    args, out = run.training_args, run.output_dir
    set_seed(args.seed)  # the initial weights depend on it
    model = build_model(run)
    block = run.data_args.block_size
    tokens_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size * block
    peak, peak_how = (run.run_args.peak_tflops * 1e12, "--peak_tflops") if run.run_args.peak_tflops else \
        peak_flops_per_device(run.precision, args.use_cpu)
    meter = ThroughputMeter(tokens_per_step, training_flops_per_token(model, block),
                            peak * args.world_size if peak else None, peak_how)
    logger.info("%s: %.2fM parameters, %d tokens per optimizer step, %s, %d process(es)",
                run.model_args.architecture, model.num_parameters() / 1e6, tokens_per_step, run.precision,
                args.world_size)
    callbacks = [CsvLogCallback(out / "training_log.csv")]
    if run.run_args.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(run.run_args.early_stopping_patience,
                                               run.run_args.early_stopping_threshold))
    trainer = LMTrainer(
        model=model, args=args, train_dataset=run.packed["train"], eval_dataset=run.packed["validation"],
        processing_class=run.tokenizer, data_collator=default_data_collator, callbacks=callbacks,
        split_stats={"eval": run.token_stats["validation"], "test": run.token_stats.get("test")}, meter=meter,
    )
    logger.info("parallelism: %s on %s", trainer.accelerator.distributed_type, args.device)
    return trainer


def train(run: PreparedRun) -> dict[str, Any]:
    """Trains, evaluates, writes every artifact and returns the run summary."""
    started = time.time()
    args, out = run.training_args, run.output_dir
    file_log = _log_to_file(out / "train.log") if args.process_index == 0 else None
    logger.info("command: %s", shlex.join(["python", "train_hf.py", *run.argv]))
    trainer = build_trainer(run)
    n_params = sum(p.numel() for p in trainer.model.parameters())
    tokens_per_step, peak_how = trainer.meter.tokens_per_step, trainer.meter.peak_how
    if args.process_index == 0:
        run.tokenizer.save_pretrained(str(out))
    try:
        if run.resume_from is not None and _reached_max_steps(run.resume_from):
            take_over_finished_checkpoint(trainer, run.resume_from, out)
            train_output = None
        else:
            train_output = trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
    except KeyboardInterrupt:
        logger.error("interrupted: %s stays unfinished; continue it with --resume_from_checkpoint", out)
        raise SystemExit(130) from None

    trainer.remove_callback(EarlyStoppingCallback)  # it watches validation only; the test scores are not for it
    # Final scores of the model we keep (the best checkpoint when load_best_model_at_end). Its validation scores
    # were logged when it was evaluated during training; evaluating it again would cost time and say the same.
    best = next((e for e in trainer.state.log_history if "eval_loss" in e and args.load_best_model_at_end
                 and e["step"] == trainer.state.best_global_step), None)
    results = {"validation": _strip(best if best is not None else trainer.evaluate(), "eval")}
    if "test" in run.packed:
        results["test"] = _strip(trainer.evaluate(run.packed["test"], metric_key_prefix="test"), "test")
    model = trainer.model
    model.config.use_cache = True  # off during training; generation needs it (the generation config too)
    model.generation_config.update(use_cache=True, do_sample=True, temperature=0.8, top_k=50, max_new_tokens=200,
                                   bos_token_id=run.tokenizer.bos_token_id, eos_token_id=run.tokenizer.eos_token_id,
                                   pad_token_id=run.tokenizer.pad_token_id)
    trainer.save_model(str(out))
    if args.process_index != 0:
        return {}

    state = trainer.state
    summary = _summary(run, trainer, train_output, results, n_params, tokens_per_step, peak_how, started)
    write_log_csv(out / "training_log.csv", state.log_history)
    run_artifacts.plot_loss_curve(state.log_history, tokens_per_step, out / "loss_curve.png")
    prompts = run.run_args.sample_prompts or run_artifacts.pick_prompts(
        list(run.texts["validation"]["text"]), run.run_args.num_sample_prompts, args.seed)
    samples = run_artifacts.generate_samples(model, run.tokenizer, prompts, run.run_args.sample_max_new_tokens,
                                             args.seed)
    run_artifacts.write_samples_markdown(samples, out / "samples.md", summary["name"], args.seed)
    summary["wall_time_seconds"] = round(time.time() - started, 1)
    (out / "README.md").write_text(run_artifacts.render_model_card(summary, samples))
    run_artifacts.finish(out, summary, run.run_args.keep_checkpoints)
    if file_log is not None:
        logging.getLogger().removeHandler(file_log)
        file_log.close()
    print(_summary_line(summary))
    return summary


def _reached_max_steps(checkpoint: Path) -> bool:
    state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    return state.max_steps > 0 and state.global_step >= state.max_steps


def take_over_finished_checkpoint(trainer: LMTrainer, checkpoint: Path, output_dir: Path) -> None:
    """Finishes a run from a checkpoint that already reached ``max_steps``, without training.

    Resumed from such a checkpoint, transformers 5.24 takes one optimizer step more than asked. A run killed after
    its last checkpoint (during the final evaluation or the samples) must end as it would have: with the state of
    that checkpoint and the weights of the best one.
    """
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    best = trainer.state.best_model_checkpoint if trainer.args.load_best_model_at_end else None
    source = output_dir / Path(best).name if best else checkpoint
    logger.info("%s already reached max_steps: taking its state and the weights of %s", checkpoint, source)
    if (source / "model.safetensors").is_file():
        loaded = trainer.model.load_state_dict(load_file(str(source / "model.safetensors")), strict=False)
    else:  # sharded weights
        loaded = load_sharded_checkpoint(trainer.model, str(source), strict=False)
    trainer.model.tie_weights()
    missing = untied_missing_keys(trainer.model, loaded.missing_keys)
    if missing or loaded.unexpected_keys:
        raise RuntimeError(f"{source} does not fit the model: missing {missing}, unexpected {loaded.unexpected_keys}")


def _strip(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    keep = ("loss", "perplexity", "bits_per_byte")
    return {k: metrics[f"{prefix}_{k}"] for k in keep if f"{prefix}_{k}" in metrics}


def _summary(run: PreparedRun, trainer: LMTrainer, train_output, results: dict, n_params: int,
             tokens_per_step: int, peak_how: str, started: float) -> dict[str, Any]:
    args, state, model = run.training_args, trainer.state, trainer.model
    embedding = model.get_input_embeddings().weight.numel()
    position = getattr(getattr(model, "transformer", None), "wpe", None)
    throughput = trainer.meter.overall()
    train_stats = run.token_stats["train"]
    name = f"{run.model_args.architecture}-{Path(args.output_dir).name}"
    return {
        "name": name,
        "output_dir": str(run.output_dir),
        "command": shlex.join(["python", "train_hf.py", *run.argv]),
        "preset": run.run_args.preset,
        "architecture": run.model_args.architecture,
        "model": {
            "class": type(model).__name__,
            "parameters": n_params,
            "non_embedding_parameters": n_params - embedding - (position.weight.numel() if position is not None else 0),
            "config": model.config.to_diff_dict(),
            "arguments": asdict(run.model_args),
        },
        "data": {"arguments": data_arguments_record(run.data_args), **run.data_info, "tokens": run.token_stats},
        "tokenizer": {
            "kind": run.data_args.tokenizer if run.data_args.tokenizer in ("bpe", "char") else "pretrained",
            "name": run.data_args.tokenizer,
            "vocab_size": len(run.tokenizer),
            "bytes_per_token": (train_stats["bytes"] / train_stats["tokens"]) if "tokens" in train_stats else None,
            "trained_on": "training split only" if run.data_args.tokenizer in ("bpe", "char") else "pretrained",
        },
        "training": {
            "block_size": run.data_args.block_size,
            "train_stride": run.data_args.train_stride or run.data_args.block_size,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "world_size": args.world_size,
            "tokens_per_step": tokens_per_step,
            "max_steps": state.max_steps,
            "learning_rate": args.learning_rate,
            "lr_scheduler_type": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
            "lr_scheduler_kwargs": args.lr_scheduler_kwargs,
            "warmup_steps": args.warmup_steps,
            "weight_decay": args.weight_decay,
            "adam_betas": [args.adam_beta1, args.adam_beta2],
            "max_grad_norm": args.max_grad_norm,
            "dropout": run.model_args.dropout,
            "precision": run.precision,
            "seed": args.seed,
            "early_stopping_patience": run.run_args.early_stopping_patience,
            "resumed_from": str(run.resume_from) if run.resume_from else None,
        },
        "results": {
            "steps": state.global_step,
            # passes over the training tokens (the Trainer's "epoch" counts examples, and with --train_stride 1
            # there is one example per token)
            "epochs": (state.global_step * tokens_per_step / train_stats["tokens"]) if "tokens" in train_stats
            else state.epoch,
            "tokens_seen": state.global_step * tokens_per_step,
            "stopped_early": state.global_step < state.max_steps,
            "best_step": state.best_global_step,
            "best_validation_loss": state.best_metric,
            "final_train_loss": next((e["loss"] for e in reversed(state.log_history) if "loss" in e), None),
            **results,
            "train_runtime_seconds": train_output.metrics.get("train_runtime") if train_output else None,
            "tokens_per_second": throughput.get("tokens_per_second"),
            "mfu": throughput.get("mfu"),
            "mfu_peak": peak_how,
            "metric_notes": "loss: nats per scored token, averaged over every token of the split's non-overlapping "
                            "blocks; bits per byte = loss x tokens / UTF-8 bytes of the split / ln 2 (the first "
                            "token of each block, which has no context, is charged the mean loss)",
        },
        "hardware": {
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() and not args.use_cpu else
            cpu_name(),
            "cpu_threads": torch.get_num_threads(),
            "processes": args.world_size,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }


def _summary_line(summary: dict[str, Any]) -> str:
    r = summary["results"]
    parts = [f"done: {summary['output_dir']}", f"{r['steps']} steps, {r['tokens_seen'] / 1e6:.2f}M tokens in "
             f"{summary['wall_time_seconds'] / 60:.1f} min"]
    for split in ("validation", "test"):
        if split in r:
            parts.append(f"{split} loss {r[split]['loss']:.4f}"
                         + (f" ({r[split]['bits_per_byte']:.3f} bits/byte)" if "bits_per_byte" in r[split] else ""))
    if r.get("tokens_per_second"):
        parts.append(f"{r['tokens_per_second']:.0f} tokens/s")
    return " | ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# Logging and the entry point


def _configure_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO if rank == 0 else logging.WARNING)
    transformers.utils.logging.set_verbosity_warning()


def _log_to_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else list(argv)
    _configure_logging()
    try:
        run = prepare_run(argv)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        raise SystemExit(f"error: {error}") from None
    return train(run)


if __name__ == "__main__":
    main()
