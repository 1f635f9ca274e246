"""Human evaluation: a blind pairwise A/B study of two models' continuations, and its score.

* :func:`pairs_from_report` / :func:`pairs_from_samples` — pairs of continuations of the same prompt by two models,
  from a ``mygpt-evaluate`` ``report.json`` (sample ``i`` of one model against sample ``i`` of the other) or from
  plain lists.
* :func:`build_study` — the pairs in a seeded random order, each with a seeded random side for each model. The
  truth (which model is on the left) stays in the study data; the page never shows it.
* :func:`render_page` / :func:`write_page` — one self-contained HTML file (no network): the prompt and the two
  texts; keys ``a``/``←`` (left is better), ``b``/``→`` (right), ``t``/``↓`` (tie), ``↑``/Backspace (back),
  ``e`` (export). Votes stay in the browser (``localStorage``, per study), so a reload resumes; the export is a JSON
  download that :func:`score_votes` reads.
* :func:`score_votes` — model A's win rate over the decisive votes (**ties excluded**, and counted beside it), a
  Wilson 95% interval and the exact two-sided binomial (sign test) p-value against 50%.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import random
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from mygpt.files import write_json, write_text

__all__ = ["CHOICES", "binomial_two_sided_p", "build_study", "pairs_from_report", "pairs_from_samples",
           "read_votes", "render_page", "score_votes", "wilson_interval", "write_page"]

TEMPLATE = "human_eval_template.html"
CHOICES = ("left", "right", "tie")
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


# ---------------------------------------------------------------------------------------------------------------
# Pairs and the study


def pairs_from_samples(prompts: Sequence[str], samples_a: Sequence[str | Sequence[str]],
                       samples_b: Sequence[str | Sequence[str]]) -> list[dict[str, Any]]:
    """Pairs ``{"prompt", "a", "b", "prompt_index", "sample"}``: continuation ``j`` of prompt ``i`` by model A
    against continuation ``j`` by model B. ``samples_a[i]`` is one text or a list of texts for prompt ``i``."""
    if not len(prompts) == len(samples_a) == len(samples_b):
        raise ValueError(f"{len(prompts)} prompts but {len(samples_a)} samples of model A and {len(samples_b)} of "
                         "model B: give one entry (a text or a list of texts) per prompt for each model")
    pairs = []
    for i, (prompt, a, b) in enumerate(zip(prompts, samples_a, samples_b)):
        a, b = ([a] if isinstance(a, str) else list(a)), ([b] if isinstance(b, str) else list(b))
        for j, (text_a, text_b) in enumerate(zip(a, b)):  # unpaired extra samples are left out
            pairs.append({"prompt": prompt, "a": text_a, "b": text_b, "prompt_index": i, "sample": j})
    if not pairs:
        raise ValueError("no pairs: the models have no continuations in common")
    return pairs


def pairs_from_report(report: dict[str, Any] | str | os.PathLike, model_a: str | None = None,
                      model_b: str | None = None) -> tuple[list[dict[str, Any]], str, str]:
    """``(pairs, model_a, model_b)`` from a ``mygpt-evaluate`` report (``report.json`` or its dict).

    The models default to the report's first two; their names are the report's (a run folder or a Hub id).
    """
    if not isinstance(report, dict):
        path = Path(report)
        if not path.is_file():
            raise FileNotFoundError(f"evaluation report {str(path)!r} does not exist (mygpt-evaluate writes "
                                    "report.json in its --output_dir)")
        report = json.loads(path.read_text(encoding="utf-8"))
    models = {m["name"]: m for m in report.get("models", [])}
    names = list(models)
    if model_a is None and model_b is None:
        if len(names) < 2:
            raise ValueError(f"the report has {len(names)} model(s); a pairwise study needs two")
        model_a, model_b = names[:2]
    for role, name in (("model_a", model_a), ("model_b", model_b)):
        if name not in models:
            raise ValueError(f"{role} {name!r} is not in the report; its models are: {', '.join(names) or 'none'}")
    if model_a == model_b:
        raise ValueError(f"model_a and model_b are both {model_a!r}: name two different models")
    samples = {name: models[name].get("generation", {}).get("samples", []) for name in (model_a, model_b)}
    prompts = [p["prompt"] for p in report.get("prompts", [])]
    if not prompts or any(len(s) != len(prompts) for s in samples.values()):
        raise ValueError("the report has no generations for both models on the same prompts (was it run with "
                         "--num_prompts 0?)")
    pairs = pairs_from_samples(prompts, *(([s["continuations"] for s in samples[n]]) for n in (model_a, model_b)))
    return pairs, model_a, model_b


def build_study(pairs: Sequence[dict[str, Any]], model_a: str, model_b: str, *, seed: int = 0,
                title: str = "Which continuation is better?",
                question: str = "Read the prompt, then both continuations. Which one is the better continuation "
                                "of the prompt: fluent, coherent, in the style of the text, and interesting?"
                ) -> dict[str, Any]:
    """The study a page shows: the pairs shuffled (seeded), each with model A on a seeded random side.

    Returns ``{"id", "title", "question", "models": [model_a, model_b], "seed", "items"}``; each item is
    ``{"id", "prompt", "left_text", "right_text", "left": 0 or 1}`` (``left`` indexes ``models``: the truth the
    page keeps but does not show). ``id`` is a hash of everything shown, so votes cannot be mixed across studies.
    """
    if not pairs:
        raise ValueError("a study needs at least one pair")
    if model_a == model_b:
        raise ValueError(f"model_a and model_b are both {model_a!r}: name two different models")
    rng = random.Random(seed)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    items = []
    for n, index in enumerate(order):
        pair = pairs[index]
        left = rng.randrange(2)  # 0: model A on the left
        texts = (pair["a"], pair["b"]) if left == 0 else (pair["b"], pair["a"])
        items.append({"id": f"q{n + 1:03d}", "prompt": pair["prompt"], "left_text": texts[0],
                      "right_text": texts[1], "left": left})
    study = {"title": title, "question": question, "models": [model_a, model_b], "seed": seed, "items": items}
    study["id"] = hashlib.sha256(json.dumps(study, sort_keys=True).encode()).hexdigest()[:16]
    return study


def render_page(study: dict[str, Any]) -> str:
    """The study as one HTML page with its data inline (no external resource)."""
    data = json.dumps(study, ensure_ascii=False, separators=(",", ":"))
    data = data.replace("<", "\\u003c")  # a text spelling "</script>" or "<!--" cannot end the data (JSON escape)
    template = resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    return template.replace("__TITLE__", html.escape(study["title"])).replace("__STUDY__", data)


def study_key(study: dict[str, Any]) -> dict[str, Any]:
    """What :func:`score_votes` checks votes against: the study id, the models and each item's left model."""
    return {"study": study["id"], "models": study["models"], "left": {i["id"]: i["left"] for i in study["items"]}}


