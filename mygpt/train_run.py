"""A training run from arguments to a finished (and, if asked, published) folder.

    run_training(argv)              # what mygpt-train does: lock the folder, prepare, train, publish
    run = prepare_run(parse_arguments(argv), argv)   # the plan and the data, nothing trained yet
    trainer = build_trainer(run)    # the model and the LMTrainer of a prepared run (bench/bench_train.py)
    summary = train(run)            # train, evaluate, write every artifact; returns run_summary.json's content

The output folder receives the model (safetensors + config + code, loadable with ``trust_remote_code=True``),
the tokenizer, ``generation_config.json``, ``training_log.csv``, ``train.log``, ``loss_curve.png``,
``samples.md``, a model card ``README.md`` and, last, ``run_summary.json``: a folder without it is not a
finished run. One process at a time writes there (:class:`mygpt.files.FolderLock`).
"""

from __future__ import annotations

import contextlib
import logging
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors.torch import load_file
from transformers import (AutoTokenizer, EarlyStoppingCallback, GPT2LMHeadModel, PreTrainedTokenizerBase,
                          TrainerState, default_data_collator, set_seed)
from transformers.trainer_utils import load_sharded_checkpoint

from modeling_mygpt import MyGPTForCausalLM
from mygpt import plan as planning
from mygpt import run_artifacts, speed
from mygpt.arguments import Arguments, parse_arguments
from mygpt.corpus import cache_dir
from mygpt.data import data_arguments_record, load_text_splits, sample_blocks, tokenize_and_pack
from mygpt.files import FolderBusyError, FolderLock
from mygpt.plan import RunPlan
from mygpt.prompts import pick_prompts
from mygpt.tokenization import build_tokenizer, iter_texts
from mygpt.training import (CsvLogCallback, LMTrainer, ThroughputMeter, cpu_has_native_bf16, cpu_name,
                            peak_flops_per_device, training_flops_per_token, untied_missing_keys, write_log_csv)

logger = logging.getLogger(__name__)

DEFAULT_PROG = "mygpt-train"


@dataclass(frozen=True)
class PreparedRun:
    """A resolved plan and its data, ready to train."""

    plan: RunPlan
    tokenizer: PreTrainedTokenizerBase
    texts: Any  # the raw text splits: a DatasetDict (its train split an IterableDataset when streaming)
    data_info: dict[str, Any]
    packed: dict[str, Any]
    token_stats: dict[str, dict[str, int]]


# ---------------------------------------------------------------------------------------------------------------
# Preparation: every mistake in the input is found here, before anything is written.


def _barrier(args: transformers.TrainingArguments) -> None:
    if args.world_size > 1:
        args.distributed_state.wait_for_everyone()


def prepare_run(arguments: Arguments, argv: list[str], prog: str = DEFAULT_PROG) -> PreparedRun:
    """Checks the arguments, the output folder and the data; builds the tokenizer, the plan and the blocks.

    Raises ``ValueError`` / ``FileNotFoundError`` / ``RuntimeError`` / ``mygpt.hub.HubError`` with a message for the
    user. The output folder is only touched at the very end, once everything else has been found valid.
    """
    model_args, data_args, parsed, run_args = arguments
    planning.check_arguments(model_args, data_args, parsed, run_args)
    if model_args.init_from:
        planning.checkpoint_config(model_args.init_from)  # a wrong name fails now, before the data is read
    context = planning.resolve_context(model_args, data_args)
    precision = planning.resolve_precision(parsed, run_args)
    output_dir = Path(parsed.output_dir)
    hub = planning.hub_target(parsed, output_dir)
    training_args = planning.trainer_arguments(parsed, precision, planning.run_name(model_args.architecture,
                                                                                    output_dir))
    resume_from = planning.check_output_dir(output_dir, run_args.overwrite, parsed.resume_from_checkpoint)
    _barrier(training_args)  # every process has looked at the folder before the main one changes it

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
            tokenizer = build_tokenizer(planning.tokenizer_kind(model_args, data_args), training_text,
                                        data_args.vocab_size, cache_dir() / "tokenizers",
                                        fixed_vocabulary=bool(model_args.init_from))
        tokenizer.model_max_length = context
    plan = RunPlan(
        model_args=model_args, data_args=data_args, run_args=run_args, training_args=training_args,
        command=planning.command_line(prog, argv), output_dir=output_dir, resume_from=resume_from,
        precision=precision, context=context,
        tokens_per_step=(training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
                         * training_args.world_size * data_args.block_size),
        config=planning.build_config(model_args, context, tokenizer),
        generation=planning.generation_defaults(tokenizer), hub=hub,
    )
    with training_args.main_process_first(desc="tokenizing"):
        packed, token_stats = tokenize_and_pack(texts, tokenizer, data_args.block_size,
                                                data_args.preprocessing_num_workers, data_args.train_stride)

    if training_args.process_index == 0:
        if run_args.overwrite and run_artifacts.folder_state(output_dir) in ("finished", "unfinished"):
            logger.info("--overwrite: deleting the previous run in %s", output_dir)
            run_artifacts.clear_run(output_dir)
        run_artifacts.mark_incomplete(output_dir, plan.command)
    _barrier(training_args)
    return PreparedRun(plan, tokenizer, texts, data_info, packed, token_stats)


