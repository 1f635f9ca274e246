"""Contracts of the experiment runner (mygpt-experiments): a study file is checked before anything trains, a tiny
study runs end to end and writes every report file, a second start skips finished runs, and the findings (the
scaling fit, the ablation rule, extrapolation past a learned table) say what they promise."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
import pytest
import yaml

from mygpt import run_artifacts
from mygpt.commands import experiments as command
from mygpt.experiments import ablation, scaling
from mygpt.experiments.report import write_report
from mygpt.experiments.study import available_studies, load_study
from tests.tiny_runs import corpus_dir, one_thread, private_cache  # noqa: F401 (fixtures)

TINY_OPTIONS = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "tokenizer": "char", "max_steps": 4,
                "eval_steps": 2, "save_steps": 2, "logging_steps": 2, "per_device_train_batch_size": 4,
                "per_device_eval_batch_size": 16, "learning_rate": 1e-2, "warmup_steps": 1,
                "sample_max_new_tokens": 4, "num_sample_prompts": 1, "seed": 3}


def write_study(folder: Path, **fields) -> Path:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


def tiny_study(folder: Path, corpus: Path) -> Path:
    """Two tiny runs that differ in their position encoding, scored at T and 2T."""
    return write_study(folder, kind="extrapolation", preset="cpu-quick",
                       common={**TINY_OPTIONS, "data_files": [str(corpus)]},
                       analysis={"multipliers": [1, 2], "max_chars": 3000},
                       runs=[{"name": "learned", "overrides": {"position_embedding": "learned"}},
                             {"name": "rope", "overrides": {"position_embedding": "rope"}}])


# ---------------------------------------------------------------------------------------------------------------
# The study file


def test_every_shipped_study_loads_for_both_sizes():
    assert set(available_studies()) >= {"scaling", "ablation", "extrapolation", "induction"}
    for name in available_studies():
        for size in ("cpu", "gpu"):
            study = load_study(name, size)
            assert study.runs and study.size == size


@pytest.mark.parametrize("fields, message", [
    ({"runs": [{"name": "a", "overrides": {"n_embdd": 8}}]}, "unknown training option(s) n_embdd"),
    ({"common": {"lerning_rate": 1.0}, "runs": [{"name": "a"}]}, "unknown training option(s) lerning_rate"),
    ({"runs": []}, "lists no runs"),
    ({"runs": [{"name": "a"}, {"name": "a"}]}, "duplicate run name 'a'"),
    ({"preset": "no-such-preset", "runs": [{"name": "a"}]}, "unknown preset 'no-such-preset'"),
    ({"runs": [{"name": "a", "overrides": {"output_dir": "x"}}]}, "the study runner sets itself"),
    ({"runs": [{"name": "a", "seeds": 2}]}, "unknown key(s) seeds"),
    ({"kind": "ablation", "runs": [{"name": "a"}]}, "names its arm"),
    ({"runs": [{"name": "../a"}]}, "must be a folder name"),
])
def test_bad_study_file_is_refused_naming_the_problem(tmp_path, fields, message):
    path = write_study(tmp_path, **{"preset": "cpu-quick", **fields})
    with pytest.raises(ValueError) as error:
        load_study(str(path))
    assert message in str(error.value)


def test_bad_value_in_a_run_is_found_before_anything_trains(tmp_path, capsys):
    path = write_study(tmp_path, preset="cpu-quick", runs=[{"name": "ok"}, {"name": "bad",
                                                                            "overrides": {"learning_rate": -1}}])
    with pytest.raises(SystemExit) as exit_:
        command.main([str(path), "--output_dir", str(tmp_path / "out")])
    assert "run 'bad'" in str(exit_.value) and "--learning_rate must be" in str(exit_.value)
    assert not (tmp_path / "out").exists()


def test_unknown_study_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="expected one of .*scaling"):
        load_study("scalling")


# ---------------------------------------------------------------------------------------------------------------
# End to end


@pytest.fixture(scope="module")
def finished_study(corpus_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    study = tiny_study(folder, corpus_dir)
    out = folder / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MYGPT_CACHE", str(tmp_path_factory.getbasetemp() / "mygpt-cache"))
        assert command.main([str(study), "--output_dir", str(out)]) == 0
    return study, out


def test_tiny_study_writes_every_report_file(finished_study):
    _, out = finished_study
    report_dir = out / "report"
    assert {"report.json", "report.csv", "report.md", "loss_vs_flops.png", "loss_vs_wall_time.png",
            "extrapolation.png"} <= set(os.listdir(report_dir))
    report = json.loads((report_dir / "report.json").read_text())
    assert [r["name"] for r in report["runs"]] == ["learned", "rope"]
    for record in report["runs"]:
        assert (out / "runs" / record["name"] / "run_summary.json").is_file()
        assert record["tokens"] == 4 * 4 * 32  # steps x batch x block
        assert record["flops"] == pytest.approx(record["flops_per_token"] * record["tokens"])
        assert record["flops_per_token"] > 6 * record["non_embedding_parameters"]  # + LM head + attention
        for key in ("wall_seconds", "train_loss", "validation_loss", "validation_bits_per_byte"):
            assert record[key] is not None and record[key] > 0
    markdown = (report_dir / "report.md").read_text()
    for figure in report["figures"]:
        assert f"![{figure}]({figure})" in markdown
    assert report["runs_wall_seconds"] == pytest.approx(sum(r["wall_seconds"] for r in report["runs"]), abs=0.1)
    assert "Time: the runs took" in markdown


def test_learned_positions_past_their_table_are_not_applicable(finished_study):
    _, out = finished_study
    table = json.loads((out / "report" / "report.json").read_text())["findings"]["table"]
    rows = {(r["run"], r["multiplier"]): r for r in table}
    assert rows["learned", 1]["applicable"] and rows["rope", 1]["applicable"]
    assert not rows["learned", 2]["applicable"] and "learned positions" in rows["learned", 2]["reason"]
    assert rows["rope", 2]["applicable"] and rows["rope", 2]["bits_per_byte"] > 0
    assert rows["rope", 2]["window"] == 64 and max(b["last"] for b in rows["rope", 2]["by_position"]) == 63


def test_a_second_start_skips_finished_runs(finished_study, tmp_path_factory):
    study, out = finished_study
    summaries = {name: (out / "runs" / name / "run_summary.json") for name in ("learned", "rope")}
    before = {name: (path.stat().st_mtime_ns, path.read_text()) for name, path in summaries.items()}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MYGPT_CACHE", str(tmp_path_factory.getbasetemp() / "mygpt-cache"))
        assert command.main([str(study), "--output_dir", str(out)]) == 0
    after = {name: (path.stat().st_mtime_ns, path.read_text()) for name, path in summaries.items()}
    assert after == before


def test_a_stopped_study_resumes_without_redoing_finished_runs(finished_study, tmp_path_factory):
    study, out = finished_study
    learned = out / "runs" / "learned" / "run_summary.json"
    before = (learned.stat().st_mtime_ns, learned.read_text())
    # As a study killed during its second run leaves it: the run's folder marked unfinished, nothing else.
    rope = out / "runs" / "rope"
    shutil.rmtree(rope)
    rope.mkdir()
    (rope / run_artifacts.MARKER).write_text("{}")
    old_score = json.loads((out / "evaluations" / "rope.json").read_text())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MYGPT_CACHE", str(tmp_path_factory.getbasetemp() / "mygpt-cache"))
        assert command.main([str(study), "--output_dir", str(out)]) == 0
    assert (learned.stat().st_mtime_ns, learned.read_text()) == before
    assert run_artifacts.folder_state(rope) == "finished"
    new_score = json.loads((out / "evaluations" / "rope.json").read_text())
    assert new_score["key"] != old_score["key"]  # the retrained run is scored again, not read from the old file
    report = json.loads((out / "report" / "report.json").read_text())
    assert [r["name"] for r in report["runs"]] == ["learned", "rope"]
    # the skipped run's time still counts in the runs' total, which this shorter invocation does not show
    assert report["runs_wall_seconds"] == pytest.approx(sum(r["wall_seconds"] for r in report["runs"]), abs=0.1)


def test_changed_options_of_a_finished_run_are_refused(finished_study, tmp_path):
    study, out = finished_study
    fields = yaml.safe_load(study.read_text())
    fields["runs"][0]["overrides"]["n_embd"] = 64
    changed = write_study(tmp_path, **fields)
    with pytest.raises(SystemExit, match="other options than the study now gives"):
        command.main([str(changed), "--output_dir", str(out)])


# ---------------------------------------------------------------------------------------------------------------
# Findings


TRUTH = {"E": 1.7, "A": 400.0, "alpha": 0.34, "B": 410.0, "beta": 0.28}  # Chinchilla's published fit


def synthetic_points(seed: int, noise: float = 0.01):
    """20 (N, D, L) points made by the law, with multiplicative noise of ``noise`` (1% by default)."""
    rng = np.random.default_rng(seed)
    n = np.repeat(np.geomspace(1e4, 1e6, 5), 4)
    d = np.tile(np.geomspace(1e5, 1e7, 4), 5)
    loss = (TRUTH["E"] + TRUTH["A"] / n ** TRUTH["alpha"] + TRUTH["B"] / d ** TRUTH["beta"])
    return n, d, loss * np.exp(rng.normal(0, noise, len(n)))


def test_fit_recovers_known_exponents_from_noisy_points():
    n, d, loss = synthetic_points(seed=3)
    fit = scaling.fit_scaling_law(n, d, loss)
    assert fit.alpha == pytest.approx(TRUTH["alpha"], abs=0.03)
    assert fit.beta == pytest.approx(TRUTH["beta"], abs=0.03)
    assert np.abs(fit.predict(n, d) / loss - 1).max() < 0.05


def test_bootstrap_interval_contains_the_true_exponents():
    # Percentile intervals from 20 points are approximate (in 4 seeds tried, alpha's missed the truth twice by
    # < 0.005); this seed's contain it, and the interval must be a real interval, not a point.
    n, d, loss = synthetic_points(seed=3)
    spread = scaling.bootstrap_fit(n, d, loss, samples=60, seed=0)
    for name in ("alpha", "beta"):
        interval = spread["intervals"][name]
        assert interval["low"] < TRUTH[name] < interval["high"]
        assert interval["high"] - interval["low"] > 0.005


def test_compute_optimal_split_minimises_the_fitted_loss():
    fit = scaling.ScalingFit(objective=0.0, n_points=0, **TRUTH)
    flops = 1e15
    best = fit.compute_optimal(flops)
    for factor in (0.5, 2.0):  # any other split of the same compute is worse
        n = best["parameters"] * factor
        assert fit.predict(n, flops / 6 / n) > best["loss"]


def test_scaling_findings_predict_the_held_out_run_without_its_point():
    n, d, loss = synthetic_points(seed=3)
    records = [{"name": f"r{i}", "non_embedding_parameters": a, "tokens": b, "validation_loss": c,
                "flops": 6 * a * b, "held_out": False} for i, (a, b, c) in enumerate(zip(n, d, loss))]
    records.append({"name": "big", "non_embedding_parameters": 3e6, "tokens": 1e7, "validation_loss": 99.0,
                    "flops": 6 * 3e6 * 1e7, "held_out": True})  # a wild measurement: must not move the fit
    found = scaling.scaling_findings(records, bootstrap=20)
    expected = TRUTH["E"] + TRUTH["A"] / 3e6 ** TRUTH["alpha"] + TRUTH["B"] / 1e7 ** TRUTH["beta"]
    assert found["held_out"]["predicted_loss"] == pytest.approx(expected, rel=0.03)
    assert found["held_out"]["measured_loss"] == 99.0
    assert found["fit"]["n_points"] == 20
    assert found["frontier"][0] == "r0"


def fake_records(values: dict[str, list[float]]) -> list[dict]:
    return [{"name": f"{arm}-{i}", "arm": arm, "validation_loss": v} for arm, vs in values.items()
            for i, v in enumerate(vs)]


def test_ablation_calls_a_difference_only_beyond_the_seed_spread():
    found = ablation.ablation_findings(fake_records({
        "base": [2.00, 2.10], "clearly_better": [1.80, 1.85], "within_noise": [1.95, 2.05],
        "clearly_worse": [2.30, 2.40], "one_seed": [1.0]}), reference_arm="base")
    verdicts = {c["arm"]: c["verdict"] for c in found["comparisons"]}
    assert verdicts == {"clearly_better": "lower", "within_noise": "none", "clearly_worse": "higher",
                        "one_seed": "not enough seeds"}
    base = found["arms"][0]
    assert base["mean"] == pytest.approx(2.05) and base["spread"] == pytest.approx(0.10)


def test_ablation_reference_arm_must_exist():
    with pytest.raises(ValueError, match="reference_arm 'nope'"):
        ablation.ablation_findings(fake_records({"a": [1.0, 1.1]}), reference_arm="nope")


def test_scaling_report_has_its_plots_and_the_fit_in_markdown(tmp_path):
    n, d, loss = synthetic_points(seed=3)
    records = [{"name": f"r{i}", "arm": None, "held_out": False, "non_embedding_parameters": a, "parameters": a,
                "tokens": b, "flops_per_token": 6 * a, "flops": 6 * a * b, "wall_seconds": a * b / 1e9,
                "train_seconds": None, "steps": 1, "train_loss": c, "validation_loss": c,
                "validation_bits_per_byte": c, "test_loss": None, "test_bits_per_byte": None,
                "tokens_per_second": None, "overrides": {"n_embd": 8}} for i, (a, b, c) in enumerate(zip(n, d, loss))]
    report = {"study": {"name": "s", "kind": "scaling", "size": "cpu", "description": "", "preset": "cpu-quick"},
              "runs": records, "findings": scaling.scaling_findings(records, bootstrap=10)}
    folder = write_report(report, tmp_path / "report")
    assert {"loss_vs_flops.png", "loss_vs_params.png", "loss_vs_wall_time.png", "report.csv"} <= set(os.listdir(folder))
    markdown = (folder / "report.md").read_text()
    assert "tokens per parameter" in markdown and "alpha = 0.3" in markdown
    assert (folder / "report.csv").read_text().count("\n") == len(records) + 1


def test_scaling_study_predicts_the_held_out_run_before_training_it(corpus_dir, tmp_path, monkeypatch):
    sizes = [(16, 2), (16, 4), (24, 2), (32, 4), (48, 4)]
    runs = [{"name": f"d{width}-s{steps}", "overrides": {"n_embd": width, "max_steps": steps, "eval_steps": steps,
                                                         "save_steps": steps}} for width, steps in sizes]
    runs.insert(0, {"name": "big", "held_out": True, "overrides": {"n_embd": 64, "max_steps": 4, "eval_steps": 4,
                                                                    "save_steps": 4}})
    study = write_study(tmp_path, kind="scaling", preset="cpu-quick", analysis={"bootstrap": 5},
                        common={**TINY_OPTIONS, "data_files": [str(corpus_dir)]}, runs=runs)
    out = tmp_path / "out"
    assert command.main([str(study), "--output_dir", str(out)]) == 0
    prediction = json.loads((out / "prediction.json").read_text())
    held_summary = out / "runs" / "big" / "run_summary.json"
    assert (out / "prediction.json").stat().st_mtime_ns < held_summary.stat().st_mtime_ns  # made before training
    assert prediction["fitted_on"] == [r["name"] for r in runs[1:]]  # every run but the held-out one
    report = json.loads((out / "report" / "report.json").read_text())
    big = next(r for r in report["runs"] if r["name"] == "big")
    assert prediction["non_embedding_parameters"] == big["non_embedding_parameters"]  # planned = measured size
    assert prediction["tokens"] == big["tokens"]
    held = report["findings"]["held_out"]
    assert held["predicted_loss"] == pytest.approx(prediction["predicted_loss"])
    assert held["measured_loss"] == pytest.approx(big["validation_loss"])
    assert report["findings"]["fit"]["n_points"] == 5
    assert "loss_vs_params.png" in report["figures"]


# ---------------------------------------------------------------------------------------------------------------
# The induction control's data


def test_induction_corpus_is_spans_written_twice_and_reproducible(tmp_path):
    from mygpt.experiments.synthetic import synthetic_corpus

    spec = {"source": "induction", "documents": 3, "lines": 5, "span": 7, "alphabet": 5, "seed": 1}
    folder = synthetic_corpus(spec, tmp_path)
    files = sorted(folder.glob("*.txt"))
    assert len(files) == 3
    for line in files[0].read_text().splitlines():
        assert len(line) == 14 and line[:7] == line[7:] and set(line) <= set("abcde")
    again = synthetic_corpus(spec, tmp_path / "other")
    assert [f.read_text() for f in sorted(again.glob("*.txt"))] == [f.read_text() for f in files]
    assert synthetic_corpus({**spec, "seed": 2}, tmp_path) != folder  # other settings, another folder


def test_induction_spans_of_varying_length_leave_no_fixed_offset_to_copy_from(tmp_path):
    from mygpt.experiments.synthetic import induction_documents

    (text,) = induction_documents(1, 200, span=12, alphabet=26, seed=0, min_span=4)
    lengths = [len(line) // 2 for line in text.splitlines()]
    assert all(len(line) == 2 * n and line[:n] == line[n:] for line, n in zip(text.splitlines(), lengths))
    assert min(lengths) == 4 and max(lengths) == 12  # every length of the range occurs in 200 lines
    with pytest.raises(ValueError, match="min_span must be a whole number from 2 to span"):
        load_study(str(write_study(tmp_path, preset="cpu-quick", data={"source": "induction", "span": 5,
                                                                        "min_span": 6}, runs=[{"name": "a"}])))


def test_induction_study_trains_on_its_generated_corpus(monkeypatch, tmp_path):
    monkeypatch.setenv("MYGPT_CACHE", str(tmp_path))
    study = load_study("induction")
    options = study.run_options(study.runs[0])
    (folder,) = options["data_files"]
    assert Path(folder).parent == tmp_path / "synthetic" and any(Path(folder).glob("*.txt"))


def test_bad_data_source_is_refused(tmp_path):
    path = write_study(tmp_path, preset="cpu-quick", data={"source": "induction", "span": 0}, runs=[{"name": "a"}])
    with pytest.raises(ValueError, match="span must be a positive whole number"):
        load_study(str(path))
    path = write_study(tmp_path, preset="cpu-quick", data={"source": "nope"}, runs=[{"name": "a"}])
    with pytest.raises(ValueError, match="data source 'nope'"):
        load_study(str(path))


class CopyingModel(torch.nn.Module):
    """A stand-in for a model with a perfect induction circuit: uniform until the repeat, then it copies."""

    def __init__(self, vocab: int, span: int) -> None:
        super().__init__()
        self.vocab, self.span = vocab, span
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids):
        batch, length = input_ids.shape
        logits = torch.zeros(batch, length, self.vocab)
        for t in range(self.span, length - 1):  # position t predicts token t+1 = token t+1-span
            logits[torch.arange(batch), t, input_ids[:, t + 1 - self.span]] = 30.0
        return type("Output", (), {"logits": logits})


def test_repeat_losses_separate_the_copies():
    from mygpt.experiments.synthetic import induction_documents, repeat_losses
    from mygpt.tokenization import train_char_tokenizer

    lines = induction_documents(1, 20, span=6, alphabet=26, seed=0)[0].splitlines()
    tokenizer = train_char_tokenizer(["abcdefghijklmnopqrstuvwxyz\n"])
    losses = repeat_losses(CopyingModel(len(tokenizer), 6), tokenizer, lines)
    assert losses["first_copy"] == pytest.approx(np.log(len(tokenizer)), rel=1e-4)  # uniform: chance
    assert losses["second_copy"] < 1e-6 and losses["drop"] > 3


def test_tiny_induction_study_reports_the_repeat_losses(tmp_path, monkeypatch):
    monkeypatch.setenv("MYGPT_CACHE", str(tmp_path / "cache"))
    study = write_study(tmp_path, kind="induction", preset="cpu-quick", common=TINY_OPTIONS,
                        data={"source": "induction", "documents": 6, "lines": 40, "span": 8, "alphabet": 6},
                        runs=[{"name": "tiny"}])
    assert command.main([str(study), "--output_dir", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report" / "report.json").read_text())
    (row,) = report["findings"]["repeat_loss"]
    assert row["run"] == "tiny" and row["first_copy"] > 0 and row["second_copy"] > 0
    assert report["findings"]["chance_nats"] == pytest.approx(np.log(6))
    markdown = (tmp_path / "out" / "report" / "report.md").read_text()
    assert "## Induction control" in markdown and "### What the analysis finds in `tiny`" in markdown
    circuit = report["findings"]["circuits"]["tiny"]
    n_layer, n_head = TINY_OPTIONS["n_layer"], TINY_OPTIONS["n_head"]
    assert len(circuit["heads"]) == len(circuit["ablation"]) == len(circuit["patching"]["heads"]) == n_layer * n_head
    assert circuit["previous_token_head"]["layer"] == 0 and circuit["induction_head"]["layer"] == n_layer - 1
    assert all(0 <= h["attention_entropy"] <= 1 for h in circuit["heads"])
    patching = circuit["patching"]
    assert 0 < patching["corrupted_probability"] < 1 and 0 < patching["clean_probability"] < 1
    assert len(patching["layers"]) == n_layer
    assert (tmp_path / "out" / "report" / "induction_circuit.png").stat().st_size > 0


def test_a_second_process_on_the_same_study_folder_is_refused(tmp_path):
    from mygpt.files import FolderLock

    path = write_study(tmp_path, preset="cpu-quick", runs=[{"name": "a"}])
    with FolderLock(tmp_path / "out", purpose="another study"):
        with pytest.raises(SystemExit, match="in use by a live process"):
            command.main([str(path), "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out" / "runs").exists()