def write_page(study: dict[str, Any], path: str | os.PathLike) -> tuple[Path, Path]:
    """Write the page and, beside it, its key (``<name>.key.json``) atomically; returns both paths."""
    path = Path(path)
    key = path.with_name(path.stem + ".key.json")
    write_json(key, study_key(study))
    return write_text(path, render_page(study)), key


# ---------------------------------------------------------------------------------------------------------------
# Scoring


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); ``(nan, nan)`` when ``n`` is 0."""
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in 0..n, got {successes} of {n}")
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def binomial_two_sided_p(successes: int, n: int) -> float:
    """Exact two-sided p-value of ``successes`` in ``n`` fair coin flips (the sign test): twice the smaller tail,
    capped at 1. ``nan`` when ``n`` is 0."""
    if n == 0:
        return math.nan
    tail = min(successes, n - successes)
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(tail + 1)) / 2 ** n)


def read_votes(path: str | os.PathLike) -> dict[str, Any]:
    """One rater's exported votes (the page's download), checked: known choices, known items, no repeats."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"votes file {str(path)!r} does not exist (export it from the page with 'e')")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{path} is not JSON: {error}") from None
    if not isinstance(data, dict) or not {"study", "models", "items", "votes"} <= set(data):
        raise ValueError(f"{path} is not a votes file exported by the human-evaluation page (it needs the keys "
                         "study, models, items and votes)")
    items, seen = set(data["items"]), set()
    for vote in data["votes"]:
        item = vote.get("item")
        if item not in items:
            raise ValueError(f"{path}: a vote for pair {item!r}, which is not in study {data['study']}")
        if item in seen:
            raise ValueError(f"{path}: pair {item!r} is voted on twice")
        seen.add(item)
        if vote.get("choice") not in CHOICES:
            raise ValueError(f"{path}: pair {item!r} has choice {vote.get('choice')!r}; valid: {', '.join(CHOICES)}")
        if vote.get("left") not in (0, 1):
            raise ValueError(f"{path}: pair {item!r} does not say which model was on the left")
    return data


