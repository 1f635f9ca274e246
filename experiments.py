#!/usr/bin/env python3
"""Train a study of runs (model sizes, architecture arms, contexts) and write one report that compares them.

    python experiments.py scaling --output_dir studies/scaling            # shipped: scaling, ablation,
    python experiments.py ablation --size gpu --output_dir studies/abl    #   extrapolation, induction
    python experiments.py my-study.yaml --output_dir studies/mine         # or a study file of your own

The command ``mygpt-experiments`` (``mygpt/commands/experiments.py``); ``--help`` lists every option.
"""

import sys

from mygpt.commands.experiments import main

if __name__ == "__main__":
    sys.exit(main())
