"""How large a model one device trains: a model grown by ``mssbench scaling``'s width factor.

For each width factor (the same :func:`mssbench.scaling.grid.scaled_params` that ``mssbench
scaling --axis params`` uses), the script builds the model on the AliExpress-shaped twin's
schema, trains it for ``--steps`` timed steps (after ``--warmup``) on batches cut on the device,
and prints its parameters, matmul FLOPs per sample, samples/s and peak device memory; a size
that does not fit in memory is reported as such, and the larger ones are skipped.

    python benchmarks/scaling_size.py --device cuda --precision bf16 --factors 1,4,8,16
    python benchmarks/scaling_size.py --model supermoe --scale-params n_experts --factors 1,8,32
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from mssbench.api import build_model, load_dataset
from mssbench.flops import count_matmul_flops, dense_parameters
from mssbench.plugins import load_registry
from mssbench.runners.trainer import autocast, resolve_device, task_weights, training_loss
from mssbench.scaling.grid import scaled_params


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def measure(args: argparse.Namespace, registry: Any, data: Any, factor: float) -> dict:
    """Parameters, FLOPs per sample, samples/s and peak memory of one width factor."""
    device = resolve_device(args.device)
    keys = args.scale_params.split(",") if args.scale_params else None
    params = scaled_params(registry.model(args.model), {}, factor, keys)
    torch.manual_seed(0)
    model = build_model(registry, args.model, data.schema, params).to(device)
    train = data.train.to(device) if device.type != "cpu" else data.train
    probe = train.batch(torch.arange(min(256, len(train)), device=train.labels.device))
    flops, _ = count_matmul_flops(model, probe, data.schema, args.precision)
    fused = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, **fused)
    weights = task_weights(model, data.schema.n_tasks, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    gen = torch.Generator(device=train.labels.device).manual_seed(0)

    def step() -> None:
        rows = torch.randint(0, len(train), (args.batch_size,), generator=gen, device=gen.device)
        batch = train.batch(rows)
        with autocast(device, args.precision):
            logits, aux = model(batch)
            loss = training_loss(logits, aux, batch.labels, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    _sync(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - started
    return {
        "factor": factor,
        "params": params,
        "n_params": sum(p.numel() for p in model.parameters()),
        "dense_params": dense_parameters(model),
        "matmul_flops_per_sample": flops / len(probe),
        "samples_per_s": args.steps * args.batch_size / seconds,
        "peak_gib": _peak_gib(device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="supermoe")
    parser.add_argument("--factors", default="1,4,8,16")
    parser.add_argument("--scale-params", default="", help="default: the model's widths")
    parser.add_argument("--rows", type=int, default=200_000, help="twin rows to generate")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args()
    registry = load_registry()
    spec = registry.dataset("aliexpress-synth")
    data = load_dataset(registry, "aliexpress-synth", {**spec.options, "n_rows": args.rows})
    results = []
    for factor in (float(f) for f in args.factors.split(",")):
        try:
            result = measure(args, registry, data, factor)
        except torch.cuda.OutOfMemoryError:
            print(f"{args.model} x{factor:g}: does not fit in device memory")
            results.append({"factor": factor, "fits": False})
            break
        results.append(result)
        peak = "" if result["peak_gib"] is None else f", peak {result['peak_gib']:.1f} GiB"
        print(
            f"{args.model} x{factor:g}: {result['n_params'] / 1e6:,.1f}M parameters "
            f"({result['dense_params'] / 1e6:,.1f}M dense), "
            f"{result['matmul_flops_per_sample'] / 1e6:,.1f} MFLOP/sample, "
            f"{result['samples_per_s']:,.0f} samples/s at batch {args.batch_size}{peak}",
            flush=True,
        )
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
