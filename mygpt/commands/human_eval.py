"""``mygpt-human-eval``: a blind pairwise A/B study of two models' continuations, and its score.

    mygpt-human-eval page --report reports/compare/report.json --model_a runs/cpu --model_b gpt2 --output human.html
    mygpt-human-eval score --votes votes-*.json --key human.key.json --output human_score.json

``page`` writes one self-contained HTML file (open it in any browser, offline; keys a/b/t or the arrows) and its
key (``<name>.key.json``: which model was on which side). ``score`` reads the votes each rater exported from the
page and gives model A's win rate over the decisive votes (ties excluded and counted beside it) with a Wilson 95%
interval and an exact sign test; see :mod:`mygpt.human_eval`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from mygpt.cli import main_guard, parse, setup_logging
from mygpt.files import write_json
from mygpt.human_eval import build_study, format_score, pairs_from_report, score_votes, write_page

SUBCOMMANDS = ("page", "score")


@dataclass
class PageArguments:
    """The options of ``mygpt-human-eval page``."""

    report: str = field(metadata={"help": "The report.json that mygpt-evaluate wrote (its generations are paired)."})
    output: str = field(default="human_eval.html", metadata={
        "help": "The page to write; its key goes beside it as <name>.key.json."})
    model_a: str | None = field(default=None, metadata={
        "help": "Model A's name in the report; the first model when not given."})
    model_b: str | None = field(default=None, metadata={
        "help": "Model B's name in the report; the second model when not given."})
    seed: int = field(default=0, metadata={"help": "Seed of the order of the pairs and of each pair's sides."})
    title: str = field(default="Which continuation is better?", metadata={"help": "The page's title."})


@dataclass
class ScoreArguments:
    """The options of ``mygpt-human-eval score``."""

    votes: list[str] = field(metadata={"help": "The votes file(s) exported from the page, one per rater."})
    key: str | None = field(default=None, metadata={
        "help": "The page's <name>.key.json: every vote is checked against it (recommended)."})
    output: str | None = field(default=None, metadata={"help": "Also write the score as JSON to this file."})


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        from transformers import HfArgumentParser

        print(__doc__.strip() + "\n")
        for command, options in (("page", PageArguments), ("score", ScoreArguments)):
            print(HfArgumentParser([options], prog=f"mygpt-human-eval {command}").format_help())
        return 0
    setup_logging()
    with main_guard():
        if not argv or argv[0] not in SUBCOMMANDS:
            given = f"got {argv[0]!r}" if argv else "got none"
            raise ValueError(f"give a subcommand, page or score ({given}); --help after one lists its options")
        command, rest = argv[0], argv[1:]
        prog = f"mygpt-human-eval {command}"
        if command == "page":
            (args,) = parse([PageArguments], rest, prog=prog, description=__doc__.split("\n\n")[0])
            pairs, model_a, model_b = pairs_from_report(args.report, args.model_a, args.model_b)
            study = build_study(pairs, model_a, model_b, seed=args.seed, title=args.title)
            page, key = write_page(study, args.output)
            print(f"wrote {page} ({len(study['items'])} pairs, {model_a} vs {model_b}) and its key {key}")
        else:
            (args,) = parse([ScoreArguments], rest, prog=prog, description=__doc__.split("\n\n")[0])
            score = score_votes(args.votes, key=args.key)
            print(format_score(score))
            if args.output:
                print(f"wrote {write_json(args.output, score)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
