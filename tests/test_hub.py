"""Publishing on the Hub, offline: the exact upload list, refused folders, token and network errors, a mocked
upload, and the uploaded files loading in a process that cannot import the project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import httpx2
import pytest
import torch
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, RepoUrl
from huggingface_hub.errors import HfHubHTTPError

from configuration_mygpt import MyGPTConfig
from modeling_mygpt import MyGPTForCausalLM
from mygpt.commands import push as push_to_hub
from mygpt.hub import HubError, ModelFolderError, plan_upload, push_model_folder
from mygpt.tokenization import train_bpe_tokenizer
from tests.isolation import block_project_prelude

ROOT = Path(__file__).resolve().parent.parent
SECRET = "hf_testSECRETtoken1234567890"  # a fake token: it must never show up in any output
PROMPT = "To be, or not"

# What a finished train_hf.py run leaves that belongs on the Hub: model, code, tokenizer, card, reports.
EXPECTED_UPLOAD = [
    "README.md",
    "config.json",
    "configuration_mygpt.py",
    "generation_config.json",
    "generation_mygpt.py",
    "loss_curve.png",
    "model.safetensors",
    "modeling_mygpt.py",
    "run_summary.json",
    "samples.md",
    "tokenizer.json",
    "tokenizer_config.json",
    "train.log",
    "training_log.csv",
]
# ... and what it must never upload.
EXPECTED_SKIPPED = [
    ".cache/",
    ".run_summary.json.tmp",
    "__pycache__/",
    "checkpoint-10/",
    "data/",
    "model.safetensors.incomplete",
    "optimizer.pt",
    "rng_state.pth",
    "scheduler.pt",
    "training_args.bin",
]

CARD = """---
license: mit
language:
- en
library_name: transformers
pipeline_tag: text-generation
tags:
- mygpt
- custom_code
---
# tiny-mygpt

A two-layer MyGPT with random weights, built by the tests.
"""


def _write_run_folder(folder: Path) -> None:
    """A finished run as train_hf.py leaves it (kept checkpoints and training state included), built offline."""
    lines = ["To be, or not to be, that is the question:", "Whether 'tis nobler in the mind to suffer",
             "The slings and arrows of outrageous fortune,", "Or to take arms against a sea of troubles"]
    tokenizer = train_bpe_tokenizer(lines * 10, vocab_size=300)
    config = MyGPTConfig(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    MyGPTForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text(CARD)
    (folder / "run_summary.json").write_text(json.dumps({"name": "tiny", "results": {}}))
    (folder / "loss_curve.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (folder / "samples.md").write_text("# Samples\n")
    (folder / "training_log.csv").write_text("step,loss\n1,5.6\n")
    (folder / "train.log").write_text("step 1 loss 5.6\n")
    # Training state that stays home.
    checkpoint = folder / "checkpoint-10"
    checkpoint.mkdir()
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        (checkpoint / name).write_bytes(b"state")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "model.safetensors.incomplete",
                 ".run_summary.json.tmp"):
        (folder / name).write_bytes(b"state")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "tokens.arrow").write_bytes(b"cache")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "modeling_mygpt.cpython-311.pyc").write_bytes(b"bytecode")
    (folder / "data").mkdir()
    (folder / "data" / "train.txt").write_text("\n".join(lines))


@pytest.fixture(scope="module")
def run_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("template") / "tiny-run"
    _write_run_folder(folder)
    return folder


@pytest.fixture
def run_dir(run_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the finished run for each test, so tests may break it."""
    return Path(shutil.copytree(run_template, tmp_path / "tiny-run"))


