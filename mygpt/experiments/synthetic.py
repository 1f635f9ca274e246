"""Synthetic corpora with a known answer, for positive controls of the analysis tools.

``induction``: every line is a span of random letters written twice (``xqzb...xqzb...``). The first copy cannot be
predicted better than chance (``ln(alphabet)`` nats per letter); the second copy can be predicted perfectly by a
model that finds the earlier occurrence of the current letter and copies the letter after it -- the induction
circuit of Olsson et al. (2022): a previous-token head in one layer, an induction head in the next.

The span's length varies from line to line (``min_span`` to ``span`` letters). With one fixed length, a single
head that reads the letter exactly ``span`` positions back solves the task by position alone (a model with
relative positions such as RoPE learns exactly that), and no induction circuit is needed.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from pathlib import Path
from typing import Any

from mygpt.files import staged_folder, write_text

SOURCES = ("induction",)
INDUCTION_DEFAULTS = {"documents": 40, "lines": 200, "span": 24, "min_span": None, "alphabet": 26, "seed": 0}


def induction_line(rng: random.Random, span: int, alphabet: int, min_span: int | None = None) -> str:
    """One line: random letters from the first ``alphabet`` lowercase letters, written twice; ``span`` of them,
    or a length drawn uniformly from ``min_span``..``span`` when ``min_span`` is given."""
    letters = string.ascii_lowercase[:alphabet]
    length = span if min_span is None else rng.randint(min_span, span)
    first = "".join(rng.choice(letters) for _ in range(length))
    return first + first


def induction_documents(documents: int, lines: int, span: int, alphabet: int, seed: int,
                        min_span: int | None = None) -> list[str]:
    """``documents`` texts of ``lines`` lines each (see :func:`induction_line`); the same for the same arguments."""
    rng = random.Random(seed)
    return ["\n".join(induction_line(rng, span, alphabet, min_span) for _ in range(lines)) + "\n"
            for _ in range(documents)]


def check_spec(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(source, settings with defaults)`` of a study's ``data:`` mapping; ``ValueError`` naming a bad field."""
    spec = dict(spec)
    source = spec.pop("source", None)
    if source not in SOURCES:
        raise ValueError(f"data source {source!r} is not one of {', '.join(SOURCES)}")
    unknown = sorted(set(spec) - set(INDUCTION_DEFAULTS))
    if unknown:
        raise ValueError(f"data source {source}: unknown setting(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(INDUCTION_DEFAULTS)}")
    settings = {**INDUCTION_DEFAULTS, **spec}
    if not 2 <= settings["alphabet"] <= 26:
        raise ValueError(f"data source induction: alphabet must be between 2 and 26 letters, "
                         f"got {settings['alphabet']}")
    for name in ("documents", "lines", "span"):
        if not isinstance(settings[name], int) or settings[name] < 1:
            raise ValueError(f"data source induction: {name} must be a positive whole number, got {settings[name]!r}")
    low = settings["min_span"]
    if low is not None and (not isinstance(low, int) or not 2 <= low <= settings["span"]):
        raise ValueError(f"data source induction: min_span must be a whole number from 2 to span "
                         f"({settings['span']}), got {low!r}")
    return source, settings


def synthetic_corpus(spec: dict[str, Any], root: Path) -> Path:
    """The folder of text files for ``spec`` (``{"source": "induction", ...}``), written under ``root`` once.

    The folder name carries a digest of the settings, so other settings never reuse an old corpus. Raises
    ``ValueError`` for an unknown source or setting.
    """
    source, settings = check_spec(spec)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(root) / f"{source}-{digest}"
    if not folder.is_dir():
        with staged_folder(folder) as staging:
            for i, text in enumerate(induction_documents(**settings)):
                write_text(staging / f"doc{i:04d}.txt", text)
    return folder


def repeat_losses(model: Any, tokenizer: Any, lines: list[str]) -> dict[str, float]:
    """Mean next-token loss (nats) on the first and the second copy of each repeated-span line.

    Each line (``span`` letters written twice, see :func:`induction_line`) is read on its own behind the start
    token. The first letter of each copy is left out: the first has no context, and the second copy's first letter
    follows the end of the first copy, which nothing predicts. A model with an induction circuit scores the
    second copy far below the first (chance is ``ln(alphabet)`` nats per letter).

    Returns ``{"first_copy", "second_copy", "drop"}``; ``ValueError`` for lines that are not span + span.
    """
    import torch

    from mygpt.scoring import token_nats

    span = len(lines[0]) // 2
    if any(len(line) != 2 * span or line[:span] != line[span:] for line in lines):
        raise ValueError("every line must be one span written twice, all of the same length")
    ids = _row_ids(tokenizer, lines)  # (B, 1 + 2 span)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            nats = token_nats(model(input_ids=ids).logits, ids)[:, :-1]  # (B, 2 span): entry t predicts token t+1
    finally:
        model.train(was_training)
    first = nats[:, 1:span].mean().item()  # targets 2 .. span (letters 2 .. span of the first copy)
    second = nats[:, span + 1 :].mean().item()  # targets span+2 .. 2 span (letters 2 .. span of the repeat)
    return {"first_copy": first, "second_copy": second, "drop": first - second}


def _row_ids(tokenizer: Any, lines: list[str]) -> Any:
    """(B, 1 + len(line)) token ids of one-letter-per-token lines behind the start token."""
    import torch

    from mygpt.scoring import start_token_id

    start = start_token_id(tokenizer)
    rows = [[start] + tokenizer(line, add_special_tokens=False)["input_ids"] for line in lines]
    if any(len(row) != len(line) + 1 for row, line in zip(rows, lines)):
        raise ValueError("the tokenizer does not give one token per letter; the copies cannot be told apart")
    return torch.tensor(rows)


