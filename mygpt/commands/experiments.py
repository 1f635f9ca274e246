"""``mygpt-experiments`` (``python experiments.py``): train a study's runs and write one report that compares them.

    mygpt-experiments scaling --output_dir studies/scaling                  # a shipped study, its CPU size
    mygpt-experiments ablation --size gpu --output_dir studies/ablation     # the Colab size
    mygpt-experiments my-study.yaml --output_dir studies/mine               # a study file of your own

A study is a base preset and a list of named runs, each a set of ``train_hf.py`` overrides (see
``mygpt/experiments/study.py``; shipped studies: scaling, ablation, extrapolation, induction). Each run is a
normal training run in ``DIR/runs/<name>``; finished runs are skipped, so a stopped study continues where it
stopped. The report goes to ``DIR/report/`` (report.json, report.csv, report.md, plots).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field

from mygpt.cli import main_guard, parse, setup_logging
from mygpt.corpus import CorpusError
from mygpt.experiments.study import available_studies


@dataclass
class ExperimentArguments:
    """The options of ``mygpt-experiments``."""

    study: str = field(metadata={
        "help": f"A shipped study ({', '.join(available_studies())}) or the path of a study YAML file."})
    output_dir: str = field(metadata={"help": "Where the runs (DIR/runs/<name>) and the report (DIR/report) go."})
    size: str | None = field(default=None, metadata={
        "help": "Which size of a shipped study: cpu (default; on 2 CPU cores) or gpu (Colab)."})
    check_only: bool = field(default=False, metadata={
        "help": "Check the study file and every run's options, train nothing."})


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["mygpt-experiments", *argv])
    if argv and not argv[0].startswith("-") and "--study" not in argv:  # the study comes first, positionally
        argv = ["--study", *argv]
    setup_logging()
    with main_guard(CorpusError):
        from mygpt.experiments.runner import check_runs, run_study
        from mygpt.experiments.study import load_study

        (args,) = parse([ExperimentArguments], argv, prog="mygpt-experiments", description=__doc__.split("\n\n")[0])
        study = load_study(args.study, args.size)
        if args.check_only:
            check_runs(study)
            print(f"study {study.name}: {len(study.runs)} runs, all options valid")
            return 0
        report = run_study(study, args.output_dir, command=command)
    print(f"report: {report / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
