"""Run a study: every run a normal training run in ``DIR/runs/<name>``, then one report in ``DIR/report/``.

    DIR/configs/<name>.yaml   the run's full options (base preset + common + overrides): mygpt-train reads it, and
                              `mygpt-train DIR/configs/<name>.yaml --output_dir DIR/runs/<name>` trains it again
    DIR/runs/<name>/          the run (model, card, samples, run_summary.json), exactly as mygpt-train leaves it
    DIR/prediction.json       scaling: the held-out run's loss predicted before it was trained
    DIR/evaluations/<name>.json   extrapolation: the run scored at longer contexts (kept, so a resume reuses it)
    DIR/report/               report.json, report.csv, report.md and the plots (replaced only by a complete one)

A run whose folder holds ``run_summary.json`` is finished and skipped; a run stopped midway resumes from its last
complete checkpoint (or starts again when it has none). One process at a time works on DIR (:class:`FolderLock`).
Runs are trained in this process, one after the other, through the same function as ``mygpt-train``.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from mygpt import run_artifacts
from mygpt.cli import load_config_file
from mygpt.experiments.study import RunSpec, Study
from mygpt.files import FolderLock, write_json, write_text

logger = logging.getLogger(__name__)

PREDICTION = "prediction.json"


def _train_argv(config: Path, run_dir: Path, extra: list[str] = ()) -> list[str]:
    return [str(config), "--output_dir", str(run_dir), *extra]


def _write_config(path: Path, options: dict[str, Any], study: Study, run: RunSpec) -> None:
    header = (f"# Run {run.name!r} of study {study.name!r} ({study.source}): the base preset {study.preset}, "
              "the study's common options and the run's overrides.\n")
    write_text(path, header + yaml.safe_dump(options, sort_keys=False))


def check_runs(study: Study) -> None:
    """Parse every run's options as ``mygpt-train`` would, before anything is trained: a bad value in the last
    run is found now, not after an hour. Raises ``ValueError`` naming the run."""
    from mygpt.arguments import parse_arguments
    from mygpt.plan import check_arguments, resolve_context

    with tempfile.TemporaryDirectory() as tmp:
        for run in study.runs:
            path = Path(tmp) / f"{run.name}.yaml"
            _write_config(path, study.run_options(run), study, run)
            try:
                args = parse_arguments(_train_argv(path, Path(tmp) / "runs" / run.name))
                check_arguments(*args)
                resolve_context(args.model, args.data)
            except ValueError as error:
                raise ValueError(f"study {study.name}, run {run.name!r}: {error}") from None


def run_one(study: Study, run: RunSpec, output_dir: Path) -> dict[str, Any]:
    """Train ``run`` (or skip it when finished, resume it when stopped); returns its ``run_summary.json``."""
    from mygpt.train_run import run_training

    config = output_dir / "configs" / f"{run.name}.yaml"
    run_dir = output_dir / "runs" / run.name
    options = study.run_options(run)
    state = run_artifacts.folder_state(run_dir)
    if state in ("finished", "unfinished") and config.is_file() and load_config_file(config) != options:
        raise ValueError(f"{run_dir} holds a run of {run.name!r} with other options than the study now gives "
                         f"(see {config}); delete that folder to train it again, or give the run another name")
    if state == "finished":
        logger.info("%s: finished before, skipped", run.name)
        return json.loads((run_dir / run_artifacts.SUMMARY).read_text())
    if state == "foreign":
        raise ValueError(f"{run_dir} holds files that are not a training run; move them away")
    extra: list[str] = []
    if state == "unfinished":
        resumable = run_artifacts.last_complete_checkpoint(run_dir) is not None
        extra = ["--resume_from_checkpoint", "last"] if resumable else ["--overwrite"]
        logger.info("%s: stopped before; %s", run.name, "resuming" if resumable else "no checkpoint, starting again")
    _write_config(config, options, study, run)
    logger.info("%s: training (%s)", run.name, " ".join(f"{k}={v}" for k, v in run.overrides.items()))
    return run_training(_train_argv(config, run_dir, extra))


def run_study(study: Study, output_dir: str | Path, *, command: str = "") -> Path:
    """Train every run of ``study`` into ``output_dir`` and write the report; returns the report folder.

    Raises ``ValueError`` for a study whose runs would fail (checked first), ``FolderBusyError`` when another
    process works on ``output_dir``.
    """
    from mygpt.experiments.records import collect_record, study_findings
    from mygpt.experiments.report import write_report

    output_dir = Path(output_dir)
    check_runs(study)
    started = time.time()
    with FolderLock(output_dir, purpose=f"mygpt-experiments {study.name}"):
        output_dir.mkdir(parents=True, exist_ok=True)
        summaries: dict[str, dict[str, Any]] = {}
        # Held-out runs last: their loss is predicted from the others' before they are trained.
        for run in sorted(study.runs, key=lambda r: r.held_out):
            if run.held_out and study.kind == "scaling":
                _predict_before_training(study, run, output_dir, summaries)
            summaries[run.name] = run_one(study, run, output_dir)
        records = [collect_record(run, summaries[run.name], output_dir) for run in study.runs]
        findings = study_findings(study, records, output_dir)
        report = {"study": {"name": study.name, "kind": study.kind, "size": study.size, "source": study.source,
                            "description": study.description, "note": study.note, "preset": study.preset,
                            "common": study.common, "analysis": study.analysis},
                  "command": command,
                  # this invocation (short when finished runs were skipped), and the runs' own wall times summed
                  "study_seconds": round(time.time() - started, 1),
                  "runs_wall_seconds": round(sum(r["wall_seconds"] or 0.0 for r in records), 1),
                  "runs": records, "findings": findings}
        return write_report(report, output_dir / "report")


def _predict_before_training(study: Study, run: RunSpec, output_dir: Path,
                             summaries: dict[str, dict[str, Any]]) -> None:
    """Write ``prediction.json`` once: the scaling fit of the runs so far, applied to the held-out run's size.

    A prediction already on disk is kept: it was made before the run trained, which is the point.
    """
    from mygpt.experiments.records import collect_record
    from mygpt.experiments.scaling import predict_held_out

    path = output_dir / PREDICTION
    if path.is_file():
        return
    records = [collect_record(spec, summaries[spec.name], output_dir) for spec in study.runs
               if spec.name in summaries]
    target = _planned_size(study, run)
    prediction = predict_held_out(records, target, **_scaling_options(study))
    write_json(path, {"run": run.name, "made": time.strftime("%Y-%m-%d %H:%M:%S"), **target, **prediction})


def _scaling_options(study: Study) -> dict[str, Any]:
    return {k: study.analysis[k] for k in ("bootstrap", "seed") if k in study.analysis}


def _planned_size(study: Study, run: RunSpec) -> dict[str, float]:
    """Non-embedding parameters and training tokens of a run, from its options alone (no data, no training)."""
    from configuration_mygpt import MyGPTConfig
    from mygpt.arguments import parse_arguments
    from mygpt.experiments.records import model_sizes
    from mygpt.plan import resolve_context

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.yaml"
        _write_config(path, study.run_options(run), study, run)
        args = parse_arguments(_train_argv(path, Path(tmp) / "run"))
    # The vocabulary comes from the tokenizer, which needs the data; it changes the embedding only.
    config = MyGPTConfig(**{**args.model.config_kwargs(), "n_positions": resolve_context(args.model, args.data)},
                         vocab_size=256)
    t = args.training
    tokens = t.max_steps * t.per_device_train_batch_size * t.gradient_accumulation_steps * args.data.block_size
    return {"non_embedding_parameters": float(model_sizes(config, args.data.block_size)["non_embedding_parameters"]),
            "tokens": float(tokens)}
