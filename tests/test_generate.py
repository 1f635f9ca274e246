"""Contracts of generation with our samplers inside ``model.generate``, of the one generation path every tool
takes (``mygpt.generation``), and of the mygpt-generate (generate.py) command line.

Tiny random-weight models (vocab 100 > transformers' default top_k of 50, so a stray HF warper would show).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from transformers import (
    GenerationConfig,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    set_seed,
)
from transformers.generation.streamers import BaseStreamer

from conftest import save_tiny_mygpt
from configuration_mygpt import MyGPTConfig
from generation_mygpt import STRATEGIES, STRATEGY_PRESETS, make_sampler
from modeling_mygpt import MyGPTForCausalLM
from mygpt import generation
from mygpt.commands import generate as generate_cli
from mygpt.loading import load_model_and_tokenizer
from mygpt.tokenization import train_char_tokenizer


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread; on a busy shared machine two threads mostly wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = 100
KNOBS_UNDER_TEST = {  # one setting per strategy, plus a penalty so the repetition processor runs too
    "greedy": {"repetition_penalty": 1.3},
    "temperature": {"temperature": 1.4},
    "top_k": {"top_k": 20, "temperature": 1.2},
    "top_p": {"top_p": 0.9, "temperature": 1.5},
    "min_p": {"min_p": 0.05, "temperature": 1.5},
    "typical": {"typical_p": 0.5},
}


def tiny_config(**overrides) -> MyGPTConfig:
    settings = dict(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=None,
                    eos_token_id=None, pad_token_id=None)
    return MyGPTConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def model() -> MyGPTForCausalLM:
    torch.manual_seed(0)
    model = MyGPTForCausalLM(tiny_config()).eval()
    with torch.no_grad():  # a peakier distribution than the near-uniform default init, so filters bite
        model.lm_head.weight.mul_(7)  # (tied with wte: scales both)
    return model


@pytest.fixture(scope="module")
def prompt() -> torch.LongTensor:
    return torch.randint(0, VOCAB, (1, 6), generator=torch.Generator().manual_seed(1))


def argmax_decode(model, input_ids: torch.LongTensor, steps: int) -> torch.LongTensor:
    """Greedy decoding written out: full forward pass each step (no cache), append the argmax."""
    ids = input_ids
    with torch.no_grad():
        for _ in range(steps):
            next_id = model(input_ids=ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
            ids = torch.cat([ids, next_id], dim=1)
    return ids


def test_greedy_strategy_equals_argmax_decoding_and_transformers_greedy(model, prompt):
    ours = model.generate(prompt, strategy="greedy", max_new_tokens=30)
    assert torch.equal(ours, argmax_decode(model, prompt, 30))
    assert torch.equal(ours, model.generate(prompt, do_sample=False, max_new_tokens=30))
    gpt2 = model.to_gpt2().eval()  # transformers' own GPT-2 with the same weights
    assert torch.equal(ours, gpt2.generate(prompt, do_sample=False, max_new_tokens=30))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_gives_the_same_tokens_and_another_seed_other_tokens(model, prompt, strategy):
    def sample(seed: int) -> torch.LongTensor:
        set_seed(seed)
        return model.generate(prompt, strategy=strategy, max_new_tokens=24, **KNOBS_UNDER_TEST[strategy])

    first = sample(0)
    assert torch.equal(first, sample(0))
    if strategy != "greedy":
        assert not all(torch.equal(first, sample(seed)) for seed in (1, 2, 3))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_is_honoured_with_and_without_the_kv_cache(model, prompt, strategy):
    knobs = KNOBS_UNDER_TEST[strategy]
    outputs = {}
    for use_cache in (True, False):
        set_seed(7)
        outputs[use_cache] = model.generate(prompt, strategy=strategy, max_new_tokens=20, use_cache=use_cache,
                                            return_dict_in_generate=True, output_scores=True, output_logits=True,
                                            **knobs)
    assert torch.equal(outputs[True].sequences, outputs[False].sequences)

    # every step: the scores generate sampled from are exactly our chain applied to the model's raw logits,
    # so no warper of transformers' own (e.g. its default top_k=50) ran besides ours
    chain = make_sampler(strategy, **knobs)
    out = outputs[True]
    for step, (scores, logits) in enumerate(zip(out.scores, out.logits)):
        prefix = out.sequences[:, : prompt.shape[1] + step]
        assert torch.equal(scores, chain(prefix, logits.clone()))
        chosen = out.sequences[:, prompt.shape[1] + step]
        assert torch.isfinite(scores.gather(-1, chosen[:, None])).all(), "a filtered token was generated"
    if strategy == "temperature":
        assert torch.isfinite(out.scores[0]).all(), "temperature alone must keep all 100 tokens"


def test_knobs_saved_in_the_models_generation_config_do_not_run_besides_ours(prompt):
    """train_hf.py saves do_sample=True, temperature=0.8, top_k=50 as the model's defaults; with a strategy,
    only our chain may act."""
    torch.manual_seed(0)
    model = MyGPTForCausalLM(tiny_config()).eval()
    model.generation_config.update(do_sample=True, temperature=0.3, top_k=5, top_p=0.5, repetition_penalty=2.0)
    for strategy, knobs in [("temperature", {"temperature": 1.4}), ("greedy", {})]:
        out = model.generate(prompt, strategy=strategy, max_new_tokens=4, return_dict_in_generate=True,
                             output_scores=True, output_logits=True, **knobs)
        chain = make_sampler(strategy, **knobs)
        for step, (scores, logits) in enumerate(zip(out.scores, out.logits)):
            assert torch.equal(scores, chain(out.sequences[:, : prompt.shape[1] + step], logits.clone()))


def test_strategies_raise_no_warning_from_transformers(prompt, caplog):
    """The neutral values we pass for transformers' own knobs are ones its GenerationConfig does not warn about,
    also for greedy (where a sampling knob set by the caller triggers 'generation flags are not valid')."""
    from transformers.utils import logging as hf_logging

    torch.manual_seed(0)
    model = MyGPTForCausalLM(tiny_config()).eval()
    model.generation_config.update(do_sample=True, temperature=0.8, top_k=50)  # as train_hf.py saves it
    mask = torch.ones_like(prompt)
    hf_logging.warning_once.cache_clear()  # a warning already given in this process would not show again
    hf_logging.enable_propagation()
    try:
        with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
            warnings.simplefilter("error")
            for strategy, knobs in KNOBS_UNDER_TEST.items():
                model.generate(prompt, attention_mask=mask, pad_token_id=0, strategy=strategy, max_new_tokens=3,
                               **knobs)
    finally:
        hf_logging.disable_propagation()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_standard_generate_arguments_keep_working(model, prompt):
    set_seed(0)
    many = model.generate(prompt, strategy="top_k", top_k=10, max_new_tokens=12, num_return_sequences=3)
    assert many.shape == (3, prompt.shape[1] + 12)
    assert len({tuple(row.tolist()) for row in many}) > 1, "three samples came out identical"

    class Collect(BaseStreamer):
        def __init__(self):
            self.chunks = []

        def put(self, value):
            self.chunks.append(value.reshape(-1).tolist())

        def end(self):
            self.ended = True

    streamer = Collect()
    set_seed(0)
    streamed = model.generate(prompt, strategy="top_p", top_p=0.8, max_new_tokens=10, streamer=streamer)
    assert streamer.ended and sum(streamer.chunks, []) == streamed[0].tolist()

    class StopAfter(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= prompt.shape[1] + 4, dtype=torch.bool)

    stopped = model.generate(prompt, strategy="min_p", max_new_tokens=50,
                             stopping_criteria=StoppingCriteriaList([StopAfter()]))
    assert stopped.shape[1] == prompt.shape[1] + 4

    # a logits processor of the caller's runs before ours: forbid token 3 under greedy decoding
    class Forbid(torch.nn.Module):
        def __call__(self, input_ids, scores):
            return scores.index_fill(-1, torch.tensor([3]), -float("inf"))

    banned = model.generate(prompt, strategy="greedy", max_new_tokens=30,
                            logits_processor=LogitsProcessorList([Forbid()]))
    assert 3 not in banned[0, prompt.shape[1]:].tolist()


def test_generation_stops_at_the_end_of_text_token(model, prompt):
    greedy = model.generate(prompt, strategy="greedy", max_new_tokens=10)
    new = greedy[0, prompt.shape[1]:].tolist()
    eos = new[3]  # declare the 4th greedy token end-of-text: generation must stop where it first appears
    stopped = model.generate(prompt, strategy="greedy", max_new_tokens=10, eos_token_id=eos, pad_token_id=0)
    assert torch.equal(stopped, greedy[:, : prompt.shape[1] + new.index(eos) + 1])


@pytest.mark.parametrize("knobs", [{}, {"repetition_penalty": 2.0}], ids=["plain", "repetition_penalty"])
def test_left_padded_batch_gives_each_row_its_unpadded_result(model, knobs):
    """Greedy keeps randomness out, so each row must equal its prompt decoded alone; the penalty must not
    count the padding as seen tokens."""
    def decode_alone(p: torch.LongTensor) -> torch.LongTensor:
        return model.generate(p[None], strategy="greedy", max_new_tokens=15, **knobs)[0, len(p):]

    # pad with the token the most padded row picks first, one not in its prompt: penalising the padding as
    # if it were seen would change that choice (the first seed that gives such a prompt)
    for seed in range(50):
        gen = torch.Generator().manual_seed(seed)
        prompts = [torch.randint(1, VOCAB, (n,), generator=gen) for n in (7, 3, 5)]
        first = model.generate(prompts[1][None], strategy="greedy", max_new_tokens=1, repetition_penalty=2.0)
        pad = int(first[0, -1])
        if pad not in prompts[1].tolist():
            break
    else:
        pytest.fail("no prompt found whose first penalised greedy token is new")
    alone = [decode_alone(p) for p in prompts]
    width = max(len(p) for p in prompts)
    input_ids = torch.stack([torch.cat([torch.full((width - len(p),), pad), p]) for p in prompts])  # (3, 7)
    mask = torch.stack([torch.cat([torch.zeros(width - len(p)), torch.ones(len(p))]) for p in prompts]).long()
    batch = model.generate(input_ids, attention_mask=mask, strategy="greedy", max_new_tokens=15,
                           pad_token_id=pad, **knobs)
    for row, p in enumerate(prompts):
        assert batch[row, width:].tolist() == alone[row].tolist(), f"row {row} differs"


def test_bad_knobs_in_generate_raise_value_error_before_any_work(model, prompt):
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        model.generate(prompt, strategy="top_p", top_p=1.5)
    with pytest.raises(ValueError, match="valid strategies"):
        model.generate(prompt, strategy="nucleus")


def test_generate_without_strategy_is_transformers_generate(model, prompt):
    set_seed(5)
    ours = model.generate(prompt, do_sample=True, top_k=7, max_new_tokens=15, return_dict_in_generate=True,
                          output_scores=True)
    assert all(torch.isfinite(s).sum().item() == 7 for s in ours.scores)  # HF's TopKLogitsWarper ran


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_one_generation_path_gives_the_same_tokens_for_mygpt_and_transformers_gpt2(model, prompt, strategy):
    """mygpt.generation.generate does not depend on the model class: GPT2LMHeadModel with the same weights gets
    exactly MyGPT's samplers (the tools never branch on the class)."""
    gpt2 = model.to_gpt2().eval()
    knobs = KNOBS_UNDER_TEST[strategy]  # a KeyError here: a new strategy needs a setting in the table above
    outputs = []
    for lm in (model, gpt2):
        set_seed(11)
        outputs.append(generation.generate(lm, prompt, strategy=strategy, max_new_tokens=15, **knobs))
    set_seed(11)
    assert torch.equal(outputs[0], outputs[1])
    assert torch.equal(outputs[0], model.generate(prompt, strategy=strategy, max_new_tokens=15, **knobs))


