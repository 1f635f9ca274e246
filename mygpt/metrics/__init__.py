"""The project's ``evaluate`` metric modules, one folder each, loadable offline.

``evaluate.load("perplexity")`` and the other Hub metrics need the network; these folders work with
``evaluate.load(<folder path>)`` anywhere. Each module is a thin ``evaluate.Metric`` wrapper around a
plain, tested function of :mod:`mygpt.text_metrics` or :mod:`mygpt.scoring`, so the logic lives (and is
tested) in one place::

    from mygpt.metrics import load_metric
    load_metric("self_bleu").compute(predictions=["a b c d", "a b c e"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["METRICS_DIR", "METRIC_NAMES", "metric_path", "load_metric"]

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("bits_per_byte", "sliding_window_perplexity", "self_bleu", "distinct_n", "repeated_ngram_rate")


def metric_path(name: str) -> str:
    """The folder of metric ``name`` (what ``evaluate.load`` takes). Raises ``ValueError`` for an unknown name."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; the metrics in {METRICS_DIR} are {', '.join(METRIC_NAMES)}")
    return str(METRICS_DIR / name)


def load_metric(name: str, **kwargs: Any):
    """``evaluate.load`` of one of the project's metric folders (offline); ``kwargs`` go to ``evaluate.load``."""
    import evaluate  # imported here: only loading a metric needs it

    return evaluate.load(metric_path(name), **kwargs)
