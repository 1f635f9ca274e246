"""Contracts of the tokenizers train_hf.py learns: exact round trips, the special tokens, the cache, clear errors."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from mygpt.tokenization import (EOS_TOKEN, PAD_TOKEN, UNK_TOKEN, build_tokenizer, iter_texts, load_pretrained_tokenizer,
                                train_bpe_tokenizer, train_char_tokenizer)

TRAIN = ["To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 20,
         "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles\n" * 20]
UNSEEN = "Zwölf Boxkämpfer jagen Viktor — 日本語 😀\ttabs\r\nand\n\n\nnewlines  "


def test_bpe_round_trips_any_text_exactly():
    tokenizer = train_bpe_tokenizer(TRAIN, vocab_size=300)
    for text in [*TRAIN, UNSEEN, " leading space", ""]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text


def test_bpe_has_requested_vocabulary_and_special_tokens():
    assert len(train_bpe_tokenizer(TRAIN, vocab_size=300)) == 300
    tokenizer = train_bpe_tokenizer(TRAIN, vocab_size=4000)
    assert len(tokenizer) < 4000  # at most: this little text runs out of pairs worth merging
    assert tokenizer.eos_token == tokenizer.bos_token == EOS_TOKEN
    assert tokenizer.pad_token == PAD_TOKEN and tokenizer.pad_token_id != tokenizer.eos_token_id
    # merges were learnt: the training text takes far fewer tokens than bytes
    assert len(tokenizer(TRAIN[0], add_special_tokens=False)["input_ids"]) < len(TRAIN[0].encode()) / 2


def test_bpe_vocabulary_too_small_for_the_byte_alphabet_is_an_error():
    with pytest.raises(ValueError, match="at least 258"):
        train_bpe_tokenizer(TRAIN, vocab_size=100)


def test_char_tokenizer_gives_one_token_per_character_and_maps_unseen_ones_to_unk():
    tokenizer = train_char_tokenizer(TRAIN)
    text = TRAIN[0][:50]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)
    assert tokenizer.decode(ids) == text
    assert len(tokenizer) == 3 + len(set("".join(TRAIN)))  # end-of-text, pad, unk + the characters
    unseen = tokenizer("Qx", add_special_tokens=False)["input_ids"]
    assert unseen == [tokenizer.unk_token_id] * 2 and tokenizer.unk_token == UNK_TOKEN


def test_saved_tokenizer_loads_back_with_autotokenizer(tmp_path):
    for tokenizer in (train_bpe_tokenizer(TRAIN, vocab_size=300), train_char_tokenizer(TRAIN)):
        tokenizer.save_pretrained(tmp_path / "tok")
        loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
        sample = TRAIN[1][:80]
        assert loaded(sample)["input_ids"] == tokenizer(sample)["input_ids"]
        assert loaded.decode(loaded(sample)["input_ids"]) == sample
        assert (loaded.eos_token, loaded.pad_token) == (EOS_TOKEN, PAD_TOKEN)


def test_learnt_tokenizer_is_cached_and_reused(tmp_path):
    first = build_tokenizer("bpe", TRAIN, vocab_size=300, cache_dir=tmp_path)
    folders = list(tmp_path.iterdir())
    assert len(folders) == 1 and (folders[0] / "tokenizer.json").is_file()
    second = build_tokenizer("bpe", TRAIN, vocab_size=300, cache_dir=tmp_path)
    assert second.get_vocab() == first.get_vocab()
    # other text or another size is another tokenizer
    build_tokenizer("bpe", TRAIN[:1], vocab_size=300, cache_dir=tmp_path)
    build_tokenizer("bpe", TRAIN, vocab_size=310, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 3


def test_unknown_tokenizer_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown tokenizer 'no-such-tokenizer-xyz'.*'bpe', 'char'"):
        load_pretrained_tokenizer("no-such-tokenizer-xyz")
    with pytest.raises(ValueError, match="unknown tokenizer"):
        build_tokenizer("no-such-tokenizer-xyz", TRAIN)


def test_pretrained_tokenizer_folder_is_used_as_is(tmp_path):
    train_bpe_tokenizer(TRAIN, vocab_size=300).save_pretrained(tmp_path / "tok")
    tokenizer = build_tokenizer(str(tmp_path / "tok"), ["ignored: nothing is learnt"])
    assert len(tokenizer) == 300 and tokenizer.eos_token == EOS_TOKEN


def test_empty_training_text_is_an_error():
    with pytest.raises(ValueError, match="empty training split"):
        build_tokenizer("char", ["", ""])


def test_iter_texts_stops_after_the_byte_budget():
    texts = ["ab" * 10] * 5  # 20 bytes each
    assert len(list(iter_texts(texts, max_bytes=45))) == 3
    assert len(list(iter_texts(texts, max_bytes=None))) == 5
