"""mygpt-train behaves like the tools people know: one writer per folder, --push_to_hub publishes the finished
folder once, --report_to tensorboard/trackio log the run offline, and the model card's code runs as written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from mygpt import hub, run_artifacts
from mygpt.commands import train
from mygpt.files import FolderLock
from mygpt.train_run import run_training
from tests.test_documented_loads import python_blocks, run_as_a_user, without_progress_bars
from tests.tiny_runs import run_args
from tests.tiny_runs import corpus_dir, one_thread, private_cache  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent
SECRET = "hf_fakeTOKENthatMustNeverAppearAnywhere"


# ---------------------------------------------------------------------------------------------------------------
# The model card's code


@pytest.mark.parametrize("architecture", ["mygpt", "gpt2"])
def test_the_model_cards_code_runs_as_written_without_a_prompt_or_a_warning(architecture, corpus_dir, tmp_path):
    out = tmp_path / architecture
    run_training(run_args(corpus_dir, out, "--architecture", architecture, "--max_steps", "2", "--eval_steps", "2",
                          "--save_steps", "2"))
    code = "\n".join(python_blocks((out / "README.md").read_text()))
    assert "pipeline(\"text-generation\"" in code and f'path = "{out}"' in code
    assert ("strategy=" in code) == (architecture == "mygpt")  # the remote code carries the samplers
    result = run_as_a_user(code, tmp_path, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "custom code" not in result.stderr + result.stdout  # no "Do you wish to run the custom code?"
    assert without_progress_bars(result.stderr) == "", result.stderr[-3000:]  # no warning of any kind


def test_the_card_metadata_is_built_by_huggingface_hub(corpus_dir, tmp_path):
    """ModelCardData writes the YAML header, so whatever the run's names hold, the header parses back."""
    from huggingface_hub import ModelCard

    out = tmp_path / "tiny"
    summary = run_training(run_args(corpus_dir, out, "--max_steps", "2", "--eval_steps", "2", "--save_steps", "2"))
    card = ModelCard.load(out / "README.md")
    assert card.data.to_dict() == run_artifacts.card_data(summary).to_dict()
    summary["name"] = 'a "quoted": name # with yaml: specials'
    summary["data"] = {**summary["data"], "source": "dataset", "dataset": "someone/some: data", "config": None}
    card = ModelCard(run_artifacts.render_model_card(summary, []))
    assert card.data.model_name == summary["name"] and card.data.datasets == ["someone/some: data"]
    assert {(r.dataset_split, r.metric_type) for r in card.data.eval_results} >= {("validation", "loss")}


# ---------------------------------------------------------------------------------------------------------------
# --push_to_hub


