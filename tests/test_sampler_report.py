"""Contracts of the sampler report (mygpt/sampler_report.py and its command), on a tiny random model and a tiny
fake run."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from configuration_mygpt import MyGPTConfig
from generation_mygpt import make_sampler
from modeling_mygpt import MyGPTForCausalLM
from mygpt import sampler_report
from mygpt.commands import sampler_report as command
from mygpt.data import DataArguments, data_arguments_record, heldout_texts, load_text_splits
from mygpt.sampler_report import grid_settings, label, text_rows
from mygpt.text_metrics import distinct_n
from mygpt.tokenization import train_char_tokenizer


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread; on a busy shared machine two threads mostly wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


WORDS = "the king my lord good night sweet prince what light through yonder window breaks speak again".split()


def write_play(path, seed: int) -> None:
    rng = random.Random(seed)
    lines = []
    for _ in range(60):
        lines.append(rng.choice(["ROMEO:", "JULIET:", "HAMLET:"]))
        lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))).capitalize() + ".")
    path.write_text("\n".join(lines) + "\n")


def tiny_model(vocab: int, seed: int) -> MyGPTForCausalLM:
    torch.manual_seed(seed)
    return MyGPTForCausalLM(MyGPTConfig(vocab_size=vocab, n_positions=128, n_embd=32, n_layer=2, n_head=2,
                                        bos_token_id=None, eos_token_id=None, pad_token_id=None)).eval()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished-run folder as train_hf.py leaves it, as far as the report reads it: model, tokenizer and a
    run_summary.json whose data arguments rebuild the held-out split (four plays, one of them the test split)."""
    root = tmp_path_factory.mktemp("report")
    plays = root / "plays"
    plays.mkdir()
    for i in range(4):
        write_play(plays / f"play{i}.txt", i)
    args = DataArguments(data_files=[str(plays)], validation_fraction=0.25, test_fraction=0.25, tokenizer="char")
    splits, info = load_text_splits(args)
    tokenizer = train_char_tokenizer([text for name in splits for text in splits[name]["text"]])
    run_dir = root / "run"
    tiny_model(len(tokenizer), 0).save_pretrained(run_dir)
    tokenizer.save_pretrained(run_dir)
    (run_dir / "run_summary.json").write_text(json.dumps({"data": {"arguments": data_arguments_record(args), **info}}))
    judge_dir = root / "judge"  # a GPT-2 judge with other weights and the same tokenizer
    tiny_model(len(tokenizer), 1).to_gpt2().save_pretrained(judge_dir)
    tokenizer.save_pretrained(judge_dir)
    return {"root": root, "run": str(run_dir), "judge": str(judge_dir), "tokenizer": tokenizer}


SMALL = ["--grid", "small", "--num_prompts", "4", "--prompt_tokens", "8", "--max_new_tokens", "16"]


@pytest.fixture(scope="module")
def report(run):
    out = run["root"] / "out"
    assert command.main(["--model", run["run"], "--judge", run["judge"], "--output_dir", str(out), *SMALL]) == 0
    return out, json.loads((out / "sampler_report.json").read_text())


