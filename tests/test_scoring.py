"""Contracts of mygpt.scoring: sliding-window scoring counts every token once and matches HF's perplexity guide."""

from __future__ import annotations

import math

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from mygpt.scoring import (
    TextScore,
    row_nats,
    score_continuations,
    score_text,
    score_texts,
    score_token_ids,
    sliding_windows,
    token_nats,
)

CORPUS = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n"
    "First Citizen:\nFirst, you know Caius Marcius is chief enemy to the people.\n\n"
    "All:\nWe know't, we know't.\n\nFirst Citizen:\nLet us kill him, and we'll have corn at our own price.\n"
) * 3


def train_tokenizer(text: str, vocab_size: int = 300, special: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on ``text`` (with ``<|endoftext|>`` as BOS/EOS unless ``special`` is False)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"] if special else [],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer)
    if special:
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    return PreTrainedTokenizerFast(tokenizer_object=tok)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer(CORPUS)


@pytest.fixture(scope="module")
def model(tokenizer) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config).eval()


def hf_guide_total_nats(model, ids: torch.Tensor, window: int, stride: int) -> tuple[float, int]:
    """HF's perplexity guide, written as in the guide (labels with -100, the model's own mean loss),
    except that the tokens in each loss are counted after the model's internal shift."""
    seq_len = ids.shape[1]
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, seq_len, stride):
        end = min(begin + window, seq_len)
        trg_len = end - prev_end
        input_ids = ids[:, begin:end]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids).loss
        counted = int((target_ids[:, 1:] != -100).sum())
        nll_sum += float(loss) * counted
        n_tokens += counted
        prev_end = end
        if end == seq_len:
            break
    return nll_sum, n_tokens


# ---------------------------------------------------------------- windows


@pytest.mark.parametrize(
    "n_tokens, window, stride", [(2, 8, 4), (8, 8, 7), (9, 8, 7), (100, 8, 3), (100, 16, 15), (57, 10, 1)]
)
def test_sliding_windows_score_every_position_but_the_first_exactly_once(n_tokens, window, stride):
    windows = sliding_windows(n_tokens, window, stride)
    targets = [t for w in windows for t in range(w.first_target, w.end)]
    assert targets == list(range(1, n_tokens))
    for i, w in enumerate(windows):
        assert w.end - w.begin <= window
        if i > 0:  # after the first window, every scored token has at least window - stride tokens of context
            assert w.first_target - w.begin >= window - stride


@pytest.mark.parametrize("window, stride", [(1, 1), (8, 0), (8, 8), (8, 9)])
def test_sliding_windows_reject_a_window_or_stride_that_would_skip_tokens(window, stride):
    with pytest.raises(ValueError, match="window|stride"):
        sliding_windows(50, window, stride)


# ---------------------------------------------------------------- against references


def test_sliding_window_equals_full_context_on_a_text_shorter_than_the_window(model, tokenizer):
    text = "First Citizen:\nSpeak, speak."
    ids = [tokenizer.eos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) < model.config.n_positions
    with torch.no_grad():
        full = model(torch.tensor([ids]), labels=torch.tensor([ids]))
    for stride in (1, 5, 16, 31):
        score = score_text(model, tokenizer, text, stride=stride)
        assert score.n_tokens == len(ids) - 1
        assert score.total_nats == pytest.approx(float(full.loss) * (len(ids) - 1), rel=1e-5)
        assert score.perplexity == pytest.approx(math.exp(float(full.loss)), rel=1e-5)