@contextlib.contextmanager
def output_lock(args: transformers.TrainingArguments, purpose: str) -> Iterator[None]:
    """One writer per output folder: the main process holds :class:`FolderLock` for the whole run.

    The other processes of a distributed run learn whether it was granted, so that all of them stop together
    with the same message instead of waiting for a main process that has given up.
    """
    lock = FolderLock(args.output_dir, purpose=purpose)
    refusal = None
    if args.process_index == 0:
        try:
            lock.acquire()
        except FolderBusyError as error:
            refusal = str(error)
    if args.world_size > 1:
        shared = [refusal]
        torch.distributed.broadcast_object_list(shared, src=0)
        refusal = shared[0]
    if refusal is not None:
        raise FolderBusyError(refusal)
    try:
        yield
    finally:
        lock.release()


def run_training(argv: list[str], prog: str = DEFAULT_PROG) -> dict[str, Any]:
    """Everything ``mygpt-train`` does: parse, lock the output folder, prepare, train, publish; returns the summary.

    The summary is empty on the processes other than the main one of a distributed run.
    """
    arguments = parse_arguments(argv, prog=prog)
    with output_lock(arguments.training, purpose=prog):
        run = prepare_run(arguments, argv, prog)
        summary = train(run)
        if run.plan.hub is not None and summary:
            summary["hub"] = publish(run.plan)
    return summary


# ---------------------------------------------------------------------------------------------------------------
# Training


def build_model(plan: RunPlan) -> torch.nn.Module:
    """The network of the plan, freshly initialised (seed it first) or, with ``--init_from``, holding that model's
    weights; with the run's generation defaults."""
    model_class = GPT2LMHeadModel if plan.architecture == "gpt2" else MyGPTForCausalLM
    source = plan.model_args.init_from
    attention = plan.model_args.attn_implementation
    if source is None:
        model = model_class._from_config(plan.config, attn_implementation=attention)
    else:
        dropout = {name: getattr(plan.config, name) for name in ("embd_pdrop", "attn_pdrop", "resid_pdrop")}
        if model_class is MyGPTForCausalLM and planning.checkpoint_config(source).model_type == "gpt2":
            model = MyGPTForCausalLM.from_gpt2(source, config_overrides=dropout)  # GPT-2's weights, one to one
        else:
            model = model_class.from_pretrained(source, config=plan.config)
        model.config.pad_token_id = plan.config.pad_token_id
        model.set_attn_implementation(attention)
        logger.info("starting from the weights of %s (%s)", source, type(model).__name__)
    model.generation_config.update(**plan.generation)
    return model