def induction_circuit(model: Any, tokenizer: Any, lines: list[str], corrupted: list[str],
                      alphabet: int) -> dict[str, Any]:
    """What the analysis tools find in one model trained on repeated spans.

    * ``heads``: the head taxonomy of ``mygpt-analyze`` (:func:`mygpt.analysis.heads.head_scores`) on the lines,
      with each head's type and attention entropy; ``previous_token_head`` (strongest previous-token score in
      layer 0) and ``induction_head`` (strongest induction score in the last layer).
    * ``ablation``: the repeat losses with each head zeroed in turn (:func:`mygpt.analysis.ablation.ablate_heads`).
    * ``patching``: activation patching from the clean lines (span + span) into ``corrupted`` ones (another span +
      the same span, so the repeat has no earlier copy to be read from): the probability of the right letter on
      the repeat (letters 2..span) with each head's, and each layer's, clean output patched in, and the share of
      the clean-vs-corrupted gap that restores.
    """
    import numpy as np

    from mygpt.analysis.ablation import ablate_heads
    from mygpt.analysis.heads import head_scores
    from mygpt.analysis.patching import activation_patching

    span = len(lines[0]) // 2
    clean_ids, corrupted_ids = _row_ids(tokenizer, lines), _row_ids(tokenizer, corrupted)
    scored = clean_ids.new_zeros(clean_ids.shape, dtype=bool)
    scored[:, span + 1 : 2 * span] = True  # position t predicts token t+1: letters 2..span of the repeat
    # distinct random letters shown twice: the taxonomy's own induction test, sized to the alphabet
    scores = head_scores(model, tokenizer, "\n".join(lines), repeat_length=min(20, alphabet), seed=1)
    table = scores.table()
    n_layer, n_head = scores.scores["induction"].shape

    def strongest(name: str, layer: int) -> dict[str, Any]:
        head = int(np.nanargmax(scores.scores[name][layer]))
        return {"layer": layer, "head": head, "score": float(scores.scores[name][layer, head]),
                "type": table[layer * n_head + head]["type"]}

    ablation = []
    for layer in range(n_layer):
        for head in range(n_head):
            with ablate_heads(model, [(layer, head)]):
                ablation.append({"layer": layer, "head": head, **repeat_losses(model, tokenizer, lines)})
    patched = activation_patching(model, clean_ids, corrupted_ids, scored)
    restored_layers = patched.restored(patched.layers)
    return {
        "heads": table,
        "threshold": scores.threshold,
        "previous_token_head": strongest("previous_token", 0),
        "induction_head": strongest("induction", n_layer - 1),
        "ablation": ablation,
        "patching": {
            "clean_probability": patched.clean, "corrupted_probability": patched.corrupted,
            "scored_positions": patched.n_scored, "heads": patched.table(),
            "layers": [{"layer": layer, "probability": float(patched.layers[layer]),
                        "restored": float(restored_layers[layer])} for layer in range(n_layer)],
        },
    }


def training_curve(run_dir: str | Path) -> dict[str, Any]:
    """The run's training loss by step (``training_log.csv``) and where it fell: the induction bump shows as a
    plateau near chance followed by a sudden drop (Olsson et al., 2022, the "phase change").

    ``drop_step`` is the first logged step whose loss is below the midpoint of the plateau (the highest loss
    after the first logged step) and the final loss.
    """
    import csv

    with (Path(run_dir) / "training_log.csv").open() as handle:
        points = [(int(row["step"]), float(row["loss"])) for row in csv.DictReader(handle) if row.get("loss")]
    if len(points) < 3:
        return {"steps": [s for s, _ in points], "loss": [v for _, v in points], "drop_step": None}
    plateau = max(v for _, v in points[1:])
    final = points[-1][1]
    middle = (plateau + final) / 2
    peak = next(i for i, (_, v) in enumerate(points) if v == plateau and i > 0)
    drop = next((s for s, v in points[peak:] if v < middle), None)
    return {"steps": [s for s, _ in points], "loss": [v for _, v in points], "plateau_loss": plateau,
            "final_loss": final, "drop_step": drop}


def induction_findings(records: list[dict[str, Any]], spec: dict[str, Any], lines: int = 64) -> dict[str, Any]:
    """Per run: the repeat losses on fresh lines (a seed the training data did not use), chance, and what the
    analysis tools find in the model (:func:`induction_circuit`)."""
    import math

    from mygpt.loading import load_model_and_tokenizer

    _, settings = check_spec(spec)
    rng = random.Random(settings["seed"] + 1_000_003)  # not the training corpus's lines
    fresh = [induction_line(rng, settings["span"], settings["alphabet"]) for _ in range(lines)]
    span = settings["span"]
    corrupted = [induction_line(rng, span, settings["alphabet"])[:span] + line[span:] for line in fresh]
    table, circuits = [], {}
    for record in records:
        model, tokenizer = load_model_and_tokenizer(record["run_dir"], device="cpu")
        table.append({"run": record["name"], **repeat_losses(model, tokenizer, fresh)})
        circuits[record["name"]] = {"training": training_curve(record["run_dir"]),
                                    **induction_circuit(model, tokenizer, fresh, corrupted, settings["alphabet"])}
    return {"chance_nats": math.log(settings["alphabet"]), "lines": lines, "span": span,
            "repeat_loss": table, "circuits": circuits,
            "method": "fresh lines of the training distribution; mean loss on letters 2..span of each copy"}