def test_continuations_of_prompts_of_different_lengths_equal_each_prompt_alone(model):
    tokenizer = train_char_tokenizer([TEXT])
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
    got = generation.generate_continuations(model, tokenizer, prompts, strategy="greedy", knobs={},
                                            max_new_tokens=8)
    for ids, (continuation,) in zip(prompts, got):
        alone = model.generate(torch.tensor([ids]), strategy="greedy", max_new_tokens=8)[0, len(ids):]
        assert continuation == alone.tolist()
    many = generation.generate_continuations(model, tokenizer, prompts, strategy="top_k", knobs={"top_k": 20},
                                             max_new_tokens=8, num_return_sequences=3, seed=2)
    assert [len(samples) for samples in many] == [3, 3, 3] and all(len(s) == 8 for p in many for s in p)
    with pytest.raises(ValueError, match="exceeds the model's context of 64"):
        generation.generate_continuations(model, tokenizer, prompts, strategy="greedy", knobs={}, max_new_tokens=60)


# --- remote code -------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_strategy_works_from_remote_code_in_a_process_that_cannot_import_the_project(model, tmp_path):
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    assert (folder / "generation_mygpt.py").is_file(), "save_pretrained did not ship the samplers"
    script = (
        "import torch, transformers\n"
        "m = transformers.AutoModelForCausalLM.from_pretrained('model', trust_remote_code=True)\n"
        "ids = torch.tensor([[1, 2, 3]])\n"
        "g = m.generate(ids, strategy='greedy', max_new_tokens=5)\n"
        "transformers.set_seed(0)\n"
        "s = m.generate(ids, strategy='top_k', top_k=5, max_new_tokens=5)\n"
        "print(g.tolist(), s.tolist(), type(m).__module__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    ids = torch.tensor([[1, 2, 3]])
    expected_greedy = model.generate(ids, strategy="greedy", max_new_tokens=5).tolist()
    set_seed(0)
    expected_sample = model.generate(ids, strategy="top_k", top_k=5, max_new_tokens=5).tolist()
    assert result.stdout.split("] ")[0] + "]" == str(expected_greedy)
    assert str(expected_sample) in result.stdout and "transformers_modules" in result.stdout


# --- the command line ------------------------------------------------------------------------------------------

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\nJULIET:\nO Romeo, Romeo!\n" * 3


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    """A saved tiny MyGPT with a character tokenizer."""
    return save_tiny_mygpt(tmp_path_factory.mktemp("cli") / "model", TEXT, bos_token_id=None)


def run_cli(capsys, *argv: str) -> str:
    generate_cli.main(list(argv))
    return capsys.readouterr().out


def test_cli_continues_the_prompt_and_the_same_seed_gives_the_same_text(model_dir, capsys):
    argv = ["--model", model_dir, "--prompt", "ROMEO:", "--strategy", "top_p", "--top_p", "0.9",
            "--temperature", "0.8", "--max_new_tokens", "40", "--seed", "0"]
    first = run_cli(capsys, *argv)
    assert first.startswith("ROMEO:") and len(first.strip()) > len("ROMEO:")
    assert run_cli(capsys, *argv) == first
    assert run_cli(capsys, *argv[:-1], "1") != first


def test_cli_prompt_file_samples_and_yaml_options(model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("ROMEO:\n\nJULIET:\n")
    out = run_cli(capsys, "--model", model_dir, "--prompt_file", str(prompts), "--num_return_sequences", "2",
                  "--max_new_tokens", "10", "--seed", "3", "--strategy", "top_k")
    assert "#### prompt 1/2" in out and "#### prompt 2/2" in out
    assert out.count("ROMEO:") == 2 and out.count("JULIET:") == 2  # two samples each

    options = tmp_path / "options.yaml"
    options.write_text(f"model: {model_dir}\nprompt: 'ROMEO:'\nstrategy: greedy\nmax_new_tokens: 10\n")
    from_file = run_cli(capsys, str(options))
    assert from_file == run_cli(capsys, "--model", model_dir, "--prompt", "ROMEO:", "--strategy", "greedy",
                                "--max_new_tokens", "10")


def test_cli_stream_prints_the_same_text_as_without(model_dir, capsys):
    argv = ["--model", model_dir, "--prompt", "JULIET:", "--max_new_tokens", "20", "--seed", "4"]
    assert run_cli(capsys, *argv, "--stream").strip() == run_cli(capsys, *argv).strip()


def test_cli_compare_runs_every_strategy_from_the_same_seed(model_dir, capsys):
    out = run_cli(capsys, "--model", model_dir, "--prompt", "ROMEO:", "--compare", "--max_new_tokens", "15",
                  "--seed", "0", "--top_p", "0.8", "--temperature", "0.9")
    for strategy in STRATEGIES:
        assert f"=== {strategy}" in out
    assert "=== top_p (top_p=0.8, temperature=0.9) ===" in out
    assert "=== greedy ===" in out  # temperature is not passed to greedy
    assert f"=== top_k (top_k={STRATEGY_PRESETS['top_k']['top_k']}, temperature=0.9) ===" in out
    single = run_cli(capsys, "--model", model_dir, "--prompt", "ROMEO:", "--strategy", "top_p", "--top_p", "0.8",
                     "--temperature", "0.9", "--max_new_tokens", "15", "--seed", "0")
    assert single.strip() in out


def test_cli_works_with_a_transformers_gpt2_folder(model_dir, tmp_path, capsys):
    gpt2_dir = tmp_path / "gpt2"
    MyGPTForCausalLM.from_pretrained(model_dir).to_gpt2().save_pretrained(gpt2_dir)
    from transformers import AutoTokenizer
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(gpt2_dir)
    argv = ["--prompt", "ROMEO:", "--strategy", "typical", "--max_new_tokens", "12", "--seed", "2"]
    assert run_cli(capsys, "--model", str(gpt2_dir), *argv) == run_cli(capsys, "--model", model_dir, *argv)


def saved_with(model_dir: str, folder, **settings) -> str:
    """A copy of the tiny model folder whose generation_config.json says ``settings``."""
    shutil.copytree(model_dir, folder)
    config = GenerationConfig.from_pretrained(folder)
    config.update(**settings)
    config.save_pretrained(folder)
    return str(folder)


def test_cli_without_a_strategy_decodes_as_the_saved_generation_config_says(model_dir, tmp_path, capsys):
    folder = saved_with(model_dir, tmp_path / "saved", do_sample=True, top_k=3, temperature=0.7, max_new_tokens=12)
    out = run_cli(capsys, "--model", folder, "--prompt", "ROMEO:", "--seed", "5")
    model, tokenizer = load_model_and_tokenizer(folder)
    set_seed(5)
    expected = model.generate(**tokenizer("ROMEO:", return_tensors="pt"))  # transformers' own decoding of the file
    assert expected.shape[1] == len("ROMEO:") + 12  # max_new_tokens came from the file too
    assert out == tokenizer.decode(expected[0], skip_special_tokens=True) + "\n\n"


def test_cli_with_a_saved_greedy_config_gives_one_text_whatever_the_seed_until_a_knob_asks_to_sample(
        model_dir, tmp_path, capsys):
    folder = saved_with(model_dir, tmp_path / "saved", do_sample=False, max_new_tokens=10)
    argv = ["--model", folder, "--prompt", "ROMEO:"]
    first = run_cli(capsys, *argv, "--seed", "1")
    assert run_cli(capsys, *argv, "--seed", "2") == first
    assert run_cli(capsys, *argv, "--strategy", "greedy", "--seed", "1") == first
    hot = {run_cli(capsys, *argv, "--temperature", "3.0", "--seed", str(seed)) for seed in range(3)}
    assert len(hot) > 1  # a sampling knob on top of the saved config turns sampling on


def test_cli_generates_with_the_kv_cache_even_when_the_saved_generation_config_says_not_to(model_dir):
    model, tokenizer = load_model_and_tokenizer(model_dir)
    model.generation_config.use_cache = False  # as a run saved with training's use_cache=False would say
    lengths = []
    model.transformer.register_forward_pre_hook(lambda module, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]),
                                                with_kwargs=True)
    generation.generate_texts(model, tokenizer, "ROMEO:", "top_k", {}, max_new_tokens=5)
    assert lengths == [len("ROMEO:"), 1, 1, 1, 1]  # the prompt once, then one new token per step