def score_votes(paths: Sequence[str | os.PathLike], key: dict[str, Any] | str | os.PathLike | None = None
                ) -> dict[str, Any]:
    """Model A's win rate against model B over one or more raters' votes.

    A vote for the left text is a win for the model that was on the left. Ties are **excluded** from the win rate
    (it is A's share of the decisive votes) and reported beside it, with ``win_rate_ties_half`` (a tie as half a
    win each) for reference. The 95% interval is Wilson's; ``p_value`` is the exact two-sided sign test against
    50%. With ``key`` (the ``.key.json`` written with the page, or its dict) every vote is checked against the
    study's own record of sides, so an edited or foreign votes file is refused.
    """
    if not paths:
        raise ValueError("give at least one votes file")
    if key is not None and not isinstance(key, dict):
        key_path = Path(key)
        if not key_path.is_file():
            raise FileNotFoundError(f"key file {str(key_path)!r} does not exist (mygpt-human-eval page writes it "
                                    "beside the page)")
        key = json.loads(key_path.read_text(encoding="utf-8"))
    votes_files = [read_votes(p) for p in paths]
    models = key["models"] if key else votes_files[0]["models"]
    wins = [0, 0]
    ties = 0
    raters = []
    for path, data in zip(paths, votes_files):
        if data["models"] != models or (key and data["study"] != key["study"]):
            raise ValueError(f"{path} holds votes of study {data['study']} ({' vs '.join(data['models'])}), not of "
                             f"study {key['study'] if key else votes_files[0]['study']} ({' vs '.join(models)})")
        for vote in data["votes"]:
            if key and key["left"].get(vote["item"]) != vote["left"]:
                raise ValueError(f"{path}: pair {vote['item']!r} disagrees with the key about which model was on "
                                 "the left (the votes file was edited, or belongs to another study)")
            if vote["choice"] == "tie":
                ties += 1
            else:
                winner = vote["left"] if vote["choice"] == "left" else 1 - vote["left"]
                wins[winner] += 1
        raters.append({"file": os.fspath(path), "rater": data.get("rater") or None, "votes": len(data["votes"]),
                       "pairs": len(data["items"])})
    decisive = wins[0] + wins[1]
    total = decisive + ties
    low, high = wilson_interval(wins[0], decisive)
    return {
        "model_a": models[0], "model_b": models[1], "votes": total, "wins_a": wins[0], "wins_b": wins[1],
        "ties": ties, "win_rate_a": wins[0] / decisive if decisive else math.nan,
        "ci95_low": low, "ci95_high": high, "interval": "Wilson score, 95%, ties excluded",
        "p_value": binomial_two_sided_p(wins[0], decisive), "test": "exact two-sided sign test against 50%",
        "win_rate_ties_half": (wins[0] + ties / 2) / total if total else math.nan, "raters": raters,
    }


def format_score(score: dict[str, Any]) -> str:
    """A few lines for the terminal or a notebook."""
    if not score["votes"]:
        return f"{score['model_a']} vs {score['model_b']}: no votes yet"
    lines = [f"{score['model_a']} (A) vs {score['model_b']} (B): {score['votes']} votes from "
             f"{len(score['raters'])} rater file(s): A won {score['wins_a']}, B won {score['wins_b']}, "
             f"{score['ties']} tie(s)"]
    if score["wins_a"] + score["wins_b"]:
        lines.append(f"A's win rate (ties excluded): {score['win_rate_a']:.1%}, 95% Wilson interval "
                     f"[{score['ci95_low']:.1%}, {score['ci95_high']:.1%}], exact sign test p = {score['p_value']:.3g}")
    else:
        lines.append("every vote is a tie: no win rate")
    lines.append(f"(ties counted as half a win: {score['win_rate_ties_half']:.1%})")
    return "\n".join(lines)
