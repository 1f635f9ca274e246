"""The study's report folder: report.json (every figure), report.csv (one row per run), report.md and PNG plots.

The folder is built aside and published in one move (:func:`mygpt.files.staged_folder`): a reader finds the
previous complete report or the new complete one, never half of one.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Callable

from mygpt.experiments.records import COLUMNS
from mygpt.files import staged_folder, write_json, write_text


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.{digits}g}" if abs(value) >= 1 else f"{value:.{digits}f}"
    return str(value)


def _table(rows: list[list[Any]], header: list[str]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _csv(records: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in records:
        writer.writerow([json.dumps(r[c], sort_keys=True) if isinstance(r.get(c), dict) else r.get(c)
                         for c in COLUMNS])
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# Plots: each returns its caption, or None when the study has nothing to draw.


def _figure(ncols: int = 1, figsize: tuple[float, float] = (7, 4.4), grid: bool = True):
    """``(plt, fig, ax)``, or ``(plt, fig, axes)`` for ``ncols`` > 1 side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=figsize, dpi=120)  # one Axes, or a row of them
    for ax in fig.axes if grid else ():
        ax.grid(alpha=0.3)
    return plt, fig, axes


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _finished(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("validation_loss") is not None]


def plot_loss_vs_flops(report: dict[str, Any], path: Path) -> str | None:
    records = _finished(report["runs"])
    if not records:
        return None
    frontier = report["findings"].get("frontier") or []
    plt, fig, ax = _figure()
    for r in records:
        ax.scatter(r["flops"], r["validation_loss"], color="tab:red" if r.get("held_out") else "tab:blue", s=18)
        ax.annotate(r["name"], (r["flops"], r["validation_loss"]), fontsize=6, alpha=0.7)
    front = [r for r in sorted(records, key=lambda r: r["flops"]) if r["name"] in frontier]
    if front:
        ax.plot([r["flops"] for r in front], [r["validation_loss"] for r in front], color="black", linewidth=1,
                label="compute-efficient frontier")
        ax.legend()
    ax.set_xscale("log")
    ax.set_xlabel("training compute (FLOPs, 6N'D + attention)")
    ax.set_ylabel("validation loss (nats per token)")
    _save(plt, fig, path)
    return ("Validation loss against training compute, one point per run (red: the held-out run). The line joins "
            "the compute-efficient runs: each reaches a lower loss than every run that used less compute.")


def plot_loss_vs_wall_time(report: dict[str, Any], path: Path) -> str | None:
    records = [r for r in _finished(report["runs"]) if r.get("wall_seconds")]
    if not records:
        return None
    plt, fig, ax = _figure()
    for r in records:
        ax.scatter(r["wall_seconds"] / 60, r["validation_loss"], s=18, color="tab:green")
        ax.annotate(r["name"], (r["wall_seconds"] / 60, r["validation_loss"]), fontsize=6, alpha=0.7)
    ax.set_xscale("log")
    ax.set_xlabel("wall time of the run (minutes, training + evaluation + artifacts)")
    ax.set_ylabel("validation loss (nats per token)")
    _save(plt, fig, path)
    return "Validation loss against each run's wall time on this machine (what the quality cost in minutes)."