def build_trainer(run: PreparedRun) -> LMTrainer:
    """The model and the ``LMTrainer`` of a prepared run, with its callbacks (also used by bench/bench_train.py)."""
    plan = run.plan
    args = plan.training_args
    speed.tune_process()  # before the model's tensors are allocated
    set_seed(args.seed)  # the initial weights depend on it
    model = build_model(plan)
    peak, peak_how = (plan.run_args.peak_tflops * 1e12, "--peak_tflops") if plan.run_args.peak_tflops else \
        peak_flops_per_device(plan.precision, args.use_cpu)
    meter = ThroughputMeter(plan.tokens_per_step, training_flops_per_token(model, plan.block_size),
                            peak * args.world_size if peak else None, peak_how)
    logger.info("%s: %.2fM parameters, %d tokens per optimizer step, %s, %d process(es)",
                plan.architecture, model.num_parameters() / 1e6, plan.tokens_per_step, plan.precision,
                args.world_size)
    callbacks = [CsvLogCallback(plan.output_dir / "training_log.csv")]
    if plan.run_args.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(plan.run_args.early_stopping_patience,
                                               plan.run_args.early_stopping_threshold))
    trainer = LMTrainer(
        model=model, args=args, train_dataset=run.packed["train"],
        eval_dataset=sample_blocks(run.packed["validation"], plan.run_args.eval_sample_blocks),
        processing_class=run.tokenizer, data_collator=default_data_collator, callbacks=callbacks,
        split_stats={"eval": run.token_stats["validation"], "test": run.token_stats.get("test")}, meter=meter,
    )
    logger.info("parallelism: %s on %s", trainer.accelerator.distributed_type, args.device)
    return trainer


def train(run: PreparedRun) -> dict[str, Any]:
    """Trains, evaluates, writes every artifact and returns the run summary (empty on processes other than 0)."""
    started = time.time()
    plan = run.plan
    args, out = plan.training_args, plan.output_dir
    file_log = _log_to_file(out / "train.log") if args.process_index == 0 else None
    try:
        logger.info("command: %s", plan.command)
        trainer = build_trainer(run)
        if args.process_index == 0:
            run.tokenizer.save_pretrained(str(out))
        try:
            if plan.resume_from is not None and _reached_max_steps(plan.resume_from):
                take_over_finished_checkpoint(trainer, plan.resume_from, out)
                train_output = None
            else:
                train_output = trainer.train(resume_from_checkpoint=str(plan.resume_from) if plan.resume_from
                                             else None)
        except KeyboardInterrupt:
            logger.error("interrupted: %s stays unfinished; continue it with --resume_from_checkpoint", out)
            raise

        trainer.remove_callback(EarlyStoppingCallback)  # it watches validation only; the test scores are not for it
        evaluation_seconds = sum(e.get("eval_runtime", 0.0) for e in trainer.state.log_history)  # during training
        # Final scores of the model we keep (the best checkpoint when load_best_model_at_end), on the whole splits.
        # When training evaluated the whole validation split, the best checkpoint's scores are already logged:
        # evaluating it again would cost time and say the same. A sample's scores are not the split's.
        validation = run.packed["validation"]
        whole = trainer.eval_dataset is validation
        best = next((e for e in trainer.state.log_history if "eval_loss" in e and args.load_best_model_at_end
                     and whole and e["step"] == trainer.state.best_global_step), None)
        results = {"validation": _strip(best if best is not None else trainer.evaluate(validation), "eval")}
        if "test" in run.packed:
            results["test"] = _strip(trainer.evaluate(run.packed["test"], metric_key_prefix="test"), "test")
        trainer.save_model(str(out))
        if args.process_index != 0:
            return {}
        summary = _summary(run, trainer, train_output, results, started, evaluation_seconds)
        _write_artifacts(run, trainer, summary, started)
        return summary
    finally:
        if file_log is not None:
            logging.getLogger().removeHandler(file_log)
            file_log.close()


