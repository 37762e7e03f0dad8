"""FLOPs of one training step, counted by ``torch.utils.flop_counter.FlopCounterMode``."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from mssbench.runners.trainer import autocast, task_weights, training_loss
from mssbench.spec import Batch, DatasetSchema

#: Matmul ops that FlopCounterMode counts (its other entries, convolutions and attention, do
#: not occur in the built-in models).
MATMUL_OPS = ("mm", "addmm", "bmm", "baddbmm")


def count_matmul_flops(
    model: torch.nn.Module, batch: Batch, schema: DatasetSchema, precision: str = "fp32"
) -> tuple[float, dict[str, float]]:
    """Matmul FLOPs of one training step (forward + backward) on ``batch``.

    Returns:
        ``(total, by_op)``: the matmul total and the FLOPs of every counted op (``mm``, ...).
    """
    model.train()
    weights = task_weights(model, schema.n_tasks, batch.labels.device)
    counter = FlopCounterMode(display=False)
    with counter:
        with autocast(batch.labels.device, precision):
            logits, aux = model(batch)
            loss = training_loss(logits, aux, batch.labels, weights)
        loss.backward()
    model.zero_grad(set_to_none=True)
    counts = counter.get_flop_counts()["Global"]
    by_op = {str(op).split(".")[-1]: float(v) for op, v in counts.items()}
    total = sum(v for op, v in by_op.items() if op in MATMUL_OPS)
    return total, by_op


def dense_parameters(model: torch.nn.Module) -> int:
    """Parameters outside embedding tables (the count scaling laws are usually stated in)."""
    embedding = sum(
        p.numel()
        for m in model.modules()
        if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag))
        for p in m.parameters(recurse=False)
    )
    return sum(p.numel() for p in model.parameters()) - embedding