def plot_loss_vs_params(report: dict[str, Any], path: Path) -> str | None:
    records = _finished(report["runs"])
    fit = report["findings"].get("fit")
    by_tokens: dict[float, list[dict[str, Any]]] = {}
    for r in records:
        by_tokens.setdefault(r["tokens"], []).append(r)
    if not records or report["study"]["kind"] != "scaling":
        return None
    import numpy as np

    plt, fig, ax = _figure()
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(by_tokens)))
    for color, (tokens, runs) in zip(colors, sorted(by_tokens.items())):
        runs = sorted(runs, key=lambda r: r["non_embedding_parameters"])
        ax.plot([r["non_embedding_parameters"] for r in runs], [r["validation_loss"] for r in runs], "o",
                color=color, label=f"{tokens / 1e6:.3g}M tokens")
        if fit:
            n = np.geomspace(min(r["non_embedding_parameters"] for r in records),
                             max(r["non_embedding_parameters"] for r in records), 50)
            ax.plot(n, fit["E"] + fit["A"] / n ** fit["alpha"] + fit["B"] / tokens ** fit["beta"], "--",
                    color=color, linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("validation loss (nats per token)")
    ax.legend(fontsize=7)
    _save(plt, fig, path)
    return ("Validation loss against model size at each fixed token budget (points: measured; dashed: the fitted "
            "law L(N, D) at that budget" + (")." if fit else "; no fit: too few runs)."))


def plot_ablation(report: dict[str, Any], path: Path) -> str | None:
    arms = report["findings"].get("arms")
    if report["study"]["kind"] != "ablation" or not arms:
        return None
    plt, fig, ax = _figure()
    for i, arm in enumerate(arms):
        ax.scatter([i] * len(arm["values"]), arm["values"], color="tab:gray", s=12, zorder=2)
        ax.errorbar(i, arm["mean"], yerr=[[arm["mean"] - arm["min"]], [arm["max"] - arm["mean"]]], fmt="o",
                    color="tab:blue", capsize=4, zorder=3)
    ax.set_xticks(range(len(arms)), [a["arm"] for a in arms], rotation=30, ha="right")
    ax.set_xlabel("arm")
    ax.set_ylabel(f"{report['findings']['metric'].replace('_', ' ')} (nats per token)")
    _save(plt, fig, path)
    return ("Each arm's seeds (grey) and their mean with the range of the seeds (blue). Arms whose ranges overlap "
            "are not called different.")


def plot_extrapolation(report: dict[str, Any], path: Path) -> str | None:
    table = report["findings"].get("table")
    if report["study"]["kind"] != "extrapolation" or not table:
        return None
    plt, fig, ax = _figure()
    styles = {1: "-", 2: "--", 4: ":"}
    runs = sorted({row["run"] for row in table})
    colors = dict(zip(runs, plt.cm.tab10.colors))
    for row in table:
        if row["applicable"]:
            xs = [(b["first"] + b["last"]) / 2 for b in row["by_position"]]
            ax.plot(xs, [b["mean"] for b in row["by_position"]], styles.get(row["multiplier"], "-."),
                    color=colors[row["run"]], label=f"{row['run']} at {row['multiplier']}T")
    context = next((r["window"] // r["multiplier"] for r in table), None)
    if context:
        ax.axvline(context, color="black", linewidth=0.8, alpha=0.6)
    ax.set_xlabel("context position (tokens before the predicted one)")
    ax.set_ylabel("bits per byte")
    ax.legend(fontsize=6, ncol=2)
    _save(plt, fig, path)
    return ("Bits per byte by position inside windows of T, 2T and 4T tokens (T, the training context, is the "
            "vertical line). A curve that rises past T is a model that does not extrapolate; runs with learned "
            "positions have no curve past T (not applicable).")


def plot_induction_circuit(report: dict[str, Any], path: Path) -> str | None:
    circuits = report["findings"].get("circuits")
    if report["study"]["kind"] != "induction" or not circuits:
        return None
    import numpy as np

    name, circuit = next(iter(circuits.items()))
    rows = circuit["heads"]
    n_layer, n_head = max(r["layer"] for r in rows) + 1, max(r["head"] for r in rows) + 1

    def grid(items: list[dict[str, Any]], key: str) -> np.ndarray:
        values = np.full((n_layer, n_head), np.nan)
        for item in items:
            values[item["layer"], item["head"]] = item[key]
        return values

    panels = [
        (grid(rows, "previous_token"), "previous-token score", "Blues", (0, 1)),
        (grid(rows, "induction"), "induction score", "Blues", (0, 1)),
        (grid(circuit["ablation"], "second_copy"), "repeat loss with the head zeroed (nats)", "Reds", (0, None)),
        (grid(circuit["patching"]["heads"], "restored"), "share restored by patching the head", "Greens", (0, 1)),
    ]
    plt, fig, axes = _figure(ncols=4, figsize=(12, 2.2 + 0.5 * n_layer), grid=False)
    for ax, (values, title, cmap, (low, high)) in zip(axes, panels):
        ax.imshow(values, cmap=cmap, vmin=low, vmax=high if high is not None else np.nanmax(values), aspect="auto")
        for (layer, head), value in np.ndenumerate(values):
            ax.text(head, layer, f"{value:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(n_head), [f"H{h}" for h in range(n_head)])
        ax.set_yticks(range(n_layer), [f"L{layer}" for layer in range(n_layer)])
        ax.set_xlabel("head")
        ax.set_title(title, fontsize=8)
    axes[0].set_ylabel("layer")
    _save(plt, fig, path)
    return (f"Run `{name}`, one cell per head. From left: the head taxonomy's previous-token and induction "
            "scores (attention mass, 0 to 1); the loss on the repeated half with that head zeroed (nats per "
            "letter; low = the head is not needed); the share of the clean-vs-corrupted gap in the right "
            "letter's probability restored by patching that head's clean output into the corrupted run.")


def plot_induction_training(report: dict[str, Any], path: Path) -> str | None:
    circuits = report["findings"].get("circuits")
    if report["study"]["kind"] != "induction" or not circuits:
        return None
    plt, fig, ax = _figure()
    for name, circuit in circuits.items():
        curve = circuit["training"]
        ax.plot(curve["steps"], curve["loss"], label=f"{name}: training loss")
        if curve.get("drop_step"):
            ax.axvline(curve["drop_step"], color="tab:red", linewidth=0.8, alpha=0.7)
    chance = report["findings"]["chance_nats"]
    ax.axhline(chance, color="black", linestyle=":", linewidth=0.8, label=f"chance, ln {round(math.exp(chance))}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (nats per token)")
    ax.legend(fontsize=7)
    _save(plt, fig, path)
    return ("Training loss by step. Half of every line (the first copy) cannot be predicted better than chance "
            "(dotted); the loss can only fall well below it once the model copies the second half. The red line "
            "marks the step where the loss first fell below the midpoint of its plateau and its final value: "
            "the induction bump.")


PLOTS: dict[str, Callable[[dict[str, Any], Path], str | None]] = {
    "loss_vs_flops.png": plot_loss_vs_flops,
    "loss_vs_params.png": plot_loss_vs_params,
    "loss_vs_wall_time.png": plot_loss_vs_wall_time,
    "ablation.png": plot_ablation,
    "extrapolation.png": plot_extrapolation,
    "induction_training.png": plot_induction_training,
    "induction_circuit.png": plot_induction_circuit,
}


# ---------------------------------------------------------------------------------------------------------------
# Markdown


def _interval(spread: dict[str, Any] | None, name: str) -> str:
    item = (spread or {}).get("intervals", {}).get(name)
    return f" (95% bootstrap interval {item['low']:.3f} to {item['high']:.3f})" if item else ""


def _scaling_markdown(f: dict[str, Any]) -> list[str]:
    lines = ["## Scaling law", ""]
    if not f.get("fit"):
        return lines + [f.get("fit_note", "no fit"), ""]
    fit, spread, opt = f["fit"], f["bootstrap"], f["compute_optimal"]
    lines += [
        f"Fit of L(N, D) = E + A/N^alpha + B/D^beta on {fit['n_points']} runs (Huber loss on log residuals, "
        f"Hoffmann et al. 2022): E = {fit['E']:.3f}, A = {fit['A']:.4g}, alpha = {fit['alpha']:.3f}"
        f"{_interval(spread, 'alpha')}, B = {fit['B']:.4g}, beta = {fit['beta']:.3f}{_interval(spread, 'beta')}; "
        f"RMS residual {f['fit_rms_residual']:.4f} nats; {spread['samples']} bootstrap refits.",
        "",
        f"Compute-optimal split at C = {opt['flops']:.3g} FLOPs (C = 6ND): N = {opt['parameters']:.3g} parameters, "
        f"D = {opt['tokens']:.3g} tokens, **{opt['tokens_per_parameter']:.1f} tokens per parameter**"
        f"{_interval(spread, 'tokens_per_parameter')}, against Chinchilla's "
        f"~{f['chinchilla_tokens_per_parameter']:.0f}. "
        "Fits at this scale differ from Chinchilla's: the runs are far shorter than one data pass at the largest "
        "sizes, the learning-rate schedule is not re-tuned per size, the embedding and attention FLOPs are a large "
        "share of small models, and a few points over a 10-100x range pin the exponents loosely (see the interval).",
        ""]
    held = f.get("held_out")
    if held:
        interval = held.get("interval")
        span = f" (95% interval {interval['low']:.4f} to {interval['high']:.4f})" if interval else ""
        error = "" if held["measured_loss"] is None else f", error {held['error']:+.4f} nats"
        lines += [f"Held-out run `{held['run']}`: predicted {held['predicted_loss']:.4f}{span} "
                  f"(prediction made {held['made']}), measured {_fmt(held['measured_loss'])}{error}.", ""]
    return lines


def _ablation_markdown(f: dict[str, Any]) -> list[str]:
    lines = ["## Arms", "", f"Metric: {f['metric']}. Rule: {f.get('rule', '')}.", ""]
    lines += _table([[a["arm"], a["seeds"], a["mean"], a["std"], a["min"], a["max"]] for a in f["arms"]],
                    ["arm", "seeds", "mean", "std", "min", "max"])
    lines += [f"Against `{f.get('reference_arm')}`:", ""]
    lines += _table([[c["arm"], c["difference"], c["spread"], c["verdict"]] for c in f["comparisons"]],
                    ["arm", "difference of means", "largest seed range", "verdict"])
    return lines


def _extrapolation_markdown(f: dict[str, Any]) -> list[str]:
    lines = ["## Length extrapolation", "", f"Method: {f['method']}.", ""]
    rows = [[r["run"], r["position_embedding"], f"{r['multiplier']}T = {r['window']}",
             r.get("bits_per_byte") if r["applicable"] else "not applicable",
             r.get("ratio_to_training_context") if r["applicable"] else r["reason"]] for r in f["table"]]
    return lines + _table(rows, ["run", "positions", "context", "bits per byte", "ratio to T / reason"])


def _induction_markdown(f: dict[str, Any]) -> list[str]:
    lines = ["## Induction control", "", f"Method: {f['method']} ({f['lines']} lines, span {f['span']}). Chance: "
             f"{f['chance_nats']:.3f} nats per letter.", ""]
    rows = [[r["run"], r["first_copy"], r["second_copy"], r["drop"]] for r in f["repeat_loss"]]
    lines += _table(rows, ["run", "first copy (nats)", "second copy (nats)", "drop (nats)"])
    for run, c in (f.get("circuits") or {}).items():
        prev, ind = c["previous_token_head"], c["induction_head"]
        curve = c.get("training") or {}
        lines += [f"### What the analysis finds in `{run}`", ""]
        if curve.get("drop_step"):
            lines += [f"Induction bump: the training loss sat at {curve['plateau_loss']:.3f} nats (plateau) and first "
                      f"fell below the midpoint to its final {curve['final_loss']:.3f} at step {curve['drop_step']}.",
                      ""]
        lines += [f"Head taxonomy (`mygpt-analyze`'s scores; a head is typed when its strongest score reaches "
                  f"{c['threshold']}): strongest previous-token head in layer 0 is L{prev['layer']} H{prev['head']} "
                  f"(score {prev['score']:.3f}, typed {prev['type']}); strongest induction head in the last layer "
                  f"is L{ind['layer']} H{ind['head']} (score {ind['score']:.3f}, typed {ind['type']}).", ""]
        ablation = {(a["layer"], a["head"]): a for a in c["ablation"]}
        base = next(r for r in f["repeat_loss"] if r["run"] == run)
        for what, head in (("induction", ind), ("previous-token", prev)):
            zeroed = ablation[head["layer"], head["head"]]
            lines += [f"Zeroing the {what} head L{head['layer']} H{head['head']} moves the loss on the repeat from "
                      f"{base['second_copy']:.3f} to {zeroed['second_copy']:.3f} nats (the drop from the first copy: "
                      f"{base['drop']:.3f} -> {zeroed['drop']:.3f}).", ""]
        patching = {(p["layer"], p["head"]): p for p in c["patching"]["heads"]}
        rows = [[f"L{h['layer']} H{h['head']}", h["type"], h["previous_token"], h["induction"],
                 h.get("attention_entropy"), ablation[h["layer"], h["head"]]["second_copy"],
                 patching[h["layer"], h["head"]]["restored"]] for h in c["heads"]]
        lines += _table(rows, ["head", "type", "previous-token", "induction", "attention entropy",
                               "repeat loss, head zeroed (nats)", "share restored by patching"])
        p = c["patching"]
        layers = ", ".join(f"layer {r['layer']} {r['restored']:.3f}" for r in p["layers"])
        lines += [f"Activation patching: the right letter's mean probability on the repeat (letters 2..span, "
                  f"{p['scored_positions']} positions) is {p['clean_probability']:.4f} on the clean lines and "
                  f"{p['corrupted_probability']:.4f} when the first copy is replaced by other letters. Patching "
                  f"all heads of one layer restores this share of the gap: {layers}.", ""]
    return lines


def render_markdown(report: dict[str, Any], captions: dict[str, str]) -> str:
    study = report["study"]
    lines = [f"# Study `{study['name']}` ({study['kind']}{', size ' + study['size'] if study['size'] else ''})", ""]
    if study["description"]:
        lines += [study["description"], ""]
    if study.get("note"):
        lines += [f"Size: {study['note']}", ""]
    if report.get("command"):
        lines += [f"Command: `{report['command']}`. Base preset: `{Path(study['preset']).stem}`.", ""]
    if report.get("runs_wall_seconds") is not None:
        lines += [f"Time: the runs took {report['runs_wall_seconds'] / 60:.1f} min together (each run's wall time); "
                  f"this invocation took {report['study_seconds'] / 60:.1f} min (finished runs are not trained again).",
                  ""]
    lines += ["## Runs", "", "Loss in nats per token; bits per byte on the held-out split; FLOPs = "
              "training_flops_per_token x tokens (6N' + 12 L C T per token).", ""]
    rows = [[r["name"], r["arm"] or "", r["non_embedding_parameters"], r["tokens"], r["flops"], r["wall_seconds"],
             r["train_loss"], r["validation_loss"], r["validation_bits_per_byte"], r["test_loss"]]
            for r in report["runs"]]
    lines += _table(rows, ["run", "arm", "non-emb. params", "tokens", "FLOPs", "wall s", "train loss", "val loss",
                           "val bits/byte", "test loss"])
    findings = report["findings"]
    kind = study["kind"]
    if kind == "scaling":
        lines += _scaling_markdown(findings)
    elif kind == "ablation" and findings.get("arms"):
        lines += _ablation_markdown(findings)
    elif kind == "extrapolation" and findings.get("table"):
        lines += _extrapolation_markdown(findings)
    elif kind == "induction" and findings.get("repeat_loss"):
        lines += _induction_markdown(findings)
    if captions:
        lines += ["## Figures", ""]
        for name, caption in captions.items():
            lines += [f"![{name}]({name})", "", f"*{caption}*", ""]
    return "\n".join(lines)


def write_report(report: dict[str, Any], report_dir: str | Path) -> Path:
    """Write the report folder in one move; returns it."""
    report_dir = Path(report_dir)
    with staged_folder(report_dir) as staging:
        captions = {}
        for name, plot in PLOTS.items():
            caption = plot(report, staging / name)
            if caption:
                captions[name] = caption
        report = {**report, "figures": captions}
        write_json(staging / "report.json", report)
        write_text(staging / "report.csv", _csv(report["runs"]))
        write_text(staging / "report.md", render_markdown(report, captions))
    return report_dir
