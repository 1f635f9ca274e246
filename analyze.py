#!/usr/bin/env python3
"""See what a trained MyGPT (or GPT-2) model has learned: attention, head types, ablations, embeddings, probes.

    python analyze.py --model runs/cpu-quick --text "ROMEO:\\nBut soft, what light..." --output_dir reports/analysis
    python analyze.py analyze.yaml            # the same options from a YAML or JSON file

The command ``mygpt-analyze`` (``mygpt/commands/analyze.py``), run from a checkout; ``--help`` lists every option.
"""

import sys

from mygpt.commands.analyze import main

if __name__ == "__main__":
    sys.exit(main())