class FakeHub:
    """What the fake Hub holds (a private, empty repository unless a test says otherwise) and the calls it got."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []  # (method, token the HfApi carried, repo_id, arguments)
        self.private = True
        self.files: list[str] = []

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """Replaces the HfApi methods the upload uses with recorders, so nothing needs a network."""
    hub = FakeHub()

    def create_repo(self, repo_id, *, private=None, exist_ok=False, repo_type=None, **kwargs):
        hub.calls.append(("create_repo", self.token, repo_id, {"private": private, "exist_ok": exist_ok}))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def repo_info(self, repo_id, **kwargs):
        hub.calls.append(("repo_info", self.token, repo_id, kwargs))
        return SimpleNamespace(private=hub.private)

    def list_repo_files(self, repo_id, **kwargs):
        hub.calls.append(("list_repo_files", self.token, repo_id, kwargs))
        return list(hub.files)

    def create_commit(self, repo_id, operations, *, commit_message, **kwargs):
        hub.calls.append(("create_commit", self.token, repo_id, {"operations": list(operations),
                                                                 "commit_message": commit_message}))
        return SimpleNamespace(repo_url=f"https://huggingface.co/{repo_id}",
                               commit_url=f"https://huggingface.co/{repo_id}/commit/0123abc")

    for name, method in [("create_repo", create_repo), ("repo_info", repo_info),
                         ("list_repo_files", list_repo_files), ("create_commit", create_commit)]:
        monkeypatch.setattr(HfApi, name, method)
    for name in ("upload_folder", "upload_file"):
        monkeypatch.setattr(HfApi, name, lambda *a, _name=name, **k: pytest.fail(f"HfApi.{_name} must not be used"))
    return hub


def _cli(args: list[str], tmp_path: Path, **env_changes: str) -> subprocess.CompletedProcess:
    """Runs push_to_hub.py as a user would, with no token in the environment and an empty HF home."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH")}
    env.update(HF_HOME=str(tmp_path / "hf_home"), **env_changes)
    return subprocess.run([sys.executable, str(ROOT / "push_to_hub.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


# ----------------------------------------------------------------------------------------------------------------
# The upload list


def test_upload_list_is_exactly_model_code_tokenizer_card_and_reports(run_dir: Path) -> None:
    plan = plan_upload(run_dir)
    assert plan.paths_in_repo == EXPECTED_UPLOAD
    assert [s.path for s in plan.skipped] == EXPECTED_SKIPPED
    assert all(f.size == (run_dir / f.path_in_repo).stat().st_size for f in plan.files)
    assert plan.total_size == sum((run_dir / p).stat().st_size for p in EXPECTED_UPLOAD)
    reasons = {s.path: s.reason for s in plan.skipped}
    assert "checkpoint" in reasons["checkpoint-10/"] and "optimizer" in reasons["optimizer.pt"]


def test_config_names_its_remote_code_and_the_code_is_uploaded(run_dir: Path) -> None:
    config = json.loads((run_dir / "config.json").read_text())
    modules = {ref.split(".")[0] + ".py" for ref in config["auto_map"].values()}
    assert modules <= set(plan_upload(run_dir).paths_in_repo)


def test_custom_generate_folder_is_uploaded_and_other_subfolders_are_not(run_dir: Path) -> None:
    (run_dir / "custom_generate").mkdir()
    (run_dir / "custom_generate" / "generate.py").write_text("def generate(model, **kwargs): ...\n")
    (run_dir / "custom_generate" / "state.pt").write_bytes(b"x")
    plan = plan_upload(run_dir)
    assert "custom_generate/generate.py" in plan.paths_in_repo
    assert "custom_generate/state.pt" not in plan.paths_in_repo
    assert not any(p.startswith(("data/", "checkpoint-10/", ".cache/")) for p in plan.paths_in_repo)


def test_dry_run_prints_every_file_with_its_size_and_uploads_nothing(
    run_dir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("create_repo", "repo_info", "list_repo_files", "create_commit", "upload_folder", "upload_file"):
        monkeypatch.setattr(HfApi, name, lambda *a, _name=name, **k: pytest.fail(f"dry run called HfApi.{_name}"))
    monkeypatch.delenv("HF_TOKEN", raising=False)  # a dry run needs no token
    assert push_to_hub.main(["--model", str(run_dir), "--repo_id", "me/tiny", "--dry_run"]) == 0
    out = capsys.readouterr().out
    listed = [line.split("B  ", 1)[1] for line in out.splitlines() if line.startswith("  ") and "B  " in line]
    assert listed == EXPECTED_UPLOAD
    for name in EXPECTED_UPLOAD:
        assert f"{(run_dir / name).stat().st_size:,} B  {name}\n" in out
    for name in EXPECTED_SKIPPED:
        assert f"\n  {name}  (" in out
    assert "nothing uploaded" in out


# ----------------------------------------------------------------------------------------------------------------
# Folders that are not a finished model


def _remove(*names: str):
    def change(folder: Path) -> None:
        for name in names:
            (folder / name).unlink()
    return change


def _write(name: str, text: str):
    return lambda folder: (folder / name).write_text(text)


def _drop_auto_map(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    del config["auto_map"]
    (folder / "config.json").write_text(json.dumps(config))


def _shard_missing(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                            "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


BAD_FOLDERS = {
    "no config": (_remove("config.json"), "missing config.json"),
    "config not json": (_write("config.json", "{not json"), "config.json is not valid JSON"),
    "unknown model type without auto_map": (_drop_auto_map, "no auto_map"),
    "no weights": (_remove("model.safetensors"), "missing weights"),
    "pickle weights only": (lambda f: (f / "model.safetensors").rename(f / "pytorch_model.bin"), "pickles"),
    "a shard missing": (_shard_missing, "model-00002-of-00002.safetensors"),
    "no tokenizer": (_remove("tokenizer.json", "tokenizer_config.json"), "missing tokenizer"),
    "no tokenizer vocabulary": (_remove("tokenizer.json"), "a vocabulary (tokenizer.json"),
    "no modeling code": (_remove("modeling_mygpt.py"), "missing remote code modeling_mygpt.py"),
    "no code it imports": (_remove("generation_mygpt.py"), "missing remote code generation_mygpt.py"),
    "no model card": (_remove("README.md"), "missing model card README.md"),
    "unfilled card template": (_write("README.md", "---\nlicense: mit\n---\n# {{ s.name }}\n"), "template placeholder"),
    "card without metadata": (_write("README.md", "# tiny\n\nNo metadata.\n"), "no Hub metadata"),
    "card with broken metadata": (_write("README.md", "---\nlicense: [mit\n---\n# tiny\n"), "not valid YAML"),
    "run in progress": (_write(".incomplete", '{"pid": 1}'), ".incomplete marker"),
    "run stopped with checkpoints": (_remove("run_summary.json"), "no run_summary.json"),
}


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_a_folder_that_is_not_a_finished_model_is_refused_naming_what_is_missing(
    case: str, run_dir: Path, fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    change, expected = BAD_FOLDERS[case]
    change(run_dir)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    with pytest.raises(SystemExit) as exit_info:
        push_to_hub.main(["--model", str(run_dir), "--repo_id", "me/tiny"])
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and expected in message, message
    assert fake_hub.calls == []  # refused before anything reached the Hub
    with pytest.raises(ModelFolderError):
        plan_upload(run_dir)


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="does not exist"):
        push_to_hub.main(["--model", str(tmp_path / "nowhere"), "--repo_id", "me/tiny", "--dry_run"])


def test_every_problem_is_reported_at_once(run_dir: Path) -> None:
    for name in ("config.json", "tokenizer.json", "README.md"):
        (run_dir / name).unlink()
    with pytest.raises(ModelFolderError) as error:
        plan_upload(run_dir)
    assert all(part in str(error.value) for part in ("config.json", "missing tokenizer", "README.md"))


def test_braces_inside_the_cards_code_blocks_are_not_taken_for_placeholders(run_dir: Path) -> None:
    (run_dir / "README.md").write_text(CARD + "\n## Samples\n\n```text\nROMEO: {{ a sample with braces }}\n```\n")
    assert "README.md" in plan_upload(run_dir).paths_in_repo


def test_the_card_template_copied_unfilled_is_refused(run_dir: Path) -> None:
    from mygpt.run_artifacts import CARD_TEMPLATE

    shutil.copyfile(CARD_TEMPLATE, run_dir / "README.md")
    with pytest.raises(ModelFolderError, match="template placeholder"):
        plan_upload(run_dir)


def test_a_gpt2_folder_needs_no_remote_code(run_dir: Path) -> None:
    """transformers knows gpt2, so a GPT2LMHeadModel run (the reference) is publishable without code files."""
    config = json.loads((run_dir / "config.json").read_text())
    config.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    del config["auto_map"]
    (run_dir / "config.json").write_text(json.dumps(config))
    for name in ("configuration_mygpt.py", "modeling_mygpt.py", "generation_mygpt.py"):
        (run_dir / name).unlink()
    assert "config.json" in plan_upload(run_dir).paths_in_repo


# ----------------------------------------------------------------------------------------------------------------
# Token and network


def test_without_a_token_it_explains_how_to_log_in(run_dir: Path, tmp_path: Path) -> None:
    result = _cli(["--model", str(run_dir), "--repo_id", "me/tiny"], tmp_path, HF_HUB_OFFLINE="1")
    assert result.returncode != 0
    assert "no Hugging Face token" in result.stderr
    assert "hf auth login" in result.stderr and "HF_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


def test_offline_it_says_it_cannot_reach_the_hub_without_a_traceback(run_dir: Path, tmp_path: Path) -> None:
    result = _cli(["--model", str(run_dir), "--repo_id", "me/tiny"], tmp_path, HF_HUB_OFFLINE="1", HF_TOKEN=SECRET)
    assert result.returncode != 0
    assert "cannot reach the Hugging Face Hub" in result.stderr and "HF_HUB_OFFLINE" in result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_unreachable_hub_is_reported_without_a_traceback(run_dir: Path, tmp_path: Path) -> None:
    # Port 9 on the loopback refuses connections: a Hub that cannot be reached, without needing a network.
    result = _cli(["--model", str(run_dir), "--repo_id", "me/tiny"], tmp_path, HF_HUB_OFFLINE="0",
                  TRANSFORMERS_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9", HF_TOKEN=SECRET)
    assert result.returncode != 0
    assert "cannot reach the Hugging Face Hub at http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_a_token_on_the_command_line_is_refused_and_not_echoed(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        push_to_hub.main(["--model", str(run_dir), "--repo_id", "me/tiny", "--token", SECRET])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "not accepted on the command line" in captured.err
    assert SECRET not in captured.out + captured.err


# ----------------------------------------------------------------------------------------------------------------
# The upload, against a recording fake of HfApi


def test_upload_sends_exactly_the_listed_files_to_the_repo_with_the_private_flag(
    run_dir: Path, fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)
    code = push_to_hub.main(["--model", str(run_dir), "--repo_id", "me/tiny", "--private",
                             "--commit_message", "first model"])
    assert code == 0
    assert fake_hub.names() == ["create_repo", "repo_info", "list_repo_files", "create_commit"]
    # The environment's token is the one used, on the repository asked for.
    assert all(call[1] == SECRET and call[2] == "me/tiny" for call in fake_hub.calls)
    assert fake_hub.calls[0][3] == {"private": True, "exist_ok": True}
    commit = fake_hub.calls[-1][3]
    assert commit["commit_message"] == "first model"
    operations = commit["operations"]
    assert all(isinstance(op, CommitOperationAdd) for op in operations)
    assert [op.path_in_repo for op in operations] == EXPECTED_UPLOAD
    for op in operations:
        assert Path(op.path_or_fileobj) == run_dir / op.path_in_repo
    captured = capsys.readouterr()
    assert "https://huggingface.co/me/tiny/commit/0123abc" in captured.out
    assert SECRET not in captured.out + captured.err + caplog.text


def test_without_private_the_account_default_visibility_is_kept(run_dir: Path, fake_hub: FakeHub) -> None:
    fake_hub.private = False
    push_model_folder(plan_upload(run_dir), "me/tiny", token=SECRET)
    assert fake_hub.calls[0][3] == {"private": None, "exist_ok": True}
    assert fake_hub.names()[-1] == "create_commit"


def test_private_upload_into_an_existing_public_repo_is_refused(run_dir: Path, fake_hub: FakeHub) -> None:
    fake_hub.private = False
    with pytest.raises(HubError, match="already exists and is public"):
        push_model_folder(plan_upload(run_dir), "me/tiny", token=SECRET, private=True)
    assert "create_commit" not in fake_hub.names()


def test_stale_weights_on_the_hub_are_deleted_in_the_same_commit(run_dir: Path, fake_hub: FakeHub) -> None:
    fake_hub.files = [".gitattributes", "README.md", "model.safetensors", "model-00001-of-00002.safetensors",
                           "model.safetensors.index.json", "pytorch_model.bin", "notes.md"]
    push_model_folder(plan_upload(run_dir), "me/tiny", token=SECRET)
    operations = fake_hub.calls[-1][3]["operations"]
    deleted = sorted(op.path_in_repo for op in operations if isinstance(op, CommitOperationDelete))
    assert deleted == ["model-00001-of-00002.safetensors", "model.safetensors.index.json", "pytorch_model.bin"]
    assert [op.path_in_repo for op in operations if isinstance(op, CommitOperationAdd)] == EXPECTED_UPLOAD


@pytest.mark.parametrize("status, expected", [(401, "rejected the token"), (403, "may not write to me/tiny"),
                                              (500, "refused the upload")])
def test_hub_refusals_become_clear_errors(
    run_dir: Path, fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, status: int, expected: str
) -> None:
    def refuse(self, repo_id, **kwargs):
        request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
        raise HfHubHTTPError(f"{status} Client Error", response=httpx2.Response(status, request=request))

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    with pytest.raises(HubError, match=expected) as error:
        push_model_folder(plan_upload(run_dir), "me/tiny", token=SECRET)
    assert SECRET not in str(error.value)


def test_an_invalid_repo_id_is_refused_before_reaching_the_hub(run_dir: Path, fake_hub: FakeHub) -> None:
    with pytest.raises(HubError, match="invalid --repo_id"):
        push_model_folder(plan_upload(run_dir), "me/tiny model!", token=SECRET)
    assert fake_hub.calls == []


@pytest.mark.parametrize("repo_id", ["bad id!!", "me/tiny model!", "a/b/c", "me/"])
def test_an_invalid_repo_id_fails_a_dry_run_too(run_dir: Path, tmp_path: Path, repo_id: str) -> None:
    result = _cli(["--model", str(run_dir), "--repo_id", repo_id, "--dry_run"], tmp_path)
    assert result.returncode != 0
    assert f"error: invalid --repo_id {repo_id!r}: expected 'user/name'" in result.stderr
    assert "would go to" not in result.stdout and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------------------------------------------
# The folder as the Hub would serve it


@pytest.mark.slow
def test_uploaded_files_load_and_generate_in_a_process_that_cannot_import_the_project(
    run_dir: Path, tmp_path: Path
) -> None:
    """Exactly the files of the upload list, in a fresh folder, loaded by a fresh interpreter elsewhere."""
    served, elsewhere = tmp_path / "served", tmp_path / "elsewhere"
    elsewhere.mkdir()
    for path in plan_upload(run_dir).paths_in_repo:
        (served / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / path, served / path)

    from transformers import AutoTokenizer

    model = MyGPTForCausalLM.from_pretrained(run_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
        greedy = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id)
    expected_text = PROMPT + tokenizer.decode(greedy[0, ids.shape[1]:], skip_special_tokens=True)
    torch.save({"ids": ids, "logits": logits}, tmp_path / "expected.pt")

    script = textwrap.dedent(f"""
        import json, torch
        from huggingface_hub import ModelCard
        from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
        folder = {str(served)!r}
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        ids = tokenizer({PROMPT!r}, return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(ids).logits
        generator = pipeline("text-generation", model=folder, trust_remote_code=True)
        text = generator({PROMPT!r}, max_new_tokens=8, do_sample=False)[0]["generated_text"]
        print(json.dumps({{
            "model_class": type(model).__name__, "model_type": model.config.model_type,
            "same_ids": ids.tolist() == expected["ids"].tolist(),
            "same_logits": torch.equal(logits, expected["logits"]),
            "round_trip": tokenizer.decode(ids[0]) == {PROMPT!r},
            "pipeline_text": text,
            "pipeline_tag": ModelCard.load(folder + "/README.md").data.pipeline_tag,
        }}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run([sys.executable, "-c", block_project_prelude() + script], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    served_result = json.loads(result.stdout.strip().splitlines()[-1])
    assert served_result == {
        "model_class": "MyGPTForCausalLM", "model_type": "mygpt", "same_ids": True, "same_logits": True,
        "round_trip": True, "pipeline_text": expected_text, "pipeline_tag": "text-generation",
    }
    assert len(expected_text) > len(PROMPT)  # the pipeline generated text
