"""Loading a trained model: the one way every command, report and the notebook does it.

* :func:`load_model_and_tokenizer` — any causal LM and its tokenizer from a run folder (MyGPT, GPT-2, anything
  saved with ``save_pretrained``) or a Hub id, on a device, in a dtype, in eval mode. One error type,
  :class:`ModelNotAvailableError`, says why a name cannot be loaded and what would work.
* :func:`is_offline` — one rule for "may we reach the Hub": ``huggingface_hub``'s own ``is_offline_mode()``
  (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set to a true value).
* :func:`resolve_device`, :func:`resolve_dtype` — ``auto`` and names into torch objects, with clear errors.
* :func:`context_length` — the number of positions a model was built for.
* :func:`published_models` — the models named by ``MYGPT_MODEL_ID`` (and ``MYGPT_TWIN_ID``), loaded, or None: how
  the notebook uses a published model instead of training one.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch

logger = logging.getLogger(__name__)

__all__ = ["DTYPES", "MODEL_ID_VARIABLE", "TWIN_ID_VARIABLE", "LoadedModel", "ModelNotAvailableError",
           "PublishedModels", "check_model_name", "context_length", "is_offline", "load_model_and_tokenizer",
           "published_models", "resolve_device", "resolve_dtype", "run_summary"]

DTYPES: dict[str, Any] = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16,
                          "float16": torch.float16}


class ModelNotAvailableError(FileNotFoundError):
    """A model named by the user cannot be loaded; the message says why and what would be valid."""


def is_offline() -> bool:
    """True when the Hub must not be contacted (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``), as huggingface_hub
    itself decides it."""
    from huggingface_hub import constants

    # The module constant is read when huggingface_hub is imported; read the environment again so that a value
    # set later in the process (a notebook cell, a test) counts the same way.
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if value is None:
        return bool(constants.HF_HUB_OFFLINE)
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``mps`` when available, else ``cpu``; other names as torch reads
    them (``ValueError`` when torch cannot use the device here)."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r}: expected auto, cpu, cuda, cuda:N or mps ({error})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but torch sees no CUDA GPU here; use cpu or auto")
    return resolved


def resolve_dtype(dtype: str | torch.dtype = "auto") -> Any:
    """A dtype name (``auto`` keeps the checkpoint's own, ``float32``, ``bfloat16``, ``float16``) as
    ``from_pretrained`` takes it."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def context_length(model: Any) -> int:
    """The number of positions ``model`` (or a config) was built for: ``n_positions`` or its aliases.

    For MyGPT with rotary or ALiBi positions this is the training context; those encodings can be *run* further,
    which is a separate, explicit choice of the caller (length extrapolation), never a default.
    """
    config = getattr(model, "config", model)
    for name in ("n_positions", "max_position_embeddings", "n_ctx", "max_seq_len", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 1:
            return value
    raise ValueError(f"cannot tell the context length of {type(model).__name__}: its config has none of "
                     "n_positions, max_position_embeddings, n_ctx")


def _register_mygpt() -> bool:
    """Register the ``mygpt`` model type with the Auto classes in this process (True when the code is importable)."""
    try:
        import modeling_mygpt  # noqa: F401  (registration happens on import)
    except ImportError:
        return False
    return True


def _offline_message(name: str) -> str:
    return (f"cannot load model {name!r}: there is no folder of that name, and it is not in the local Hugging Face "
            "cache while the Hub is switched off (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE). Give the path of a saved "
            "model folder, or run where huggingface.co is reachable.")


def check_model_name(name_or_path: str | os.PathLike) -> str:
    """Check, without loading anything, that ``name_or_path`` can name a model here: ``"folder"`` or ``"hub"``.

    A command checks every model it is given this way before it starts work, so a typo is named at once.

    Raises:
        ModelNotAvailableError: a path that does not exist, a file, a folder without ``config.json``, a name that
            is not a valid Hub id, or a Hub id that is not in the local cache while the Hub is switched off.
    """
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "config.json")):
            raise ModelNotAvailableError(f"{name!r} is a folder but holds no model (no config.json): give a folder "
                                         "written by save_pretrained, such as a finished train_hf.py run, or a Hub id")
        return "folder"
    if os.path.exists(name):
        raise ModelNotAvailableError(f"{name!r} is a file, not a model folder")
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelNotAvailableError(f"model folder {name!r} does not exist")
    try:
        cached = try_to_load_from_cache(name, "config.json")
    except HFValidationError:
        raise ModelNotAvailableError(f"model {name!r} is neither a folder here nor a valid Hub id "
                                     "('name' or 'owner/name')") from None
    if is_offline() and not isinstance(cached, str):
        raise ModelNotAvailableError(_offline_message(name))
    return "hub"


