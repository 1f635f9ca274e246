"""Tokenizers for training: a byte-level BPE or a character vocabulary learnt from the training split, or any
pretrained tokenizer.

Every tokenizer comes back as a transformers tokenizer (``PreTrainedTokenizerFast`` for the ones trained here)
with an end-of-text token (also used as BOS, as in GPT-2) and a pad token, so it is saved next to the model and
``AutoTokenizer.from_pretrained(run_dir)`` gives it back. The vocabularies are learnt from the *training* split
only: a tokenizer fitted on held-out text would leak it into the evaluation.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from mygpt.files import staged_folder
from mygpt.loading import is_offline

logger = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"  # GPT-2's name: documents are joined with it, and it doubles as BOS
PAD_TOKEN = "<|pad|>"  # a token of its own, so masking padding never masks a real end of text
UNK_TOKEN = "<|unk|>"  # only the character vocabulary needs it (a byte-level BPE can spell anything)

BUILTIN_TOKENIZERS = ("bpe", "char")


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 16384,
                        min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Learns a GPT-2-style byte-level BPE from ``texts``.

    The 256 byte symbols are always in the vocabulary, so any string round-trips exactly
    (``decode(encode(s)) == s``). ``vocab_size`` counts them, the merges and the special tokens; it is a maximum,
    reached unless the text runs out of pairs seen at least ``min_frequency`` times.
    """
    if vocab_size < 256 + 2:
        raise ValueError(f"vocab_size={vocab_size} is too small for a byte-level BPE: it needs at least 258 "
                         "(256 bytes + end-of-text + pad)")
    tokenizer = Tokenizer(models.BPE())
    # GPT-2's pre-tokenisation: split into words (keeping the leading space), map bytes to printable symbols.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    logger.info("trained a byte-level BPE with %d tokens", tokenizer.get_vocab_size())
    return _wrap(tokenizer, unk_token=None)


def train_char_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A character-level vocabulary (as nanoGPT's ``shakespeare_char``): one token per distinct character of ``texts``.

    Characters never seen in training map to ``<|unk|>``. Ids are given in sorted character order after the
    special tokens, so the same text always gives the same vocabulary.
    """
    chars: set[str] = set()
    for text in texts:
        chars.update(text)
    specials = [EOS_TOKEN, PAD_TOKEN, UNK_TOKEN]
    vocab = {token: i for i, token in enumerate(specials + sorted(chars))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    # Every character (newlines included: [\s\S], not '.') is its own "word"; Fuse glues them back without spaces.
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    logger.info("built a character vocabulary of %d characters", len(chars))
    return _wrap(tokenizer, unk_token=UNK_TOKEN)


def _wrap(tokenizer: Tokenizer, unk_token: str | None) -> PreTrainedTokenizerFast:
    """Wraps a ``tokenizers.Tokenizer`` as a transformers tokenizer with our special tokens set."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=unk_token,
        clean_up_tokenization_spaces=False,  # decoding must give the text back exactly
    )


def load_pretrained_tokenizer(name_or_path: str, fixed_vocabulary: bool = False) -> PreTrainedTokenizerBase:
    """Loads a tokenizer by Hub id or local folder; makes sure it has an end-of-text and a pad token.

    A new model gets new special tokens where they are missing. With ``fixed_vocabulary`` (fine-tuning a model
    whose embedding has a row for every existing id and no more) no token is added: a missing pad token is the
    end-of-text token (padding is never scored), and a missing end-of-text token is an error.

    Raises ``ValueError`` naming the valid choices when the name is neither a folder nor a reachable Hub id.
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        hint = " (the Hub is switched off here: HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set)" if is_offline() else ""
        raise ValueError(
            f"unknown tokenizer {name_or_path!r}: expected 'bpe', 'char', a local tokenizer folder, or a Hub id "
            f"that can be downloaded now{hint}. Loading it said: {str(error).splitlines()[0]}"
        ) from None
    if fixed_vocabulary:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer {name_or_path!r} has no end-of-text token to separate documents with, and "
                             "a model being fine-tuned has no embedding for a new one")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
    if tokenizer.eos_token is None:
        # Documents must be separated by something; a new special token is safe because the model is new.
        tokenizer.add_special_tokens({"eos_token": EOS_TOKEN})
        logger.info("tokenizer %s had no end-of-text token; added %s", name_or_path, EOS_TOKEN)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return tokenizer


def build_tokenizer(
    kind: str,
    training_texts: Iterable[str],
    vocab_size: int = 16384,
    cache_dir: str | os.PathLike | None = None,
    fixed_vocabulary: bool = False,
) -> PreTrainedTokenizerBase:
    """The tokenizer named by ``kind``: ``"bpe"`` or ``"char"`` (learnt from ``training_texts``), or a pretrained one
    (``fixed_vocabulary``: see :func:`load_pretrained_tokenizer`).

    Learnt tokenizers are cached in ``cache_dir`` under a digest of the training text and settings, so a second
    run (or a second process of a distributed run) loads the very same vocabulary instead of learning it again.
    """
    if kind not in BUILTIN_TOKENIZERS:
        return load_pretrained_tokenizer(kind, fixed_vocabulary)
    texts = list(training_texts)
    if not any(texts):
        raise ValueError("cannot learn a tokenizer from an empty training split")
    folder = None
    if cache_dir is not None:
        folder = Path(cache_dir) / f"{kind}-{vocab_size if kind == 'bpe' else 0}-{_digest(texts)}"
        if (folder / "tokenizer.json").is_file():
            logger.info("loading the %s tokenizer learnt earlier from %s", kind, folder)
            return PreTrainedTokenizerFast.from_pretrained(str(folder))
    tokenizer = train_bpe_tokenizer(texts, vocab_size) if kind == "bpe" else train_char_tokenizer(texts)
    if folder is not None:
        _save_atomically(tokenizer, folder)
    return tokenizer


def tokenizer_digest(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """A short content hash of a fast tokenizer (vocabulary, merges, special tokens), or None for a slow one."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    return hashlib.sha256((backend.to_str() + str(tokenizer.eos_token_id)).encode()).hexdigest()[:16]


def _digest(texts: Iterable[str]) -> str:
    sha = hashlib.sha256()
    for text in texts:
        sha.update(text.encode("utf-8"))
        sha.update(b"\0")  # document boundaries are part of the content
    return sha.hexdigest()[:16]


def _save_atomically(tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """Saves into a staging folder and publishes it whole, so a reader never sees half a tokenizer."""
    try:
        with staged_folder(folder, replace=True) as staging:
            tokenizer.save_pretrained(str(staging))
    except OSError:  # another process won the race and its folder (the same vocabulary) is already in place
        logger.debug("%s was written by another process meanwhile", folder)


def iter_texts(texts: Iterable[str], max_bytes: int | None) -> Iterator[str]:
    """Yields texts until about ``max_bytes`` bytes have gone by (all of them when ``max_bytes`` is None)."""
    seen = 0
    for text in texts:
        yield text
        seen += len(text.encode("utf-8"))
        if max_bytes is not None and seen >= max_bytes:
            return