@pytest.mark.parametrize("window, stride", [(32, 16), (32, 31), (12, 5), (8, 1)])
def test_matches_the_hf_perplexity_guide_loop_on_a_long_text(model, tokenizer, window, stride):
    text = CORPUS[:350]
    ids = [tokenizer.eos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > 3 * window
    reference_nats, reference_tokens = hf_guide_total_nats(model, torch.tensor([ids]), window, stride)
    score = score_text(model, tokenizer, text, window=window, stride=stride)
    assert score.n_tokens == reference_tokens == len(ids) - 1
    assert score.total_nats == pytest.approx(reference_nats, rel=1e-5)


def test_each_token_is_scored_with_exactly_its_window_as_context(model, tokenizer):
    ids = torch.tensor([0] + tokenizer(CORPUS[:300], add_special_tokens=False)["input_ids"])
    window, stride = 16, 6
    nats, _ = score_token_ids(model, ids, window=window, stride=stride)
    for w in sliding_windows(len(ids), window, stride):
        for target in (w.first_target, w.end - 1):  # first and last new token of each window
            with torch.no_grad():
                logits = model(ids[None, w.begin : target]).logits[0, -1]  # (V,) context = window start .. target-1
            expected = -torch.log_softmax(logits.double(), -1)[ids[target]]
            assert nats[target - 1] == pytest.approx(float(expected), rel=1e-4)


def test_more_context_per_prediction_never_changes_the_first_window(model, tokenizer):
    """Consistency between strides: the first window's tokens are scored identically; the token count is the same."""
    ids = [0] + tokenizer(CORPUS[:600], add_special_tokens=False)["input_ids"]
    results = {s: score_token_ids(model, ids, window=32, stride=s) for s in (4, 16, 31)}
    first_window = results[31][0][:31]
    for nats, score in results.values():
        assert score.n_tokens == len(ids) - 1
        torch.testing.assert_close(nats[:31], first_window)
    # Smaller strides feed more tokens through the model for the same predictions: the cost of more context.
    assert results[4][1].n_forward_tokens > results[16][1].n_forward_tokens > results[31][1].n_forward_tokens


def test_batching_windows_does_not_change_the_scores(model, tokenizer):
    ids = [0] + tokenizer(CORPUS[:600], add_special_tokens=False)["input_ids"]
    one, _ = score_token_ids(model, ids, window=32, stride=8, batch_size=1)
    many, _ = score_token_ids(model, ids, window=32, stride=8, batch_size=7)
    torch.testing.assert_close(one, many, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- counts


def test_every_character_and_byte_is_counted_when_a_start_token_exists(model, tokenizer):
    text = "Speak, speak — café ☕."
    score = score_text(model, tokenizer, text)
    assert score.n_chars == len(text)
    assert score.n_bytes == len(text.encode("utf-8"))
    assert score.n_tokens == len(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert score.unscored_chars == 0
    assert score.bits_per_byte == pytest.approx(score.total_nats / (score.n_bytes * math.log(2)))
    assert score.chars_per_token == pytest.approx(len(text) / score.n_tokens)


def test_without_a_start_token_the_first_tokens_characters_are_left_out(model):
    tokenizer = train_tokenizer(CORPUS, special=False)
    assert tokenizer.bos_token_id is None and tokenizer.eos_token_id is None
    text = "First Citizen:\nSpeak."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    first = tokenizer.decode(ids[:1])
    score = score_text(model, tokenizer, text)
    assert score.n_tokens == len(ids) - 1
    assert score.unscored_chars == len(first) > 0
    assert score.n_chars == len(text) - len(first)


def test_several_texts_are_scored_separately_and_added(model, tokenizer):
    a, b = CORPUS[:250], CORPUS[250:420]
    both = score_texts(model, tokenizer, [a, "", b], window=32, stride=16)
    sa = score_text(model, tokenizer, a, window=32, stride=16)
    sb = score_text(model, tokenizer, b, window=32, stride=16)
    assert both.n_texts == 2
    assert both.n_tokens == sa.n_tokens + sb.n_tokens
    assert both.n_bytes == sa.n_bytes + sb.n_bytes
    assert both.total_nats == pytest.approx(sa.total_nats + sb.total_nats)
    pairs = zip(sa.predictions_by_position, sb.predictions_by_position)
    assert both.predictions_by_position == [x + y for x, y in pairs]


def test_loss_by_position_averages_every_prediction_of_every_window(model, tokenizer):
    ids = [0] + tokenizer(CORPUS[:500], add_special_tokens=False)["input_ids"]
    window = 16
    nats, score = score_token_ids(model, ids, window=window, stride=window - 1)  # disjoint windows
    windows = sliding_windows(len(ids), window, window - 1)
    # Disjoint windows: each prediction is counted once, at its position in its window.
    expected_sum = [0.0] * window
    expected_count = [0] * window
    for w in windows:
        for target in range(w.begin + 1, w.end):
            expected_sum[target - w.begin] += float(nats[target - 1])
            expected_count[target - w.begin] += 1
    assert score.predictions_by_position == expected_count
    assert score.nats_by_position == pytest.approx(expected_sum, rel=1e-9)
    curve = score.loss_by_position()
    assert [p for p, _, _ in curve] == list(range(1, window))
    assert curve[0][1] == pytest.approx(expected_sum[1] / expected_count[1])


def test_score_to_dict_holds_every_figure(model, tokenizer):
    figures = score_text(model, tokenizer, CORPUS[:200]).to_dict()
    keys = ("bits_per_byte", "bits_per_char", "perplexity", "n_tokens", "n_bytes", "chars_per_token", "window",
            "stride")
    for key in keys:
        assert key in figures
    assert len(figures["loss_by_position"]["mean_nats"]) == len(figures["loss_by_position"]["context_length"])


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_an_empty_text_is_a_clear_error(model, tokenizer, text):
    with pytest.raises(ValueError, match="empty"):
        score_text(model, tokenizer, text)
    with pytest.raises(ValueError, match="empty"):
        score_texts(model, tokenizer, [text, text])


def test_a_window_longer_than_the_model_context_is_a_clear_error(model, tokenizer):
    with pytest.raises(ValueError, match="context length 32"):
        score_text(model, tokenizer, CORPUS[:100], window=64)
    with pytest.raises(ValueError, match="stride"):
        score_texts(model, tokenizer, [CORPUS[:100]], window=16, stride=16)


def test_scores_with_different_windows_cannot_be_added():
    with pytest.raises(ValueError, match="window/stride"):
        TextScore(window=8, stride=4).add(TextScore(window=16, stride=8))


# ---------------------------------------------------------------- the evaluate module and the loader


def test_sliding_window_perplexity_module_gives_score_texts_result(model, tokenizer, tmp_path):
    from mygpt.metrics import load_metric

    texts = [CORPUS[:300], CORPUS[300:500]]
    expected = score_texts(model, tokenizer, texts, window=16, stride=8).to_dict()
    metric = load_metric("sliding_window_perplexity")
    assert metric.compute(predictions=texts, model=model, tokenizer=tokenizer, window=16, stride=8) == expected
    # The same through a saved folder, loaded by id.
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    by_path = metric.compute(predictions=texts, model_id=str(tmp_path), window=16, stride=8)
    assert by_path["total_nats"] == pytest.approx(expected["total_nats"], rel=1e-6)
    assert by_path["n_tokens"] == expected["n_tokens"]


def test_mygpt_with_gpt2_weights_gets_gpt2s_bits_per_byte(model, tokenizer):
    """The scoring treats both implementations alike: the same weights give the same figures."""
    from modeling_mygpt import MyGPTForCausalLM

    mygpt = MyGPTForCausalLM.from_gpt2(model).eval()
    texts = [CORPUS[:300], CORPUS[300:450]]
    ours = score_texts(mygpt, tokenizer, texts, window=32, stride=8)
    reference = score_texts(model, tokenizer, texts, window=32, stride=8)
    assert ours.n_tokens == reference.n_tokens
    assert ours.bits_per_byte == pytest.approx(reference.bits_per_byte, rel=1e-5)
    assert ours.nats_by_position == pytest.approx(reference.nats_by_position, rel=1e-4)


# ---------------------------------------------------------------- the one token-scoring function


def test_token_nats_is_each_next_token_loss_and_skips_unscored_labels():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11)
    labels = torch.randint(0, 11, (3, 7))
    labels[1, :4] = -100  # a row partly unscored
    labels[2] = -100  # a row with nothing to score
    nats = token_nats(logits, labels)
    assert nats.shape == (3, 7)
    for row in range(3):
        for t in range(7):
            scored = t < 6 and labels[row, t + 1] != -100
            expected = -torch.log_softmax(logits[row, t], -1)[labels[row, t + 1]].item() if scored else 0.0
            assert nats[row, t].item() == pytest.approx(expected, abs=1e-5)
    sums = row_nats(logits, labels)
    assert sums.dtype == torch.float64 and sums[:, 1].tolist() == [6, 3, 0]
    torch.testing.assert_close(sums[:, 0], nats.double().sum(1))


def test_token_nats_equals_the_models_own_loss(model, tokenizer):
    ids = torch.tensor([([0] + tokenizer(CORPUS[:200], add_special_tokens=False)["input_ids"])[:32]])
    with torch.no_grad():
        out = model(ids, labels=ids)
    sums = row_nats(out.logits, ids)
    assert float(sums[0, 0] / sums[0, 1]) == pytest.approx(float(out.loss), rel=1e-5)


def test_score_continuations_counts_only_the_targets_and_keeps_the_last_tokens_of_a_long_row(model):
    rows = [([1, 2, 3], [4, 5]), ([7], [8, 9, 10, 11]), ([1], [])]
    total, count = score_continuations(model, rows)
    expected = 0.0
    for context, target in rows[:2]:
        seq = torch.tensor([context + target])
        with torch.no_grad():
            log_probs = torch.log_softmax(model(seq).logits[0], -1)
        for i in range(len(context), seq.shape[1]):
            expected -= log_probs[i - 1, seq[0, i]].item()
    assert count == 6 and total == pytest.approx(expected, abs=1e-4)

    long_row = [(list(range(1, 20)) * 3, [5, 6])]  # 57 + 2 tokens > 32 positions
    total, count = score_continuations(model, long_row)
    seq = torch.tensor([(long_row[0][0] + long_row[0][1])[-32:]])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(seq).logits[0], -1)
    assert count == 2 and total == pytest.approx(-(log_probs[-3, 5] + log_probs[-2, 6]).item(), abs=1e-4)
