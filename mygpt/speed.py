"""What makes a CPU training process fast, or keeps it from failing.

- ``torch.compile`` only where it can work: ``--torch_compile`` on CPU uses inductor, which writes C++ and needs a
  C++ compiler to build it. A machine without one (a slim container, a locked-down laptop) would fail at the first
  step with a long traceback; instead the run trains eagerly after one warning saying why.
- A malloc that keeps freed memory: glibc hands allocations above its mmap threshold (at most 32 MB) straight
  back to the kernel when freed, so every step's activations and gradients are page-faulted (and zeroed by the
  kernel) anew. Measured at the default preset's shape (bench/bench_step.py's step, ``getrusage``): ~143,000 minor
  page faults and 0.29 s of system time per bf16 step before; after ``keep_freed_memory()`` none once the heap
  has grown to its working size (a few steps), for a peak resident size of 1.02 GB instead of 0.89 GB.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def cpp_compiler() -> str | None:
    """The C++ compiler inductor would use, if it is there and builds a one-line file; else None."""
    try:  # inductor's own search ($CXX, its config's list)
        from torch._inductor.cpp_builder import get_cpp_compiler

        compiler = get_cpp_compiler()
    except Exception:  # none found, or inductor's internals moved: look for the usual names
        compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
    if not compiler:
        return None
    with tempfile.TemporaryDirectory(prefix="mygpt-cxx-") as folder:
        try:
            done = subprocess.run([compiler, "-x", "c++", "-c", "-", "-o", os.path.join(folder, "probe.o")],
                                  input="int probe() { return 0; }\n", capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
    return compiler if done.returncode == 0 else None


def compile_fallback(torch_compile: bool, backend: str | None, on_cpu: bool) -> dict[str, Any]:
    """``TrainingArguments`` changes that turn ``torch_compile`` off when it would need a missing C++ compiler.

    Only inductor (the default backend) on CPU needs one. Returns ``{}`` when nothing changes; otherwise logs one
    warning and returns the fields that switch compilation off (``TrainingArguments`` turns it back on while a
    backend or mode is set, so those are cleared too).
    """
    if not (torch_compile and on_cpu and backend in (None, "inductor")) or cpp_compiler() is not None:
        return {}
    logger.warning("--torch_compile: no usable C++ compiler ($CXX, g++ or clang++), which torch.compile's CPU "
                   "backend (inductor) needs; training without compilation (install g++ to compile)")
    return {"torch_compile": False, "torch_compile_backend": None, "torch_compile_mode": None}


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in the process for reuse (no mmap for large blocks, trim only above
    1 GiB of free heap). True when applied; False off glibc (macOS, Windows, musl), where nothing changes.

    A training process allocates the same sizes every step, so memory kept is memory reused; the cost is that
    the process does not shrink after a peak.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    applied = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    logger.debug("malloc keeps freed memory: %s", applied)
    return applied


def tune_process() -> None:
    """Everything here that speeds up a training process as a whole (called once before the model is built)."""
    keep_freed_memory()
