"""Contracts of mygpt.cli: the same layering of defaults, config files and flags in every command."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mygpt.cli import main_guard, parse
from mygpt.files import FolderBusyError


@dataclass
class Options:
    model: str = field(default="runs/x", metadata={"help": "The model."})
    seed: int = field(default=0, metadata={"help": "Seed."})
    prompts: list[str] | None = field(default=None, metadata={"help": "Prompts."})


@dataclass
class Preset:
    preset: str = field(default="base", metadata={"help": "A preset."})
    output_dir: str | None = field(default=None, metadata={"help": "Where."})


def test_flags_override_the_file_which_overrides_the_defaults(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("seed: 3\nmodel: runs/from-file\n")
    (options,) = parse([Options], [str(config), "--seed", "7"])
    assert (options.model, options.seed) == ("runs/from-file", 7)
    (options,) = parse([Options], ["--config", str(config)])
    assert (options.model, options.seed) == ("runs/from-file", 3)
    (options,) = parse([Options], [])
    assert (options.model, options.seed) == ("runs/x", 0)


@dataclass
class Required:
    model: str = field(metadata={"help": "The model (no default: required)."})
    seed: int = field(default=0, metadata={"help": "Seed."})


def test_a_required_option_may_come_from_the_file(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: runs/from-file\n")
    (options,) = parse([Required], [str(config), "--seed", "2"])
    assert (options.model, options.seed) == ("runs/from-file", 2)
    with pytest.raises(SystemExit):  # without the file it is still required
        parse([Required], ["--seed", "2"])


def test_json_config_and_list_values(tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"prompts": ["a", "b"]}))
    (options,) = parse([Options], [str(config), "--seed", "1"])
    assert options.prompts == ["a", "b"] and options.seed == 1


def test_unknown_key_in_file_and_unknown_flag_are_errors(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("sede: 3\n")
    with pytest.raises(ValueError, match="unknown option.*sede"):
        parse([Options], [str(config)])
    with pytest.raises(ValueError, match="unknown argument.*--nope"):
        parse([Options], ["--nope", "1"])
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        parse([Options], [str(tmp_path / "missing.yaml")])
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        parse([Options], [str(tmp_path / "list.yaml")])


def test_named_config_field_and_derived_defaults(tmp_path):
    presets = tmp_path / "configs"
    presets.mkdir()
    (presets / "base.yaml").write_text("seed: 5\n")

    def find(name: str) -> Path:
        path = presets / f"{name}.yaml"
        if not path.is_file():
            raise ValueError(f"unknown preset {name!r}")
        return path

    def derived(name, values):
        return {"output_dir": f"runs/{name}"}

    options, preset = parse([Options, Preset], [], config_option="preset", find_config=find, default_config="base",
                            file_defaults=derived)
    assert (options.seed, preset.preset, preset.output_dir) == (5, "base", "runs/base")
    options, preset = parse([Options, Preset], ["--output_dir", "runs/mine"], config_option="preset",
                            find_config=find, default_config="base", file_defaults=derived)
    assert preset.output_dir == "runs/mine"
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        parse([Options, Preset], ["--preset", "nope"], config_option="preset", find_config=find)


def test_help_shows_the_files_values_as_defaults(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("seed: 42\n")
    with pytest.raises(SystemExit) as exit_info:
        parse([Options], [str(config), "--help"])
    assert exit_info.value.code == 0
    assert "(default: 42)" in capsys.readouterr().out


@pytest.mark.parametrize("error", [ValueError("bad --seed"), FileNotFoundError("no such model"),
                                   FolderBusyError("runs/x is in use")])
def test_user_errors_exit_nonzero_with_one_line(error):
    with pytest.raises(SystemExit) as exit_info:
        with main_guard():
            raise error
    assert exit_info.value.code == f"error: {error}"  # SystemExit(str) prints it and exits with status 1


def test_bugs_keep_their_traceback():
    with pytest.raises(KeyError):
        with main_guard():
            raise KeyError("a bug")
