"""Contracts of the hand-written samplers in generation_mygpt.py, checked on logits alone (no model).

- Each sampler keeps exactly the tokens transformers' warper of the same kind keeps, with exactly the same
  probabilities, on random logits with and without ties.
- Sampling from a sampler's output follows the filtered distribution written out from its definition
  (chi-square test with a fixed seed).
- Bad knobs raise ValueError naming the valid range; strategy_generate_kwargs hands generate a consistent set
  of arguments.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import chisquare
from transformers import (
    GenerationConfig,
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from generation_mygpt import (
    KNOBS,
    STRATEGIES,
    STRATEGY_PRESETS,
    GreedyProcessor,
    MinPProcessor,
    RepetitionPenaltyProcessor,
    TemperatureProcessor,
    TopKProcessor,
    TopPProcessor,
    TypicalProcessor,
    make_sampler,
    strategy_generate_kwargs,
)

SEEDS = range(5)
BATCH, VOCAB, SEQ = 6, 257, 12


def random_logits(seed: int, ties: bool) -> torch.Tensor:
    """(B, V) logits. With ties, the values are a handful of integers, so equal logits sit on every boundary;
    one row is entirely tied and one token per row is already filtered (-inf), as after an earlier processor."""
    gen = torch.Generator().manual_seed(seed)
    if ties:
        logits = torch.randint(-3, 4, (BATCH, VOCAB), generator=gen).float()
        logits[0] = 1.0
    else:
        logits = torch.randn(BATCH, VOCAB, generator=gen) * 3
    logits[1:, seed % VOCAB] = -math.inf
    return logits


def random_input_ids(seed: int) -> torch.LongTensor:
    return torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(seed + 100))


def assert_same_scores(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Same kept tokens, same logits for them, hence the same probabilities, bit for bit."""
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs)), "the two keep different tokens"
    assert torch.equal(ours, theirs)
    assert torch.equal(ours.softmax(-1), theirs.softmax(-1))


# (our processor, transformers' processor) built from the same knob value
PAIRS = {
    "temperature": [(TemperatureProcessor(t), TemperatureLogitsWarper(t)) for t in (0.3, 0.7, 1.0, 1.6)],
    "top_k": [(TopKProcessor(k), TopKLogitsWarper(k)) for k in (1, 2, 5, 40, 256, 1000)]
    + [(TopKProcessor(3, min_tokens_to_keep=7), TopKLogitsWarper(3, min_tokens_to_keep=7))],
    "top_p": [(TopPProcessor(p), TopPLogitsWarper(p)) for p in (0.05, 0.5, 0.8, 0.9, 0.95, 1.0)]
    + [(TopPProcessor(0.3, min_tokens_to_keep=4), TopPLogitsWarper(0.3, min_tokens_to_keep=4))],
    "min_p": [(MinPProcessor(p), MinPLogitsWarper(p)) for p in (0.0, 0.02, 0.1, 0.5, 1.0)]
    + [(MinPProcessor(0.9, min_tokens_to_keep=5), MinPLogitsWarper(0.9, min_tokens_to_keep=5))],
    # transformers accepts typical_p only strictly below 1 (generate skips the warper at 1.0)
    "typical": [(TypicalProcessor(p), TypicalLogitsWarper(p)) for p in (0.05, 0.2, 0.5, 0.9, 0.99)]
    + [(TypicalProcessor(0.2, min_tokens_to_keep=3), TypicalLogitsWarper(0.2, min_tokens_to_keep=3))],
    "repetition_penalty": [(RepetitionPenaltyProcessor(r), RepetitionPenaltyLogitsProcessor(r))
                           for r in (0.7, 1.0, 1.2, 2.0)],
}


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("kind", list(PAIRS))
def test_each_sampler_keeps_the_same_tokens_with_the_same_probabilities_as_transformers(kind, ties):
    for seed in SEEDS:
        logits, input_ids = random_logits(seed, ties), random_input_ids(seed)
        for ours, theirs in PAIRS[kind]:
            processed = ours(input_ids, logits.clone())
            assert_same_scores(processed, theirs(input_ids, logits.clone()))
            assert torch.isfinite(processed).any(dim=-1).all(), f"{ours} filtered every token of a row"


