"""AESM²'s L2 as in the official code: 1e-4 on expert and gate weights, nothing else.

The official core regularises the fully connected weights of experts and gates with TensorFlow's
``l2_regularizer(1e-4)`` (``1e-4 * sum(w**2) / 2`` added to the loss, i.e. coupled weight decay
1e-4) and nothing else: embeddings, indicator embeddings, batch-norm parameters and the towers
are not decayed (the official AESM² repository's ``model.py``; see this plugin's README).
"""

from __future__ import annotations

from typing import Any

import torch

#: The official ``l2_norm`` of the expert and gate layers.
L2 = 1e-4


def weight_decay_groups(model: torch.nn.Module) -> list[dict[str, Any]]:
    """Expert and gate weight matrices at :data:`L2`; every other parameter undecayed."""
    decay, keep = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        regularised = ".experts.weights." in name or name.endswith(".gates.weight")
        (decay if regularised else keep).append(param)
    return [{"params": decay, "weight_decay": L2}, {"params": keep, "weight_decay": 0.0}]
