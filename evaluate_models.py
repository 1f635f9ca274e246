#!/usr/bin/env python3
"""Compare causal language models on the same held-out text: bits per byte, perplexity, generations.

    python evaluate_models.py --models runs/cpu-quick runs/cpu-quick-gpt2 gpt2 --output_dir reports/compare
    python evaluate_models.py compare.yaml --max_chars 20000

The command ``mygpt-evaluate`` (``mygpt/commands/evaluate.py``), run from a checkout; ``--help`` lists every option.
"""

import sys

from mygpt.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
