"""Publishing a finished model folder on the Hugging Face Hub.

Three steps, each usable on its own:

1. ``plan_upload(folder)`` checks that the folder is a finished model (config with its remote code, safetensors
   weights, tokenizer, a filled model card, no training run in progress) and lists **exactly** the files that would
   go up, with the reason every other file stays home (checkpoints, optimizer/scheduler/RNG states, pickles,
   markers, hidden files, caches).
2. ``format_plan(plan)`` prints that list with sizes: what ``push_to_hub.py --dry_run`` shows.
3. ``push_model_folder(plan, repo_id, ...)`` creates the repository if needed and uploads the listed files in one
   commit, so the Hub never serves half a model.

The token comes from ``huggingface_hub`` (the ``HF_TOKEN`` variable or the stored ``hf auth login`` token), never
from an argument a shell history or a log could keep, and no message here ever contains it. Every failure is a
``ModelFolderError`` (the folder) or a ``HubError`` (token, network, the Hub's answer) with a message for the user.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import httpx2  # huggingface_hub's HTTP client: its transport errors mean "the Hub cannot be reached"
import yaml
from huggingface_hub import (CommitInfo, CommitOperationAdd, CommitOperationDelete, HfApi, ModelCard, constants,
                             get_token)
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled, OIDCError
from huggingface_hub.utils import validate_repo_id

from mygpt.run_artifacts import MARKER, SUMMARY, folder_state

logger = logging.getLogger(__name__)

# What a model repository holds, by file name. Anything else in the folder is reported as skipped, so a stray
# data set or cache never leaves the machine by accident.
TOKENIZER_VOCAB_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "vocab.txt", "tokenizer.model", "*.tiktoken")
UPLOADED_SUFFIXES = {  # suffix -> what such a file is in a model repository
    ".safetensors": "weights",
    ".json": "configuration, tokenizer or run summary",
    ".py": "remote code",
    ".md": "model card or report",
    ".txt": "tokenizer or notes",
    ".model": "tokenizer",
    ".tiktoken": "tokenizer",
    ".jinja": "chat template",
    ".png": "figure",
    ".jpg": "figure",
    ".jpeg": "figure",
    ".svg": "figure",
    ".csv": "training log",
    ".jsonl": "training log",
    ".log": "training log",
    ".yaml": "configuration",
    ".yml": "configuration",
}
# Pickles can run code when loaded and these hold training state, not the model: optimizer.pt, scheduler.pt,
# rng_state.pth, training_args.bin, legacy pytorch_model.bin.
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
TEMPORARY_SUFFIXES = (".incomplete", ".lock", ".tmp", ".partial")
# Subfolders that belong to a model repository; every other subfolder stays home.
UPLOADED_FOLDERS = ("custom_generate",)  # transformers' generate(custom_generate=repo) code
# Weight files left on the Hub by an earlier push would be loaded instead of (or mixed with) the new ones:
# transformers prefers model.safetensors over a sharded index, so stale ones are deleted in the same commit.
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json")


class ModelFolderError(ValueError):
    """The folder is not a finished model that can be published; the message lists every problem found."""


class HubError(RuntimeError):
    """The Hub could not be used: no token, no network, or the Hub refused. Nothing was committed."""


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` when it is a valid Hub repository id (huggingface_hub's own rule, checked locally, so a dry
    run catches it too); else ``HubError`` saying what a valid id looks like."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise HubError(f"invalid --repo_id {repo_id!r}: expected 'user/name' or 'organisation/name', made of "
                         f"letters, digits, '-', '_' and '.' ({error})") from None
    return repo_id


@dataclass(frozen=True)
class UploadFile:
    """One file of the upload: where it lands in the repository, where it is on disk, how big it is."""

    path_in_repo: str
    local_path: Path
    size: int


@dataclass(frozen=True)
class SkippedFile:
    """A file or folder that stays home, and why."""

    path: str
    reason: str


@dataclass
class UploadPlan:
    """Everything ``push_to_hub.py`` would upload from ``folder``, and everything it leaves out."""

    folder: Path
    files: list[UploadFile] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def paths_in_repo(self) -> list[str]:
        return [f.path_in_repo for f in self.files]


# ----------------------------------------------------------------------------------------------------------------
# Which files go up


def _classify(relative: str, is_dir: bool) -> str | None:
    """The reason ``relative`` (a path under the model folder, POSIX form) stays home, or None to upload it."""
    name = relative.rsplit("/", 1)[-1]
    if name.startswith("."):
        return "hidden (markers, caches, editor and VCS files)"
    if name == "__pycache__":
        return "Python bytecode cache"
    if is_dir:
        if name.startswith("checkpoint-"):
            return "training checkpoint (weights + optimizer state of an intermediate step)"
        if "/" not in relative and name not in UPLOADED_FOLDERS:
            return f"subfolder not part of a model repository (only {', '.join(UPLOADED_FOLDERS)}/ is uploaded)"
        return None
    suffix = Path(name).suffix.lower()
    if suffix in TEMPORARY_SUFFIXES:
        return "marker or temporary file of an unfinished write"
    if suffix in PICKLE_SUFFIXES:
        return "pickled training state (optimizer, scheduler, RNG, training arguments); weights go as safetensors"
    if suffix not in UPLOADED_SUFFIXES:
        return f"not a model, tokenizer, code, card or report file (uploaded: {' '.join(sorted(UPLOADED_SUFFIXES))})"
    return None


def select_files(folder: str | os.PathLike) -> tuple[list[UploadFile], list[SkippedFile]]:
    """Walks ``folder`` and splits it into files to upload and entries to skip (both sorted by path)."""
    folder = Path(folder)
    files: list[UploadFile] = []
    skipped: list[SkippedFile] = []
    for root, dirnames, filenames in os.walk(folder):
        root_path = Path(root)
        for dirname in sorted(dirnames):
            relative = (root_path / dirname).relative_to(folder).as_posix()
            reason = _classify(relative, is_dir=True)
            if reason is not None:
                skipped.append(SkippedFile(relative + "/", reason))
                dirnames.remove(dirname)  # os.walk does not descend into removed folders
        for filename in filenames:
            path = root_path / filename
            relative = path.relative_to(folder).as_posix()
            reason = _classify(relative, is_dir=False)
            if reason is None and not path.is_file():
                reason = "not a regular file (broken link, socket, ...)"
            if reason is not None:
                skipped.append(SkippedFile(relative, reason))
            else:
                files.append(UploadFile(relative, path, path.stat().st_size))
    return sorted(files, key=lambda f: f.path_in_repo), sorted(skipped, key=lambda s: s.path)


# ----------------------------------------------------------------------------------------------------------------
# Is it a finished model?


def _run_problems(folder: Path) -> list[str]:
    """A training run of ours that has not finished (see ``mygpt.run_artifacts``) must not be published."""
    # The marker wins even beside a run_summary.json: a finished folder that a new run (e.g. resumed from an
    # explicit checkpoint) is writing into again holds both, and its top-level weights may change at any moment.
    if (folder / MARKER).exists():
        return [f"a training run is in progress here, or was stopped: the {MARKER} marker is present (wait for "
                f"the run to finish, or continue it with train_hf.py --resume_from_checkpoint)"]
    if folder_state(folder) == "unfinished":
        return [f"the folder holds checkpoint-* folders but no {SUMMARY}: its training run did not finish "
                "(continue it with train_hf.py --resume_from_checkpoint)"]
    return []


def _code_problems(folder: Path, config: dict) -> list[str]:
    """Every module that ``auto_map`` names, and every module those import relatively, must be in the folder."""
    auto_map = config.get("auto_map")
    if not auto_map:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

        model_type = config.get("model_type")
        if model_type in CONFIG_MAPPING_NAMES:
            return []  # a built-in architecture (e.g. gpt2): no remote code needed
        return [f"config.json has model_type {model_type!r}, which transformers does not know, and no auto_map, "
                "so the Hub could not load it: save the model with its classes registered for the Auto API "
                "(importing modeling_mygpt does that) so save_pretrained writes auto_map and the code files"]
    from transformers.dynamic_module_utils import get_relative_imports

    references = []
    for value in auto_map.values():
        references.extend(value if isinstance(value, (list, tuple)) else [value])
    # "module.Class" is local code; "owner/repo--module.Class" lives in another repository.
    modules = {ref.rsplit(".", 1)[0] for ref in references if isinstance(ref, str) and "--" not in ref}
    problems, seen = [], set()
    pending = sorted(modules)
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = folder / (module.replace(".", "/") + ".py")
        if not path.is_file():
            problems.append(f"missing remote code {path.name}: config.json's auto_map (or another code file) "
                            "needs it; save the model again with save_pretrained to copy the code files")
            continue
        pending.extend(get_relative_imports(path))
    return problems


def _weights_problems(folder: Path) -> list[str]:
    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        return []
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, AttributeError) as error:
            return [f"model.safetensors.index.json is not a valid shard index ({error})"]
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            return [f"missing weight shard(s) listed in model.safetensors.index.json: {', '.join(missing)}"]
        return []
    if list(folder.glob("pytorch_model*.bin")):
        return ["the weights are pickles (pytorch_model*.bin) only: save the model again with save_pretrained, "
                "which writes safetensors (model.safetensors)"]
    return ["missing weights: no model.safetensors (or sharded model.safetensors.index.json); save the model with "
            "save_pretrained"]


def _tokenizer_problems(folder: Path) -> list[str]:
    has_vocab = any(list(folder.glob(pattern)) for pattern in TOKENIZER_VOCAB_FILES)
    if (folder / "tokenizer_config.json").is_file() and has_vocab:
        return []
    missing = [] if (folder / "tokenizer_config.json").is_file() else ["tokenizer_config.json"]
    if not has_vocab:
        missing.append(f"a vocabulary ({' or '.join(TOKENIZER_VOCAB_FILES)})")
    return [f"missing tokenizer: {' and '.join(missing)}; save it next to the model with "
            "tokenizer.save_pretrained(folder), or AutoTokenizer.from_pretrained(folder) will fail on the Hub"]


def _card_problems(folder: Path) -> list[str]:
    path = folder / "README.md"
    if not path.is_file():
        return ["missing model card README.md: a finished train_hf.py run writes it from model_card.md; a card "
                "states what the model is, its data, results and limits"]
    text = path.read_text(encoding="utf-8", errors="replace")
    in_code = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
        # Code blocks are skipped: generated samples sit in them and may contain braces of their own.
        if not in_code and ("{{" in line or "{%" in line):
            return [f"README.md line {number} still holds a template placeholder ({line.strip()[:60]!r}): "
                    "it is model_card.md unfilled; the card is filled by train_hf.py at the end of a run"]
    try:
        card = ModelCard(text)
    except (ValueError, yaml.YAMLError) as error:
        reason = " ".join(str(error).split())  # PyYAML's messages span several lines
        return [f"README.md's metadata block is not valid YAML: {reason}"]
    if not card.data.to_dict():
        return ["README.md has no Hub metadata header (a '---' YAML block with license, language, tags, "
                "pipeline_tag ...), so the Hub cannot index the model"]
    return []


def check_model_folder(folder: str | os.PathLike) -> list[str]:
    """Every reason ``folder`` cannot be published as it is; an empty list means it is a finished model."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a folder" + ("" if folder.exists() else " (it does not exist)")]
    problems = _run_problems(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        problems.append("missing config.json: save the model with save_pretrained")
    else:
        try:
            config = json.loads(config_path.read_text())
        except ValueError as error:
            config = None
            problems.append(f"config.json is not valid JSON ({error})")
        if config is not None and not (isinstance(config, dict) and config.get("model_type")):
            problems.append("config.json has no model_type: it is not a transformers model configuration")
        elif config is not None:
            problems.extend(_code_problems(folder, config))
    problems.extend(_weights_problems(folder))
    problems.extend(_tokenizer_problems(folder))
    problems.extend(_card_problems(folder))
    return problems


def plan_upload(folder: str | os.PathLike) -> UploadPlan:
    """Checks ``folder`` and lists exactly what would be uploaded; ``ModelFolderError`` naming every problem."""
    folder = Path(folder).expanduser()
    problems = check_model_folder(folder)
    if problems:
        raise ModelFolderError(f"{folder} cannot be published:\n" + "\n".join(f"  - {p}" for p in problems))
    files, skipped = select_files(folder)
    return UploadPlan(folder=folder, files=files, skipped=skipped)


def human_size(size: int) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_plan(plan: UploadPlan) -> str:
    """The upload list with exact sizes in bytes, then what stays home and why."""
    width = max((len(f"{f.size:,}") for f in plan.files), default=1)
    lines = [f"{len(plan.files)} files to upload from {plan.folder} ({human_size(plan.total_size)}, "
             f"{plan.total_size:,} bytes):"]
    lines += [f"  {f.size:>{width},} B  {f.path_in_repo}" for f in plan.files]
    if plan.skipped:
        lines.append(f"{len(plan.skipped)} left out:")
        lines += [f"  {s.path}  ({s.reason})" for s in plan.skipped]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# The upload


def resolve_token() -> str:
    """The token ``huggingface_hub`` would use (``HF_TOKEN``, then the ``hf auth login`` file); ``HubError`` if none."""
    try:
        token = get_token()
    except OIDCError as error:
        raise HubError(f"the OIDC token exchange (HF_OIDC_RESOURCE is set) failed: {error}") from None
    if not token:
        raise HubError("no Hugging Face token found. Log in once with `hf auth login` (it stores a token), or set "
                       "the HF_TOKEN environment variable to a token with write access "
                       "(https://huggingface.co/settings/tokens). Tokens are never taken from the command line, so "
                       "they cannot end up in a shell history or a log.")
    return token


def stale_weight_files(remote_files: list[str], plan: UploadPlan) -> list[str]:
    """Weight files in the repository that this upload does not replace (left by an earlier, different save)."""
    uploading = set(plan.paths_in_repo)
    return sorted(p for p in remote_files if p not in uploading and "/" not in p
                  and any(fnmatch.fnmatch(p, pattern) for pattern in WEIGHT_PATTERNS))


def _hub_error(error: Exception, repo_id: str) -> HubError:
    """A message for the user from what huggingface_hub raised (the token never appears in these)."""
    if isinstance(error, OfflineModeIsEnabled):
        return HubError("cannot reach the Hugging Face Hub: offline mode is on (HF_HUB_OFFLINE or "
                        "TRANSFORMERS_OFFLINE is set). Unset it on a machine with internet access and run again. "
                        "Nothing was uploaded.")
    if isinstance(error, httpx2.TransportError):
        return HubError(f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} "
                        f"({type(error).__name__}: {error}). Check the internet connection (or HF_ENDPOINT / the "
                        "proxy settings) and run again. Nothing was uploaded.")
    status = error.response.status_code if isinstance(error, HfHubHTTPError) else None
    first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
    if status == 401:
        return HubError("the Hub rejected the token (401 Unauthorized): log in again with `hf auth login` or set "
                        "HF_TOKEN to a valid token. Nothing was uploaded.")
    if status == 403:
        return HubError(f"the token may not write to {repo_id} (403 Forbidden): use a token with write access to "
                        "that namespace (a fine-grained token needs 'write' on it). Nothing was uploaded.")
    return HubError(f"the Hub refused the upload to {repo_id} ({first_line}). Nothing was committed.")