def test_top_p_keeps_the_smallest_set_that_reaches_p_on_an_exact_boundary():
    # eight equal logits: every probability is exactly 1/8, so the running masses hit 0.25, 0.5, 0.75 exactly
    logits = torch.zeros(1, 8)
    for top_p, kept in [(0.25, 2), (0.5, 4), (0.75, 6), (0.76, 7), (1.0, 8)]:
        ours = TopPProcessor(top_p)(None, logits)
        assert torch.isfinite(ours).sum().item() == kept
        assert_same_scores(ours, TopPLogitsWarper(top_p)(None, logits))


def test_repetition_penalty_skips_ids_the_head_cannot_produce_like_transformers():
    # an embedding table larger than the output head: ids >= V may be in the prompt but have no logit
    logits, input_ids = random_logits(0, ties=False), random_input_ids(0) % (VOCAB - 1)  # no id V - 1 ...
    input_ids[:, :2] = torch.tensor([VOCAB, VOCAB + 5])  # ... so clamping these onto it would show
    assert_same_scores(RepetitionPenaltyProcessor(1.4)(input_ids, logits),
                       RepetitionPenaltyLogitsProcessor(1.4)(input_ids, logits))


def test_samplers_do_not_modify_their_input():
    logits, input_ids = random_logits(0, ties=True), random_input_ids(0)
    for ours, _ in [pairs[-1] for pairs in PAIRS.values()] + [(GreedyProcessor(), None)]:
        before = logits.clone()
        ours(input_ids, logits)
        assert torch.equal(logits, before), f"{ours} changed its input"


def test_top_k_keeps_exactly_k_tokens_when_there_are_no_ties():
    logits = random_logits(3, ties=False)
    kept = torch.isfinite(TopKProcessor(7)(None, logits)).sum(-1)
    assert kept.tolist() == [7] * BATCH


def test_typical_can_drop_the_most_likely_token():
    # one dominant token and a flat tail: the dominant token's surprisal is far below the entropy
    logits = torch.tensor([[6.0] + [0.0] * 999])
    assert torch.isinf(TypicalProcessor(0.2)(None, logits)[0, 0])


def test_repetition_penalty_ignores_left_padding_like_transformers():
    logits, input_ids = random_logits(1, ties=False), random_input_ids(1)
    padding = torch.tensor([0, 3, 5, 0, 11, 1])
    ours = RepetitionPenaltyProcessor(1.5, prompt_ignore_length=padding)(input_ids, logits)
    assert_same_scores(ours, RepetitionPenaltyLogitsProcessor(1.5, prompt_ignore_length=padding)(input_ids, logits))
    assert_same_scores(RepetitionPenaltyProcessor(1.5, prompt_ignore_length=4)(input_ids, logits),
                       RepetitionPenaltyLogitsProcessor(1.5, prompt_ignore_length=4)(input_ids, logits))


def test_repetition_penalty_follows_generate_repeating_rows_for_num_return_sequences():
    logits, input_ids = random_logits(2, ties=False), random_input_ids(2)  # 6 rows = 3 prompts x 2 samples
    padding = torch.tensor([2, 0, 7])
    ours = RepetitionPenaltyProcessor(1.3, prompt_ignore_length=padding)(input_ids, logits)
    theirs = RepetitionPenaltyLogitsProcessor(1.3, prompt_ignore_length=padding.repeat_interleave(2))
    assert_same_scores(ours, theirs(input_ids, logits))


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_greedy_keeps_only_the_argmax(ties):
    for seed in SEEDS:
        logits = random_logits(seed, ties)
        kept = GreedyProcessor()(None, logits)
        assert torch.isfinite(kept).sum(-1).tolist() == [1] * BATCH
        assert torch.equal(kept.argmax(-1), logits.argmax(-1))  # first index among ties, as torch.argmax
        assert torch.equal(kept.max(-1).values, logits.max(-1).values)