BAD_INPUT = [
    (["--model", "{tmp}", "--prompt", "ROMEO:"], "holds no model (no config.json)"),
    (["--model", "./no/such/folder", "--prompt", "ROMEO:"], "does not exist"),
    (["--model", "{model}", "--prompt", ""], "--prompt is empty"),
    (["--model", "{model}", "--prompt", "   "], "--prompt is empty"),
    (["--model", "{model}"], "exactly one of --prompt TEXT or --prompt_file FILE"),
    (["--model", "{model}", "--prompt_file", "{tmp}/none.txt"], "does not exist"),
    (["--model", "{model}", "--prompt", "A", "--top_p", "1.5"], r"top_p must be in (0, 1], got 1.5"),
    (["--model", "{model}", "--prompt", "A", "--temperature", "0"], "temperature must be in (0, inf), got 0.0"),
    (["--model", "{model}", "--prompt", "A", "--strategy", "top_k", "--top_k", "0"], "top_k must be an integer >= 1"),
    (["--model", "{model}", "--prompt", "A", "--compare", "--min_p", "2"], "min_p must be in [0, 1]"),
    (["--model", "{model}", "--prompt", "A", "--strategy", "greedy", "--temperature", "0.5"], "greedy accepts only"),
    (["--model", "{model}", "--prompt", "A", "--strategy", "greedy", "--num_return_sequences", "2"], "same text"),
    (["--model", "{model}", "--prompt", "A", "--max_new_tokens", "0"], "--max_new_tokens must be >= 1"),
    (["--model", "{model}", "--prompt", "A", "--max_new_tokens", "500"], "exceeds the model's context of 128"),
    (["--model", "{model}", "--prompt", "A", "--temperature", "-1"], "temperature must be in (0, inf)"),
    (["--model", "{model}", "--prompt", "A", "--stream", "--num_return_sequences", "2"], "--stream"),
]


@pytest.mark.parametrize("argv,message", BAD_INPUT, ids=[m for _, m in BAD_INPUT])
def test_cli_bad_input_gets_a_clear_message_and_a_nonzero_exit(model_dir, tmp_path, argv, message):
    argv = [a.format(tmp=tmp_path, model=model_dir) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        generate_cli.main(argv)
    assert isinstance(exit_info.value.code, str) and exit_info.value.code.startswith("error: ")
    assert message in exit_info.value.code


def test_cli_argument_errors_exit_with_usage(model_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        generate_cli.main(["--model", model_dir, "--prompt", "A", "--strategy", "beam"])
    assert exit_info.value.code == 2 and "invalid choice: 'beam'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_as_a_process_prints_the_error_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "generate.py"), "--model", str(tmp_path),
                             "--prompt", "ROMEO:"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1
    assert "error:" in result.stderr and "no config.json" in result.stderr and "Traceback" not in result.stderr