class FakeHub:
    """Stands in for huggingface_hub.HfApi: records what would reach the Hub."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.tokens: list[str] = []
        self.commits: list[dict] = []

    def api(self, token: str | None = None) -> SimpleNamespace:
        self.tokens.append(token)
        return SimpleNamespace(
            create_repo=lambda repo_id, **kw: SimpleNamespace(repo_id=f"me/{repo_id.split('/')[-1]}"),
            repo_info=lambda repo_id, **kw: SimpleNamespace(private=False),
            list_repo_files=lambda repo_id, **kw: [],
            create_commit=self.create_commit,
        )

    def create_commit(self, repo_id, operations, commit_message, **kwargs):
        self.commits.append({
            "repo_id": repo_id, "message": commit_message,
            "paths": sorted(op.path_in_repo for op in operations),
            "card": Path(next(op.path_or_fileobj for op in operations if op.path_in_repo == "README.md")).read_text(),
            "finished": (self.folder / run_artifacts.SUMMARY).is_file(),
            "marker": (self.folder / run_artifacts.MARKER).exists(),
        })
        return SimpleNamespace(repo_url=f"https://huggingface.co/{repo_id}",
                               commit_url=f"https://huggingface.co/{repo_id}/commit/1")


def test_push_to_hub_publishes_the_finished_folder_once_after_the_run(corpus_dir, tmp_path, monkeypatch, capsys):
    import huggingface_hub
    import transformers.trainer

    out = tmp_path / "tiny"
    fake = FakeHub(out)
    monkeypatch.setattr(hub, "HfApi", fake.api)

    def no_other_route(*args, **kwargs):
        raise AssertionError("something other than the finished-folder upload tried to reach the Hub")

    for name in ("create_repo", "upload_folder", "create_commit", "upload_file"):
        monkeypatch.setattr(huggingface_hub.HfApi, name, no_other_route)
        monkeypatch.setattr(transformers.trainer, name, no_other_route, raising=False)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")

    assert train.main(run_args(corpus_dir, out, "--push_to_hub", "--hub_model_id", "tiny-shakespeare",
                               "--keep_checkpoints")) == 0
    assert len(fake.commits) == 1  # once, at the end; never a checkpoint
    commit = fake.commits[0]
    assert commit["finished"] and not commit["marker"]  # after run_summary.json, marker gone
    assert commit["paths"] == hub.plan_upload(out).paths_in_repo  # exactly mygpt-push's file set
    assert {"README.md", "run_summary.json", "samples.md", "model.safetensors", "modeling_mygpt.py"} <= \
        set(commit["paths"]) and not any(p.startswith("checkpoint-") for p in commit["paths"])
    assert commit["card"] == (out / "README.md").read_text() and 'path = "tiny-shakespeare"' in commit["card"]
    assert fake.tokens == [SECRET]  # from the environment
    printed = capsys.readouterr()
    assert "published: https://huggingface.co/me/tiny-shakespeare" in printed.out
    assert SECRET not in printed.out + printed.err + "".join(p.read_text(errors="ignore") for p in out.rglob("*")
                                                             if p.is_file() and p.suffix in (".json", ".log", ".md"))


def test_a_failed_push_leaves_a_finished_run_and_says_how_to_publish_it(corpus_dir, tmp_path, monkeypatch):
    out = tmp_path / "tiny"

    def refuse(token=None):
        raise hub.HubError("the Hub refused the upload to me/tiny (500). Nothing was committed.")

    monkeypatch.setattr(hub, "push_model_folder", lambda *a, **k: refuse())
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    with pytest.raises(SystemExit) as failed:
        train.main(run_args(corpus_dir, out, "--push_to_hub", "--hub_model_id", "me/tiny", "--max_steps", "2",
                            "--eval_steps", "2", "--save_steps", "2"))
    message = str(failed.value.code)
    assert "is finished, but publishing it failed" in message
    assert f"mygpt-push --model {out} --repo_id me/tiny" in message
    assert run_artifacts.folder_state(out) == "finished"


# ---------------------------------------------------------------------------------------------------------------
# --report_to


def test_report_to_tensorboard_logs_the_run(corpus_dir, tmp_path):
    pytest.importorskip("tensorboard", reason="pip install 'mygpt[tracking]' (or tensorboard)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tiny"
    summary = run_training(run_args(corpus_dir, out, "--report_to", "tensorboard"))
    (logdir,) = (out / "runs").iterdir()  # transformers' place: <output_dir>/runs/<date>_<host>
    events = EventAccumulator(str(logdir))
    events.Reload()
    losses = [e.value for e in events.Scalars("train/loss")]
    assert len(losses) == 7 and losses[-1] < losses[0]
    assert events.Scalars("eval/loss")[-1].value == pytest.approx(summary["results"]["validation"]["loss"], rel=1e-5)


def test_report_to_trackio_logs_the_run_offline(corpus_dir, tmp_path):
    pytest.importorskip("trackio", reason="pip install 'mygpt[tracking]' (or trackio)")
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    out = tmp_path / "tiny"
    result = subprocess.run([sys.executable, "train_hf.py", *run_args(corpus_dir, out, "--report_to", "trackio")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    read = textwrap.dedent("""
        import json
        from trackio.sqlite_storage import SQLiteStorage
        runs = SQLiteStorage.get_runs("mygpt")
        print(json.dumps({"runs": runs, "losses": [e.get("train/loss") for e in SQLiteStorage.get_logs("mygpt", runs[0])
                                                   if e.get("train/loss") is not None]}))
    """)
    logged = json.loads(subprocess.run([sys.executable, "-c", read], env=env, capture_output=True, text=True,
                                       check=True, timeout=300).stdout)
    assert logged["runs"] == ["mygpt-tiny"] and len(logged["losses"]) == 7  # project mygpt, run <arch>-<folder>


# ---------------------------------------------------------------------------------------------------------------
# One folder, one writer


HOLDER = """
import os, sys, time
sys.path.insert(0, {root!r})
from transformers import TrainerCallback
from mygpt import training
from mygpt.commands.train import main

