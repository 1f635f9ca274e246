"""Writing outputs safely: one way for the whole project.

* :func:`atomic_path` / :func:`write_text` / :func:`write_json` — a file appears whole or not at all (written
  under a temporary sibling name, then renamed; the suffix is kept, so matplotlib and friends pick the format).
* :func:`staged_folder` — a report folder is built aside and published in one move, so a reader never finds half
  a report where a finished one is expected, and an earlier report is only replaced by a complete one.
* :class:`FolderLock` — one writer per output folder: a second process that wants the same folder is refused
  with a message naming the live one. The lock is an OS file lock (``flock``), so it is released on any exit,
  a crash or ``kill -9`` included: a killed run can always be resumed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["FolderBusyError", "FolderLock", "atomic_path", "jsonable", "staged_folder", "write_json", "write_text"]


# ---------------------------------------------------------------------------------------------------------------
# Files


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``, on failure deleted.

    The temporary name keeps ``path``'s suffix (``.tmp-XXXX.png``), because writers such as ``savefig`` choose the
    format by it. The file gets the permissions a plain ``open`` would give (``mkstemp`` makes it private).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as ``None`` (JSON has no NaN or infinity), tuples as lists, paths as str."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def write_json(path: str | os.PathLike, data: Any, indent: int = 2) -> Path:
    """Write ``data`` as JSON atomically (non-finite floats become null; other objects through ``str``)."""
    text = json.dumps(jsonable(data), indent=indent, allow_nan=False, default=str) + "\n"
    return write_text(path, text)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# ---------------------------------------------------------------------------------------------------------------
# Folders


@contextlib.contextmanager
def staged_folder(output_dir: str | os.PathLike, *, replace: bool = True, last: str | None = None) -> Iterator[Path]:
    """Yield an empty staging folder beside ``output_dir``; publish its contents there when the block succeeds.

    Args:
        output_dir: the folder the files are for.
        replace: ``True``: the staged folder replaces ``output_dir`` as a whole (files of an earlier report that
            the new one does not write are gone). ``False``: the staged files are moved into ``output_dir`` one
            by one and anything else there is left alone.
        last: with ``replace=False``, the name of the file to move last (e.g. ``report.json``, whose presence
            says "this report is finished").

    On an exception the staging folder is removed and ``output_dir`` is untouched.
    """
    target = Path(output_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    try:
        yield staging
        if replace:
            _replace_folder(staging, target)
        else:
            target.mkdir(parents=True, exist_ok=True)
            names = sorted(os.listdir(staging), key=lambda name: name == last)  # `last` sorts to the end
            for name in names:
                destination = target / name
                if destination.is_dir() and not destination.is_symlink():
                    shutil.rmtree(destination)
                os.replace(staging / name, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace_folder(staging: Path, target: Path) -> None:
    """Move ``staging`` to ``target``; an existing ``target`` is moved aside first and deleted after."""
    os.chmod(staging, 0o777 & ~_umask())
    if not target.exists():
        os.replace(staging, target)
        return
    if not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a folder; remove it or choose another output folder")
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / "previous")
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# One writer per folder


class FolderBusyError(RuntimeError):
    """Another live process holds the lock on the folder; the message names it."""


class FolderLock:
    """An exclusive, process-lifetime lock on an output folder.

    The lock file is a hidden sibling of the folder (``runs/.cpu-quick.lock`` for ``runs/cpu-quick``), so the
    folder itself can be created, replaced or deleted while it is held. The file records who holds it (pid, host,
    command, start time) for the refusal message. ``flock`` makes the operating system release the lock when
    the process ends, however it ends: a lock file left behind by a crash is stale and the next run takes it.

    Use as a context manager, or call :meth:`acquire` and let process exit release it::

        with FolderLock("runs/cpu-quick", purpose="train_hf.py"):
            ...  # only this process writes into runs/cpu-quick

    Raises:
        FolderBusyError: on :meth:`acquire`, when a live process holds the lock.
    """

    def __init__(self, folder: str | os.PathLike, purpose: str = "") -> None:
        folder = Path(folder).resolve()
        self.folder = folder
        self.path = folder.parent / f".{folder.name}.lock"
        self.purpose = purpose
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FolderLock:
        """Take the lock (again a no-op when this object already holds it)."""
        if self._fd is not None:
            return self
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                if error.errno in (errno.EAGAIN, errno.EACCES):
                    raise FolderBusyError(self._busy_message()) from None
                raise
            # The holder before us may have unlinked the file between our open and our flock: then we locked a
            # file nobody else will ever see. Only a lock on the file that is at the path counts.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                  "purpose": self.purpose, "folder": str(self.folder), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(record) + "\n").encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up and remove the lock file."""
        if self._fd is None:
            return
        import fcntl

        self.path.unlink(missing_ok=True)  # while still locked: nobody can take a lock on it in between
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def holder(self) -> dict[str, Any] | None:
        """What the lock file says about its holder (None when there is no readable record)."""
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def _busy_message(self) -> str:
        who = self.holder() or {}
        pid, host = who.get("pid", "?"), who.get("host", "?")
        what = who.get("purpose") or who.get("command") or "another process"
        since = f", since {who['started']}" if who.get("started") else ""
        return (f"{self.folder} is in use by a live process: pid {pid} on {host} ({what}{since}). Only one process "
                f"may write there at a time: wait for it to finish, stop it (kill {pid}), or choose another folder.")

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:  # the OS would release it at exit anyway; this also tidies the file
        with contextlib.suppress(Exception):
            self.release()
