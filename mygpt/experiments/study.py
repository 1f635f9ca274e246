"""A study file: a base preset and a list of named runs, each a set of ``train_hf.py`` overrides.

    kind: scaling                     # scaling | ablation | extrapolation | induction | runs
    description: What the study asks.
    preset: cpu-quick                 # the base preset (a name or a YAML/JSON file), as --preset
    common: {max_steps: 200}          # overrides of every run
    analysis: {bootstrap: 200}        # options of the kind's findings (see KIND_OPTIONS)
    data: {source: induction}         # optional: a synthetic corpus instead of the preset's text (synthetic.py)
    runs:
      - name: small                   # the run's folder name: DIR/runs/small
        overrides: {n_embd: 64}       # train_hf.py options (any flag of `python train_hf.py --help`)
      - name: large
        overrides: {n_embd: 256}
        held_out: true                # scaling: predicted by the fit of the other runs before it is trained
      # ablation runs also name their arm:  arm: rope

A shipped study puts ``preset``, ``common``, ``analysis`` and ``runs`` under ``sizes: {cpu: {...}, gpu: {...}}``
(values outside ``sizes`` are defaults for every size); ``--size`` picks one. Everything is checked here, before
any run starts: unknown keys, unknown options, an empty run list, duplicate names, an unknown preset.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mygpt.cli import load_config_file

STUDIES_DIR = Path(__file__).resolve().parent / "studies"
KINDS = ("scaling", "ablation", "extrapolation", "induction", "runs")
STUDY_KEYS = {"kind", "description", "sizes", "preset", "common", "analysis", "runs", "note", "data"}
SIZE_KEYS = {"preset", "common", "analysis", "runs", "note", "data"}
RUN_KEYS = {"name", "overrides", "arm", "held_out"}
# What each kind's findings accept under ``analysis:`` (see the module of each kind).
KIND_OPTIONS: dict[str, set[str]] = {
    "scaling": {"bootstrap", "compute_budget", "seed"},
    "ablation": {"reference_arm", "metric"},
    "extrapolation": {"multipliers", "split", "max_chars"},
    "induction": set(),
    "runs": set(),
}
# Options the runner sets itself for every run.
RUNNER_OPTIONS = ("output_dir", "preset", "overwrite", "resume_from_checkpoint", "push_to_hub")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class RunSpec:
    """One run of a study: its folder name, its overrides of the base preset, and its role in the findings."""

    name: str
    overrides: dict[str, Any]
    arm: str | None = None
    held_out: bool = False


@dataclass(frozen=True)
class Study:
    """A study file read and checked for one size."""

    name: str
    kind: str
    description: str
    size: str | None
    preset: str
    common: dict[str, Any]
    runs: tuple[RunSpec, ...]
    analysis: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # a synthetic corpus (mygpt.experiments.synthetic)
    note: str = ""
    source: str = ""

    def run_options(self, run: RunSpec) -> dict[str, Any]:
        """The full option mapping of ``run``: the base preset's values, then ``common``, then its overrides; a
        synthetic ``data:`` source is written (once, into the cache) and given as ``data_files``."""
        from mygpt.arguments import find_preset

        options = {**load_config_file(find_preset(self.preset)), **self.common, **run.overrides}
        if self.data:
            from mygpt.corpus import cache_dir
            from mygpt.experiments.synthetic import synthetic_corpus

            options["data_files"] = [str(synthetic_corpus(self.data, cache_dir() / "synthetic"))]
        return options


def available_studies() -> list[str]:
    """The names of the studies shipped with the package."""
    return sorted(p.stem for p in STUDIES_DIR.glob("*.yaml"))


def find_study(name_or_path: str) -> Path:
    """The file of a shipped study name or a path; ``ValueError`` naming the choices."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml", ".json"):
        if not path.is_file():
            raise FileNotFoundError(f"study file {str(path)!r} does not exist")
        return path
    candidate = STUDIES_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise ValueError(f"unknown study {name_or_path!r}: expected one of {', '.join(available_studies())} or the "
                     "path of a study YAML file")


def training_options() -> set[str]:
    """Every option ``train_hf.py`` accepts (the fields of its four argument dataclasses)."""
    from mygpt.arguments import ARGUMENT_CLASSES

    return {f.name for cls in ARGUMENT_CLASSES for f in dataclasses.fields(cls) if f.init}


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping, got {type(value).__name__}: {value!r}")
    return value


def _unknown(keys: set[str], valid: set[str], where: str) -> None:
    unknown = sorted(set(keys) - valid)
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(valid))}")


def _check_overrides(overrides: dict[str, Any], where: str, known: set[str]) -> None:
    runner = sorted(set(overrides) & set(RUNNER_OPTIONS))
    if runner:
        raise ValueError(f"{where} sets {', '.join(runner)}, which the study runner sets itself (each run goes to "
                         "DIR/runs/<name>, the base preset is the study's `preset`)")
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"{where} sets unknown training option(s) {', '.join(unknown)}; valid options are those of "
                         "`python train_hf.py --help`")


