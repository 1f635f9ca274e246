"""mygpt-train: train a GPT from raw text with one command, on a laptop CPU or on GPUs.

    mygpt-train                                          # cpu-quick: Shakespeare by play, BPE, ~12 min on 2 cores
    mygpt-train --preset shakespeare-char-cpu --data_files tinyshakespeare.txt
    mygpt-train my-run.yaml --learning_rate 3e-4         # a YAML/JSON file of arguments, then flags
    mygpt-train --architecture gpt2 --output_dir runs/cpu-quick-gpt2   # the same run with transformers' GPT-2
    mygpt-train --output_dir runs/x --resume_from_checkpoint           # continue a stopped run
    mygpt-train --report_to tensorboard                  # or trackio: log the run (pip install "mygpt[tracking]")
    mygpt-train --push_to_hub --hub_model_id you/mygpt   # publish the finished folder (token: hf auth login)
    torchrun --nproc_per_node 2 -m mygpt.commands.train ...   # data parallel (gloo on CPU, nccl on GPUs)

Every argument (``--help``) can also come from a preset or a YAML/JSON file (``--preset NAME_OR_FILE``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mygpt.cli import main_guard, setup_logging
from mygpt.corpus import CorpusError
from mygpt.hub import HubError
from mygpt.train_run import DEFAULT_PROG, run_training, summary_line


def _prog() -> str:
    """How the user called us, for the summary's "run it again" command."""
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return f"python {script}" if script == "train_hf.py" else DEFAULT_PROG


def main(argv: list[str] | None = None) -> int:
    """Train as the arguments say; prints one summary line. Exit code 1 with ``error: ...`` for bad input."""
    argv = sys.argv[1:] if argv is None else list(argv)
    setup_logging()
    with main_guard(HubError, CorpusError):
        summary = run_training(argv, prog=_prog())
    if summary:
        print(summary_line(summary))
    _leave_process_group()
    return 0


def _leave_process_group() -> None:
    """End a distributed run together: every process waits for the main one's artifacts, then closes its process
    group (a process that exits with its group open may abort in the group's threads at interpreter exit)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
