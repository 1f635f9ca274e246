#!/usr/bin/env python3
"""Train a GPT from raw text with one command (the same as the installed ``mygpt-train``).

    python train_hf.py                                   # cpu-quick: Shakespeare by play, BPE, ~12 min on 2 cores
    python train_hf.py --preset shakespeare-char-cpu --data_files tinyshakespeare.txt
    python train_hf.py --architecture gpt2 --output_dir runs/cpu-quick-gpt2   # the same run with HF's GPT-2
    accelerate launch --config_file configs/accelerate/ddp.yaml train_hf.py --preset gpt-small
    torchrun --nproc_per_node 2 train_hf.py ...          # data parallel (gloo on CPU, nccl on GPUs)
    python train_hf.py --output_dir runs/x --resume_from_checkpoint     # continue a stopped run

``python train_hf.py --help`` lists every argument; the implementation is ``mygpt.commands.train``.
"""

import sys

from mygpt.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
