"""``mygpt-sampler-report`` (also ``python -m mygpt.sampler_report``): which decoding strategy suits a model?

    mygpt-sampler-report --model runs/cpu-quick --judge runs/cpu-quick-gpt2 --output_dir reports/samplers
    mygpt-sampler-report --model runs/cpu-quick --prompt_file prompts.txt --grid small
    mygpt-sampler-report samplers.yaml --seed 1        # options from a file, flags on top

Every strategy of ``generation_mygpt`` over a grid of its knob, measured for diversity and quality against the
held-out text; see :mod:`mygpt.sampler_report` for what is measured and written.
"""

from __future__ import annotations

from mygpt.cli import main_guard, parse, setup_logging
from mygpt.files import FolderLock
from mygpt.sampler_report import SamplerReportArguments, build_report, write_report


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    with main_guard():
        (args,) = parse([SamplerReportArguments], argv, prog="mygpt-sampler-report",
                        description=__doc__.split("\n\n")[0])
        with FolderLock(args.output_dir, purpose="mygpt-sampler-report"):  # one writer per report folder
            report = build_report(args)
            for path in write_report(report, args.output_dir):
                print(f"wrote {path}")
    print("\n".join(f"- {line}" for line in report["findings"]))
    return 0
