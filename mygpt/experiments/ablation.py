"""Ablation findings: runs grouped by arm (several seeds each), and a difference called only when it is real.

Each arm's spread is the range of its seeds' losses (lowest to highest). Two arms differ only when their ranges do
not overlap: then the gap between their means is larger than what changing the seed alone did. An arm with fewer
than two seeds has no spread, so no difference is called for it.
"""

from __future__ import annotations

import statistics
from typing import Any, Sequence

MIN_SEEDS = 2


def arm_summaries(records: Sequence[dict[str, Any]], metric: str = "validation_loss") -> list[dict[str, Any]]:
    """Per arm, in the order arms first appear: the runs, their ``metric`` values, mean, sample std and range."""
    arms: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get(metric) is not None:
            arms.setdefault(record["arm"], []).append(record)
    out = []
    for arm, runs in arms.items():
        values = [r[metric] for r in runs]
        out.append({"arm": arm, "runs": [r["name"] for r in runs], "values": values, "seeds": len(values),
                    "mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
                    "min": min(values), "max": max(values), "spread": max(values) - min(values)})
    return out


def compare(arm: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """``arm`` against ``reference``: the difference of means, and whether it exceeds the seed spread.

    ``verdict`` is ``"lower"`` / ``"higher"`` (the arm's metric, when the seed ranges do not overlap), ``"none"``
    (the ranges overlap: within seed noise) or ``"not enough seeds"`` (an arm with fewer than two).
    """
    difference = arm["mean"] - reference["mean"]
    if min(arm["seeds"], reference["seeds"]) < MIN_SEEDS:
        verdict = "not enough seeds"
    elif arm["max"] < reference["min"]:
        verdict = "lower"
    elif arm["min"] > reference["max"]:
        verdict = "higher"
    else:
        verdict = "none"
    return {"arm": arm["arm"], "reference": reference["arm"], "difference": difference, "verdict": verdict,
            "spread": max(arm["spread"], reference["spread"])}


def ablation_findings(records: Sequence[dict[str, Any]], reference_arm: str | None = None,
                      metric: str = "validation_loss") -> dict[str, Any]:
    """The arms' table and every arm compared with ``reference_arm`` (default: the first arm)."""
    arms = arm_summaries(records, metric)
    if not arms:
        return {"metric": metric, "arms": [], "comparisons": [], "note": "no finished run has this metric"}
    names = [a["arm"] for a in arms]
    reference_arm = reference_arm or names[0]
    if reference_arm not in names:
        raise ValueError(f"reference_arm {reference_arm!r} is not an arm of the study; its arms: {', '.join(names)}")
    reference = arms[names.index(reference_arm)]
    return {"metric": metric, "reference_arm": reference_arm, "arms": arms,
            "rule": "a difference is called only when the two arms' seed ranges do not overlap",
            "comparisons": [compare(a, reference) for a in arms if a is not reference]}
