"""The training loop's parts that transformers' ``Trainer`` leaves to us.

* AdamW parameter groups: weight decay on the weight matrices only, never on biases, norms or embeddings.
* Evaluation metrics computed exactly over every scored token: loss, perplexity and bits per byte.
* Throughput: training tokens/s (evaluation and checkpointing excluded) and an MFU estimate.
* Callbacks: the live training log (``training_log.csv``).
* Mixed-precision choice per hardware.

Nothing here knows about GPT in particular; any causal LM whose loss shifts labels inside works.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import Trainer, TrainerCallback
from transformers.pytorch_utils import Conv1D

from mygpt.files import atomic_path
from mygpt.scoring import row_nats as token_nats  # (B, 2) summed nats and targets per row
from mygpt.text_metrics import bits_per_byte

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# Hardware: precision and peak FLOP/s


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 instructions (AVX512-BF16 or AMX); without them bf16 matmuls are emulated."""
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def choose_precision(requested: str, use_cpu: bool) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for ``requested`` (``auto`` or one of them) on this machine.

    auto: bf16 on GPUs that support it, fp16 on older GPUs, bf16 on CPUs with native bf16, else fp32 (measured
    here: bf16 autocast on an AVX2-only CPU is slower than fp32, see bench/bench_train.py).
    """
    if requested not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"--precision must be auto, fp32, bf16 or fp16, got {requested!r}")
    cuda = torch.cuda.is_available() and not use_cpu
    if requested == "fp16" and not cuda:
        raise ValueError("--precision fp16 needs a CUDA GPU; on CPU use bf16 or fp32")
    if requested != "auto":
        return requested
    if cuda:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


# Dense peak TFLOP/s per GPU: (fp32 without tensor cores, bf16/fp16 tensor cores). Public spec-sheet figures
# (SXM variants); they only scale the MFU estimate.
GPU_PEAK_TFLOPS = {
    "H200": (67.0, 989.0), "H100": (67.0, 989.0), "A100": (19.5, 312.0), "L40S": (91.6, 362.0),
    "L4": (30.3, 121.0), "A10": (31.2, 125.0), "V100": (15.7, 125.0), "T4": (8.1, 65.0),
    "RTX 4090": (82.6, 165.0), "RTX 3090": (35.6, 71.0),
}


def peak_flops_per_device(precision: str, use_cpu: bool) -> tuple[float | None, str]:
    """Estimated peak FLOP/s of one training device, and how it was estimated (None when unknown)."""
    if torch.cuda.is_available() and not use_cpu:
        name = torch.cuda.get_device_name()
        for key, (fp32, half) in GPU_PEAK_TFLOPS.items():
            if key in name:
                peak = half if precision in ("bf16", "fp16") else fp32
                return peak * 1e12, f"{name}: {peak} TFLOP/s ({precision}, spec sheet)"
        return None, f"{name}: unknown peak (give --peak_tflops)"
    threads = torch.get_num_threads()
    ghz = _cpu_ghz()
    if ghz is None:
        return None, "CPU clock unknown (give --peak_tflops)"
    capability = torch.backends.cpu.get_cpu_capability()  # e.g. "AVX2", "AVX512"
    # fp32 FLOPs per cycle per core: two FMA units x SIMD lanes x 2 (multiply and add).
    lanes = 16 if "AVX512" in capability else 8 if "AVX2" in capability else 4
    per_cycle = 2 * lanes * 2
    flags = _cpu_flags()
    if precision == "bf16" and "amx_bf16" in flags:
        # bf16 matmuls run on AMX tiles: 1,024 bf16 FLOPs per cycle per core (Intel's figure for Sapphire
        # Rapids); an fp32 peak would put the MFU of a bf16 run above 100%.
        per_cycle, capability = 1024, "AMX-BF16"
    elif precision == "bf16" and "avx512_bf16" in flags:
        per_cycle, capability = 2 * per_cycle, "AVX512-BF16"  # bf16 dot products: twice the fp32 lanes
    peak = threads * ghz * 1e9 * per_cycle
    return peak, f"{threads} threads x {ghz:.2f} GHz x {per_cycle} FLOP/cycle ({capability})"


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        found = re.search(r"^flags\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    except OSError:
        return set()
    return set(found.group(1).split()) if found else set()


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (or the machine type)."""
    try:
        found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    except OSError:
        found = None
    return found.group(1).strip() if found else platform.machine()


def _cpu_ghz() -> float | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    found = re.findall(r"cpu MHz\s*:\s*([\d.]+)", text)
    return max(float(x) for x in found) / 1000 if found else None


