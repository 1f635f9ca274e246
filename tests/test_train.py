"""End-to-end contracts of mygpt-train (train_hf.py) on tiny corpora and tiny models.

A run trains, lowers the loss, and leaves a complete, loadable, documented folder; bad input is refused with a
clear message before anything is written; a run killed mid-training resumes to the very same result; two
processes really split the batches.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mygpt import arguments, run_artifacts
from mygpt.commands import train
from mygpt.data import heldout_texts, load_run_splits, tokenize_and_pack
from mygpt.train_run import prepare_run, run_training
from tests.tiny_runs import TINY, WORDS, run_args
from tests.tiny_runs import corpus_dir, one_thread, private_cache  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent


def prepare(argv: list[str]):
    """The plan and the data of a run, without training (and without the folder lock)."""
    return prepare_run(arguments.parse_arguments(argv), argv)


@pytest.fixture(scope="module")
def finished_run(corpus_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MYGPT_CACHE", str(tmp_path_factory.getbasetemp() / "mygpt-cache"))
        summary = run_training(run_args(corpus_dir, out, "--eval_on_start", "true", "--validation_fraction", "0.25",
                                        "--test_fraction", "0.25"))
    return out, summary


def test_training_lowers_the_validation_loss(finished_run):
    out, summary = finished_run
    with (out / "training_log.csv").open() as handle:
        evals = [float(row["eval_loss"]) for row in csv.DictReader(handle) if row["eval_loss"]]
    before, after = evals[0], summary["results"]["validation"]["loss"]
    vocab = summary["tokenizer"]["vocab_size"]
    assert before == pytest.approx(torch.log(torch.tensor(float(vocab))).item(), rel=0.1)  # random init: ~ln V
    assert after < before - 0.5
    assert summary["results"]["best_validation_loss"] == pytest.approx(after)


def test_finished_run_folder_holds_every_artifact(finished_run):
    out, summary = finished_run
    names = set(os.listdir(out))
    expected = {"config.json", "model.safetensors", "generation_config.json", "configuration_mygpt.py",
                "modeling_mygpt.py", "generation_mygpt.py", "tokenizer.json", "tokenizer_config.json",
                "training_log.csv", "train.log", "loss_curve.png", "samples.md", "README.md", "run_summary.json"}
    assert expected <= names
    assert run_artifacts.MARKER not in names and not any(n.startswith("checkpoint-") for n in names)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "mygpt" and "AutoModelForCausalLM" in config["auto_map"]
    assert config["use_cache"] is True
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == summary["model"]["config"]["eos_token_id"]
    assert generation["use_cache"] is True  # or generate() would recompute the whole prefix for every token
    from generation_mygpt import DEFAULT_GENERATION

    assert {key: generation[key] for key in DEFAULT_GENERATION} == DEFAULT_GENERATION  # the one source
    assert generation["suppress_tokens"] == [summary["model"]["config"]["pad_token_id"]]  # never writes padding
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (out / "training_log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {"step", "loss", "eval_loss", "learning_rate", "tokens_per_second", "tokens_seen"} <= set(rows[0])
    train_rows = [r for r in rows if r["loss"]]
    assert [int(r["step"]) for r in train_rows] == [1, 2, 4, 6, 8, 10, 12]
    assert all(float(r["tokens_per_second"]) > 0 for r in train_rows)
    from generation_mygpt import STRATEGY_PRESETS

    samples = (out / "samples.md").read_text()
    assert all(f"## {strategy} " in samples for strategy in STRATEGY_PRESETS)
    for key in ("model", "data", "tokenizer", "training", "results", "hardware", "wall_time_seconds"):
        assert key in summary
    assert json.loads((out / "run_summary.json").read_text())["results"] == json.loads(json.dumps(summary["results"]))
    assert summary["data"]["split"]["by"] == "document" and summary["data"]["splits"]["test"]["documents"] == 2
    assert summary["results"]["tokens_seen"] == 12 * 4 * 32
    # the time of every evaluation (--eval_on_start, two during training, the final test), within the wall time
    assert 0 < summary["results"]["evaluation_seconds"] < summary["wall_time_seconds"]
    assert isinstance(summary["hardware"]["cpu_native_bf16"], bool)
    assert summary["training"]["optimizer"] == arguments.parse_arguments([]).training.optimizer  # the preset's


def test_model_card_has_hub_metadata_and_the_run_figures(finished_run):
    from huggingface_hub import ModelCard

    out, summary = finished_run
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "mit" and card.data.pipeline_tag == "text-generation"
    assert "custom_code" in card.data.tags and card.data.language == ["en"]
    assert {"perplexity", "bits_per_byte"} <= set(card.data.metrics)
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results[("test", "bits_per_byte")] == pytest.approx(summary["results"]["test"]["bits_per_byte"], abs=1e-4)
    text = card.text
    assert "trust_remote_code=True" in text and "loss_curve.png" in text
    assert f"{summary['model']['parameters']:,}" in text
    assert "{{" not in text and "{%" not in text


def test_saved_model_reloads_and_reproduces_the_validation_loss(finished_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, summary = finished_run
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    splits = load_run_splits(out)
    assert heldout_texts(out, "validation") == list(splits["validation"]["text"])
    packed, _ = tokenize_and_pack({"validation": splits["validation"]}, tokenizer, summary["training"]["block_size"])
    nats, count = 0.0, 0
    bf16 = summary["training"]["precision"] == "bf16"  # evaluated as trained: under bf16 autocast
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for row in packed["validation"].iter(batch_size=16):
            logits = model(input_ids=row["input_ids"]).logits.float()  # (B, T, V)
            targets = row["labels"][:, 1:]
            nats += torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=-100,
                                                      reduction="sum").item()
            count += (targets != -100).sum().item()
    assert nats / count == pytest.approx(summary["results"]["validation"]["loss"], rel=1e-5)


@pytest.mark.parametrize("precision, mixed_precision", [("fp32", "no"), ("bf16", "bf16")])
def test_the_trainer_trains_in_the_precision_the_plan_names(precision, mixed_precision, corpus_dir, tmp_path):
    from mygpt.train_run import build_trainer

    run = prepare(run_args(corpus_dir, tmp_path / "out", "--precision", precision))
    trainer = build_trainer(run)
    assert run.plan.precision == precision and trainer.accelerator.mixed_precision == mixed_precision
    assert trainer.model.config.use_cache is True  # kept on for generation; training passes use_cache=False


def test_loading_the_best_checkpoint_keeps_the_head_tied_without_a_missing_key_warning(corpus_dir, tmp_path):
    """transformers' Trainer loads the best checkpoint with load_state_dict(strict=False) and warns that the tied
    LM head ("lm_head.weight", saved once under the embedding) is missing: LMTrainer._issue_warnings_after_load
    guards this (checked: transformers 5.24 warns without it)."""
    import logging

    from mygpt.train_run import build_trainer

    run = prepare(run_args(corpus_dir, tmp_path / "out", "--max_steps", "4", "--eval_steps", "2",
                           "--save_steps", "2"))
    trainer = build_trainer(run)
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("transformers").addHandler(handler)
    try:
        trainer.train()
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert trainer.state.best_model_checkpoint is not None  # the best checkpoint was loaded at the end
    assert not [message for message in seen if "missing keys" in message]
    assert trainer.model.lm_head.weight is trainer.model.transformer.wte.weight


def test_tokenizer_is_learnt_from_the_training_split_only(corpus_dir, tmp_path):
    # A word that only the held-out documents contain must not shape the BPE vocabulary.
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    argv = run_args(corpus, tmp_path / "out", "--tokenizer", "bpe", "--vocab_size", "300", "--test_fraction", "0.25")
    probe = prepare(argv)
    held_out = [Path(p) for p in corpus.glob("*.txt") if p.name in
                {t for s in ("validation", "test") for t in probe.data_info["splits"][s]["titles"]}]
    for path in held_out:
        path.write_text(path.read_text() + " zyzzyvaquux" * 400)
    shutil.rmtree(tmp_path / "out")
    run = prepare(argv)
    vocabulary = run.tokenizer.get_vocab()
    assert not any("zyzz" in token for token in vocabulary)
    assert "zyzzyvaquux" in "".join([*run.texts["validation"]["text"], *run.texts["test"]["text"]])


def test_streamed_dataset_trains_for_max_steps(tmp_path):
    folder = tmp_path / "stories"
    folder.mkdir()
    rng = random.Random(1)
    rows = [{"story": " ".join(rng.choice(WORDS) for _ in range(60))} for _ in range(200)]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    argv = ["--dataset", str(folder), "--text_column", "story", "--streaming", "--streaming_eval_documents", "20",
            "--output_dir", str(tmp_path / "out"), *TINY, "--max_steps", "6"]
    summary = run_training(argv)
    assert summary["results"]["steps"] == 6 and summary["data"]["tokens"]["train"] == {"streamed": True}
    assert summary["data"]["splits"]["validation"]["documents"] == 20
    assert heldout_texts(tmp_path / "out", "validation") == [r["story"] for r in rows[:20]]


def test_evaluation_loss_is_the_mean_over_scored_tokens_not_over_batches(tmp_path):
    """transformers' evaluation_loop sets eval_loss to the mean of the batch losses, after compute_metrics has run:
    a batch with few scored tokens would count as much as a full one. LMTrainer.evaluation_loop guards this."""
    import datasets
    from transformers import default_data_collator

    from configuration_mygpt import MyGPTConfig
    from modeling_mygpt import MyGPTForCausalLM
    from mygpt.arguments import LMTrainingArguments
    from mygpt.training import LMTrainer, ThroughputMeter, token_nats

    torch.manual_seed(0)
    model = MyGPTForCausalLM(MyGPTConfig(vocab_size=40, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                         bos_token_id=0, eos_token_id=0)).eval()
    ids = torch.randint(0, 40, (3, 16))
    labels = ids.clone()
    labels[2, :14] = -100  # the last block scores 1 token, the others 15 each
    rows = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()}).with_format("torch")
    args = LMTrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, use_cpu=True,
                               report_to="none", eval_strategy="no", save_strategy="no",
                               load_best_model_at_end=False)
    trainer = LMTrainer(model=model, args=args, eval_dataset=rows, data_collator=default_data_collator,
                        split_stats={}, meter=ThroughputMeter(1, 1.0, None))
    with torch.no_grad():
        sums = token_nats(model(input_ids=ids).logits, labels)  # (3, 2)
    exact = (sums[:, 0].sum() / sums[:, 1].sum()).item()
    batch_means = [(sums[:2, 0].sum() / sums[:2, 1].sum()).item(), (sums[2, 0] / sums[2, 1]).item()]
    trainers_mean = (2 * batch_means[0] + batch_means[1]) / 3  # each batch loss repeated once per row
    assert abs(exact - trainers_mean) > 1e-3  # the case where the two differ
    assert trainer.evaluate()["eval_loss"] == pytest.approx(exact, rel=1e-6)


def test_evaluation_uses_a_sample_during_training_and_the_whole_split_at_the_end(corpus_dir, tmp_path):
    from modeling_mygpt import MyGPTForCausalLM
    from mygpt.scoring import row_nats

    argv = run_args(corpus_dir, tmp_path / "run", "--eval_sample_blocks", "3", "--precision", "fp32")
    summary = run_training(argv)
    run = prepare(run_args(corpus_dir, tmp_path / "again", "--precision", "fp32"))
    validation = run.packed["validation"][:]  # {"input_ids": (N, T), "labels": (N, T)}
    assert len(validation["input_ids"]) > 3
    model = MyGPTForCausalLM.from_pretrained(tmp_path / "run").eval()  # the kept (best) model
    with torch.no_grad():
        sums = row_nats(model(input_ids=validation["input_ids"]).logits, validation["labels"]).sum(0)  # (2,)
    final = summary["results"]["validation"]
    assert final["loss"] == pytest.approx((sums[0] / sums[1]).item(), rel=1e-4)  # the whole split, not the sample
    with (tmp_path / "run" / "training_log.csv").open() as handle:
        evals = [(int(r["step"]), float(r["eval_loss"])) for r in csv.DictReader(handle) if r["eval_loss"]]
    # What training saw (and chose the best checkpoint by) was the sample's loss; the whole split's follows it.
    best_step, best = summary["results"]["best_step"], summary["results"]["best_validation_loss"]
    assert [loss for step, loss in evals if step == best_step][0] == pytest.approx(best, rel=1e-5)
    assert best != pytest.approx(final["loss"], rel=1e-4)
    assert evals[-1] == (summary["results"]["steps"], pytest.approx(final["loss"], rel=1e-5))
    assert summary["training"]["eval_sample_blocks"] == 3
    assert 0 < summary["results"]["evaluation_seconds"] < summary["results"]["train_runtime_seconds"]


def test_weight_decay_reaches_weight_matrices_only():
    from modeling_mygpt import MyGPTForCausalLM
    from configuration_mygpt import MyGPTConfig
    from mygpt.training import decay_parameter_names

    model = MyGPTForCausalLM(MyGPTConfig(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2))
    decayed = set(decay_parameter_names(model))
    names = {name for name, _ in model.named_parameters()}
    expected = {n for n in names if n.endswith("weight") and any(k in n for k in ("c_attn", "c_proj", "c_fc"))}
    assert decayed == expected  # no bias, no norm, no embedding, and the head (tied to the embedding) neither
    assert "transformer.wte.weight" in names - decayed and "transformer.wpe.weight" in names - decayed


def test_precision_choice_follows_the_hardware():
    from mygpt.training import choose_precision, cpu_has_native_bf16

    assert choose_precision("auto", use_cpu=True) == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert choose_precision("bf16", use_cpu=True) == "bf16"
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        choose_precision("fp16", use_cpu=True)
    with pytest.raises(ValueError, match="auto, fp32, bf16 or fp16"):
        choose_precision("fp8", use_cpu=True)


def test_early_stopping_ends_a_run_that_stops_improving(corpus_dir, tmp_path):
    # A threshold of 100 nats can never be met, so the second evaluation already counts as "no better".
    summary = run_training(run_args(corpus_dir, tmp_path / "out", "--max_steps", "40", "--eval_steps", "2",
                                     "--save_steps", "2", "--early_stopping_patience", "1",
                                     "--early_stopping_threshold", "100"))
    assert summary["results"]["stopped_early"] and summary["results"]["steps"] == 4
    with (tmp_path / "out" / "training_log.csv").open() as handle:
        evals = {int(r["step"]): float(r["eval_loss"]) for r in csv.DictReader(handle) if r["eval_loss"]}
    assert sorted(evals) == [2, 4] and summary["results"]["best_step"] == min(evals, key=evals.get)


# ---------------------------------------------------------------------------------------------------------------
# Presets and arguments


def _char_tokenizer():
    from mygpt.tokenization import train_char_tokenizer

    return train_char_tokenizer(["abc"])


def test_every_value_a_preset_sets_reaches_the_run():
    """A preset is data: each of its keys lands in the parsed arguments unchanged, its model fields in the very
    MyGPTConfig the run builds, and nothing in a preset is silently ignored."""
    from mygpt.cli import load_config_file
    from mygpt.plan import build_config, resolve_context

    assert {"cpu-quick", "shakespeare-char-cpu", "shakespeare-char", "gpt-small"} <= set(arguments.available_presets())
    for name in arguments.available_presets():
        values = load_config_file(arguments.find_preset(name))
        parsed = arguments.parse_arguments(["--preset", name])
        by_field = {f.name: instance for instance in parsed for f in __import__("dataclasses").fields(instance)}
        for key, value in values.items():
            got = getattr(by_field[key], key)
            assert getattr(got, "value", got) == value, (name, key)
        config = build_config(parsed.model, resolve_context(parsed.model, parsed.data), _char_tokenizer())
        for key, value in parsed.model.config_kwargs().items():
            if value is not None:
                assert getattr(config, key) == value, (name, key)
        assert parsed.training.output_dir == f"runs/{name}"
    assert arguments.parse_arguments([]).run.preset == arguments.DEFAULT_PRESET == "cpu-quick"


def test_command_line_overrides_preset_and_a_yaml_file_is_a_preset(tmp_path):
    _, data_args, training_args, _ = arguments.parse_arguments(["--preset", "shakespeare-char-cpu", "--max_steps", "7"])
    assert training_args.max_steps == 7 and data_args.block_size == 64
    own = tmp_path / "mine.yaml"
    own.write_text(yaml.safe_dump({"n_layer": 2, "block_size": 16, "max_steps": 3}))
    model_args, data_args, training_args, _ = arguments.parse_arguments([str(own), "--max_steps", "5"])
    assert (model_args.n_layer, data_args.block_size, training_args.max_steps) == (2, 16, 5)
    assert training_args.output_dir == "runs/mine"


def test_help_lists_every_argument_with_the_preset_defaults(capsys):
    with pytest.raises(SystemExit) as done:
        arguments.parse_arguments(["--preset", "shakespeare-char-cpu", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--n_layer", "--data_files", "--tokenizer", "--learning_rate", "--overwrite", "--architecture"):
        assert flag in text
    from mygpt.cli import load_config_file

    steps = load_config_file(arguments.find_preset("shakespeare-char-cpu"))["max_steps"]
    assert steps != -1 and f"(default: {steps})" in text  # max_steps from the preset, not the dataclass's -1


def test_accelerate_config_files_are_valid():
    from accelerate.commands.config.config_args import load_config_from_file

    for name in ("ddp", "fsdp", "cpu-ddp"):
        config = load_config_from_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
        assert config.num_processes == 2
    assert load_config_from_file(str(ROOT / "configs/accelerate/fsdp.yaml")).distributed_type == "FSDP"


# ---------------------------------------------------------------------------------------------------------------
# Bad input: a clear message, a non-zero exit, nothing overwritten


@pytest.fixture
def previous_run(tmp_path) -> Path:
    """A folder holding someone's finished run: it must survive every refused command."""
    folder = tmp_path / "previous"
    folder.mkdir()
    (folder / "run_summary.json").write_text('{"keep": true}')
    (folder / "model.safetensors").write_bytes(b"precious weights")
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _bad_file(tmp_path: Path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


BAD_INPUTS = {
    "missing file": (lambda t, c: ["--data_files", str(t / "nope.txt")], "nope.txt.*no such file"),
    "empty file": (lambda t, c: ["--data_files", _bad_file(t, "empty.txt", b"")], "empty.txt is empty"),
    "not UTF-8": (lambda t, c: ["--data_files", _bad_file(t, "latin.txt", "Fran\xe7ois".encode("latin-1") * 99)],
                  "latin.txt is not UTF-8"),
    "unknown preset": (lambda t, c: ["--data_files", str(c), "--preset", "gpu-huge"],
                       "unknown preset 'gpu-huge'.*cpu-quick"),
    "unknown tokenizer": (lambda t, c: ["--data_files", str(c), "--tokenizer", "no-such-tokenizer-xyz"],
                          "unknown tokenizer 'no-such-tokenizer-xyz'"),
    "block_size > n_positions": (lambda t, c: ["--data_files", str(c), "--n_positions", "16"],
                                 "--block_size 32 is larger than --n_positions 16"),
    "corpus too small": (lambda t, c: ["--data_files", _bad_file(t, "tiny.txt", b"Too short for a block.\n")],
                         "fewer than one block of 32"),
    "impossible model": (lambda t, c: ["--data_files", str(c), "--n_embd", "30", "--n_head", "4"], "n_embd"),
    "unknown argument": (lambda t, c: ["--data_files", str(c), "--n_layers", "3"], "--n_layers"),
    "unknown architecture": (lambda t, c: ["--data_files", str(c), "--architecture", "llama"], "mygpt or gpt2"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_and_the_previous_run_survives(case, tmp_path, corpus_dir, previous_run):
    make, message = BAD_INPUTS[case]
    before = snapshot(previous_run)
    # --overwrite is given on purpose: even so, a refused command must not delete anything.
    argv = [*TINY, *make(tmp_path, corpus_dir), "--output_dir", str(previous_run), "--overwrite"]
    with pytest.raises(SystemExit) as refused:
        train.main(argv)
    assert str(refused.value.code).startswith("error: ")
    assert __import__("re").search(message, str(refused.value.code)), refused.value.code
    assert snapshot(previous_run) == before


def test_output_folder_with_a_finished_run_needs_overwrite(tmp_path, corpus_dir, previous_run):
    before = snapshot(previous_run)
    with pytest.raises(SystemExit, match="holds a finished run; pass --overwrite"):
        train.main(run_args(corpus_dir, previous_run))
    assert snapshot(previous_run) == before


def test_unfinished_run_needs_resume_or_overwrite(tmp_path, corpus_dir):
    folder = tmp_path / "unfinished"
    run_artifacts.mark_incomplete(folder, "mygpt-train")
    with pytest.raises(SystemExit, match="unfinished run: --resume_from_checkpoint continues it"):
        train.main(run_args(corpus_dir, folder))
    with pytest.raises(SystemExit, match="no complete checkpoint"):
        train.main(run_args(corpus_dir, folder, "--resume_from_checkpoint"))


def test_folder_that_is_not_a_run_is_never_deleted(tmp_path, corpus_dir):
    folder = tmp_path / "home"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    with pytest.raises(SystemExit, match="not a training run"):
        train.main(run_args(corpus_dir, folder, "--overwrite"))
    assert (folder / "thesis.tex").read_text() == "years of work"


def test_command_line_error_exits_non_zero_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "train_hf.py", "--data_files", str(tmp_path / "missing.txt"),
                             "--output_dir", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "error: --data_files" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_gpt2_architecture_overwrites_a_finished_run_with_transformers_gpt2(finished_run, tmp_path, corpus_dir):
    from transformers import AutoModelForCausalLM, GPT2LMHeadModel

    out = tmp_path / "gpt2"
    shutil.copytree(finished_run[0], out)
    summary = run_training(run_args(corpus_dir, out, "--architecture", "gpt2", "--overwrite", "--max_steps", "6"))
    assert summary["architecture"] == "gpt2" and summary["results"]["steps"] == 6
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "gpt2" and "auto_map" not in config
    assert not (out / "modeling_mygpt.py").exists()  # nothing left from the run it replaced
    model = AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(model, GPT2LMHeadModel) and (out / "samples.md").is_file()
    # the same network shape; where the preset's MyGPT uses rotary positions, GPT-2 adds its learned table
    mine = finished_run[1]["model"]
    config = mine["config"]
    table = 0 if config["position_embedding"] == "learned" else config["n_positions"] * config["n_embd"]
    assert summary["model"]["parameters"] == mine["parameters"] + table


# ---------------------------------------------------------------------------------------------------------------
# Kill and resume; two processes (slow: they start fresh Python processes)


KILLER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from transformers import TrainerCallback
from mygpt import training
from mygpt.commands.train import main

class KillAt(TrainerCallback):
    def {event}(self, args, state, control, **kwargs):
        if state.global_step == {step}:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no atexit: as if the machine died

original = training.LMTrainer.__init__
def patched(self, *args, **kwargs):
    original(self, *args, **kwargs)
    self.add_callback(KillAt())
training.LMTrainer.__init__ = patched
main(sys.argv[1:])
"""


def _train(argv: list[str], script: Path | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, str(script) if script else "train_hf.py", *argv]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=os.environ.copy())


RESUMABLE = ["--max_steps", "20", "--eval_steps", "5", "--save_steps", "5", "--dropout", "0.1"]


@pytest.fixture(scope="module")
def straight_run(corpus_dir, tmp_path_factory) -> dict:
    """The uninterrupted run the resumed ones must match (in this process: one start-up fewer)."""
    out = tmp_path_factory.mktemp("straight") / "run"
    return run_training(run_args(corpus_dir, out, *RESUMABLE))["results"]


def _kill_and_resume(corpus_dir: Path, folder: Path, event: str, step: int, last_checkpoint: str,
                     extra: tuple[str, ...] = ()) -> dict:
    killer = folder.parent / "killer.py"
    killer.write_text(KILLER.format(root=str(ROOT), event=event, step=step))
    killed = _train(run_args(corpus_dir, folder, *RESUMABLE, *extra), killer)
    assert killed.returncode == -signal.SIGKILL
    # a killed run never looks finished
    assert not (folder / "run_summary.json").exists() and (folder / run_artifacts.MARKER).exists()
    assert run_artifacts.last_complete_checkpoint(folder).name == last_checkpoint
    resumed = _train(run_args(corpus_dir, folder, *RESUMABLE, *extra, "--resume_from_checkpoint"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return json.loads((folder / "run_summary.json").read_text())["results"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_final_validation_loss(corpus_dir, tmp_path, straight_run):
    killed_dir = tmp_path / "killed"
    b = _kill_and_resume(corpus_dir, killed_dir, "on_step_end", 13, "checkpoint-10")  # mid-training
    a = straight_run
    assert b["steps"] == a["steps"] == 20
    assert b["validation"]["loss"] == pytest.approx(a["validation"]["loss"], rel=1e-6)
    assert b["test"]["loss"] == pytest.approx(a["test"]["loss"], rel=1e-6)
    with (killed_dir / "training_log.csv").open() as handle:
        steps = [int(r["step"]) for r in csv.DictReader(handle) if r["loss"]]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # the killed steps 11-13 are not logged twice


@pytest.mark.slow
def test_killed_muon_run_resumes_to_the_same_final_validation_loss(corpus_dir, tmp_path):
    # Muon's momentum buffers and AdamW's moments both travel in the checkpoint's optimizer state.
    muon = ("--optimizer", "muon")
    straight = run_training(run_args(corpus_dir, tmp_path / "straight", *RESUMABLE, *muon))
    assert straight["training"]["optimizer"] == "muon"
    resumed = _kill_and_resume(corpus_dir, tmp_path / "killed", "on_step_end", 13, "checkpoint-10", muon)
    assert resumed["validation"]["loss"] == pytest.approx(straight["results"]["validation"]["loss"], rel=1e-6)
    assert resumed["test"]["loss"] == pytest.approx(straight["results"]["test"]["loss"], rel=1e-6)


@pytest.mark.slow
def test_run_killed_after_its_last_checkpoint_finishes_without_training_more(corpus_dir, tmp_path, straight_run):
    # killed once the step-20 checkpoint is written: during the final evaluation, samples or model card
    b = _kill_and_resume(corpus_dir, tmp_path / "killed", "on_save", 20, "checkpoint-20")
    assert b["steps"] == straight_run["steps"] == 20  # not 21: resuming does not take one more step
    assert b["validation"]["loss"] == pytest.approx(straight_run["validation"]["loss"], rel=1e-6)
    assert b["test"]["loss"] == pytest.approx(straight_run["test"]["loss"], rel=1e-6)


RECORDER = """
import hashlib, os, sys
sys.path.insert(0, {root!r})
from mygpt import training
from mygpt.commands.train import main

original = training.LMTrainer.training_step
def recording(self, model, inputs, *args, **kwargs):
    rank = int(os.environ.get("RANK", "0"))
    with open(os.path.join({folder!r}, f"rank{{rank}}.txt"), "a") as handle:
        for row in inputs["input_ids"]:
            handle.write(f"{{self.state.global_step}} {{hashlib.sha1(row.numpy().tobytes()).hexdigest()}}\\n")
    return original(self, model, inputs, *args, **kwargs)
training.LMTrainer.training_step = recording
main(sys.argv[1:])
"""


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_train_on_different_batches(launcher, corpus_dir, tmp_path):
    recorder = tmp_path / "recorder.py"
    recorder.write_text(RECORDER.format(root=str(ROOT), folder=str(tmp_path)))
    launch = {"torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
              "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                             str(ROOT / "configs/accelerate/cpu-ddp.yaml")]}[launcher]
    out = tmp_path / "ddp"
    result = subprocess.run([*launch, str(recorder), *run_args(corpus_dir, out, "--max_steps", "6")], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = {}
    for rank in (0, 1):
        rows = (tmp_path / f"rank{rank}.txt").read_text().split("\n")[:-1]
        seen[rank] = [tuple(r.split()) for r in rows]
        assert len(seen[rank]) == 6 * 4  # 6 steps of 4 blocks on each process
    # less than one epoch: no block is trained on by both processes
    assert not {h for _, h in seen[0]} & {h for _, h in seen[1]}
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["training"]["world_size"] == 2 and summary["training"]["tokens_per_step"] == 2 * 4 * 32