def load_study(name_or_path: str, size: str | None = None) -> Study:
    """Read and check a study for ``size`` (default: ``cpu`` when the file has sizes).

    Raises:
        ValueError: naming the file and the problem (unknown key or training option, empty run list, duplicate or
            invalid run names, unknown preset or size, a kind's options that do not fit).
        FileNotFoundError: a study path that does not exist.
    """
    from mygpt.arguments import find_preset

    path = find_study(name_or_path)
    where = str(path)
    raw = _mapping(load_config_file(path), where)
    _unknown(set(raw), STUDY_KEYS, where)
    kind = raw.get("kind", "runs")
    if kind not in KINDS:
        raise ValueError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    values = {k: v for k, v in raw.items() if k in SIZE_KEYS}
    sizes = _mapping(raw.get("sizes"), f"{where}: sizes")
    if sizes:
        size = size or "cpu"
        if size not in sizes:
            raise ValueError(f"{where} has no size {size!r}; its sizes are {', '.join(sizes)}")
        section = _mapping(sizes[size], f"{where}: sizes.{size}")
        _unknown(set(section), SIZE_KEYS, f"{where}: sizes.{size}")
        values = {**values, **section,
                  "common": {**_mapping(values.get("common"), f"{where}: common"),
                             **_mapping(section.get("common"), f"{where}: sizes.{size}.common")},
                  "analysis": {**_mapping(values.get("analysis"), f"{where}: analysis"),
                               **_mapping(section.get("analysis"), f"{where}: sizes.{size}.analysis")}}
        where = f"{where} (size {size})"
    elif size is not None:
        raise ValueError(f"{where} has no sizes; leave --size unset")

    preset = values.get("preset")
    if not isinstance(preset, str) or not preset:
        raise ValueError(f"{where} names no base preset: add `preset: NAME` (e.g. cpu-quick)")
    try:
        preset_path = find_preset(preset if Path(preset).is_absolute() or not Path(preset).suffix
                                  else str(path.parent / preset))
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    known = training_options()
    common = _mapping(values.get("common"), f"{where}: common")
    _check_overrides(common, f"{where}: common", known)
    analysis = _mapping(values.get("analysis"), f"{where}: analysis")
    _unknown(set(analysis), KIND_OPTIONS[kind], f"{where}: analysis (kind {kind})")

    data = _mapping(values.get("data"), f"{where}: data")
    if data:
        from mygpt.experiments.synthetic import check_spec

        try:
            check_spec(data)
        except ValueError as error:
            raise ValueError(f"{where}: data: {error}") from None
        clash = [f"{w} sets {k}" for w, o in [("common", common)] + [(f"run {r.get('name')}", _mapping(
            r.get("overrides"), where) if isinstance(r, dict) else {}) for r in values.get("runs") or []]
                 for k in ("data_files", "dataset") if k in o]
        if clash:
            raise ValueError(f"{where}: `data:` gives the training text; {', '.join(clash)} too")

    raw_runs = values.get("runs")
    if not isinstance(raw_runs, list) or not raw_runs:
        raise ValueError(f"{where} lists no runs: `runs:` must be a non-empty list of {{name, overrides}}")
    runs, seen = [], set()
    for i, entry in enumerate(raw_runs):
        label = f"{where}: runs[{i}]"
        entry = _mapping(entry, label)
        _unknown(set(entry), RUN_KEYS, label)
        name = entry.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise ValueError(f"{label}: name {name!r} must be a folder name of letters, digits, '.', '_' or '-'")
        if name in seen:
            raise ValueError(f"{where}: duplicate run name {name!r} (each run needs its own folder)")
        seen.add(name)
        overrides = _mapping(entry.get("overrides"), f"{label} ({name}): overrides")
        _check_overrides(overrides, f"{label} ({name})", known)
        runs.append(RunSpec(name=name, overrides=overrides, arm=entry.get("arm"),
                            held_out=bool(entry.get("held_out", False))))
    if kind == "ablation" and any(run.arm is None for run in runs):
        missing = [run.name for run in runs if run.arm is None]
        raise ValueError(f"{where}: an ablation run names its arm (`arm:`); missing in {', '.join(missing)}")
    if sum(run.held_out for run in runs) > 1:
        raise ValueError(f"{where}: at most one run can be held_out")
    return Study(name=path.stem, kind=kind, description=str(raw.get("description", "")).strip(),
                 size=size if sizes else None, preset=str(preset_path), common=common, runs=tuple(runs),
                 analysis=analysis, data=data, note=str(values.get("note", "")).strip(), source=str(path))