CHAINS = [
    (dict(strategy="top_p", top_p=0.9, temperature=0.8),
     [TemperatureLogitsWarper(0.8), TopPLogitsWarper(0.9)]),
    (dict(strategy="top_k", top_k=20, temperature=1.3, repetition_penalty=1.2),
     [RepetitionPenaltyLogitsProcessor(1.2), TemperatureLogitsWarper(1.3), TopKLogitsWarper(20)]),
    (dict(strategy="top_p", top_p=0.95, top_k=50, min_p=0.05, typical_p=0.9, temperature=0.7),
     [TemperatureLogitsWarper(0.7), TopKLogitsWarper(50), TopPLogitsWarper(0.95), MinPLogitsWarper(0.05),
      TypicalLogitsWarper(0.9)]),
    (dict(strategy="temperature"), [TemperatureLogitsWarper(STRATEGY_PRESETS["temperature"]["temperature"])]),
    (dict(strategy="typical", typical_p=0.5), [TypicalLogitsWarper(0.5)]),
    (dict(strategy="min_p", min_p=0.2, temperature=1.0), [MinPLogitsWarper(0.2)]),
]


@pytest.mark.parametrize("knobs,hf_chain", CHAINS, ids=[str(k) for k, _ in CHAINS])
def test_make_sampler_composes_in_the_same_order_as_transformers(knobs, hf_chain):
    knobs = dict(knobs)
    chain = make_sampler(knobs.pop("strategy"), **knobs)
    for seed in SEEDS:
        for ties in (False, True):
            logits, input_ids = random_logits(seed, ties), random_input_ids(seed)
            assert_same_scores(chain(input_ids, logits), LogitsProcessorList(hf_chain)(input_ids, logits))


def test_greedy_chain_with_repetition_penalty_takes_the_argmax_of_the_penalised_logits():
    logits, input_ids = random_logits(4, ties=False), random_input_ids(4)
    chain = make_sampler("greedy", repetition_penalty=1.5)
    expected = RepetitionPenaltyLogitsProcessor(1.5)(input_ids, logits).argmax(-1)
    assert torch.equal(chain(input_ids, logits).argmax(-1), expected)


# --- sampling follows the filtered distribution -------------------------------------------------------------
# A fixed small distribution and, for each sampler, the distribution it should leave, worked out by hand from
# the definitions (not from the code under test).
BASE = [0.30, 0.22, 0.16, 0.12, 0.08, 0.06, 0.04, 0.02]


def _normalise(weights: list[float]) -> list[float]:
    total = sum(weights)
    return [w / total for w in weights]


def _typical_expected(probs: list[float], mass: float) -> list[float]:
    entropy = -sum(p * math.log(p) for p in probs)
    order = sorted(range(len(probs)), key=lambda i: abs(-math.log(probs[i]) - entropy))
    kept, total = set(), 0.0
    for i in order:
        kept.add(i)
        total += probs[i]
        if total >= mass:
            break
    return _normalise([p if i in kept else 0.0 for i, p in enumerate(probs)])


