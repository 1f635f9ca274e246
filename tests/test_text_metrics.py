"""Contracts of mygpt.text_metrics: each figure against a value computed by hand."""

from __future__ import annotations

import math
import random

import pytest

from mygpt.text_metrics import (
    bits_per_byte,
    bits_per_char,
    distinct_n,
    ngrams,
    perplexity,
    repeated_ngram_rate,
    self_bleu,
    sentence_bleu,
    word_tokenize,
)

LN2 = math.log(2)


# ---------------------------------------------------------------- information rates


def test_bits_per_byte_is_summed_nats_over_bytes_times_ln2():
    assert bits_per_byte(1000.0, 500) == pytest.approx(1000.0 / (500 * LN2), rel=1e-15)
    # A model that spends exactly ln 2 nats per byte spends one bit per byte.
    assert bits_per_byte(8 * LN2, 8) == pytest.approx(1.0, rel=1e-15)


def test_bits_per_char_counts_characters_not_bytes():
    text = "café ☕"  # 6 characters, 9 UTF-8 bytes (é takes 2, ☕ takes 3)
    n_chars, n_bytes = len(text), len(text.encode("utf-8"))
    assert (n_chars, n_bytes) == (6, 9)
    nats = 12.0
    assert bits_per_char(nats, n_chars) == pytest.approx(12.0 / (6 * LN2))
    assert bits_per_byte(nats, n_bytes) == pytest.approx(12.0 / (9 * LN2))


def test_perplexity_is_exp_of_mean_nats_per_token():
    assert perplexity(30.0, 10) == pytest.approx(math.exp(3.0))
    assert perplexity(0.0, 5) == 1.0
    # A uniform guess over V tokens has perplexity V.
    assert perplexity(7 * math.log(50), 7) == pytest.approx(50.0)
    assert perplexity(1e6, 1) == math.inf


@pytest.mark.parametrize(
    "call",
    [
        lambda: bits_per_byte(1.0, 0),
        lambda: bits_per_byte(-1.0, 4),
        lambda: bits_per_byte(float("nan"), 4),
        lambda: bits_per_char(1.0, -3),
        lambda: perplexity(1.0, 0),
        lambda: perplexity(1.0, 2.5),
    ],
)
def test_information_rates_reject_impossible_counts(call):
    with pytest.raises(ValueError, match="must be"):
        call()


# ---------------------------------------------------------------- tokenisation


def test_word_tokenize_splits_words_and_punctuation_keeping_case():
    assert word_tokenize("Hark! Who's there?") == ["Hark", "!", "Who", "'", "s", "there", "?"]
    assert word_tokenize("  ") == []
    assert ngrams(["a", "b", "c"], 2) == [("a", "b"), ("b", "c")]
    assert ngrams(["a"], 2) == []


# ---------------------------------------------------------------- diversity


def test_distinct_n_on_a_known_text():
    # 6 words, "the" twice: 5 distinct unigrams; all 5 bigrams distinct.
    text = "the cat sat on the mat"
    assert distinct_n([text], 1) == pytest.approx(5 / 6)
    assert distinct_n([text], 2) == 1.0


def test_distinct_n_pools_ngrams_over_texts_without_crossing_boundaries():
    # 4 bigrams in all ("a b" twice, "b c", "c d"); no bigram "b c" is formed across the two texts.
    assert distinct_n(["a b", "a b c d"], 2) == pytest.approx(3 / 4)
    assert distinct_n(["a b", "b c"], 2) == 1.0
    assert distinct_n(["a", "b"], 2) == 0.0  # no bigram at all


def test_repeated_ngram_rate_counts_repeats_within_each_text():
    # "a b", "b a", "a b", "b a": the 2nd "a b" and 2nd "b a" repeat -> 2 of 4.
    assert repeated_ngram_rate(["a b a b a"], 2) == pytest.approx(0.5)
    # The same bigram in two different texts is not a repeat (that is distinct-n's job).
    assert repeated_ngram_rate(["a b", "a b"], 2) == 0.0
    # Pooled: 2 repeats out of 4 + 2 bigrams.
    assert repeated_ngram_rate(["a b a b a", "x y z"], 2) == pytest.approx(2 / 6)


def test_self_bleu_of_identical_texts_is_one():
    assert self_bleu(["to be or not to be , that is the question"] * 4) == pytest.approx(1.0)
    assert self_bleu(["short", "short"]) == pytest.approx(1.0)  # shorter than max_n words


def test_self_bleu_of_texts_sharing_no_word_is_zero():
    assert self_bleu(["alpha beta gamma delta", "one two three four", "x y z w"]) == 0.0


def test_sentence_bleu_matches_a_hand_computation():
    hyp = word_tokenize("the cat sat on the mat")
    ref = word_tokenize("the cat sat on a mat")
    # p1: "the" clipped to 1 + cat, sat, on, mat = 5/6; p2: 3 of 5 bigrams, smoothed (3+1)/(5+1);
    # p3: 2 of 4 -> 3/5; p4: 1 of 3 -> 2/4. Equal lengths: no brevity penalty.
    expected = (5 / 6 * 4 / 6 * 3 / 5 * 2 / 4) ** 0.25
    assert sentence_bleu(hyp, [ref]) == pytest.approx(expected, rel=1e-12)
    # Both directions give the same score here, so self-BLEU of the pair is that value too.
    assert self_bleu(["the cat sat on the mat", "the cat sat on a mat"]) == pytest.approx(expected, rel=1e-12)


