"""Fine-tuning with --init_from: a run starts from the named checkpoint's weights and tokenizer (a local folder
stands in for a Hub id such as gpt2), with either architecture; impossible combinations are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from modeling_mygpt import MyGPTForCausalLM
from mygpt.tokenization import train_char_tokenizer
from mygpt.train_run import run_training
from tests.tiny_runs import run_args
from tests.tiny_runs import corpus_dir, one_thread, private_cache  # noqa: F401 (fixtures)

# A learning rate of 1e-12: the optimiser moves no weight measurably (decoupled weight decay is scaled by the rate
# too), so the trained model must compute what the checkpoint computes; that proves the weights were loaded.
FROZEN = ["--max_steps", "2", "--eval_steps", "2", "--save_steps", "2", "--learning_rate", "1e-12",
          "--warmup_steps", "0"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, corpus_dir) -> Path:
    """A tiny GPT-2 checkpoint and its character tokenizer in one folder, as on the Hub."""
    folder = tmp_path_factory.mktemp("pretrained-gpt2")
    text = "".join(path.read_text() for path in sorted(Path(corpus_dir).glob("*.txt")))
    tokenizer = train_char_tokenizer([text])
    tokenizer.pad_token = None  # as GPT-2's: an end-of-text token and no pad token
    tokenizer.save_pretrained(folder)
    torch.manual_seed(7)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def _without(args: list[str], *names: str) -> list[str]:
    """``args`` with the flags ``names`` and their values removed."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        else:
            out.append(arg)
    return out


def _args(corpus: Path, out: Path, source: Path, *extra: str) -> list[str]:
    # the network's and the tokenizer's flags come from the checkpoint
    base = _without(run_args(corpus, out), "--n_layer", "--n_head", "--n_embd", "--tokenizer")
    return [*base, "--init_from", str(source), *FROZEN, *extra]


@pytest.mark.parametrize("architecture", ["gpt2", "mygpt"])
def test_a_run_starts_from_the_checkpoints_weights_and_tokenizer(corpus_dir, pretrained, tmp_path, architecture):
    summary = run_training(_args(corpus_dir, tmp_path / "run", pretrained, "--architecture", architecture))
    assert summary["model"]["arguments"]["init_from"] == str(pretrained)
    source = GPT2LMHeadModel.from_pretrained(pretrained).eval()
    trained_class = GPT2LMHeadModel if architecture == "gpt2" else MyGPTForCausalLM
    trained = trained_class.from_pretrained(tmp_path / "run").eval()
    assert trained.config.n_layer == 2 and trained.config.n_embd == 32  # the checkpoint's shape, not TINY's
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "run")
    assert tokenizer.get_vocab() == AutoTokenizer.from_pretrained(pretrained).get_vocab()  # nothing added
    assert tokenizer.pad_token == tokenizer.eos_token  # padding borrows the end-of-text id
    ids = torch.randint(0, source.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(trained(input_ids=ids).logits, source(input_ids=ids).logits, rtol=1e-5,
                                   atol=1e-5)


def test_fine_tuning_moves_the_weights_when_the_rate_is_not_zero(corpus_dir, pretrained, tmp_path):
    run_training([*_args(corpus_dir, tmp_path / "run", pretrained), "--learning_rate", "1e-2"])
    source = GPT2LMHeadModel.from_pretrained(pretrained)
    trained = MyGPTForCausalLM.from_pretrained(tmp_path / "run")
    assert not torch.equal(trained.transformer.h[0].mlp.c_fc.weight.T, source.transformer.h[0].mlp.c_fc.weight)


def test_impossible_fine_tuning_is_refused_by_name(corpus_dir, pretrained, tmp_path):
    with pytest.raises(ValueError, match="comes with its own tokenizer"):
        run_training([*_args(corpus_dir, tmp_path / "a", pretrained), "--tokenizer", "char"])
    with pytest.raises(ValueError, match="attends over 64 positions, fewer than the context 128"):
        run_training([*_args(corpus_dir, tmp_path / "b", pretrained), "--block_size", "128"])
    with pytest.raises(ValueError, match="cannot read its configuration"):
        run_training(_args(corpus_dir, tmp_path / "c", tmp_path / "missing"))
    assert not any((tmp_path / name).exists() for name in "abc")  # nothing written for a refused run
