"""Contracts of mygpt.speed's process tuning (the compile fallback is tested with the run plan)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Allocate, touch and free a 64 MB block 20 times; print the minor page faults of the last ten (the first ones
# grow the heap to its working size).
FAULTS = """
import resource, sys, torch
sys.path.insert(0, {root!r})
from mygpt import speed
if {tune}:
    assert speed.keep_freed_memory()
for _ in range(10):
    torch.ones(1 << 24)  # 16M float32, freed at once
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(1 << 24)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(tune: bool) -> int:
    done = subprocess.run([sys.executable, "-c", FAULTS.format(root=str(ROOT), tune=tune)], capture_output=True,
                          text=True, check=True)
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_freed_large_blocks_are_reused_without_new_page_faults():
    # Untuned, every 64 MB block is mmapped afresh: 16,384 pages of 4 KB faulted per block.
    assert faults(tune=False) > 10 * 10_000
    assert faults(tune=True) < 1_000
