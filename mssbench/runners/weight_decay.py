"""Which parameters are decayed, by how much, and how (``--weight-decay-mode``).

By default ``--weight-decay`` applies to every weight matrix; embedding tables, biases and
normalisation parameters (and any other parameter of at most one dimension) are not decayed.

A model that follows its paper elsewhere declares its own groups with the spec tag
``weight_decay_groups``: a callable ``groups(model) -> list[dict]`` returning torch optimizer
parameter groups, ``{"params": [...], "weight_decay": value}``, that together hold every
trainable parameter once. A group without ``"weight_decay"`` takes ``--weight-decay``.

``--weight-decay-mode``:

- ``coupled`` (Adam with L2, ``torch.optim.Adam(weight_decay=λ)``): ``λ·w`` is added to the
  gradient before Adam's moments, the same as an L2 term ``λ/2·Σw²`` in the loss (TensorFlow's
  ``l2_regularizer``), so the decay is rescaled by Adam's per-parameter step size.
- ``decoupled`` (AdamW, ``torch.optim.AdamW(weight_decay=λ)``): after the Adam step every
  decayed weight shrinks by ``lr·λ·w``, independently of its gradient history.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from mssbench.config import WEIGHT_DECAY_MODES
from mssbench.errors import ConfigError

#: The spec tag with a model's own parameter groups.
GROUPS_TAG = "weight_decay_groups"
#: ``--weight-decay-mode`` values and the optimizer class of each.
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = dict(
    zip(WEIGHT_DECAY_MODES, (torch.optim.Adam, torch.optim.AdamW))
)
#: Modules whose parameters are never decayed by default.
NO_DECAY_MODULES = (
    torch.nn.Embedding,
    torch.nn.EmbeddingBag,
    torch.nn.modules.batchnorm._NormBase,
    torch.nn.LayerNorm,
    torch.nn.GroupNorm,
    torch.nn.RMSNorm,
    torch.nn.LocalResponseNorm,
)

Groups = Callable[[torch.nn.Module], list[dict[str, Any]]]


def default_groups(model: torch.nn.Module) -> list[dict[str, Any]]:
    """Weight matrices in one group (``--weight-decay``), everything else undecayed."""
    decay, keep = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            exempt = (
                isinstance(module, NO_DECAY_MODULES) or name.endswith("bias") or param.dim() <= 1
            )
            (keep if exempt else decay).append(param)
    return [{"params": decay}, {"params": keep, "weight_decay": 0.0}]


def parameter_groups(
    model: torch.nn.Module, weight_decay: float, declared: Groups | None, model_name: str
) -> list[dict[str, Any]]:
    """Optimizer parameter groups, every trainable parameter in exactly one of them.

    Raises:
        ConfigError: The declared groups miss a parameter, hold one twice or hold a value
            that is not a number >= 0 (one line naming the model).
    """
    groups = (declared or default_groups)(model)
    seen: dict[int, int] = {}
    out = []
    for group in groups:
        params = list(group["params"])
        decay = group.get("weight_decay", weight_decay)
        if not isinstance(decay, (int, float)) or isinstance(decay, bool) or decay < 0:
            raise ConfigError(
                f"model {model_name!r}: {GROUPS_TAG} gives weight_decay {decay!r}; expected a "
                f"number >= 0"
            )
        for p in params:
            seen[id(p)] = seen.get(id(p), 0) + 1
        if params:
            out.append({**group, "params": params, "weight_decay": float(decay)})
    names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    missing = [n for i, n in names.items() if i not in seen]
    twice = [names.get(i, "?") for i, k in seen.items() if k > 1]
    if missing or twice:
        what = f"misses {', '.join(missing[:3])}" if missing else f"repeats {', '.join(twice[:3])}"
        raise ConfigError(
            f"model {model_name!r}: {GROUPS_TAG} {what}; every trainable parameter must be in "
            f"exactly one group"
        )
    return out


def describe(model: torch.nn.Module, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The groups for the run record: weight decay, tensors and values, a few names."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [
        {
            "weight_decay": g["weight_decay"],
            "tensors": len(g["params"]),
            "values": sum(p.numel() for p in g["params"]),
            "examples": [names[id(p)] for p in g["params"][:3]],
        }
        for g in groups
    ]


def make_optimizer(
    groups: list[dict[str, Any]],
    mode: str,
    lr: float,
    device: torch.device,
    capturable: bool = False,
) -> torch.optim.Optimizer:
    """Adam (``coupled``) or AdamW (``decoupled``) over ``groups``; fused on CUDA.

    ``capturable`` (CUDA only) keeps the step counter on the device, so that the update can be
    recorded in a CUDA graph (:mod:`mssbench.runners.graph_step`).
    """
    if mode not in OPTIMIZERS:
        raise ConfigError(
            f"--weight-decay-mode must be one of {', '.join(OPTIMIZERS)}, got {mode!r}"
        )
    fused = device.type == "cuda"
    return OPTIMIZERS[mode](
        groups, lr=lr, fused=fused or None, capturable=capturable and fused
    )