def _write_artifacts(run: PreparedRun, trainer: LMTrainer, summary: dict[str, Any], started: float) -> None:
    """The log, the loss curve, the samples, the card and, last, the summary that says "finished"."""
    plan, out = run.plan, run.plan.output_dir
    seed = plan.training_args.seed
    write_log_csv(out / "training_log.csv", trainer.state.log_history)
    run_artifacts.plot_loss_curve(trainer.state.log_history, plan.tokens_per_step, out / "loss_curve.png")
    prompts = plan.run_args.sample_prompts or [prompt.text for prompt in pick_prompts(
        list(run.texts["validation"]["text"]), plan.run_args.num_sample_prompts, length=80, seed=seed, end="line")]
    samples = run_artifacts.generate_samples(trainer.model, run.tokenizer, prompts,
                                             plan.run_args.sample_max_new_tokens, seed)
    run_artifacts.write_samples_markdown(samples, out / "samples.md", summary["name"], seed)
    summary["wall_time_seconds"] = round(time.time() - started, 1)
    hub_id = plan.hub.repo_id if plan.hub is not None else None
    run_artifacts.write_model_card(out / "README.md", summary, samples, hub_id=hub_id)
    run_artifacts.finish(out, summary, plan.run_args.keep_checkpoints)


def publish(plan: RunPlan) -> dict[str, str]:
    """Uploads the finished folder to ``plan.hub`` (the file set ``mygpt-push`` would upload), in one commit.

    Raises ``mygpt.hub.HubError`` saying that the run itself is finished and how to publish it later.
    """
    from mygpt.hub import HubError, ModelFolderError, plan_upload, push_model_folder, resolve_token

    try:
        upload = plan_upload(plan.output_dir)
        commit = push_model_folder(upload, plan.hub.repo_id, token=resolve_token(), private=plan.hub.private,
                                   commit_message=f"Upload {plan.name}, trained with {plan.command}")
    except (HubError, ModelFolderError) as error:
        raise HubError(f"the run in {plan.output_dir} is finished, but publishing it failed: {error}\nPublish it "
                       f"later with: mygpt-push --model {plan.output_dir} --repo_id {plan.hub.repo_id}"
                       f"{' --private' if plan.hub.private else ''}") from None
    logger.info("published %s at %s", plan.output_dir, commit.repo_url)
    return {"repo_url": str(commit.repo_url), "commit_url": commit.commit_url}


def _reached_max_steps(checkpoint: Path) -> bool:
    state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    return state.max_steps > 0 and state.global_step >= state.max_steps


