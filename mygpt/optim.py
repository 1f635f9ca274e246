"""Muon for the blocks' weight matrices, AdamW for everything else, as one optimizer the Trainer can drive.

Muon (Jordan et al., 2024; ``torch.optim.Muon``) replaces each 2-D weight's momentum update by its nearest
orthogonal matrix (five Newton-Schulz iterations), so every direction of the matrix moves at the same rate; it is
meant for hidden weight matrices only. Embeddings, the LM head, norm gains and biases keep AdamW. With
``adjust_lr_fn="match_rms_adamw"`` (Moonshot's scaling, 0.2·sqrt(max(A, B))) Muon's update has AdamW's RMS, so
both halves share one learning rate and one schedule: ``--learning_rate`` and ``--lr_scheduler_type`` mean what
they mean for AdamW.

Measured on the default preset (bench/ablation.py, 400 steps, 2 seeds): see the training issue's closing note and
the preset's comments.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

OPTIMIZERS = ("adamw", "muon")


def muon_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters Muon takes: 2-D weights of the linear layers inside the transformer blocks.

    Embedding tables and the LM head (tied to the embedding or not) are not hidden matrices: a row per token,
    most rows rarely touched, so orthogonalising their update would spread it over tokens that were not seen.
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    excluded = embeddings | ({id(head.weight)} if head is not None else set())
    return [name for name, p in model.named_parameters()
            if p.requires_grad and p.dim() == 2 and id(p) not in excluded]


class MuonWithAdamW(torch.optim.Optimizer):
    """One optimizer over two kinds of parameter groups: Muon groups and AdamW groups.

    The groups are the very dicts the two inner optimizers (``torch.optim.Muon`` and ``torch.optim.AdamW``) step
    with, so a learning-rate scheduler that sets ``group["lr"]`` on this optimizer drives both. ``state_dict``
    holds both inner states, so a checkpoint resumes exactly.

    Args:
        model: the network; its parameters are split by :func:`muon_parameter_names`.
        lr: the peak learning rate of both halves.
        weight_decay: decoupled weight decay of the Muon matrices and of the AdamW parameters in ``decay_names``.
        decay_names: the AdamW parameters that get weight decay (the others get none).
        betas, eps: AdamW's.
        momentum: Muon's momentum (Nesterov).
    """

    def __init__(self, model: nn.Module, lr: float, weight_decay: float, decay_names: list[str],
                 betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8, momentum: float = 0.95) -> None:
        muon_names = set(muon_parameter_names(model))
        decay = set(decay_names)
        seen: set[int] = set()
        groups: dict[str, list[nn.Parameter]] = {"muon": [], "adamw_decay": [], "adamw_no_decay": []}
        for name, param in model.named_parameters():  # a tied head is the embedding: counted once
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            kind = "muon" if name in muon_names else "adamw_decay" if name in decay else "adamw_no_decay"
            groups[kind].append(param)
        if not groups["muon"]:
            raise ValueError("--optimizer muon found no weight matrices inside the blocks to give to Muon")
        muon_groups = [{"params": groups["muon"], "weight_decay": weight_decay}]
        adamw_groups = [{"params": groups["adamw_decay"], "weight_decay": weight_decay},
                        {"params": groups["adamw_no_decay"], "weight_decay": 0.0}]
        adamw_groups = [g for g in adamw_groups if g["params"]]
        super().__init__(muon_groups + adamw_groups, {"lr": lr})
        # The inner optimizers adopt this optimizer's group dicts (add_param_group keeps the dict it is given).
        self.muon = torch.optim.Muon(self.param_groups[:1], lr=lr, weight_decay=weight_decay, momentum=momentum,
                                     adjust_lr_fn="match_rms_adamw")
        self.adamw = torch.optim.AdamW(self.param_groups[1:], lr=lr, betas=betas, eps=eps)
        assert self.muon.param_groups[0] is self.param_groups[0]

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if set(state_dict) != {"muon", "adamw"}:
            raise ValueError("this checkpoint's optimizer state is not a Muon + AdamW state (was the run started "
                             "with another --optimizer?)")
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        # load_state_dict gives the inner optimizers new group dicts: adopt them, so the scheduler still drives both.
        self.param_groups = self.muon.param_groups + self.adamw.param_groups
