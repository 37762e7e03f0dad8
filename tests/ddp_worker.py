"""Trains a BatchNorm-free model with ``fit``, alone or as one rank of a ``torchrun`` launch.

Used by ``test_distributed.py``: ``python tests/ddp_worker.py OUT`` (one process) and
``torchrun --standalone --nproc-per-node 2 tests/ddp_worker.py OUT`` must end with the same
weights and the same validation metrics. Rank 0 (or the single process) saves them to ``OUT``.
A second argument names a registered loss balancer to train with (default: none, the fixed
weighted sum).
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from mssbench.balancing import build_balancer
from mssbench.nn import FeatureEncoder
from mssbench.plugins import load_registry
from mssbench.runners import distributed
from mssbench.runners.trainer import fit, predict
from mssbench.spec import ModelOutput
from mssbench.testing.synthetic import make_dataset


class Linear(nn.Module):
    """Embeddings and one linear map per task: no batch statistics, no dropout."""

    def __init__(self, schema):
        super().__init__()
        self.encoder = FeatureEncoder(schema, 4)
        self.out = nn.Linear(self.encoder.out_dim, schema.n_tasks)

    def forward(self, batch):
        logits = self.out(self.encoder(batch))
        return ModelOutput(logits, (logits**2).mean() * 0.1)


def main(out: str, balancer_name: str = "") -> None:
    torch.set_num_threads(1)
    world, device = distributed.setup(torch.device("cpu"))
    data = make_dataset(n_train=1024, n_valid=301, n_test=257)
    torch.manual_seed(0)
    model = Linear(data.schema)
    balancer = None
    if balancer_name:
        spec = load_registry().balancer(balancer_name)
        balancer = build_balancer(spec, data.schema.n_tasks, torch.ones(data.schema.n_tasks), {})
    result = fit(
        model,
        data.schema,
        data.train,
        data.valid,
        model_name="linear",
        device=device,
        seed=3,
        epochs=2,
        batch_size=64,
        eval_batch_size=50,
        lr=1e-2,
        weight_decay=0.0,
        patience=5,
        progress=False,
        log=lambda _m: None,
        world=world,
        balancer=balancer,
    )
    test_logits = predict(model, data.test, device, 50, world)
    if world.is_main:
        torch.save(
            {
                "state": model.state_dict(),
                "history": result.state.history,
                "test_logits": test_logits,
                "train_samples": result.state.train_samples,
                "balancer": balancer.state_dict() if balancer is not None else {},
            },
            out,
        )
    distributed.teardown(world)


if __name__ == "__main__":
    main(*sys.argv[1:3])
