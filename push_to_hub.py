#!/usr/bin/env python3
"""Publish a finished model folder (a train_hf.py run, or any save_pretrained folder with a card) on the Hub.

    python push_to_hub.py --model runs/cpu-quick --repo_id you/mygpt-shakespeare --dry_run   # what would go up
    python push_to_hub.py --model runs/cpu-quick --repo_id you/mygpt-shakespeare --private

The command ``mygpt-push`` (``mygpt/commands/push.py``), run from a checkout; ``--help`` lists every option.
"""

import sys

from mygpt.commands.push import main

if __name__ == "__main__":
    sys.exit(main())