def test_sentence_bleu_brevity_penalty_and_clipping():
    # Perfect precision but 4 words against 6: BP = exp(1 - 6/4).
    assert sentence_bleu(list("abcd"), [list("abcdef")]) == pytest.approx(math.exp(1 - 6 / 4))
    # Clipping: "the" four times against a reference holding it once -> p1 = 1/4 (longer than ref: BP = 1).
    assert sentence_bleu(["the"] * 4, [["the", "cat"]], max_n=1) == pytest.approx(0.25)
    # Closest reference length decides the penalty: refs of 3 and 8 words, hypothesis of 4 -> r = 3, BP = 1.
    assert sentence_bleu(list("abcd"), [list("abc"), list("abcdxxxx")], max_n=1) == pytest.approx(1.0)


def test_sentence_bleu_agrees_with_nltk_method2_on_texts_of_at_least_max_n_words():
    from nltk.translate import bleu_score as nltk_bleu  # a dev dependency (setup.cfg): missing it fails, not skips
    smoothing = nltk_bleu.SmoothingFunction().method2
    rng = random.Random(0)
    vocab = list("abcdef")
    for _ in range(300):
        hyp = [rng.choice(vocab) for _ in range(rng.randint(4, 12))]
        refs = [[rng.choice(vocab) for _ in range(rng.randint(1, 12))] for _ in range(rng.randint(1, 4))]
        ours = sentence_bleu(hyp, refs)
        theirs = nltk_bleu.sentence_bleu(refs, hyp, smoothing_function=smoothing)
        assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15), (hyp, refs)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: self_bleu(["only one"]), "at least 2"),
        (lambda: self_bleu("a string"), "sequence of strings"),
        (lambda: distinct_n([], 2), "at least 1"),
        (lambda: distinct_n(["a b"], 0), "n must be"),
        (lambda: repeated_ngram_rate([1, 2], 1), r"texts\[0\] must be a str"),
        (lambda: sentence_bleu(["a"], []), "at least one reference"),
    ],
)
def test_diversity_metrics_reject_bad_input_with_a_clear_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------- the evaluate modules in mygpt/metrics

GENERATIONS = [
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer",
    "To be, or not to be; the slings and arrows, the slings and arrows of outrageous fortune",
    "Now is the winter of our discontent made glorious summer by this sun of York",
    "O Romeo, Romeo, wherefore art thou Romeo? Deny thy father and refuse thy name",
]


def test_every_metric_folder_loads_offline_with_evaluate_load():
    from mygpt.metrics import METRIC_NAMES, METRICS_DIR, load_metric

    found = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
    assert found == sorted(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert load_metric(name).name == name


def test_an_unknown_metric_name_is_a_clear_error():
    from mygpt.metrics import metric_path

    with pytest.raises(ValueError, match="unknown metric 'bleu'.*self_bleu"):
        metric_path("bleu")


def test_evaluate_modules_give_the_plain_functions_results():
    from mygpt.metrics import load_metric

    assert load_metric("self_bleu").compute(predictions=GENERATIONS) == {"self_bleu": self_bleu(GENERATIONS)}
    assert load_metric("self_bleu").compute(predictions=GENERATIONS, max_n=2) == {
        "self_bleu": self_bleu(GENERATIONS, max_n=2)
    }
    assert load_metric("distinct_n").compute(predictions=GENERATIONS, n=[1, 2, 3]) == {
        f"distinct_{n}": distinct_n(GENERATIONS, n) for n in (1, 2, 3)
    }
    assert load_metric("repeated_ngram_rate").compute(predictions=GENERATIONS, n=2) == {
        "repeated_2gram_rate": repeated_ngram_rate(GENERATIONS, 2)
    }
    rows = {"total_nats": [100.0, 250.5], "n_tokens": [40, 90], "n_chars": [160, 400], "n_bytes": [170, 400]}
    result = load_metric("bits_per_byte").compute(**rows)
    assert result["bits_per_byte"] == bits_per_byte(350.5, 570)
    assert result["bits_per_char"] == bits_per_char(350.5, 560)
    assert result["perplexity"] == perplexity(350.5, 130)
    assert (result["n_tokens"], result["n_chars"], result["n_bytes"]) == (130, 560, 570)


def test_evaluate_modules_agree_with_hand_computed_values():
    from mygpt.metrics import load_metric

    text = "the cat sat on the mat"
    assert load_metric("self_bleu").compute(predictions=[text] * 3)["self_bleu"] == pytest.approx(1.0)
    assert load_metric("distinct_n").compute(predictions=[text], n=1)["distinct_1"] == pytest.approx(5 / 6)
    bpb = load_metric("bits_per_byte").compute(total_nats=[8 * LN2], n_tokens=[2], n_chars=[8], n_bytes=[8])
    assert bpb["bits_per_byte"] == pytest.approx(1.0)