EXPECTED = {
    "temperature=0.5": (TemperatureProcessor(0.5), _normalise([p ** 2 for p in BASE])),  # p^(1/T)
    "temperature=2": (TemperatureProcessor(2.0), _normalise([p ** 0.5 for p in BASE])),
    "top_k=3": (TopKProcessor(3), _normalise(BASE[:3] + [0] * 5)),
    # smallest most-likely set reaching 0.6: 0.30 + 0.22 + 0.16 = 0.68
    "top_p=0.6": (TopPProcessor(0.6), _normalise(BASE[:3] + [0] * 5)),
    # threshold 0.25 * 0.30 = 0.075 keeps 0.30 ... 0.08
    "min_p=0.25": (MinPProcessor(0.25), _normalise(BASE[:5] + [0] * 3)),
    "typical_p=0.5": (TypicalProcessor(0.5), _typical_expected(BASE, 0.5)),
    "greedy": (GreedyProcessor(), [1.0] + [0.0] * 7),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_sampling_frequencies_match_the_filtered_distribution(name):
    sampler, expected = EXPECTED[name]
    logits = torch.tensor(BASE).log()[None, :]  # (1, 8)
    probs = sampler(None, logits).softmax(-1)  # what generate draws from
    draws = torch.multinomial(probs.expand(20_000, -1), 1, generator=torch.Generator().manual_seed(0)).view(-1)
    counts = torch.bincount(draws, minlength=len(BASE)).tolist()

    never = [i for i, p in enumerate(expected) if p == 0]
    assert all(counts[i] == 0 for i in never), f"filtered tokens were drawn: {counts}"
    support = [i for i, p in enumerate(expected) if p > 0]
    if len(support) > 1:
        observed = [counts[i] for i in support]
        predicted = [expected[i] * sum(observed) for i in support]
        p_value = chisquare(observed, predicted).pvalue
        assert p_value > 0.001, f"counts {counts} do not follow {expected} (p={p_value:.2g})"


def test_chi_square_test_notices_a_wrong_distribution():
    """The frequency test has power: top-k=3 draws are rejected as draws from top-k=4."""
    probs = TopKProcessor(3)(None, torch.tensor(BASE).log()[None, :]).softmax(-1)
    draws = torch.multinomial(probs.expand(20_000, -1), 1, generator=torch.Generator().manual_seed(0)).view(-1)
    observed = torch.bincount(draws, minlength=8).tolist()[:4]
    wrong = _normalise(BASE[:4])
    assert chisquare(observed, [w * sum(observed) for w in wrong]).pvalue < 1e-6


# --- knob validation -------------------------------------------------------------------------------------------

BAD_KNOBS = [
    (TemperatureProcessor, 0.0, r"\(0, inf\)"), (TemperatureProcessor, -1.0, r"\(0, inf\)"),
    (TemperatureProcessor, float("nan"), r"\(0, inf\)"), (TemperatureProcessor, "hot", r"\(0, inf\)"),
    (TopKProcessor, 0, ">= 1"), (TopKProcessor, 2.5, ">= 1"), (TopKProcessor, True, ">= 1"),
    (TopPProcessor, 0.0, r"\(0, 1\]"), (TopPProcessor, 1.01, r"\(0, 1\]"), (TopPProcessor, -0.5, r"\(0, 1\]"),
    (MinPProcessor, -0.01, r"\[0, 1\]"), (MinPProcessor, 1.5, r"\[0, 1\]"),
    (TypicalProcessor, 0.0, r"\(0, 1\]"), (TypicalProcessor, 2.0, r"\(0, 1\]"),
    (RepetitionPenaltyProcessor, 0.0, r"\(0, inf\)"), (RepetitionPenaltyProcessor, float("inf"), r"\(0, inf\)"),
]


@pytest.mark.parametrize("cls,value,valid_range", BAD_KNOBS, ids=[f"{c.__name__}={v!r}" for c, v, _ in BAD_KNOBS])
def test_invalid_knob_raises_value_error_naming_the_valid_range(cls, value, valid_range):
    with pytest.raises(ValueError, match=valid_range):
        cls(value)


def test_make_sampler_rejects_unknown_strategy_unknown_knob_and_knobs_greedy_cannot_use():
    with pytest.raises(ValueError, match="valid strategies: greedy, temperature"):
        make_sampler("beam")
    with pytest.raises(ValueError, match="unknown sampling knob.*top_q.*valid knobs"):
        make_sampler("top_p", top_q=0.9)
    with pytest.raises(ValueError, match="greedy accepts only repetition_penalty"):
        make_sampler("greedy", temperature=0.7)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        make_sampler("top_p", top_p=0)


def test_every_strategy_has_a_preset_that_builds():
    assert set(STRATEGY_PRESETS) == set(STRATEGIES)
    for strategy, preset in STRATEGY_PRESETS.items():
        assert set(preset) <= set(KNOBS)
        assert len(make_sampler(strategy, **preset)) >= 1


def test_missing_strategy_knob_comes_from_the_preset_and_none_means_not_given():
    chain = make_sampler("top_p", temperature=None, top_k=None)
    assert [type(p) for p in chain] == [TopPProcessor]
    assert chain[0].top_p == STRATEGY_PRESETS["top_p"]["top_p"]


# --- strategy_generate_kwargs ------------------------------------------------------------------------------------

def test_strategy_generate_kwargs_moves_our_knobs_into_the_chain_and_silences_transformers_warpers():
    user_processor = TemperatureLogitsWarper(0.5)
    given = {"max_new_tokens": 5, "top_p": 0.8, "temperature": 0.7, "logits_processor": [user_processor]}
    kwargs = strategy_generate_kwargs("top_p", given)
    assert given["top_p"] == 0.8 and given["logits_processor"] == [user_processor], "input dict was modified"
    assert kwargs["max_new_tokens"] == 5 and kwargs["do_sample"] is True
    chain = kwargs["logits_processor"]
    assert chain[0] is user_processor, "the caller's processors run first"
    assert [type(p) for p in chain[1:]] == [TemperatureProcessor, TopPProcessor]
    assert chain[2].top_p == 0.8
    # the values for which transformers' _get_logits_processor adds no warper of its own
    assert kwargs["top_k"] is None and kwargs["temperature"] == 1.0 and kwargs["top_p"] == 1.0
    assert kwargs["min_p"] is None and kwargs["typical_p"] == 1.0 and kwargs["repetition_penalty"] == 1.0
    assert GenerationConfig(**{k: v for k, v in kwargs.items() if k != "logits_processor"}).do_sample is True


def test_strategy_generate_kwargs_greedy_turns_sampling_off():
    kwargs = strategy_generate_kwargs("greedy", {"repetition_penalty": 1.3})
    assert kwargs["do_sample"] is False
    assert [type(p) for p in kwargs["logits_processor"]] == [RepetitionPenaltyProcessor, GreedyProcessor]


def test_strategy_generate_kwargs_passes_left_padding_to_the_repetition_penalty():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1]])
    kwargs = strategy_generate_kwargs("top_k", {"repetition_penalty": 1.2, "attention_mask": mask})
    assert kwargs["logits_processor"][0].prompt_ignore_length.tolist() == [2, 0, 1]


def test_strategy_generate_kwargs_sets_knobs_on_a_copy_of_a_given_generation_config():
    config = GenerationConfig(do_sample=False, top_k=10, temperature=0.3, max_new_tokens=7)
    kwargs = strategy_generate_kwargs("min_p", {"generation_config": config, "min_p": 0.2})
    new = kwargs["generation_config"]
    assert new is not config and config.top_k == 10, "the caller's config was modified"
    assert new.do_sample is True and new.top_k is None and new.temperature == 1.0 and new.max_new_tokens == 7
    assert "do_sample" not in kwargs and "top_k" not in kwargs


def test_strategy_generate_kwargs_rejects_contradictions():
    with pytest.raises(ValueError, match="contradicts strategy='greedy'"):
        strategy_generate_kwargs("greedy", {"do_sample": True})
    with pytest.raises(ValueError, match="contradicts strategy='top_p'"):
        strategy_generate_kwargs("top_p", {"do_sample": False})
    with pytest.raises(ValueError, match="beam search"):
        strategy_generate_kwargs("top_k", {"num_beams": 4})
    assert strategy_generate_kwargs("top_k", {"do_sample": True})["do_sample"] is True
