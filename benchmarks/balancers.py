"""Loss-balancer cost: CPU seconds of one training step with each balancer against ``fixed``.

One process, one model (``mmoe`` at the ``quick`` preset's sizes: embeddings of 8, experts
64/32, towers 16) on the synthetic schema of the conformance checks, batches of ``--batch``
rows. Each round times ``--steps`` steps (forward, the balancer's backward, Adam) of every
balancer in turn, so that the machine's load hits them alike; the figure is the median over
``--rounds`` rounds of CPU seconds per step, and the ratio against ``fixed`` in the same round.

Usage::

    python benchmarks/balancers.py --rounds 5 --steps 20
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from mssbench.balancing import build_balancer
from mssbench.plugins import load_registry
from mssbench.runners.trainer import task_losses, task_weights
from mssbench.spec import resolve_aux_loss
from mssbench.testing import default_schema, make_split

SIZES = {"embed_dim": 8, "n_experts": 4, "expert_hidden": [64, 32], "tower_hidden": [16]}


def _setup(registry, name, schema):
    torch.manual_seed(0)
    spec = registry.model("mmoe")
    model = spec.build(schema, **{**spec.defaults, **SIZES})
    weights = task_weights(model, schema.n_tasks, torch.device("cpu"))
    balancer = build_balancer(registry.balancer(name), schema.n_tasks, weights, {})
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam([*params, *balancer.parameters()], lr=1e-3)
    return model, balancer, params, opt


def _time(setup, batch, steps):
    model, balancer, params, opt = setup
    t0 = time.process_time()
    for _ in range(steps):
        logits, aux = model(batch)
        opt.zero_grad(set_to_none=True)
        aux_loss = resolve_aux_loss(aux, batch.labels).float()
        balancer.backward(task_losses(logits, batch.labels), params, aux_loss)
        opt.step()
    return (time.process_time() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=512)
    args = ap.parse_args()
    registry = load_registry()
    names = ["fixed", *sorted(n for n in registry.balancers if n != "fixed")]
    schema = default_schema()
    batch = make_split(schema, args.batch, seed=1).batch(slice(0, args.batch))
    setups = {n: _setup(registry, n, schema) for n in names}
    for name in names:
        _time(setups[name], batch, 2)  # warm-up
    per_step = {n: [] for n in names}
    ratio = {n: [] for n in names}
    for _ in range(args.rounds):
        this = {n: _time(setups[n], batch, args.steps) for n in names}
        for n in names:
            per_step[n].append(this[n])
            ratio[n].append(this[n] / this["fixed"])
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, batch {args.batch}, tasks {schema.n_tasks}"
    )
    print("| balancer | CPU ms / step (median) | x fixed (median of rounds) |")
    print("|---|---|---|")
    for n in names:
        ms = 1000 * statistics.median(per_step[n])
        print(f"| {n} | {ms:.1f} | {statistics.median(ratio[n]):.2f} |")


if __name__ == "__main__":
    main()
