#!/usr/bin/env python3
"""Sample text from a trained model, with its saved generation settings or the project's hand-written samplers.

    python generate.py --model runs/cpu-quick --prompt "ROMEO:" --strategy top_p --top_p 0.9 --temperature 0.8 \
        --max_new_tokens 200 --seed 0
    python generate.py --model runs/cpu-quick --prompt "ROMEO:" --compare       # every strategy, same seed
    python generate.py args.yaml                                                # the same options from a file

The command ``mygpt-generate`` (``mygpt/commands/generate.py``), run from a checkout; ``--help`` lists every option.
"""

import sys

from mygpt.commands.generate import main

if __name__ == "__main__":
    sys.exit(main())
