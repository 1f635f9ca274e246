"""Contracts of the model comparison (mygpt-evaluate / evaluate_models.py): a complete report from any local causal
LMs, clear errors otherwise."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from mygpt import eval_report, evaluation
from mygpt.cli import parse
from mygpt.commands import evaluate as command
from mygpt.evaluation import EvaluateArguments
from test_scoring import train_tokenizer

ROOT = Path(__file__).resolve().parent.parent

PLAY_A = """ACT I. SCENE I. A street.

FIRST CITIZEN:
Before we proceed any further, hear me speak.

ALL:
Speak, speak.

FIRST CITIZEN:
You are all resolved rather to die than to famish?

ALL:
Resolved. resolved.

FIRST CITIZEN:
First, you know Caius Marcius is chief enemy to the people.
Let us kill him, and we'll have corn at our own price.
Is't a verdict?
""" * 4

PLAY_B = """ACT II. SCENE II. A hall in the castle.

HAMLET:
To be, or not to be, that is the question:
Whether 'tis nobler in the mind to suffer
The slings and arrows of outrageous fortune,
Or to take arms against a sea of troubles
And by opposing end them. To die: to sleep;
No more; and by a sleep to say we end
The heart-ache and the thousand natural shocks
That flesh is heir to.
""" * 3


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    """Two tiny local models sharing a BPE tokenizer trained here, and two held-out 'plays' as text files."""
    root = tmp_path_factory.mktemp("compare")
    tokenizer = train_tokenizer(PLAY_A + PLAY_B, vocab_size=320)
    torch.manual_seed(0)
    from configuration_mygpt import MyGPTConfig
    from modeling_mygpt import MyGPTForCausalLM

    shape = dict(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=0,
                 eos_token_id=0)
    models = {"mygpt": MyGPTForCausalLM(MyGPTConfig(**shape)), "gpt2": GPT2LMHeadModel(GPT2Config(**shape))}
    for name, model in models.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    data = root / "data"
    data.mkdir()
    (data / "coriolanus.txt").write_text(PLAY_A, encoding="utf-8")
    (data / "hamlet.txt").write_text(PLAY_B, encoding="utf-8")
    return {"root": root, "mygpt": root / "mygpt", "gpt2": root / "gpt2", "data": data}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The command line in a fresh process, offline, as a user runs it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "evaluate_models.py"), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def report(workspace, tmp_path_factory) -> dict:
    """Run the command once in-process on both tiny models; the tests below read what it wrote."""
    out = tmp_path_factory.mktemp("report") / "compare"
    argv = ["--models", str(workspace["mygpt"]), str(workspace["gpt2"]), "--data_files", str(workspace["data"]),
            "--output_dir", str(out), "--stride", "16", "--num_prompts", "3", "--samples_per_prompt", "2",
            "--generation_chars", "40"]
    assert command.main(argv) == 0
    return {"dir": out, "json": json.loads((out / "report.json").read_text()), "md": (out / "report.md").read_text()}


@pytest.mark.slow
def test_the_command_on_two_tiny_local_models_writes_a_complete_report(report, workspace):
    results = report["json"]
    assert [m["name"] for m in results["models"]] == [str(workspace["mygpt"]), str(workspace["gpt2"])]
    assert results["skipped"] == []
    text_bytes = len(PLAY_A.encode()) + len(PLAY_B.encode())
    assert results["data"]["bytes"] == text_bytes and results["data"]["documents"] == 2
    for model in results["models"]:
        s = model["scores"]
        assert s["n_bytes"] == text_bytes and s["n_chars"] == len(PLAY_A) + len(PLAY_B)
        assert s["bits_per_byte"] == pytest.approx(s["total_nats"] / (s["n_bytes"] * math.log(2)))
        assert s["perplexity"] == pytest.approx(math.exp(s["total_nats"] / s["n_tokens"]))
        assert s["chars_per_token"] == pytest.approx(s["n_chars"] / s["n_tokens"])
        assert (s["window"], s["stride"]) == (64, 16)
        assert len(s["loss_by_position"]["mean_nats"]) == 63
        assert model["description"]["parameters"] > model["description"]["non_embedding_parameters"] > 0
        assert model["description"]["context_length"] == 64
        assert set(model["generation"]["metrics"]) == {"self_bleu", "distinct_1", "distinct_2", "distinct_3",
                                                       "repeated_4gram_rate"}
        assert len(model["generation"]["samples"]) == 3
        assert all(len(s["continuations"]) == 2 for s in model["generation"]["samples"])
        assert set(model["timing"]) == {"load_seconds", "score_seconds", "generate_seconds"}
    # Same weights-free shapes and tokenizer: the two models see the same tokens.
    assert results["models"][0]["scores"]["n_tokens"] == results["models"][1]["scores"]["n_tokens"]
    assert results["wall_time_seconds"] > 0
    assert len(results["prompts"]) == 3 and results["reference"] is not None


@pytest.mark.slow
def test_the_report_files_are_all_there_and_readable(report):
    assert sorted(p.name for p in report["dir"].iterdir()) == sorted(eval_report.REPORT_FILES)
    for png in ("bits_per_byte.png", "loss_by_position.png"):
        assert (report["dir"] / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = report["md"]
    for heading in ("## How to read this", "## Models", "## Information rates", "## Loss by position",
                    "## Generations from shared prompts", "### Side by side", "## Reproduce"):
        assert heading in md
    # The framing follows the facts: both tiny models have the same size and the same tokenizer, unknown training.
    assert "Sizes are equal" in md and "share one tokenizer" in md
    assert "Training data and tokens seen differ** (or are unknown)" in md
    assert md.count("**Prompt ") == 3
    for model in report["json"]["models"]:
        assert f"{model['scores']['bits_per_byte']:.4f}" in md


@pytest.mark.slow
def test_the_figures_equal_the_scoring_functions_on_the_same_model(report, workspace):
    """The report's bits per byte is what mygpt.scoring gives for that model and text (nothing re-derived)."""
    from mygpt.loading import load_model_and_tokenizer
    from mygpt.scoring import score_texts

    model, tokenizer = load_model_and_tokenizer(workspace["gpt2"], device="cpu", dtype="float32")
    expected = score_texts(model, tokenizer, [PLAY_A, PLAY_B], stride=16)
    got = report["json"]["models"][1]["scores"]
    assert got["total_nats"] == pytest.approx(expected.total_nats, rel=1e-6)
    assert got["n_tokens"] == expected.n_tokens


