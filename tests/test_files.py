"""Contracts of mygpt.files: atomic files, staged report folders, one writer per folder."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mygpt.files import FolderBusyError, FolderLock, atomic_path, staged_folder, write_json, write_text

ROOT = Path(__file__).resolve().parent.parent


def test_atomic_file_is_left_untouched_when_writing_fails(tmp_path):
    target = write_text(tmp_path / "report.md", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer crashed")
    assert target.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["report.md"]  # no temporary left behind


def test_atomic_path_keeps_the_suffix_for_format_sniffing_writers(tmp_path):
    with atomic_path(tmp_path / "plot.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert (tmp_path / "plot.png").read_bytes() == b"x"


def test_json_has_no_nan(tmp_path):
    path = write_json(tmp_path / "r.json", {"a": math.nan, "b": (1, math.inf), "c": tmp_path})
    assert json.loads(path.read_text()) == {"a": None, "b": [1, None], "c": str(tmp_path)}


def test_staged_folder_replaces_whole_report_only_on_success(tmp_path):
    out = tmp_path / "report"
    with staged_folder(out) as staging:
        (staging / "a.md").write_text("1")
        (staging / "old.png").write_text("1")
    with pytest.raises(ValueError):
        with staged_folder(out) as staging:
            (staging / "a.md").write_text("2")
            raise ValueError("analysis failed")
    assert (out / "a.md").read_text() == "1" and (out / "old.png").exists()
    with staged_folder(out) as staging:
        (staging / "a.md").write_text("3")
    assert sorted(os.listdir(out)) == ["a.md"]  # replace=True: the earlier report's other files are gone
    assert [p for p in os.listdir(tmp_path) if p != "report"] == []  # no staging or old folder left


def test_staged_folder_merge_keeps_other_files_and_moves_the_marker_last(tmp_path, monkeypatch):
    out = tmp_path / "report"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    moved = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (moved.append(Path(b).name), real_replace(a, b)))
    with staged_folder(out, replace=False, last="report.json") as staging:
        for name in ("report.json", "b.png", "a.md"):
            (staging / name).write_text(name)
    assert moved[-1] == "report.json"
    assert sorted(os.listdir(out)) == ["a.md", "b.png", "mine.txt", "report.json"]


def test_second_writer_is_refused_with_the_live_process_named(tmp_path):
    folder = tmp_path / "run"
    with FolderLock(folder, purpose="train_hf.py"):
        with pytest.raises(FolderBusyError, match=rf"pid {os.getpid()} .*train_hf.py"):
            FolderLock(folder).acquire()
    with FolderLock(folder):  # released: free again
        pass
    assert not (tmp_path / ".run.lock").exists()


def test_lock_of_a_killed_process_is_stale(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); from mygpt.files import FolderLock;"
         " lock = FolderLock(sys.argv[2], 'holder').acquire(); print('held', flush=True); time.sleep(60)",
         str(ROOT), str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusyError, match=rf"pid {holder.pid} "):
            FolderLock(folder).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        holder.kill()
    assert (tmp_path / ".run.lock").exists()  # the file is left behind by the kill ...
    lock = FolderLock(folder)
    lock.acquire()  # ... but holds no lock: the next writer takes it
    assert lock.holder()["pid"] == os.getpid()
    lock.release()