def take_over_finished_checkpoint(trainer: LMTrainer, checkpoint: Path, output_dir: Path) -> None:
    """Finishes a run from a checkpoint that already reached ``max_steps``, without training.

    Resumed from such a checkpoint, transformers' Trainer takes one optimizer step more than asked (checked on 5.18,
    5.23 and 5.24; tests/test_train.py kills a run after its last checkpoint). A run killed after its last checkpoint (during the final
    evaluation or the samples) must end as it would have: with the state of that checkpoint and the weights of the
    best one.
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


# ---------------------------------------------------------------------------------------------------------------
# The summary


def _strip(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    keep = ("loss", "perplexity", "bits_per_byte")
    return {k: metrics[f"{prefix}_{k}"] for k in keep if f"{prefix}_{k}" in metrics}


def _summary(run: PreparedRun, trainer: LMTrainer, train_output, results: dict, started: float,
             evaluation_seconds: float) -> dict[str, Any]:
    plan = run.plan
    args, state, model = plan.training_args, trainer.state, trainer.model
    n_params = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    position = getattr(getattr(model, "transformer", None), "wpe", None)
    throughput = trainer.meter.overall()
    train_stats = run.token_stats["train"]
    config_kwargs = plan.model_args.config_kwargs()
    return {
        "name": plan.name,
        "output_dir": str(plan.output_dir),
        "command": plan.command,
        "preset": plan.run_args.preset,
        "architecture": plan.architecture,
        "model": {
            "class": type(model).__name__,
            "parameters": n_params,
            "non_embedding_parameters": n_params - embedding - (position.weight.numel() if position is not None else 0),
            "config": model.config.to_diff_dict(),
            "arguments": {**asdict(plan.model_args), **config_kwargs, "n_positions": plan.context},
        },
        "data": {"arguments": data_arguments_record(plan.data_args), **run.data_info, "tokens": run.token_stats},
        "tokenizer": {
            "kind": plan.data_args.tokenizer if plan.data_args.tokenizer in ("bpe", "char") else "pretrained",
            "name": plan.data_args.tokenizer,
            "vocab_size": len(run.tokenizer),
            "bytes_per_token": (train_stats["bytes"] / train_stats["tokens"]) if "tokens" in train_stats else None,
            "trained_on": "training split only" if plan.data_args.tokenizer in ("bpe", "char") else "pretrained",
        },
        "training": {
            "block_size": plan.block_size,
            "train_stride": plan.data_args.train_stride or plan.block_size,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "world_size": args.world_size,
            "tokens_per_step": plan.tokens_per_step,
            "max_steps": state.max_steps,
            "optimizer": args.optimizer,
            "learning_rate": args.learning_rate,
            "lr_scheduler_type": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
            "lr_scheduler_kwargs": args.lr_scheduler_kwargs,
            "warmup_steps": args.warmup_steps,
            "weight_decay": args.weight_decay,
            "adam_betas": [args.adam_beta1, args.adam_beta2],
            "max_grad_norm": args.max_grad_norm,
            "dropout": config_kwargs["resid_pdrop"],
            "precision": plan.precision,
            "seed": args.seed,
            "early_stopping_patience": plan.run_args.early_stopping_patience,
            "eval_sample_blocks": plan.run_args.eval_sample_blocks,
            "resumed_from": str(plan.resume_from) if plan.resume_from else None,
        },
        "results": {
            "steps": state.global_step,
            # passes over the training tokens (the Trainer's "epoch" counts examples, and with --train_stride 1
            # there is one example per token)
            "epochs": (state.global_step * plan.tokens_per_step / train_stats["tokens"]) if "tokens" in train_stats
            else state.epoch,
            "tokens_seen": state.global_step * plan.tokens_per_step,
            "stopped_early": state.global_step < state.max_steps,
            "best_step": state.best_global_step,
            "best_validation_loss": state.best_metric,
            "final_train_loss": next((e["loss"] for e in reversed(state.log_history) if "loss" in e), None),
            **results,
            "train_runtime_seconds": train_output.metrics.get("train_runtime") if train_output else None,
            # the Trainer's eval_runtime of every evaluation during training (its share of the run's cost)
            "evaluation_seconds": round(evaluation_seconds, 4),  # as precise as the Trainer's eval_runtime
            "tokens_per_second": throughput.get("tokens_per_second"),
            "mfu": throughput.get("mfu"),
            "mfu_peak": trainer.meter.peak_how,
            "metric_notes": "loss: nats per scored token, averaged over every token of the split's non-overlapping "
                            "blocks; bits per byte = loss x tokens / UTF-8 bytes of the split / ln 2 (the first "
                            "token of each block, which has no context, is charged the mean loss)",
        },
        "hardware": {
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() and not args.use_cpu else
            cpu_name(),
            "cpu_threads": torch.get_num_threads(),
            "cpu_native_bf16": cpu_has_native_bf16(),
            "processes": args.world_size,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }


def summary_line(summary: dict[str, Any]) -> str:
    """One line for the terminal: folder, steps, tokens, time, held-out losses, throughput."""
    r = summary["results"]
    parts = [f"done: {summary['output_dir']}", f"{r['steps']} steps, {r['tokens_seen'] / 1e6:.2f}M tokens in "
             f"{summary['wall_time_seconds'] / 60:.1f} min"]
    for split in ("validation", "test"):
        if split in r:
            parts.append(f"{split} loss {r[split]['loss']:.4f}"
                         + (f" ({r[split]['bits_per_byte']:.3f} bits/byte)" if "bits_per_byte" in r[split] else ""))
    if r.get("tokens_per_second"):
        parts.append(f"{r['tokens_per_second']:.0f} tokens/s")
    if summary.get("hub"):
        parts.append(f"published: {summary['hub']['repo_url']}")
    return " | ".join(parts)


def _log_to_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler
