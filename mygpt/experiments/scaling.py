"""Scaling laws: fit ``L(N, D) = E + A / N^alpha + B / D^beta`` (Hoffmann et al. 2022, "Chinchilla", approach 3).

``N`` is the non-embedding parameter count, ``D`` the training tokens, ``L`` the validation loss (nats per token).
The fit follows the paper: the loss is modelled in log space as ``LSE(a - alpha log N, b - beta log D, e)`` with
``A = exp(a)``, ``B = exp(b)``, ``E = exp(e)``, and the Huber loss (delta 1e-3) of the log-space residuals is
minimised by L-BFGS from a grid of starting points, so one odd run cannot drag the exponents. The uncertainty of
``alpha`` and ``beta`` comes from refitting bootstrap resamples of the points.

From the fit, the compute-optimal split of a budget ``C = 6 N D`` (the paper's closed form):

    N_opt = G (C/6)^(beta/(alpha+beta)),  D_opt = (C/6) / N_opt,  G = (alpha A / (beta B))^(1/(alpha+beta))

scipy and threadpoolctl come with scikit-learn, which the project already requires.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger(__name__)

HUBER_DELTA = 1e-3  # Hoffmann et al.'s choice: nearly an L1 fit in log space
# Starting points (a, b, e, alpha, beta): a coarser version of the paper's grid, enough for five parameters.
INIT_GRID = list(itertools.product((0.0, 5.0, 10.0), (0.0, 5.0, 10.0), (-1.0, 0.5), (0.2, 0.5, 1.0), (0.2, 0.5, 1.0)))
BOUNDS = [(-10.0, 40.0), (-10.0, 40.0), (-5.0, 5.0), (0.01, 3.0), (0.01, 3.0)]
CHINCHILLA_TOKENS_PER_PARAMETER = 20.0


@dataclass(frozen=True)
class ScalingFit:
    """The fitted law ``L(N, D) = E + A / N^alpha + B / D^beta``."""

    E: float
    A: float
    alpha: float
    B: float
    beta: float
    objective: float  # summed Huber loss of the log residuals at the optimum
    n_points: int

    def predict(self, n: float | np.ndarray, d: float | np.ndarray) -> float | np.ndarray:
        """The predicted loss (nats per token) at ``n`` non-embedding parameters and ``d`` tokens."""
        return self.E + self.A / np.power(n, self.alpha) + self.B / np.power(d, self.beta)

    def compute_optimal(self, flops: float) -> dict[str, float]:
        """The ``N`` and ``D`` that minimise the fitted loss at ``flops = 6 N D``, and their ratio ``D/N``."""
        a, b = self.alpha, self.beta
        g = (a * self.A / (b * self.B)) ** (1 / (a + b))
        n_opt = g * (flops / 6) ** (b / (a + b))
        d_opt = flops / 6 / n_opt
        return {"flops": flops, "parameters": n_opt, "tokens": d_opt, "tokens_per_parameter": d_opt / n_opt,
                "loss": float(self.predict(n_opt, d_opt))}

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _objective(x: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray) -> tuple[float, np.ndarray]:
    """Summed Huber loss of the log residuals and its gradient in ``x = (a, b, e, alpha, beta)``."""
    a, b, e, alpha, beta = x
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])  # (3, P)
    top = terms.max(0)
    weights = np.exp(terms - top)  # (3, P)
    total = weights.sum(0)
    residual = top + np.log(total) - log_l  # (P,): log predicted - log measured
    soft = weights / total  # d LSE / d term
    small = np.abs(residual) <= HUBER_DELTA
    loss = np.where(small, 0.5 * residual**2, HUBER_DELTA * (np.abs(residual) - 0.5 * HUBER_DELTA)).sum()
    slope = np.clip(residual, -HUBER_DELTA, HUBER_DELTA)  # d Huber / d residual
    grad = np.array([(slope * soft[0]).sum(), (slope * soft[1]).sum(), (slope * soft[2]).sum(),
                     -(slope * soft[0] * log_n).sum(), -(slope * soft[1] * log_d).sum()])
    return float(loss), grad


def fit_scaling_law(n: Sequence[float], d: Sequence[float], loss: Sequence[float],
                    inits: Sequence[Sequence[float]] | None = None) -> ScalingFit:
    """Fit ``L(N, D)`` to measured points by Huber regression in log space from many starting points.

    Args:
        n: (P,) non-embedding parameters; d: (P,) training tokens; loss: (P,) measured losses (> 0).
        inits: starting points ``(a, b, e, alpha, beta)``; default :data:`INIT_GRID`.

    Raises ``ValueError`` with fewer than 5 points (five parameters) or non-positive values.
    """
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits

    n, d, loss = (np.asarray(v, dtype=np.float64) for v in (n, d, loss))
    if not len(n) == len(d) == len(loss):
        raise ValueError(f"n, d and loss must have the same length, got {len(n)}, {len(d)}, {len(loss)}")
    if len(n) < 5:
        raise ValueError(f"a scaling fit has 5 parameters and needs at least 5 points, got {len(n)}")
    if (n <= 0).any() or (d <= 0).any() or (loss <= 0).any():
        raise ValueError("parameters, tokens and losses must all be positive")
    args = (np.log(n), np.log(d), np.log(loss))
    best = None
    # One BLAS thread: the arrays are tiny, and threads that spin on a busy machine made each fit ~70x slower.
    with threadpool_limits(1):
        for x0 in inits if inits is not None else INIT_GRID:
            result = minimize(_objective, np.asarray(x0, dtype=np.float64), args=args, jac=True,
                              method="L-BFGS-B", bounds=BOUNDS)
            if best is None or result.fun < best.fun:
                best = result
    a, b, e, alpha, beta = best.x
    return ScalingFit(E=math.exp(e), A=math.exp(a), alpha=float(alpha), B=math.exp(b), beta=float(beta),
                      objective=float(best.fun), n_points=len(n))


def _start(fit: ScalingFit) -> list[float]:
    return [math.log(fit.A), math.log(fit.B), math.log(fit.E), fit.alpha, fit.beta]


def bootstrap_fit(n: Sequence[float], d: Sequence[float], loss: Sequence[float], *, samples: int = 200,
                  seed: int = 0, fit: ScalingFit | None = None, flops: float | None = None,
                  at: tuple[float, float] | None = None) -> dict[str, Any]:
    """Refit ``samples`` resamples of the points (drawn with replacement); 95% percentile intervals.

    Each refit starts from the full fit and a few other exponents. Resamples with fewer than 5 distinct points
    cannot be fitted and are skipped (their number is reported). ``flops``: also the interval of the
    compute-optimal tokens per parameter there; ``at = (N, D)``: also the interval of the predicted loss there.
    """
    n, d, loss = (np.asarray(v, dtype=np.float64) for v in (n, d, loss))
    fit = fit or fit_scaling_law(n, d, loss)
    rng = np.random.default_rng(seed)
    base = _start(fit)
    inits = [base] + [[base[0], base[1], base[2], alpha, beta] for alpha in (0.2, 0.6) for beta in (0.2, 0.6)]
    draws: dict[str, list[float]] = {"alpha": [], "beta": [], "E": []}
    if flops is not None:
        draws["tokens_per_parameter"] = []
    if at is not None:
        draws["predicted_loss"] = []
    skipped = 0
    for _ in range(samples):
        idx = rng.integers(0, len(n), len(n))
        if len(np.unique(idx)) < 5:
            skipped += 1
            continue
        refit = fit_scaling_law(n[idx], d[idx], loss[idx], inits=inits)
        draws["alpha"].append(refit.alpha)
        draws["beta"].append(refit.beta)
        draws["E"].append(refit.E)
        if flops is not None:
            draws["tokens_per_parameter"].append(refit.compute_optimal(flops)["tokens_per_parameter"])
        if at is not None:
            draws["predicted_loss"].append(float(refit.predict(*at)))
    intervals = {name: {"low": float(np.percentile(v, 2.5)), "high": float(np.percentile(v, 97.5)),
                        "std": float(np.std(v))} for name, v in draws.items() if v}
    return {"samples": samples - skipped, "skipped": skipped, "confidence": 0.95, "intervals": intervals}


def frontier(points: Sequence[dict[str, Any]], x: str = "flops", y: str = "validation_loss") -> list[str]:
    """Names of the compute-efficient runs: each has a lower ``y`` than every run with less ``x``."""
    best, names = math.inf, []
    for point in sorted(points, key=lambda p: p[x]):
        if point[y] is not None and point[y] < best:
            best = point[y]
            names.append(point["name"])
    return names


def _points(records: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    usable = [r for r in records if r.get("validation_loss") is not None]
    return (np.array([r["non_embedding_parameters"] for r in usable], dtype=np.float64),
            np.array([r["tokens"] for r in usable], dtype=np.float64),
            np.array([r["validation_loss"] for r in usable], dtype=np.float64))


def predict_held_out(records: Sequence[dict[str, Any]], target: dict[str, float], *, bootstrap: int = 200,
                     seed: int = 0) -> dict[str, Any]:
    """The loss the fit of ``records`` predicts for ``target`` (``non_embedding_parameters``, ``tokens``)."""
    n, d, loss = _points(records)
    fit = fit_scaling_law(n, d, loss)
    at = (target["non_embedding_parameters"], target["tokens"])
    spread = bootstrap_fit(n, d, loss, samples=bootstrap, seed=seed, fit=fit, at=at)
    return {"fit": fit.to_dict(), "fitted_on": [r["name"] for r in records], "predicted_loss": float(fit.predict(*at)),
            "interval": spread["intervals"].get("predicted_loss")}


def scaling_findings(records: Sequence[dict[str, Any]], *, bootstrap: int = 200, seed: int = 0,
                     compute_budget: float | None = None, prediction: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the scaling report says: the fit with intervals, the compute-optimal ratio, the frontier and the
    held-out run's predicted vs measured loss. The held-out run (``held_out``) is left out of the fit."""
    fitted = [r for r in records if not r.get("held_out")]
    held = [r for r in records if r.get("held_out")]
    out: dict[str, Any] = {"frontier": frontier(records)}
    n, d, loss = _points(fitted)
    if len(n) < 5:
        out["fit"] = None
        out["fit_note"] = f"not fitted: {len(n)} finished runs with a validation loss, a fit needs at least 5"
        return out
    fit = fit_scaling_law(n, d, loss)
    budget = compute_budget or max(r["flops"] for r in records)
    spread = bootstrap_fit(n, d, loss, samples=bootstrap, seed=seed, fit=fit, flops=budget)
    optimal = fit.compute_optimal(budget)
    residuals = loss - fit.predict(n, d)
    out.update({
        "fit": fit.to_dict(), "bootstrap": spread, "compute_optimal": optimal,
        "fit_rms_residual": float(np.sqrt(np.mean(residuals**2))),
        "chinchilla_tokens_per_parameter": CHINCHILLA_TOKENS_PER_PARAMETER,
    })
    if held:
        run = held[0]
        before = prediction if prediction and prediction.get("run") == run["name"] else None
        if before is None:  # no prediction was written before training (e.g. a report rebuilt): make it now
            before = predict_held_out(fitted, run, bootstrap=bootstrap, seed=seed)
            before["made"] = "after training (no earlier prediction found)"
        measured = run.get("validation_loss")
        out["held_out"] = {"run": run["name"], "predicted_loss": before["predicted_loss"],
                           "interval": before.get("interval"), "made": before.get("made"),
                           "measured_loss": measured,
                           "error": None if measured is None else measured - before["predicted_loss"]}
    return out
