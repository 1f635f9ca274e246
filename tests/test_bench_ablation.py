"""Contracts of bench/ablation.py without training: the flags each variant gives, and the table of finished runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from configuration_mygpt import ACTIVATIONS
from mygpt.arguments import parse_arguments

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("ablation", ROOT / "bench" / "ablation.py")
ablation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ablation)


def _finished(root: Path, name: str, test: float | None, validation: float, wall: float, rate: float) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    results = {"steps": 400, "validation": {"bits_per_byte": validation}, "evaluation_seconds": 12.0,
               "tokens_per_second": rate}
    if test is not None:
        results["test"] = {"bits_per_byte": test}
    (folder / "run_summary.json").write_text(json.dumps({"results": results, "wall_time_seconds": wall}))


def test_table_lists_each_run_and_the_mean_over_seeds(tmp_path):
    _finished(tmp_path, "muon-s1", 2.30, 2.40, 500.0, 3000.0)
    _finished(tmp_path, "muon-s0", 2.20, 2.30, 480.0, 3200.0)
    _finished(tmp_path, "baseline-s0", 2.50, 2.60, 490.0, 3100.0)
    (tmp_path / "rope-s0").mkdir()  # unfinished: no summary, not in the table
    (tmp_path / "logs").mkdir()
    lines = ablation.markdown_table(ablation.read_results(tmp_path)).splitlines()
    assert lines[0].split(" | ")[:3] == ["| variant", "seed", "test bpb"]
    body = [line.strip("| ").split(" | ") for line in lines[2:]]
    assert [row[:2] for row in body] == [["baseline", "0"], ["muon", "0"], ["muon", "1"], ["**muon**", "mean of 2"]]
    assert body[3][2:] == ["2.2500", "-0.2500", "2.3500", "490.0", "12.0", "3100", "400"]
    assert body[0][3] == "+0.0000"


def test_every_variant_gives_flags_the_train_command_accepts():
    for name, overrides in ablation.VARIANTS.items():
        if overrides.get("activation_function", "gelu_new") not in ACTIVATIONS:
            continue  # relu2 arrives with its MyGPTConfig option (issue 11); from then on it is checked too
        arguments = parse_arguments(["--max_steps", "400", *ablation.run_flags(overrides, 400)])
        if name == "wsd":
            assert arguments.training.lr_scheduler_kwargs["num_decay_steps"] == 80  # 20% of the steps
    with pytest.raises(ValueError, match="give --max_steps"):
        ablation.run_flags(ablation.WSD, None)
