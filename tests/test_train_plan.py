"""Contracts of a training run's resolution (mygpt.arguments, mygpt.plan): options come from the model's own
configuration, every bad value is refused up front with a message, and the plan is what the Trainer gets."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from configuration_mygpt import MyGPTConfig
from mygpt import arguments, plan
from mygpt.arguments import RUN_SET_FIELDS, model_arguments_class, parse_arguments
from mygpt.cli import parse
from mygpt.commands import train

ROOT = Path(__file__).resolve().parent.parent


def _signature_fields(config_class: type) -> set[str]:
    import inspect

    return {name for name, p in inspect.signature(config_class.__init__).parameters.items()
            if name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD}


# ---------------------------------------------------------------------------------------------------------------
# The model's options are MyGPTConfig's


def test_every_configuration_field_is_an_option_and_reaches_the_config():
    model_args = parse_arguments(["--preset", "shakespeare-char-cpu", "--rope_theta", "500", "--norm", "rmsnorm",
                                  "--layer_norm_epsilon", "1e-6", "--n_kv_head", "2"]).model
    kwargs = model_args.config_kwargs()
    assert set(kwargs) == _signature_fields(MyGPTConfig) - set(RUN_SET_FIELDS)
    config = MyGPTConfig(**{**kwargs, "n_positions": 64})
    assert (config.rope_theta, config.norm, config.layer_norm_epsilon, config.n_kv_head) == (500, "rmsnorm", 1e-6, 2)


def test_a_field_added_to_the_configuration_is_an_option_with_no_other_edit(tmp_path, monkeypatch):
    """What a new knob costs: one parameter (and its docstring line) in MyGPTConfig.__init__, nothing else."""
    source = (ROOT / "configuration_mygpt.py").read_text()
    source = source.replace("        **kwargs: Any,\n", "        qk_norm: bool = False,\n        **kwargs: Any,\n", 1)
    source = source.replace("        self.use_cache = use_cache\n", "        self.use_cache = use_cache\n"
                            "        self.qk_norm = qk_norm\n", 1)
    source = source.replace("        use_cache: return a KV cache", "        qk_norm: normalise queries and keys "
                            "before their dot product.\n        use_cache: return a KV cache", 1)
    path = tmp_path / "configuration_knob.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("configuration_knob", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    options = model_arguments_class(module.MyGPTConfig)
    (model_args,) = parse([options], ["--qk_norm", "true", "--n_embd", "32", "--n_head", "2"])
    assert model_args.qk_norm is True
    assert next(f for f in dataclasses.fields(options) if f.name == "qk_norm").metadata["help"] == \
        "normalise queries and keys before their dot product."
    config = module.MyGPTConfig(**{**model_args.config_kwargs(), "n_positions": 16})
    assert config.qk_norm is True
    # ... and the GPT-2 conversion knows GPT-2 has no such thing, without being told
    assert config.gpt2_incompatibilities() == ["qk_norm=True (GPT-2 has False)"]
    assert module.MyGPTConfig(**{**model_args.config_kwargs(), "n_positions": 16, "qk_norm": False}).is_gpt2_compatible


def test_gpt2_conversion_carries_every_field_gpt2_shares():
    from transformers import GPT2Config

    config = MyGPTConfig(vocab_size=99, n_positions=48, n_embd=36, n_layer=3, n_head=6, n_inner=50,
                         activation_function="relu", embd_pdrop=0.01, attn_pdrop=0.02, resid_pdrop=0.03,
                         layer_norm_epsilon=1e-4, initializer_range=0.5, bos_token_id=1, eos_token_id=2,
                         pad_token_id=3, use_cache=False)
    gpt2 = config.to_gpt2_config()
    shared = _signature_fields(MyGPTConfig) & _signature_fields(GPT2Config)
    assert len(shared) >= 15 and all(getattr(gpt2, name) == getattr(config, name) for name in shared)
    back = MyGPTConfig.from_gpt2_config(gpt2)
    assert all(getattr(back, name) == getattr(config, name) for name in shared)


def test_the_gpt2_twin_of_a_preset_beyond_gpt2_keeps_gpt2s_architecture_and_says_what_differs(caplog):
    from transformers import GPT2Config
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<eos>": 0, "a": 1, "<pad>": 2},
                                                                                   unk_token="a")),
                                        eos_token="<eos>", bos_token="<eos>", pad_token="<pad>")
    mine = ["--position_embedding", "rope", "--norm", "rmsnorm", "--activation_function", "relu2", "--optimizer",
            "muon"]
    parsed = parse_arguments(mine)
    mygpt = plan.build_config(parsed.model, 256, tokenizer)
    twin_args = parse_arguments([*mine, "--architecture", "gpt2"])
    with caplog.at_level("WARNING", logger="mygpt.plan"):
        twin = plan.build_config(twin_args.model, 256, tokenizer)
    assert isinstance(twin, GPT2Config) and twin.activation_function == "relu2"  # GPT-2 has relu2: kept
    assert (twin.n_layer, twin.n_embd, twin.n_head, twin.n_positions) == (
        mygpt.n_layer, mygpt.n_embd, mygpt.n_head, mygpt.n_positions)
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "position_embedding='rope'" in message and "norm='rmsnorm'" in message
    assert twin_args.training.optimizer == "muon"  # the optimiser, schedule and data stay the preset's
    with pytest.raises(ValueError, match="no GPT-2 equivalent"):
        mygpt.to_gpt2_config()  # the model's own conversion stays strict


def test_dropout_sets_the_three_probabilities_and_each_can_be_set_alone(tmp_path):
    kwargs = parse_arguments(["--dropout", "0.2"]).model.config_kwargs()
    assert (kwargs["embd_pdrop"], kwargs["attn_pdrop"], kwargs["resid_pdrop"]) == (0.2, 0.2, 0.2)
    own = tmp_path / "own.yaml"
    own.write_text("n_layer: 2\n")  # no dropout key: each probability is its own option
    kwargs = parse_arguments([str(own), "--attn_pdrop", "0.3"]).model.config_kwargs()
    assert (kwargs["embd_pdrop"], kwargs["attn_pdrop"], kwargs["resid_pdrop"]) == (0.0, 0.3, 0.0)


def test_help_lists_the_configuration_fields_with_their_docstring(capsys):
    with pytest.raises(SystemExit) as done:
        parse_arguments(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--rope_theta" in text and "base of the rotary frequencies" in text
    assert "--n_kv_head" in text and "--layer_norm_epsilon" in text and "--vocab_size" in text


# ---------------------------------------------------------------------------------------------------------------
# Bad values: refused before anything happens


BAD_VALUES = [
    (["--learning_rate", "-1"], "--learning_rate must be a number > 0, got -1.0"),
    (["--learning_rate", "0"], "--learning_rate must be a number > 0"),
    (["--learning_rate", "nan"], "--learning_rate must be a number > 0, got nan"),
    (["--max_steps", "0"], "--max_steps must be a positive number"),
    (["--max_steps", "-1", "--num_train_epochs", "0"], "--num_train_epochs must be a number > 0"),
    (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be a whole number > 0"),
    (["--per_device_eval_batch_size", "-4"], "--per_device_eval_batch_size must be a whole number > 0"),
    (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps must be a whole number > 0"),
    (["--warmup_steps", "-5"], "warmup_steps"),  # transformers' own check, its words
    (["--warmup_steps", "2.5"], "--warmup_steps must be a whole number of steps, or a fraction < 1"),
    (["--weight_decay", "-0.1"], "--weight_decay must be a number >= 0"),
    (["--adam_beta2", "1.0"], r"--adam_beta2 must be in \[0, 1\)"),
    (["--adam_epsilon", "0"], "--adam_epsilon must be a number > 0"),
    (["--max_grad_norm", "-1"], "--max_grad_norm must be a number >= 0"),
    (["--logging_steps", "0"], "logging_steps"),  # transformers' own check, its words
    (["--save_total_limit", "0"], "--save_total_limit must be a whole number > 0"),
    (["--early_stopping_patience", "-1"], "--early_stopping_patience must be a whole number >= 0"),
    (["--early_stopping_patience", "2", "--eval_strategy", "no", "--load_best_model_at_end", "false"],
     "--early_stopping_patience needs evaluations"),
    (["--num_sample_prompts", "-1"], "--num_sample_prompts must be a whole number >= 0"),
    (["--eval_sample_blocks", "-1"], "--eval_sample_blocks must be a whole number >= 0"),
    (["--optimizer", "sgd"], "--optimizer must be one of adamw, muon, got 'sgd'"),
    (["--sample_max_new_tokens", "0"], "--sample_max_new_tokens must be a whole number > 0"),
    (["--dropout", "1.5"], r"--dropout must be a probability in \[0, 1\)"),
    (["--peak_tflops", "-3"], "--peak_tflops must be a number > 0"),
    (["--block_size", "64", "--n_positions", "32"], "--block_size 64 is larger than --n_positions 32"),
    (["--bf16", "--fp16"], "fp16 and bf16"),  # transformers' own check, its words
    (["--precision", "fp8"], "--precision must be auto, fp32, bf16 or fp16"),
    (["--prediction_loss_only"], "--prediction_loss_only"),
]


@pytest.mark.parametrize("extra, message", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_values_are_refused_with_the_option_named(extra, message):
    with pytest.raises(ValueError, match=message):
        parsed = parse_arguments(["--preset", "notebook-quick", *extra])
        plan.check_arguments(*parsed)
        plan.resolve_context(parsed.model, parsed.data)
        plan.resolve_precision(parsed.training, parsed.run)


def test_negative_learning_rate_ends_in_one_line_not_an_optimiser_traceback(tmp_path):
    result = subprocess.run([sys.executable, "train_hf.py", "--learning_rate", "-1", "--output_dir",
                             str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "error: --learning_rate must be a number > 0, got -1.0"
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_a_token_on_the_command_line_or_in_a_file_is_refused_without_echoing_it(tmp_path, capsys):
    secret = "hf_NOTAREALTOKENbutlookslikeone"
    for argv in (["--hub_token", secret], [f"--hub_token={secret}"]):
        with pytest.raises(SystemExit) as refused:
            train.main(argv)
        message = str(refused.value.code)
        assert "hf auth login" in message and "HF_TOKEN" in message and secret not in message
    config = tmp_path / "run.yaml"
    config.write_text(f"hub_token: {secret}\n")
    with pytest.raises(SystemExit) as refused:
        train.main([str(config)])
    assert "hf auth login" in str(refused.value.code) and secret not in str(refused.value.code)
    assert secret not in capsys.readouterr().err


def test_push_to_hub_is_checked_before_training(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="the Hub is switched off here.*mygpt-push"):
        train.main(["--push_to_hub", "--output_dir", str(out)])
    with pytest.raises(SystemExit, match="not a valid model repository id"):
        train.main(["--push_to_hub", "--hub_model_id", "bad id!!", "--output_dir", str(out)])
    with pytest.raises(SystemExit, match="pushes the finished folder once"):
        train.main(["--push_to_hub", "--hub_strategy", "checkpoint", "--output_dir", str(out)])
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-login"))  # no stored token either
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    with pytest.raises(SystemExit, match="no Hugging Face token found.*hf auth login"):
        train.main(["--push_to_hub", "--output_dir", str(out)])
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------
# The plan is what the Trainer gets


def test_trainer_arguments_are_made_once_and_the_parsed_ones_left_alone():
    parsed = parse_arguments(["--preset", "notebook-quick", "--push_to_hub", "--precision", "bf16"]).training
    made = plan.trainer_arguments(parsed, "bf16", "mygpt-notebook-quick")
    assert (parsed.bf16, parsed.push_to_hub, parsed.run_name) == (False, True, None)
    assert (made.bf16, made.fp16, made.push_to_hub, made.run_name) == (True, False, False, "mygpt-notebook-quick")
    # what accelerate reads: mutating bf16 after TrainingArguments.__post_init__ would leave it at "no"
    assert made.mixed_precision == "bf16" and parsed.mixed_precision == "no"


def test_torch_compile_without_a_cpp_compiler_trains_eagerly_with_one_warning(monkeypatch, caplog):
    from mygpt import speed

    parsed = parse_arguments(["--preset", "notebook-quick", "--torch_compile", "true", "--use_cpu", "true"]).training
    assert parsed.torch_compile and parsed.torch_compile_backend == "inductor"
    monkeypatch.setattr(speed, "cpp_compiler", lambda: None)
    with caplog.at_level("WARNING", logger="mygpt.speed"):
        made = plan.trainer_arguments(parsed, "fp32", "run")
    assert (made.torch_compile, made.torch_compile_backend, made.torch_compile_mode) == (False, None, None)
    warnings = [r.getMessage() for r in caplog.records if r.name == "mygpt.speed"]
    assert len(warnings) == 1 and "no usable C++ compiler" in warnings[0]

    monkeypatch.setattr(speed, "cpp_compiler", lambda: "g++")
    assert plan.trainer_arguments(parsed, "fp32", "run").torch_compile  # a compiler: compile as asked


def test_cpp_compiler_probe_finds_none_when_the_compiler_cannot_build(monkeypatch):
    import subprocess as real_subprocess

    from mygpt import speed

    def failing_build(command, **kwargs):
        return real_subprocess.CompletedProcess(command, 1, "", "fatal error: no such file")

    def missing_program(command, **kwargs):
        raise FileNotFoundError(command[0])

    try:
        for fake in (failing_build, missing_program):
            monkeypatch.setattr(speed.subprocess, "run", fake)
            speed.cpp_compiler.cache_clear()
            assert speed.cpp_compiler() is None
    finally:
        speed.cpp_compiler.cache_clear()


def test_the_default_preset_is_found_by_an_installed_command():
    """Presets are package data: the installed console script finds them without a checkout."""
    assert arguments.PRESETS_DIR.is_relative_to(Path(arguments.__file__).parent)
    setup = (ROOT / "setup.cfg").read_text()
    assert "presets/*.yaml" in setup and "model_card.md" in setup
    assert "train_hf" not in setup.split("py_modules =")[1].split("packages")[0]