def test_report_writes_json_markdown_and_plot(report):
    out, data = report
    assert (out / "sampler_report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "sampler_report.md").read_text()
    assert "## Findings" in markdown and "sampler_report.png" in markdown
    for setting in data["settings"]:
        assert f"| {setting['curve']} |" in markdown
    assert "**held-out text**" in markdown
    assert not list(out.glob(".*partial*")), "a temporary file was left behind"


def test_report_covers_every_setting_of_the_grid_with_every_metric(report):
    _, data = report
    assert [label(s) for s in data["settings"]] == [label(s) for s in grid_settings("small")]
    assert {s["strategy"] for s in data["settings"]} == {"greedy", "temperature", "top_k", "top_p", "min_p", "typical"}
    for metrics in [data["reference"]] + [s["metrics"] for s in data["settings"]]:
        for key in ("distinct_1", "distinct_2", "distinct_3", "self_bleu", "repeated_4gram_rate"):
            assert 0.0 <= metrics[key] <= 1.0, key
        assert metrics["loglik_model"] < 0 and metrics["loglik_judge"] < 0
    for setting in data["settings"]:
        assert len(setting["continuations"]) == 4
        assert setting["metrics"]["distinct_2"] == distinct_n(setting["continuations"], 2)
    assert data["findings"] and "Closest to the held-out text" in data["findings"][0]


def test_prompts_and_references_are_cut_from_the_held_out_split(run, report):
    _, data = report
    test_texts = heldout_texts(run["run"], "test")
    tokenizer = run["tokenizer"]
    for prompt in data["prompts"]:
        assert any(prompt["text"] + prompt["reference"] in text for text in test_texts)
        assert len(tokenizer(prompt["text"], add_special_tokens=False)["input_ids"]) == 8
        assert len(tokenizer(prompt["reference"], add_special_tokens=False)["input_ids"]) == 16


def test_greedy_row_holds_the_models_greedy_continuations_and_their_log_likelihood(run, report):
    _, data = report
    model = MyGPTForCausalLM.from_pretrained(run["run"]).eval()
    tokenizer = run["tokenizer"]
    greedy = next(s for s in data["settings"] if s["curve"] == "greedy")
    total, count = 0.0, 0
    for prompt, continuation in zip(data["prompts"], greedy["continuations"]):
        ids = torch.tensor([tokenizer(prompt["text"], add_special_tokens=False)["input_ids"]])
        out = model.generate(ids, strategy="greedy", max_new_tokens=16)
        assert tokenizer.decode(out[0, ids.shape[1]:]) == continuation
        with torch.no_grad():
            log_probs = F.log_softmax(model(out).logits[0, :-1], -1)  # (T-1, V)
        targets = out[0, 1:]
        total += log_probs[torch.arange(len(targets)), targets][ids.shape[1] - 1:].sum().item()
        count += 16
    assert greedy["metrics"]["loglik_model"] == pytest.approx(total / count, abs=1e-4)


def test_judge_rows_tokenize_prompt_and_continuation_separately(run):
    tokenizer = run["tokenizer"]
    rows = text_rows(tokenizer, ["ROMEO:", ""], ["\nGood night.", "King."])
    assert rows[0] == (tokenizer("ROMEO:")["input_ids"], tokenizer("\nGood night.")["input_ids"])
    assert rows[1][0] == [tokenizer.bos_token_id]  # an empty prompt starts from the start-of-text token


def test_prompt_file_prompts_of_different_lengths_are_left_padded_correctly(run, tmp_path):
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("ROMEO:\n\nJULIET: Good night, good night\n")
    out = tmp_path / "out"
    command.main(["--model", run["run"], "--output_dir", str(out), "--prompt_file", str(prompts_file),
                  "--grid", "small", "--max_new_tokens", "12"])
    data = json.loads((out / "sampler_report.json").read_text())
    assert data["reference"] is None and len(data["prompts"]) == 2
    model = MyGPTForCausalLM.from_pretrained(run["run"]).eval()
    tokenizer = run["tokenizer"]
    greedy = next(s for s in data["settings"] if s["curve"] == "greedy")
    for prompt, continuation in zip(["ROMEO:", "JULIET: Good night, good night"], greedy["continuations"]):
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        alone = model.generate(ids, strategy="greedy", max_new_tokens=12)
        assert tokenizer.decode(alone[0, ids.shape[1]:]) == continuation
    assert "held-out text" not in (out / "sampler_report.md").read_text().split("## All settings")[1]


def test_every_grid_setting_builds_a_valid_sampler():
    for setting in grid_settings("full"):
        make_sampler(setting["strategy"], **setting["knobs"])
    values = {s["curve"]: [] for s in grid_settings("full")}
    for s in grid_settings("full"):
        values[s["curve"]].append(s["value"])
    assert values["top_k"] == [5, 20, 50, 200] and values["top_p"] == [0.5, 0.8, 0.9, 0.95]
    assert min(values["temperature"]) == 0.5 and max(values["temperature"]) == 1.5


BAD = [
    (["--judge", "gpt2"], "--judge: cannot load model 'gpt2'"),
    (["--judge", "{root}/plays"], "--judge: "),
    (["--run_dir", "{root}/plays"], "no finished run"),
    (["--num_prompts", "1"], "--num_prompts must be >= 2"),
    (["--max_new_tokens", "0"], "--max_new_tokens must be >= 1"),
    (["--prompt_tokens", "100", "--max_new_tokens", "100"], "exceeds the model's context of 128"),
]


@pytest.mark.parametrize("extra,message", BAD, ids=[m for _, m in BAD])
def test_bad_input_exits_with_a_clear_message(run, tmp_path, extra, message):
    extra = [a.format(root=run["root"]) for a in extra]
    argv = ["--model", run["run"], "--output_dir", str(tmp_path / "out"), *SMALL, *extra]
    with pytest.raises(SystemExit) as exit_info:
        command.main(argv)
    assert str(exit_info.value.code).startswith("error: ") and message in str(exit_info.value.code)
    assert not (tmp_path / "out" / "sampler_report.json").exists()


def test_a_failed_write_leaves_no_report_file(report, tmp_path, monkeypatch):
    _, data = report

    def broken(_report):
        raise RuntimeError("disk full")

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    monkeypatch.setattr(sampler_report, "render_markdown", broken)
    with pytest.raises(RuntimeError):
        sampler_report.write_report(data, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # not even the plot: nothing half done


def test_python_dash_m_runs_the_command(run):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-m", "mygpt.sampler_report", "--model", run["run"], "--num_prompts", "1"],
                            capture_output=True, text=True, cwd=root, timeout=300,
                            env={**os.environ, "PYTHONPATH": root, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1 and "error: --num_prompts must be >= 2" in result.stderr
