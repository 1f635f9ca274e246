"""One command-line helper for every mygpt command.

Every command describes its options as dataclasses (``HfArgumentParser`` turns their fields into ``--flags`` with
their help and defaults) and reads them in three layers, each overriding the one before:

    the dataclass defaults  <  a config file (YAML or JSON)  <  flags on the command line

The config file is given with the command's config option (``--config FILE``; ``train_hf.py`` calls it
``--preset`` and also takes the name of a file in ``configs/``) or as the first argument on its own, so
``mygpt-generate run.yaml --seed 3`` and ``python train_hf.py my-run.yaml --learning_rate 3e-4`` mean the same thing
in every command. A key in the file that no dataclass knows is an error, as an unknown flag is. ``--help`` lists
every option with its default, the file's values included.

:func:`main_guard` turns the errors a user can cause (``ValueError``, ``FileNotFoundError``, a busy folder) into a
one-line ``error: ...`` message and a non-zero exit code, for the ``main()`` of each command.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from mygpt.files import FolderBusyError

__all__ = ["CONFIG_SUFFIXES", "load_config_file", "main_guard", "parse", "setup_logging"]

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping of option names to values in a YAML/JSON file (``ValueError`` when it is not one)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise ValueError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {error}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of option names to values, not a {type(values).__name__}")
    return values


def parse(
    dataclass_types: Sequence[type],
    argv: Sequence[str] | None = None,
    *,
    prog: str | None = None,
    description: str | None = None,
    config_option: str = "config",
    find_config: Callable[[str], Path] | None = None,
    default_config: str | None = None,
    file_defaults: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
) -> tuple[Any, ...]:
    """Parse ``argv`` into one instance of each dataclass: defaults < config file < command line.

    Args:
        dataclass_types: the command's option dataclasses (field names must be unique across them).
        argv: the arguments (default ``sys.argv[1:]``).
        config_option: the name of the option that names a config file. When a dataclass has a field of that name
            (``train_hf.py``'s ``preset``), the field receives the value; otherwise the option is added here.
        find_config: turns the option's value into a file path (e.g. a preset name into ``configs/NAME.yaml``);
            it raises ``ValueError`` naming the valid choices. Default: the value is a path.
        default_config: the config to read when none is given (``train_hf.py``: the default preset).
        file_defaults: ``(config value, values from the file) -> extra defaults`` computed from the file, e.g.
            ``output_dir = runs/<preset>``; they sit between the file and the command line.

    Returns:
        The dataclass instances, in the order of ``dataclass_types``.

    Raises:
        ValueError: an unknown key in the file, an unknown flag, or an invalid value (dataclass ``__post_init__``).
        FileNotFoundError: a config file that does not exist.
        SystemExit: from argparse itself, for ``--help`` and for malformed flags (exit code 2).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    flag = f"--{config_option}"
    if argv and not argv[0].startswith("-") and Path(argv[0]).suffix in CONFIG_SUFFIXES:
        argv = [flag, argv[0], *argv[1:]]  # a lone file first: the config file

    known = {f.name for cls in dataclass_types for f in dataclasses.fields(cls) if f.init}
    own_option = config_option not in known
    parser = HfArgumentParser(dataclass_types, prog=prog, description=description)
    if own_option:
        parser.add_argument(flag, default=default_config, metavar="FILE",
                            help="A YAML or JSON file of options (also accepted as the first argument on its own); "
                                 "flags on the command line override it.")

    pre = argparse.ArgumentParser(add_help=False)  # --help is the full parser's job, after the defaults are set
    pre.add_argument(flag, default=default_config)
    config_value = getattr(pre.parse_known_args(argv)[0], config_option.replace("-", "_"))
    values: dict[str, Any] = {}
    if config_value is not None:
        path = find_config(config_value) if find_config is not None else Path(config_value)
        values = load_config_file(path)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path} sets unknown option(s) {', '.join(unknown)}; valid options are listed by --help")
        if file_defaults is not None:
            values = {**values, **{k: v for k, v in file_defaults(config_value, values).items() if k not in values}}
    parser.set_defaults(**values)
    for action in parser._actions:  # an option the file sets is no longer required on the command line
        if action.dest in values:
            action.required = False
    *instances, rest = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if own_option and instances and isinstance(instances[-1], argparse.Namespace):
        instances = instances[:-1]  # HfArgumentParser returns the options no dataclass took (our --config) last
    if rest:
        raise ValueError(f"unknown argument(s): {' '.join(rest)} (see --help)")
    return tuple(instances)


@contextlib.contextmanager
def main_guard(*errors: type[BaseException]) -> Iterator[None]:
    """Turn a user's mistake into ``error: <message>`` on stderr and exit code 1, without a traceback.

    Catches ``ValueError``, ``FileNotFoundError`` and :class:`~mygpt.files.FolderBusyError`, plus ``errors``;
    ``KeyboardInterrupt`` exits with 130. Anything else is a bug and keeps its traceback.
    """
    try:
        yield
    except (ValueError, FileNotFoundError, FolderBusyError, *errors) as error:
        message = str(error).strip() or type(error).__name__
        raise SystemExit(f"error: {message}") from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def setup_logging(level: int = logging.INFO, quiet_libraries: bool = True) -> None:
    """Log lines ``HH:MM:SS LEVEL name: message`` on stderr; only the main process of a distributed run logs INFO."""
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=level if rank == 0 else logging.WARNING)
    if quiet_libraries:
        import transformers

        transformers.utils.logging.set_verbosity_warning()
