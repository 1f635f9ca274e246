"""Probes: labels read off the text are right token by token, a linear probe finds a property that is linearly
present and not one that is absent, and the control is a fresh model of the same shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from configuration_mygpt import MyGPTConfig
from modeling_mygpt import MyGPTForCausalLM
from mygpt.analysis.core import encode_corpus
from mygpt.analysis.probes import (
    corpus_hidden_states,
    probe_accuracy,
    random_model_like,
    run_probes,
    save_probe_report,
    speaker_line_spans,
    text_labels,
)
from mygpt.tokenization import train_bpe_tokenizer, train_char_tokenizer

TINY = """First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

KING RICHARD III:
Now is the winter of our discontent.
"""

GUTENBERG = """Lady Montague.
O, where is Romeo?--saw you him to-day?

Benvolio.
Madam, an hour before the worshipp'd sun

Exit.
Enter Romeo.
"""


def test_speaker_lines_are_found_in_both_play_formats():
    found = [TINY[s:e] for s, e in speaker_line_spans(TINY)]
    assert found == ["First Citizen:", "All:", "KING RICHARD III:"]
    found = [GUTENBERG[s:e] for s, e in speaker_line_spans(GUTENBERG)]
    assert found == ["Lady Montague.", "Benvolio."]  # stage directions are not speakers


def test_labels_are_right_token_by_token():
    tokenizer = train_char_tokenizer([TINY])
    text = "All:\nSpeak, speak.\n"
    labels = text_labels(encode_corpus(tokenizer, text + "\n"))  # one token per character
    assert "".join("1" if v else "0" for v in labels["speaker_line"][: len(text)]) == "1111" + "0" * 15
    # the characters followed by a newline: ':' and the final '.'
    assert [text[i] for i in np.nonzero(labels["next_is_newline"][: len(text)])[0]] == [":", ".", "\n"]
    # word starts: A, S (after newline), s (after space)
    assert [i for i in np.nonzero(labels["starts_word"])[0]] == [0, 5, 12]


def test_word_starts_with_a_bpe_vocabulary_count_the_leading_space_and_a_lone_space_before():
    tokenizer = train_bpe_tokenizer([TINY * 30], vocab_size=300)
    encoded = encode_corpus(tokenizer, "Speak, speak. Now is the winter")
    starts = dict(zip(encoded.tokens, text_labels(encoded)["starts_word"]))
    assert starts["Speak"] == 1 and starts[" speak"] == 1  # at the start, and with its leading space
    assert starts[","] == 0 and starts["."] == 0
    assert starts["is"] == 1  # the space before it became its own token: still a word start
    assert starts["w"] == 0  # the end of "Now", split in two


def test_a_probe_finds_a_linearly_present_property_and_not_an_absent_one():
    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.3).astype(int)
    noise = rng.normal(size=(400, 16))
    present = noise.copy()
    present[:, 3] += 3.0 * labels  # layer 1 carries the label along one direction
    accuracy, balanced = probe_accuracy(np.stack([noise, present]), labels, n_train=280)
    majority = max(labels[280:].mean(), 1 - labels[280:].mean())
    assert accuracy[1] > 0.9 and balanced[1] > 0.9
    assert accuracy[0] < majority + 0.08 and balanced[0] < 0.65


def test_the_control_is_a_fresh_model_of_the_same_shape_and_leaves_the_random_state_alone():
    torch.manual_seed(123)
    model = MyGPTForCausalLM(MyGPTConfig(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                         bos_token_id=None, eos_token_id=None))
    state = torch.random.get_rng_state()
    control = random_model_like(model, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert control.config.to_dict() == model.config.to_dict() and control.config is not model.config
    assert not torch.equal(control.transformer.wte.weight, model.transformer.wte.weight)
    torch.testing.assert_close(random_model_like(model, seed=0).transformer.wte.weight, control.transformer.wte.weight)


def test_hidden_states_cover_a_text_longer_than_the_context():
    tokenizer = train_char_tokenizer([TINY])
    model = MyGPTForCausalLM(MyGPTConfig(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                         bos_token_id=None, eos_token_id=None))
    encoded = encode_corpus(tokenizer, TINY)
    states = corpus_hidden_states(model, encoded.input_ids)
    assert states.shape == (3, len(TINY), 32)


def test_probes_on_a_tiny_model_report_every_layer_and_write_their_files(tmp_path):
    text = (TINY + "\n") * 6
    tokenizer = train_char_tokenizer([text])
    model = MyGPTForCausalLM(MyGPTConfig(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                         bos_token_id=None, eos_token_id=None)).eval()
    result = run_probes(model, encode_corpus(tokenizer, text))
    assert set(result.accuracy) == {"speaker_line", "next_is_newline", "starts_word"}
    for name in result.accuracy:
        assert result.accuracy[name].shape == result.random_accuracy[name].shape == (3,)
        assert 0.0 <= result.accuracy[name].min() and result.accuracy[name].max() <= 1.0
    assert result.n_train + result.n_test == len(text)
    paths = save_probe_report(result, str(tmp_path))
    assert [p.split("/")[-1] for p in paths] == ["probes.png", "probes.csv"]
    assert len((tmp_path / "probes.csv").read_text().splitlines()) == 1 + 3 * 3


def test_probes_need_enough_text():
    tokenizer = train_char_tokenizer([TINY])
    model = MyGPTForCausalLM(MyGPTConfig(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                         bos_token_id=None, eos_token_id=None))
    with pytest.raises(ValueError, match="probes need at least 30"):
        run_probes(model, encode_corpus(tokenizer, "All:\nSpeak."))