def load_model_and_tokenizer(
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    trust_remote_code: bool | None = None,
    attn_implementation: str | None = None,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` in eval mode on ``device``.

    Args:
        name_or_path: a folder written by ``save_pretrained`` (a finished ``train_hf.py`` run, a GPT-2 export...)
            with its tokenizer beside it, or a Hub id such as ``gpt2`` (needs the Hub, or its local cache).
        device: ``auto`` (GPU when there is one), ``cpu``, ``cuda``, ``cuda:1``, ``mps`` ...
        dtype: ``auto`` (as saved), ``float32``, ``bfloat16`` or ``float16``.
        trust_remote_code: run modeling code saved with the model. Default: yes for local folders (your own
            files; MyGPT folders carry their code), no for Hub ids (someone else's code). The tokenizer is loaded
            with the same setting, so neither asks on the terminal.
        attn_implementation: ``eager`` for attention weights (analysis, bertviz), ``sdpa``, or None (the
            model's default).

    Raises:
        ModelNotAvailableError: a path that does not exist or holds no model, a folder without a tokenizer, or a
            name that is neither a folder nor loadable from the Hub (the message says when the Hub is offline).
        ValueError: an unknown device or dtype.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = os.fspath(name_or_path)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    is_folder = check_model_name(name) == "folder"
    if trust_remote_code is None:
        trust_remote_code = is_folder
    # A MyGPT folder loads through the installed classes when they are importable (no remote code needed).
    _register_mygpt()
    offline = not is_folder and is_offline()
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if offline:
        kwargs["local_files_only"] = True
    model_kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if attn_implementation is not None:
        model_kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs, **model_kwargs)
    except (OSError, ValueError, KeyError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if is_folder:
            raise ModelNotAvailableError(f"cannot load the model in {name!r}: {reason}") from None
        if offline:
            raise ModelNotAvailableError(_offline_message(name)) from None
        raise ModelNotAvailableError(f"cannot load model {name!r}: no folder of that name, and the Hub said: "
                                     f"{reason}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    except (OSError, ValueError, KeyError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelNotAvailableError(f"{name!r} has a model but no loadable tokenizer (save the tokenizer next to "
                                     f"the model): {reason}") from None
    return model.to(device).eval(), tokenizer


# ---------------------------------------------------------------------------------------------------------------
# A published model instead of a training run (the notebook)

MODEL_ID_VARIABLE = "MYGPT_MODEL_ID"  # e.g. you/mygpt-shakespeare, or a local folder
TWIN_ID_VARIABLE = "MYGPT_TWIN_ID"  # its GPT2LMHeadModel twin trained on the same recipe (optional)


@dataclass
class LoadedModel:
    """A model loaded by name: the name, the model (eval mode), its tokenizer and its ``run_summary.json``."""

    name: str
    model: Any
    tokenizer: Any
    summary: dict[str, Any] | None  # what train_hf.py recorded, when the folder or repository has it


@dataclass
class PublishedModels:
    """The models the environment names: ``main`` from ``MYGPT_MODEL_ID``, ``twin`` from ``MYGPT_TWIN_ID``."""

    main: LoadedModel
    twin: LoadedModel | None


def run_summary(name_or_path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``run_summary.json`` a training run wrote beside its model (a folder, or a Hub repository that
    ``mygpt-push`` filled), or None when there is none or it cannot be fetched (offline and not cached)."""
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        path = os.path.join(name, "run_summary.json")
        if not os.path.isfile(path):
            return None
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        try:
            path = hf_hub_download(name, "run_summary.json", local_files_only=is_offline())
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as error:
            logger.info("no run_summary.json for %s: %s", name, str(error).splitlines()[0] if str(error) else error)
            return None
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except ValueError:
        logger.warning("%s is not valid JSON; the model is used without its training facts", path)
        return None


def published_models(*, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
                     attn_implementation: str | None = None,
                     environ: Mapping[str, str] | None = None) -> PublishedModels | None:
    """Load the models named by ``MYGPT_MODEL_ID`` and, if set, ``MYGPT_TWIN_ID``; None when no model is named.

    Each name is a Hub id (``you/mygpt-shakespeare``) or a local folder, loaded with
    :func:`load_model_and_tokenizer` (the same device, dtype and attention for both). An empty value counts as
    unset. ``environ`` defaults to ``os.environ`` (read at call time, so a notebook cell may set it).

    Raises:
        ValueError: ``MYGPT_TWIN_ID`` without ``MYGPT_MODEL_ID`` (a twin alone has nothing to be compared with).
        ModelNotAvailableError: a name that cannot be loaded (the message says why, offline included).
    """
    environ = os.environ if environ is None else environ
    main_id = (environ.get(MODEL_ID_VARIABLE) or "").strip()
    twin_id = (environ.get(TWIN_ID_VARIABLE) or "").strip()
    if not main_id:
        if twin_id:
            raise ValueError(f"{TWIN_ID_VARIABLE}={twin_id!r} is set but {MODEL_ID_VARIABLE} is not: name the "
                             f"trained model too, or unset {TWIN_ID_VARIABLE}")
        return None

    def load(name: str) -> LoadedModel:
        model, tokenizer = load_model_and_tokenizer(name, device=device, dtype=dtype,
                                                    attn_implementation=attn_implementation)
        logger.info("loaded %s (%s) instead of training", name, type(model).__name__)
        return LoadedModel(name=name, model=model, tokenizer=tokenizer, summary=run_summary(name))

    return PublishedModels(main=load(main_id), twin=load(twin_id) if twin_id else None)