def test_an_unreachable_hub_id_is_named_and_skipped_and_the_others_go_on(workspace, tmp_path, caplog):
    out = tmp_path / "compare"
    code = command.main(["--models", "no-such-org/no-such-model", str(workspace["gpt2"]), "--data_files",
                         str(workspace["data"] / "hamlet.txt"), "--output_dir", str(out), "--num_prompts", "1",
                         "--generation_chars", "20", "--samples_per_prompt", "1"])
    assert code == 0
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "skipping no-such-org/no-such-model" in warnings
    assert "the Hub is switched off" in warnings
    results = json.loads((out / "report.json").read_text())
    assert [m["name"] for m in results["models"]] == [str(workspace["gpt2"])]
    assert results["skipped"][0]["name"] == "no-such-org/no-such-model"
    assert "no-such-org/no-such-model" in (out / "report.md").read_text()


def test_when_no_model_is_left_the_command_exits_non_zero_with_a_plain_message(workspace, tmp_path):
    result = run_cli("--models", "gpt2", "--data_files", str(workspace["data"]), "--output_dir", str(tmp_path / "r"))
    assert result.returncode != 0
    assert "error: none of the models could be evaluated" in result.stderr
    assert "'gpt2'" in result.stderr and "Hub is switched off" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


def test_an_empty_text_file_is_a_clear_error_and_a_non_zero_exit(workspace, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    result = run_cli("--models", str(workspace["gpt2"]), "--data_files", str(empty), "--output_dir",
                     str(tmp_path / "r"))
    assert result.returncode != 0
    assert "error:" in result.stderr and "empty" in result.stderr and "Traceback" not in result.stderr
    assert "no text to evaluate" in result.stderr and "train" not in result.stderr  # not the trainer's message
    assert not (tmp_path / "r").exists()


def test_a_text_of_only_whitespace_is_a_clear_error(workspace, tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n\n \t\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="error: .*blank.txt is empty"):
        command.main(["--models", str(workspace["gpt2"]), "--data_files", str(blank), "--output_dir",
                      str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()


def test_without_a_run_or_data_the_command_says_what_to_pass(workspace, tmp_path):
    with pytest.raises(SystemExit, match="none of --models is a train_hf.py run.*--data_files or --dataset"):
        command.main(["--models", str(workspace["gpt2"]), "--output_dir", str(tmp_path / "r")])


@pytest.mark.parametrize("name", ["MISSING_DIR", "{tmp}/MISSING_DIR", "runs/MISSING_DIR"])
def test_a_missing_model_is_named_before_anything_else(name, tmp_path):
    name = name.format(tmp=tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        command.main(["--models", name, "--output_dir", str(tmp_path / "r")])
    message = str(exit_info.value.code)
    assert message.startswith("error: none of the models could be evaluated") and repr(name) in message
    assert "no evaluation text" not in message
    assert not (tmp_path / "r").exists()


def test_without_a_run_a_model_that_is_no_folder_is_named_in_the_message(workspace, tmp_path):
    args = EvaluateArguments(models=[str(workspace["gpt2"]), "someone/some-model"])
    with pytest.raises(ValueError, match=r"no evaluation text.*'someone/some-model': no such folder here"):
        evaluation.load_eval_text(args)


@pytest.mark.parametrize("bad", [["--top_p", "2"], ["--dtype", "float8"], ["--stride", "0"],
                                 ["--data_files", "x.txt", "--dataset", "y"]])
def test_bad_arguments_exit_non_zero_with_a_message(bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        command.main(["--models", "m", *bad])
    assert exit_info.value.code not in (0, None)
    assert bad[0] in str(exit_info.value.code) + capsys.readouterr().err


def test_arguments_can_come_from_a_yaml_file(tmp_path):
    config = tmp_path / "compare.yaml"
    config.write_text("models: [runs/a, gpt2]\nstride: 128\noutput_dir: reports/x\n")
    (args,) = parse([EvaluateArguments], [str(config)])
    assert (args.models, args.stride, args.output_dir) == (["runs/a", "gpt2"], 128, "reports/x")


def test_the_default_text_is_the_test_split_of_the_first_run(workspace, tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    test_split = {"documents": 2, "titles": ["Coriolanus", "Hamlet"]}
    summary = {"data": {"source": "shakespeare", "splits": {"test": test_split}}}
    (run / "run_summary.json").write_text(json.dumps(summary))
    calls = []

    def fake_heldout_texts(run_dir, split="test"):
        calls.append((str(run_dir), split))
        return [PLAY_A, PLAY_B]

    monkeypatch.setattr("mygpt.data.heldout_texts", fake_heldout_texts)
    args = EvaluateArguments(models=[str(workspace["gpt2"]), str(run)])
    texts, titles, info = evaluation.load_eval_text(args)
    assert calls == [(str(run), "test")]
    assert texts == [PLAY_A, PLAY_B] and titles == ["Coriolanus", "Hamlet"]
    assert info["description"] == "the test plays of run's corpus"


def test_a_model_trained_on_the_evaluation_documents_is_flagged():
    def run(titles):
        return {"run": True, "data_source": "shakespeare", "train_titles": titles}

    models = [{"name": "leaky", "training": run(["Hamlet", "Othello"])},
              {"name": "clean", "training": run(["Othello"])},
              {"name": "gpt2", "training": {"run": False}}]
    data = {"source": "run_split", "corpus_source": "shakespeare", "titles": ["Hamlet", "Macbeth"]}
    warnings = evaluation._leak_warnings(models, data)
    assert len(warnings) == 1 and "`leaky`" in warnings[0] and "Hamlet" in warnings[0]


@pytest.mark.slow
def test_a_failed_report_write_leaves_no_finished_looking_report(report, tmp_path, monkeypatch):
    def broken_plot(results, path):
        raise RuntimeError("disk full")

    monkeypatch.setattr(eval_report, "plot_loss_by_position", broken_plot)
    out = tmp_path / "compare"
    with pytest.raises(RuntimeError, match="disk full"):
        eval_report.write_report(report["json"], out)
    assert not (out / "report.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no staging folder left behind either


def test_a_held_out_split_with_no_text_is_a_clear_error(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run_summary.json").write_text(json.dumps({"data": {"source": "shakespeare", "splits": {"test": {}}}}))
    monkeypatch.setattr("mygpt.data.heldout_texts", lambda run_dir, split="test": ["", "  \n"])
    args = EvaluateArguments(models=[str(run)])
    with pytest.raises(ValueError, match=r"the evaluation text \(the test plays of run's corpus\) is empty"):
        evaluation.load_eval_text(args)


def test_a_dataset_split_is_joined_like_the_hf_guide_or_read_row_by_row(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.txt").write_text("some training text\n")
    (folder / "test.txt").write_text("first line\nsecond line\n\nfourth line\n")
    args = EvaluateArguments(models=["m"], dataset=str(folder))
    texts, _, info = evaluation.load_eval_text(args)
    assert texts == ["first line\n\nsecond line\n\n\n\nfourth line"] and info["documents"] == 1
    args = EvaluateArguments(models=["m"], dataset=str(folder), rows_are_documents=True)
    texts, _, info = evaluation.load_eval_text(args)
    assert texts == ["first line", "second line", "fourth line"]  # the empty row is dropped
    args = EvaluateArguments(models=["m"], dataset=str(folder), text_column="body")
    with pytest.raises(ValueError, match="--text_column 'body' is not a column.*'text'"):
        evaluation.load_eval_text(args)


def test_an_unreachable_hub_dataset_is_a_clear_error():
    args = EvaluateArguments(models=["m"], dataset="no-such-org/no-such-dataset")
    with pytest.raises(ValueError, match="'no-such-org/no-such-dataset'.*Hub is switched off"):
        evaluation.load_eval_text(args)


def test_log_bins_average_the_curve_weighted_by_predictions():
    centres, means = eval_report._log_bins([1, 2, 3, 4], [1.0, 2.0, 4.0, 6.0], [1, 1, 3, 1], n_bins=2)
    # Edges 1, 2, 4, 5 (powers of 4 ** (i / 2), then past the end): bins {1}, {2, 3} weighted by counts, {4}.
    assert means == pytest.approx([1.0, (2.0 + 4.0 * 3) / 4, 6.0])
    assert centres == pytest.approx([1.0, math.sqrt(2 * 3), 4.0])