def push_model_folder(
    plan: UploadPlan,
    repo_id: str,
    *,
    token: str,
    private: bool = False,
    commit_message: str | None = None,
) -> CommitInfo:
    """Uploads ``plan.files`` to the model repository ``repo_id`` in a single commit and returns it.

    The repository is created when missing (``private=True``: private; otherwise the account's default). Asking
    for ``private`` when the repository already exists and is public is refused rather than published. Weight
    files an earlier push left behind, which this upload does not overwrite, are deleted in the same commit.
    """
    check_repo_id(repo_id)
    api = HfApi(token=token)
    try:
        repo_id = api.create_repo(repo_id, private=True if private else None, exist_ok=True, repo_type="model").repo_id
        info = api.repo_info(repo_id, repo_type="model")
        if private and not info.private:
            raise HubError(f"{repo_id} already exists and is public, so --private cannot be honoured: make it "
                           "private in its settings on the Hub, or run without --private. Nothing was uploaded.")
        stale = stale_weight_files(api.list_repo_files(repo_id, repo_type="model"), plan)
        operations: list[CommitOperationAdd | CommitOperationDelete] = [
            CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=str(f.local_path)) for f in plan.files
        ]
        operations += [CommitOperationDelete(path_in_repo=path) for path in stale]
        if stale:
            logger.info("deleting weight files an earlier push left in %s: %s", repo_id, ", ".join(stale))
        message = commit_message or f"Upload {plan.folder.name} with push_to_hub.py"
        commit = api.create_commit(repo_id, operations=operations, commit_message=message, repo_type="model")
    except (OfflineModeIsEnabled, httpx2.TransportError, HfHubHTTPError) as error:
        raise _hub_error(error, repo_id) from None
    logger.info("uploaded %d files (%s) to %s", len(plan.files), human_size(plan.total_size), commit.commit_url)
    return commit
