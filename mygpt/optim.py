"""Muon for the hidden weight matrices, AdamW for everything else, stepping as one optimizer.

Muon (Jordan et al. 2024, ``torch.optim.Muon``) replaces each update of a 2-D weight by its nearest
semi-orthogonal matrix (five Newton-Schulz iterations). It is meant for the matrices inside the blocks; the
embedding, the LM head (tied to it or not), norm gains and biases keep AdamW with the usual decay groups
(:func:`mygpt.training.decay_parameter_names`). With ``adjust_lr_fn="match_rms_adamw"`` (Moonshot's "Muon is
Scalable for LLM Training") Muon's update has AdamW's RMS, so both share ``--learning_rate``, ``--weight_decay``
and the one learning-rate schedule.

The Trainer sees one optimizer (:class:`CombinedOptimizer`): its ``param_groups`` are the groups of both, so
the scheduler drives both learning rates, and its state dict holds both, so a resumed run restores both.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from mygpt.training import cpu_has_native_bf16, decay_parameter_names

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "muon")


def muon_parameter_names(model: nn.Module) -> list[str]:
    """The hidden weight matrices that Muon trains: 2-D weights of linear layers (``nn.Linear`` or GPT-2's
    ``Conv1D``) other than the embeddings and the LM head, i.e. the attention and MLP weights of the blocks."""
    output = model.get_output_embeddings()
    head = {id(output.weight)} if output is not None else set()
    parameters = dict(model.named_parameters())
    return [name for name in decay_parameter_names(model)
            if parameters[name].ndim == 2 and id(parameters[name]) not in head]


def newton_schulz(update: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float,
                  dtype: torch.dtype) -> torch.Tensor:
    """``torch.optim.Muon``'s quintic Newton-Schulz orthogonalisation of a 2-D ``update`` (m, n), run in ``dtype``.

    torch's own always runs it in bf16; this is the same iteration for fp32 (see :class:`Muon`).
    Returns an (m, n) tensor of ``dtype`` whose singular values lie roughly in [0.5, 1.5].
    """
    a, b, c = coefficients
    x = update.to(dtype)
    wide = x.T if x.size(0) > x.size(1) else x  # (min, max): the Gram matrix is the small one
    wide = wide / wide.norm().clamp(min=eps)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        gram = wide @ wide.T  # (min, min)
        wide = torch.addmm(wide, torch.addmm(gram, gram, gram, beta=b, alpha=c), wide, beta=a)
    return wide.T if x.size(0) > x.size(1) else wide


class Muon(torch.optim.Muon):
    """``torch.optim.Muon`` with the Newton-Schulz iteration in fp32 where bf16 would be emulated.

    torch runs the iteration in bf16, which is fast on GPUs and on CPUs with AVX512-BF16/AMX; on other CPUs bf16
    matmuls are emulated: with oneDNN limited to AVX2 on a 2-core Xeon the bf16 iteration was measured 6x to 30x
    slower than fp32 (bench/bench_optim.py), seconds per step, more than the training step itself. ``ns_dtype=None`` picks: bf16 unless the parameters live on a CPU
    without native bf16. The update is otherwise torch's (momentum, Nesterov, decoupled decay, learning-rate
    adjustment).
    """

    def __init__(self, params: Any, *, ns_dtype: torch.dtype | None = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        on_cpu = all(p.device.type == "cpu" for group in self.param_groups for p in group["params"])
        # Kept off the param groups: the state dict stays plain data (checkpoints load with weights_only).
        self.ns_dtype = ns_dtype or (torch.float32 if on_cpu and not cpu_has_native_bf16() else torch.bfloat16)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        if self.ns_dtype == torch.bfloat16:
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = float(group["lr"]), group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                buffer = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p.grad))
                buffer.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                update = newton_schulz(update, group["ns_coefficients"], group["ns_steps"], group["eps"],
                                       self.ns_dtype)
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update.to(p.dtype), alpha=-lr * _lr_ratio(group["adjust_lr_fn"], p.shape))
        return loss


def _lr_ratio(adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """torch.optim.Muon's learning-rate adjustment for a weight of ``shape`` (A, B)."""
    rows, cols = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols))  # "original" (Keller Jordan's)


class CombinedOptimizer(torch.optim.Optimizer):
    """Several optimizers over disjoint parameters, stepping as one.

    ``param_groups`` is every child's groups (the same dicts), so a learning-rate scheduler and ``zero_grad``
    reach all of them; ``state_dict`` / ``load_state_dict`` save and restore each child by name.
    """

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers
        first = next(iter(optimizers.values()))
        super().__init__([group for opt in optimizers.values() for group in opt.param_groups], {})
        self.defaults = {"lr": first.defaults["lr"]}  # what schedulers read for min_lr ratios

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.optimizers.values():
            optimizer.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if set(state_dict) != set(self.optimizers):
            raise ValueError(f"the optimizer state holds {sorted(state_dict)}, this run's optimizer "
                             f"{sorted(self.optimizers)}: resume with the --optimizer the run was started with")
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state_dict[name])
        # Loading replaces each child's group dicts: point at the new ones.
        self.param_groups = [group for opt in self.optimizers.values() for group in opt.param_groups]


def build_muon_adamw(model: nn.Module, weight_decay: float, adamw_class: type[torch.optim.Optimizer],
                     adamw_kwargs: dict[str, Any]) -> CombinedOptimizer:
    """Muon (momentum 0.95, Nesterov, AdamW-matched RMS) for :func:`muon_parameter_names`, ``adamw_class`` for
    the rest with decay on the remaining weight matrices (an untied LM head) only.

    ``adamw_kwargs`` is what the Trainer would give AdamW (``lr``, ``betas``, ``eps``, ...); Muon shares ``lr``
    and ``weight_decay``. A tied LM head is the embedding's parameter and appears once, in AdamW.
    """
    muon_names = set(muon_parameter_names(model))
    decay_names = set(decay_parameter_names(model))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # shared (tied) parameters once
    groups = [
        {"params": [p for n, p in named if n in decay_names - muon_names], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n not in decay_names], "weight_decay": 0.0},
    ]
    adamw = adamw_class([g for g in groups if g["params"]], **adamw_kwargs)
    muon = Muon([p for n, p in named if n in muon_names], lr=adamw_kwargs["lr"], weight_decay=weight_decay,
                adjust_lr_fn="match_rms_adamw")
    logger.info("optimizer: Muon (Newton-Schulz in %s) for %d hidden matrices (%.2fM weights), AdamW for %d "
                "other tensors", str(muon.ns_dtype).removeprefix("torch."), len(muon_names),
                sum(p.numel() for n, p in named if n in muon_names) / 1e6, len(named) - len(muon_names))
    return CombinedOptimizer({"adamw": adamw, "muon": muon})
