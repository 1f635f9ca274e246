"""Synthetic corpora with a known answer, for positive controls of the analysis tools.

``induction``: every line is a span of random letters written twice (``xqzb...xqzb...``). The first copy cannot be
predicted better than chance (``ln(alphabet)`` nats per letter); the second copy can be predicted perfectly by a
model that finds the earlier occurrence of the current letter and copies the letter after it -- the induction
circuit of Olsson et al. (2022): a previous-token head in one layer, an induction head in the next.
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
INDUCTION_DEFAULTS = {"documents": 40, "lines": 200, "span": 24, "alphabet": 26, "seed": 0}


def induction_line(rng: random.Random, span: int, alphabet: int) -> str:
    """One line: ``span`` random letters from the first ``alphabet`` lowercase letters, written twice."""
    letters = string.ascii_lowercase[:alphabet]
    first = "".join(rng.choice(letters) for _ in range(span))
    return first + first


def induction_documents(documents: int, lines: int, span: int, alphabet: int, seed: int) -> list[str]:
    """``documents`` texts of ``lines`` lines each (see :func:`induction_line`); the same for the same arguments."""
    rng = random.Random(seed)
    return ["\n".join(induction_line(rng, span, alphabet) for _ in range(lines)) + "\n" for _ in range(documents)]


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
        raise ValueError(f"data source induction: alphabet must be between 2 and 26 letters, got {settings['alphabet']}")
    for name in ("documents", "lines", "span"):
        if not isinstance(settings[name], int) or settings[name] < 1:
            raise ValueError(f"data source induction: {name} must be a positive whole number, got {settings[name]!r}")
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