def training_flops_per_token(model: nn.Module, context: int) -> float:
    """FLOPs of one training token (forward + backward): ``6 N + 12 L C T`` as in the PaLM paper's appendix.

    ``N`` counts the weights that take part in matrix multiplications (linear layers, the LM head even when tied
    to the embedding), not the lookup tables; ``12 L C T`` is the attention score and weighted-sum work.
    """
    matmul_params = 0
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, (nn.Linear, Conv1D)) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            matmul_params += module.weight.numel()
    config = model.config
    return 6.0 * matmul_params + 12.0 * config.num_hidden_layers * config.hidden_size * context


# ---------------------------------------------------------------------------------------------------------------
# Optimizer groups


def decay_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters that get weight decay: weights of linear layers, except a head tied to the embedding.

    Biases, norm gains and embedding tables are left alone: decaying them pulls useful scales and rare-token
    embeddings towards zero without regularising anything (as in nanoGPT and minGPT).
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decayed = {id(m.weight) for m in model.modules()
               if isinstance(m, (nn.Linear, Conv1D)) and id(m.weight) not in embeddings}
    return [name for name, p in model.named_parameters() if id(p) in decayed]


# ---------------------------------------------------------------------------------------------------------------
# Throughput


class ThroughputMeter(TrainerCallback):
    """Training tokens per second, counting only time spent training (not evaluating or checkpointing)."""

    def __init__(self, tokens_per_step: int, flops_per_token: float, peak_flops: float | None,
                 peak_how: str = "") -> None:
        self.tokens_per_step = tokens_per_step
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops  # for all processes together
        self.peak_how = peak_how  # how the peak was estimated, for the summary
        self._last = None  # time of the last training-step end (or of the end of an evaluation/save)
        self.step_seconds: list[float] = []  # each training step's duration
        self._taken = 0  # steps already reported by take()

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self._last is not None:
            self.step_seconds.append(now - self._last)
        self._last = now

    def on_evaluate(self, args, state, control, **kwargs):
        self._last = time.perf_counter()  # the evaluation just done is not training time

    def on_save(self, args, state, control, **kwargs):
        self._last = time.perf_counter()

    def take(self) -> dict[str, float]:
        """Tokens/s (and MFU) since the previous call."""
        steps = self.step_seconds[self._taken:]
        self._taken = len(self.step_seconds)
        return self._rates(steps)

    def overall(self) -> dict[str, float]:
        """Tokens/s (and MFU) over every step so far."""
        return self._rates(self.step_seconds)

    def _rates(self, step_seconds: list[float]) -> dict[str, float]:
        seconds = sum(step_seconds)
        if not step_seconds or seconds <= 0:
            return {}
        rate = len(step_seconds) * self.tokens_per_step / seconds
        out = {"tokens_per_second": rate}
        if self.peak_flops:
            out["mfu"] = rate * self.flops_per_token / self.peak_flops
        return out


# ---------------------------------------------------------------------------------------------------------------
# The Trainer


def untied_missing_keys(model: nn.Module, missing_keys: list[str]) -> list[str]:
    """The keys of ``missing_keys`` that are really missing: a tied LM head, saved once under the embedding, is not."""
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    return [key for key in missing_keys if key not in tied]


