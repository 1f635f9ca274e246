"""``mygpt-evaluate`` (``python evaluate_models.py``): compare causal LMs on the same held-out text.

    mygpt-evaluate --models runs/cpu-quick runs/cpu-quick-gpt2 gpt2 --output_dir reports/compare
    mygpt-evaluate compare.yaml --max_chars 20000        # options from a file, flags on top

Each model is a MyGPT run folder, a local folder of any ``AutoModelForCausalLM`` or a Hub id (online); all read
the same text (by default the held-out test split of the first model that is a finished run) with their own
tokenizers. The output folder receives ``report.json`` (every figure), ``report.md`` (tables, plots, generations
side by side) and PNG plots; what is measured is described in :mod:`mygpt.evaluation`. A model that cannot be
loaded is reported and skipped; the command fails only when no model is left.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from mygpt.cli import main_guard, parse, setup_logging
from mygpt.eval_report import write_report
from mygpt.evaluation import EvaluateArguments, compare_models
from mygpt.files import FolderLock


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    setup_logging()
    with main_guard():
        (args,) = parse([EvaluateArguments], argv, prog="mygpt-evaluate", description=__doc__.split("\n\n")[0])
        with FolderLock(args.output_dir, purpose="mygpt-evaluate"):  # one writer per report folder
            results = compare_models(args, command=shlex.join(["mygpt-evaluate", *argv]))
            write_report(results, args.output_dir)
    print(f"report: {Path(args.output_dir) / 'report.md'} ({results['wall_time_seconds']:.1f} s)")
    for m in sorted(results["models"], key=lambda m: m["scores"]["bits_per_byte"]):
        s = m["scores"]
        print(f"  {m['name']}: {s['bits_per_byte']:.4f} bits/byte, {s['bits_per_char']:.4f} bits/char, "
              f"perplexity {s['perplexity']:.2f} over {s['n_tokens']:,} tokens "
              f"({s['chars_per_token']:.2f} chars/token)")
    for s in results["skipped"]:
        print(f"  skipped {s['name']}: {s['reason']}")
    return 0
