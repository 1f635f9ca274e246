"""mygpt-analyze (analyze.py): from a saved model folder to a complete report folder; bad input exits non-zero
with a clear message, no traceback, and leaves an earlier report untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from configuration_mygpt import MyGPTConfig
from modeling_mygpt import MyGPTForCausalLM
from mygpt.cli import parse
from mygpt.commands import analyze
from mygpt.commands.analyze import AnalyzeArguments
from mygpt.tokenization import train_bpe_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PLAY = """ROMEO:
But soft, what light through yonder window breaks?
It is the east, and Juliet is the sun.

JULIET:
Ay me!

ROMEO:
She speaks: O, speak again, bright angel!

"""
TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n\nJULIET:\nAy me!\n"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny MyGPT and its BPE tokenizer saved as a training run would save them."""
    folder = tmp_path_factory.mktemp("run")
    tokenizer = train_bpe_tokenizer([PLAY * 20], vocab_size=300)
    torch.manual_seed(0)
    config = MyGPTConfig(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    MyGPTForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "heldout.txt"
    path.write_text(PLAY * 4, encoding="utf-8")
    return str(path)


EXPECTED_FILES = {
    "README.md", "summary.json", "attention.html", "attention_grid.png", "attention_layer0.png",
    "attention_layer1.png", "heads.csv", "heads.md", "heads_previous_token.png", "heads_first_token.png",
    "heads_local_window.png", "heads_duplicate_token.png", "heads_induction.png", "ablation_delta_loss.png",
    "embeddings_tsne.png", "embeddings_neighbours.md", "position_similarity.png", "logit_lens.png", "logit_lens.md",
    "probes.png", "probes.csv",
}


@pytest.mark.slow
def test_the_command_line_writes_every_report_file_and_every_png_opens(model_dir, eval_file, tmp_path):
    out = tmp_path / "analysis"
    assert analyze.main(["--model", model_dir, "--text", TEXT, "--eval_file", eval_file,
                         "--output_dir", str(out), "--projections", "tsne", "--embedding_tokens", "120"]) == 0
    assert set(os.listdir(out)) == EXPECTED_FILES
    for name in EXPECTED_FILES:
        if name.endswith(".png"):
            with Image.open(out / name) as image:
                image.verify()
    on_disk = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert on_disk["text_tokens"] > 0 and on_disk["eval_source"] == f"--eval_file {eval_file}"
    assert len(on_disk["heads"]["table"]) == 2 * 4 and len(on_disk["ablation"]["delta"]) == 2
    readme = (out / "README.md").read_text()
    for name in EXPECTED_FILES:
        if name.endswith((".png", ".html")) or name in ("heads.md", "logit_lens.md", "embeddings_neighbours.md"):
            assert f"({name})" in readme, f"README.md does not show {name}"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".analysis")]  # no staging folder left


def test_a_run_of_chosen_analyses_writes_only_their_files(model_dir, tmp_path):
    out = tmp_path / "lens_only"
    analyze.main(["--model", model_dir, "--text", TEXT, "--output_dir", str(out), "--analyses", "lens", "viewer"])
    assert set(os.listdir(out)) == {"README.md", "summary.json", "logit_lens.png", "logit_lens.md", "attention.html"}


@pytest.mark.parametrize("argv, message", [
    (["--text", "ROMEO " * 80], "the text is 160 tokens long but the model's context is 64 tokens"),
    (["--text", TEXT, "--layers", "2"], "layer 2 does not exist: the model has 2 layers"),
    (["--text", TEXT, "--analyses", "heads", "saliency"], "unknown analyses ['saliency']"),
    (["--text", "  "], "the text is empty"),
    (["--text_file", "/nonexistent/scene.txt"], "--text_file '/nonexistent/scene.txt' does not exist"),
])
def test_bad_input_exits_with_a_clear_message_and_keeps_the_old_report(model_dir, tmp_path, argv, message):
    out = tmp_path / "analysis"
    out.mkdir()
    (out / "README.md").write_text("an earlier report")
    with pytest.raises(SystemExit) as exit_info:
        analyze.main(["--model", model_dir, "--output_dir", str(out)] + argv)
    assert str(exit_info.value.code).startswith("error: ") and message in str(exit_info.value.code)
    assert os.listdir(out) == ["README.md"] and (out / "README.md").read_text() == "an earlier report"
    assert sorted(os.listdir(tmp_path)) == ["analysis"]  # no staging folder left


def test_a_missing_model_folder_is_named_in_the_error(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        analyze.main(["--model", str(tmp_path / "no-such-run"), "--text", TEXT, "--output_dir", str(tmp_path / "o")])
    assert "no-such-run" in str(exit_info.value.code) and "does not exist" in str(exit_info.value.code)


def test_the_process_exits_non_zero_without_a_traceback(model_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "analyze.py"), "--model", model_dir, "--text", TEXT, "--layers", "7",
         "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert result.returncode != 0
    assert "error: layer 7 does not exist" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_without_an_eval_file_a_runs_validation_split_is_used(model_dir, tmp_path, monkeypatch):
    import mygpt.data

    run = tmp_path / "run"
    run.mkdir()
    for name in os.listdir(model_dir):
        os.symlink(os.path.join(model_dir, name), run / name)
    asked = []
    monkeypatch.setattr(mygpt.data, "heldout_texts",
                        lambda folder, split: asked.append((folder, split)) or [PLAY, PLAY])
    args = AnalyzeArguments(model=model_dir, text=TEXT)
    assert analyze.evaluation_text(args) == (None, "the text itself")  # not a finished run: no run_summary.json
    (run / "run_summary.json").write_text("{}")
    args = AnalyzeArguments(model=str(run), text=TEXT)
    assert analyze.evaluation_text(args) == (PLAY + "\n\n" + PLAY, f"the validation split of {run}")
    assert asked == [(str(run), "validation")]


def test_arguments_can_come_from_a_yaml_file(tmp_path):
    config = tmp_path / "analyze.yaml"
    config.write_text("model: runs/cpu-quick\ntext: \"ROMEO:\\nBut soft\"\nanalyses: [heads, lens]\nlayers: [0, 1]\n")
    (args,) = parse([AnalyzeArguments], [str(config)])
    assert (args.model, args.text, args.analyses, args.layers) == ("runs/cpu-quick", "ROMEO:\nBut soft",
                                                                   ["heads", "lens"], [0, 1])


def test_text_and_text_file_are_exclusive(model_dir):
    with pytest.raises(SystemExit) as exit_info:
        analyze.main(["--model", model_dir])
    assert exit_info.value.code == "error: give exactly one of --text and --text_file"