class LMTrainer(Trainer):
    """A ``Trainer`` for causal LM pretraining.

    Differences from the base class: AdamW groups without decay on biases, norms and embeddings (and Muon for
    the hidden matrices with ``args.optimizer == "muon"``); evaluation
    reports the loss averaged over every scored token (not over batches), perplexity and bits per byte; training
    logs carry tokens/s, the MFU estimate and tokens seen; no forward call builds a KV cache (the model's
    configuration keeps ``use_cache`` on for generation).

    Args:
        split_stats: per evaluation prefix (``"eval"``, ``"test"``) the split's ``tokens`` and ``bytes``, for
            bits per byte.
        meter: the :class:`ThroughputMeter` also registered as a callback.
    """

    def __init__(self, *args: Any, split_stats: dict[str, dict[str, int]], meter: ThroughputMeter,
                 **kwargs: Any) -> None:
        super().__init__(*args, compute_metrics=_sum_nats, **kwargs)
        self.split_stats = split_stats
        self.meter = meter
        self.add_callback(meter)

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        return decay_parameter_names(model)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The base class's AdamW, or with ``--optimizer muon`` Muon for the hidden matrices plus that AdamW for
        the rest, as one optimizer (:func:`mygpt.optim.build_muon_adamw`)."""
        if self.optimizer is not None or getattr(self.args, "optimizer", "adamw") != "muon":
            return super().create_optimizer(model)
        from mygpt.optim import build_muon_adamw  # mygpt.optim builds on this module

        model = self.model if model is None else model
        adamw_class, adamw_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = build_muon_adamw(model, self.args.weight_decay, adamw_class, adamw_kwargs)
        return self.optimizer

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None):
        """Training: the model's own loss, without a KV cache. Evaluation: one forward pass without labels, then
        each row's summed nats and scored targets.

        In evaluation the base class would pass the labels to the model, which computes a loss only to have it
        averaged per batch, and keep the whole (B, T, V) logits for the metrics; here each batch gets one cross
        entropy and yields (B, 2) numbers (see :func:`token_nats`), which the evaluation loop gathers across
        processes as the batch's "predictions".

        Returns:
            the loss, and with ``return_outputs`` in evaluation ``{"loss": mean loss of the batch's scored tokens,
            "nats": (B, 2) float64 sums}``.
        """
        inputs = {**inputs, "use_cache": False}
        if model.training:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        labels = inputs.pop("labels")
        logits = model(**inputs).logits  # (B, T, V)
        sums = token_nats(logits, labels)  # (B, 2)
        loss = (sums[:, 0].sum() / sums[:, 1].sum().clamp(min=1)).float()
        return (loss, {"loss": loss, "nats": sums}) if return_outputs else loss

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        # A checkpoint stores a tied LM head once, under the embedding; transformers then reports the head as
        # "missing" when it loads the best checkpoint (tests/test_train.py names this). It is not missing: re-tie,
        # and keep real warnings only.
        missing = untied_missing_keys(self.model, load_result.missing_keys)
        if len(missing) < len(load_result.missing_keys):
            self.model.tie_weights()
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))

    def evaluation_loop(self, dataloader, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"):
        # The base loop sets <prefix>_loss to the mean of the batch losses after compute_metrics has run; a block
        # with fewer scored tokens (the tail block, a short last batch) would count as much as a full one.
        output = super().evaluation_loop(dataloader, description, prediction_loss_only=prediction_loss_only,
                                         ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        prefix = metric_key_prefix
        metrics = output.metrics
        nats, targets = metrics.pop(f"{prefix}_nats"), metrics.pop(f"{prefix}_targets")
        # Replace the Trainer's mean of batch means by the mean over every scored token.
        metrics[f"{prefix}_loss"] = nats / targets
        metrics[f"{prefix}_perplexity"] = math.exp(min(nats / targets, 700.0))
        stats = self.split_stats.get(prefix)
        if stats:
            # The first token of each block has no context and is not scored; it is charged the mean loss.
            metrics[f"{prefix}_bits_per_byte"] = bits_per_byte(nats / targets * stats["tokens"], stats["bytes"])
        return output

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log, not an evaluation
            logs.update(self.meter.take())
            logs["tokens_seen"] = self.state.global_step * self.meter.tokens_per_step
        super().log(logs, start_time)


def _sum_nats(prediction) -> dict[str, float]:
    sums = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1, 2)
    return {"nats": float(sums[:, 0].sum()), "targets": float(sums[:, 1].sum())}


# ---------------------------------------------------------------------------------------------------------------
# The live training log


LOG_COLUMNS = ("step", "epoch", "tokens_seen", "loss", "eval_loss", "eval_perplexity", "eval_bits_per_byte",
               "learning_rate", "grad_norm", "tokens_per_second", "mfu")


class CsvLogCallback(TrainerCallback):
    """Writes every log event as a row of ``training_log.csv`` as training goes (main process only).

    On a resumed run the file is rewritten from the checkpoint's history first, so it never holds the steps
    that the interrupted run did after its last checkpoint.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            write_log_csv(self.path, state.log_history)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with self.path.open("a", newline="") as handle:
                csv.DictWriter(handle, LOG_COLUMNS, extrasaction="ignore").writerow(
                    _row({**logs, "step": state.global_step}))


def _row(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in entry.items() if k in LOG_COLUMNS}


def write_log_csv(path: str | os.PathLike, log_history: list[dict[str, Any]]) -> None:
    """Writes ``log_history`` (the Trainer's list of log dicts) as ``training_log.csv``, atomically."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, LOG_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        previous = None
        for entry in log_history:
            row = _row(entry)
            if ("loss" in entry or "eval_loss" in entry) and row != previous:  # the final re-evaluation repeats
                writer.writerow(row)
            previous = row
