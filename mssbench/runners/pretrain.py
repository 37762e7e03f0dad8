"""Contrastive pre-training of a model's shared representation (``--pretrain contrastive``).

In the spirit of CLUE (Shin et al., "Scaling Law for Recommendation Models: Towards
General-purpose User Representations", AAAI 2023, arXiv 2111.11294), which trains user
encoders with a contrastive objective before any supervised task: two views of each training
row are made by field masking (each categorical id replaced by the out-of-vocabulary id 0 and
each numeric value by 0, independently with probability :data:`MASK_PROB`), the model's shared
representation of both views goes through a small projection head, and the InfoNCE loss
(symmetric, temperature :data:`TEMPERATURE`, the other rows of the batch as negatives) pulls
the two views of a row together. The projection head is dropped afterwards and supervised
training starts from the pre-trained weights.

A model takes part by exposing ``representation(batch) -> [B, D]``, the part of the network
that every task shares (shared-bottom: the bottom MLP; MMoE: the concatenated experts).
Labels never reach the model here: views carry zero labels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from mssbench.errors import ConfigError
from mssbench.spec import Batch, Split

#: Probability that a field of a view is masked.
MASK_PROB = 0.2
#: InfoNCE temperature.
TEMPERATURE = 0.1
#: Widths of the projection head (dropped after pre-training).
PROJECTION = (128, 64)
#: Rows on which view agreement is measured before and after pre-training.
PROBE_ROWS = 4096

Represent = Callable[[Batch], torch.Tensor]


def shared_representation(model: nn.Module, model_name: str) -> Represent:
    """The model's ``representation`` method (seen through a wrapping head such as ESMM).

    Raises:
        ConfigError: The model exposes no shared representation.
    """
    inner = getattr(model, "backbone", model)
    represent = getattr(inner, "representation", None)
    if not callable(represent):
        raise ConfigError(
            f"--pretrain contrastive needs a model with a shared representation "
            f"(a representation(batch) method); {model_name!r} has none"
        )
    return represent


def masked_view(batch: Batch, prob: float, generator: torch.Generator) -> Batch:
    """``batch`` with each categorical and numeric field masked with probability ``prob``.

    A masked categorical field takes the out-of-vocabulary id 0 and a masked numeric one the
    value 0; the scenario is kept; labels are zeros (the model must not read them).
    """
    cat, num = batch.categorical, batch.numeric
    keep_c = torch.rand(cat.shape, generator=generator) >= prob
    keep_n = torch.rand(num.shape, generator=generator) >= prob
    return Batch(
        cat * keep_c.to(cat.device),
        num * keep_n.to(num.device, num.dtype),
        batch.scenario,
        torch.zeros_like(batch.labels),
    )


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """Symmetric InfoNCE: row ``i`` of ``z1`` should match row ``i`` of ``z2`` among all rows."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    logits = z1 @ z2.T / temperature
    target = torch.arange(len(z1), device=z1.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


@torch.no_grad()
def view_agreement(
    model: nn.Module, represent: Represent, split: Split, device: torch.device, seed: int
) -> float:
    """Share of rows whose second view is the nearest (cosine) of all rows' second views.

    Measured in eval mode on the first :data:`PROBE_ROWS` rows of ``split``; chance is
    ``1 / rows``.
    """
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    rows = torch.arange(min(PROBE_ROWS, len(split)))
    batch = split.batch(rows)
    a = represent(masked_view(batch, MASK_PROB, gen).to(device))
    b = represent(masked_view(batch, MASK_PROB, gen).to(device))
    sim = F.normalize(a.float(), dim=1) @ F.normalize(b.float(), dim=1).T
    hits = (sim.argmax(dim=1) == torch.arange(len(rows), device=sim.device)).float().mean()
    model.train(was_training)
    return float(hits)


def _projector(width: int, device: torch.device) -> nn.Module:
    hidden, out = PROJECTION
    return nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, out)).to(device)


@dataclass(frozen=True)
class PretrainSettings:
    """How long and how fast the contrastive pre-training runs (the run's own values)."""

    epochs: int
    batch_size: int
    lr: float
    seed: int


def pretrain_contrastive(
    model: nn.Module,
    train: Split,
    settings: PretrainSettings,
    *,
    model_name: str,
    device: torch.device,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Pre-train ``model``'s shared representation on ``train`` (labels unused).

    Returns:
        What the run record keeps: method, epochs, steps, the last epoch's mean loss, view
        agreement (:func:`view_agreement`) before and after, and seconds spent.
    """
    represent = shared_representation(model, model_name)
    started = time.perf_counter()
    before = view_agreement(model, represent, train, device, settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    with torch.no_grad():
        width = represent(train.batch(torch.arange(min(2, len(train)))).to(device)).shape[1]
    projector = _projector(width, device)
    optimizer = torch.optim.Adam([*model.parameters(), *projector.parameters()], lr=settings.lr)
    model.train()
    steps, mean_loss = 0, float("nan")
    for epoch in range(1, settings.epochs + 1):
        total, count = torch.zeros((), device=device), 0
        for rows in torch.randperm(len(train), generator=gen).split(settings.batch_size):
            if len(rows) < 2:
                continue  # batch normalisation needs two rows; InfoNCE needs a negative
            batch = train.batch(rows)
            v1 = masked_view(batch, MASK_PROB, gen).to(device)
            v2 = masked_view(batch, MASK_PROB, gen).to(device)
            loss = info_nce(projector(represent(v1)), projector(represent(v2)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            count += 1
        steps += count
        mean_loss = float(total) / max(count, 1)
        log(f"contrastive pre-training epoch {epoch}/{settings.epochs}: InfoNCE {mean_loss:.4f}")
    after = view_agreement(model, represent, train, device, settings.seed)
    return {
        "method": "contrastive",
        "epochs": settings.epochs,
        "steps": steps,
        "mask_prob": MASK_PROB,
        "temperature": TEMPERATURE,
        "final_loss": mean_loss,
        "view_agreement_before": before,
        "view_agreement_after": after,
        "seconds": time.perf_counter() - started,
    }