class WaitAt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 4:
            open({ready!r}, "w").close()
            deadline = time.time() + 300
            while not os.path.exists({go!r}) and time.time() < deadline:
                time.sleep(0.1)

original = training.LMTrainer.__init__
def patched(self, *args, **kwargs):
    original(self, *args, **kwargs)
    self.add_callback(WaitAt())
training.LMTrainer.__init__ = patched
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_second_writer_is_refused_while_a_run_is_live_and_a_killed_run_resumes(corpus_dir, tmp_path):
    folder = tmp_path / "live"
    ready, go = tmp_path / "ready", tmp_path / "go"
    script = tmp_path / "holder.py"
    script.write_text(HOLDER.format(root=str(ROOT), ready=str(ready), go=str(go)))
    argv = run_args(corpus_dir, folder, "--max_steps", "8", "--eval_steps", "2", "--save_steps", "2")
    live = subprocess.Popen([sys.executable, str(script), *argv], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not ready.exists():
            assert live.poll() is None, live.stderr.read()[-3000:]
            assert time.time() < deadline, "the first run never reached step 4"
            time.sleep(0.1)
        assert run_artifacts.last_complete_checkpoint(folder) is not None  # a resume would have had something
        for second in (["--resume_from_checkpoint"], ["--overwrite"], []):
            with pytest.raises(SystemExit) as refused:
                train.main([*argv, *second])
            message = str(refused.value.code)
            assert f"in use by a live process: pid {live.pid}" in message and "kill" in message, message
        # the refused writers changed nothing: the live run goes on and finishes
        go.touch()
        assert live.wait(timeout=600) == 0, live.stderr.read()[-3000:]
    finally:
        if live.poll() is None:
            live.kill()
    assert run_artifacts.folder_state(folder) == "finished"
    assert not FolderLock(folder).path.exists()  # released (and tidied) on a normal exit

    # A killed run leaves its lock file behind; the lock itself died with the process, so the run resumes.
    killed = tmp_path / "killed"
    ready.unlink()
    go.unlink()
    argv = run_args(corpus_dir, killed, "--max_steps", "8", "--eval_steps", "2", "--save_steps", "2")
    victim = subprocess.Popen([sys.executable, str(script), *argv], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not ready.exists():
        assert victim.poll() is None and time.time() < deadline
        time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert FolderLock(killed).path.exists() and run_artifacts.folder_state(killed) == "unfinished"
    assert train.main([*argv, "--resume_from_checkpoint"]) == 0
    assert run_artifacts.folder_state(killed) == "finished"


def test_cpu_peak_counts_the_bf16_units_a_bf16_run_uses(monkeypatch):
    """A bf16 run's MFU is measured against the bf16 peak (AMX tiles or AVX512-BF16), not the fp32 one, which
    would put it above 100%; fp32 runs keep the fp32 FMA peak."""
    from mygpt import training

    monkeypatch.setattr(training, "_cpu_ghz", lambda: 2.0)
    monkeypatch.setattr(training.torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(training.torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    fp32 = 2 * 2.0e9 * 64  # 2 threads x 2 GHz x (2 FMA units x 16 lanes x 2)
    monkeypatch.setattr(training, "_cpu_flags", lambda: {"avx512f", "avx512_bf16", "amx_bf16"})
    assert training.peak_flops_per_device("bf16", use_cpu=True) == (2 * 2.0e9 * 1024,
                                                                     "2 threads x 2.00 GHz x 1024 FLOP/cycle (AMX-BF16)")
    assert training.peak_flops_per_device("fp32", use_cpu=True)[0] == fp32
    monkeypatch.setattr(training, "_cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert training.peak_flops_per_device("bf16", use_cpu=True)[0] == 2 * fp32
    monkeypatch.setattr(training, "_cpu_flags", lambda: {"avx512f"})
    assert training.peak_flops_per_device("bf16", use_cpu=True)[0] == fp32  # emulated bf16: no faster units
    assert not training.cpu_has_native_bf16()
