"""Training-efficiency benchmark: runner samples/s against a per-row DataLoader and the hardware.

For each model (``mmoe``, ``aesm``) and configuration (``published``, ``small``) on the
SYNTHETIC AliExpress twin (``aliexpress-synth``), in one process and on one device:

* ``ours``: the real runner, ``mssbench.runners.trainer.fit`` (one epoch cut to ``--steps``
  steps by ``max_steps_per_epoch``, after a separate warm-up call); samples/s is
  ``train_samples / train_seconds`` of the returned state, which excludes the validation pass
  at the end of the epoch;
* ``per-row``: the peers' way, a ``torch.utils.data.Dataset`` whose ``__getitem__`` returns
  one row (``--row-layout fields``: a dict of per-field values as torch-rechub's
  ``TorchDataset`` does; ``arrays``: per-row categorical/numeric/label arrays as MTReclib's
  ``AliExpressDataset`` does), a ``DataLoader(batch_size=B, shuffle=True, num_workers=0)`` with
  default collation, converted into the same ``Batch``, with the same model initialisation,
  Adam (``torch.optim.Adam`` as the peers create it; the runner may pick a fused kernel on
  CUDA), loss (per-task BCE-with-logits times the model's task weights, plus ``aux_loss``) and,
  like the peers' loops, ``loss.item()`` once per step;
* ``ceiling``: matmul FLOPs per sample of one training step (forward + backward, counted by
  ``torch.utils.flop_counter.FlopCounterMode``: ``mm``, ``addmm``, ``bmm``, ``baddbmm``)
  against the best dense matmul FLOP/s measured on this machine in the same run
  (``torch.mm`` of several shapes, best of ``--peak-repeats``). Ceiling samples/s =
  FLOP/s / FLOPs per sample: the throughput if every matmul of the step ran at the best rate
  measured and everything else (element-wise work, embeddings, optimizer, data) were free.

Prints samples/s of each, the efficiency (achieved / ceiling) of both loops, ours / per-row,
the machine and versions, and the peak RSS. ``--json`` writes the same figures to a file.

Usage::

    python benchmarks/train_efficiency.py                          # all models and configs
    python benchmarks/train_efficiency.py --models mmoe --configs published --steps 20
    python benchmarks/train_efficiency.py --device cuda --bf16 --json out.json
    python benchmarks/train_efficiency.py --device cuda --bf16 --step graph   # CUDA graphs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import mssbench
from mssbench import flops
from mssbench.api import build_model, load_dataset
from mssbench.config import STEPS
from mssbench.nn import ESMMHead
from mssbench.plugins import Registry, load_registry
from mssbench.records import cpu_name
from mssbench.runners.trainer import (
    autocast,
    fit,
    resolve_device,
    seed_everything,
    task_weights,
    training_loss,
)
from mssbench.spec import Batch, DatasetSchema, LoadedDataset, Split

DATASET = "aliexpress-synth"
#: Hyper-parameters per configuration and model, over the model's defaults. The published MMoE
#: configuration is MTReclib's (easezyc/Multitask-Recommendation-Library); AESM²'s defaults
#: are the official AliExpress configuration (plugins/mssbench_aesm/README.md), so its
#: "small" entry coincides with them and is measured once.
CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "published": {
        "mmoe": {
            "embed_dim": 128,
            "n_experts": 8,
            "expert_hidden": [512, 256],
            "tower_hidden": [128, 64],
        },
        "aesm": {},
    },
    "small": {
        "mmoe": {"embed_dim": 16, "n_experts": 4, "expert_hidden": [64, 32]},
        "aesm": {"embed_dim": 16, "scenario_expert_hidden": [64], "task_expert_hidden": [32]},
    },
}
#: ``[M, K] @ [K, N]`` shapes timed for the machine's matmul throughput: the MMoE expert
#: layers at batch 2048 and a square one.
PEAK_SHAPES = ((2048, 2048, 512), (2048, 512, 512), (2048, 512, 256), (2048, 2048, 2048))
TARGET_EFFICIENCY = 0.80  # published configuration on CPU: ours >= 80% of the ceiling
TARGET_SPEEDUP = 2.0  # small configuration: ours >= 2x the per-row loop


# --------------------------------------------------------------------------------------------
# Machine and throughput ceiling
# --------------------------------------------------------------------------------------------


def _machine(device: torch.device) -> str:
    """One line: CPU, cores, memory, GPU, versions and torch threads."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = ""
    if device.type == "cuda":
        gpu = f"; GPU {torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return (
        f"{cpu_name()}, {os.cpu_count()} CPUs (affinity {len(os.sched_getaffinity(0))}), "
        f"{mem:.0f} GiB RAM{gpu}; Python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), numpy {np.__version__}, "
        f"mssbench {mssbench.__version__}"
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, repeats: int) -> dict[str, float]:
    """Dense matmul FLOP/s of ``torch.mm`` per shape ``"MxKxN"``, best of ``repeats``.

    Each repeat times enough back-to-back products for at least 0.2 s (a few on a GPU), so
    that timer resolution and launch latency do not count.
    """
    out: dict[str, float] = {}
    gen = torch.Generator(device="cpu").manual_seed(0)
    for m, k, n in PEAK_SHAPES:
        a = torch.randn(m, k, generator=gen).to(device, dtype)
        b = torch.randn(k, n, generator=gen).to(device, dtype)
        flops = 2.0 * m * k * n
        torch.mm(a, b)  # first call: allocations, kernel selection
        _sync(device)
        t = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        once = max(time.perf_counter() - t, 1e-6)
        calls = max(1, min(1000, math.ceil(0.2 / once)))
        best = 0.0
        for _ in range(repeats):
            _sync(device)
            t = time.perf_counter()
            for _ in range(calls):
                torch.mm(a, b)
            _sync(device)
            best = max(best, flops * calls / (time.perf_counter() - t))
        out[f"{m}x{k}x{n}"] = best
    return out


def _precision(bf16: bool) -> str:
    """The runner's ``--precision`` value for ``--bf16``."""
    return "bf16" if bf16 else "fp32"


def _loss(model: torch.nn.Module, batch: Batch, weights: torch.Tensor) -> torch.Tensor:
    """The runner's training loss of ``model`` on ``batch``."""
    logits, aux = model(batch)
    return training_loss(logits, aux, batch.labels, weights)


def count_matmul_flops(
    model: torch.nn.Module, batch: Batch, schema: DatasetSchema, bf16: bool
) -> tuple[float, dict[str, float]]:
    """Matmul FLOPs of one training step (:func:`mssbench.flops.count_matmul_flops`)."""
    return flops.count_matmul_flops(model, batch, schema, _precision(bf16))


# --------------------------------------------------------------------------------------------
# Models and data
# --------------------------------------------------------------------------------------------


def make_model(
    registry: Registry,
    name: str,
    schema: DatasetSchema,
    params: dict[str, Any],
    device: torch.device,
    seed: int,
) -> torch.nn.Module:
    """Build ``name`` as ``mssbench run`` does (``--head auto``), seeded, on ``device``."""
    seed_everything(seed)
    model = build_model(registry, name, schema, params)
    spec = registry.model(name)
    if schema.relations and str(spec.tags.get("head", "direct")) == "esmm":
        model = ESMMHead(model, schema)
    return model.to(device)


def resolved_params(registry: Registry, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The model's defaults with ``params`` over them (to spot configurations that coincide)."""
    return {**registry.model(name).defaults, **params}


class RowDataset(Dataset):
    """The peers' per-row dataset over NumPy arrays of one split.

    ``layout="fields"`` returns ``({field: value, ...}, labels)`` with one entry per
    categorical and numeric field and the scenario, like torch-rechub's ``TorchDataset``;
    ``layout="arrays"`` returns ``(categorical, numeric, scenario, labels)`` row arrays, like
    MTReclib's ``AliExpressDataset``. Either way :func:`to_batch` turns a default-collated batch
    into a :class:`~mssbench.spec.Batch`.
    """

    def __init__(self, split: Split, schema: DatasetSchema, layout: str):
        self.layout = layout
        self.categorical = split.categorical.cpu().numpy().astype(np.int64)  # [N, F_c]
        self.numeric = split.numeric.cpu().numpy().astype(np.float32)  # [N, F_n]
        self.scenario = split.scenario.cpu().numpy().astype(np.int64)  # [N]
        self.labels = split.labels.cpu().numpy().astype(np.float32)  # [N, T]
        self.cat_names = [f.name for f in schema.categorical]
        self.num_names = list(schema.numeric)
        if layout == "fields":
            # One column array per field, as a DataFrame's columns would be.
            self.columns = {n: self.categorical[:, j].copy() for j, n in enumerate(self.cat_names)}
            for j, n in enumerate(self.num_names):
                self.columns[n] = self.numeric[:, j].copy()
            self.columns[schema.scenario_field] = self.scenario
            self.scenario_field = schema.scenario_field

    def __len__(self) -> int:
        return len(self.scenario)

    def __getitem__(self, i: int) -> Any:
        if self.layout == "fields":
            return {k: v[i] for k, v in self.columns.items()}, self.labels[i]
        return self.categorical[i], self.numeric[i], self.scenario[i], self.labels[i]


def to_batch(data: RowDataset, collated: Any) -> Batch:
    """A default-collated batch of :class:`RowDataset` rows as a :class:`Batch`."""
    if data.layout == "fields":
        x, labels = collated
        return Batch(
            torch.stack([x[n] for n in data.cat_names], dim=1),  # [B, F_c] int64
            torch.stack([x[n] for n in data.num_names], dim=1),  # [B, F_n] float32
            x[data.scenario_field],
            labels,
        )
    categorical, numeric, scenario, labels = collated
    return Batch(categorical, numeric, scenario, labels)


# --------------------------------------------------------------------------------------------
# The two training loops
# --------------------------------------------------------------------------------------------


def measure_ours(
    model: torch.nn.Module,
    data: LoadedDataset,
    device: torch.device,
    args: argparse.Namespace,
) -> dict[str, float]:
    """Samples/s of ``fit``: a warm-up call, then a call of ``--steps`` full batches."""
    train = data.train
    valid = data.valid.subset(torch.arange(min(len(data.valid), 4096)))  # eval is not timed
    if device.type != "cpu":
        train, valid = train.to(device), valid.to(device)
    full = len(train) // args.batch_size
    if full < 1:
        raise SystemExit(f"--rows gives {len(train):,} train rows, less than one batch")
    common: dict[str, Any] = dict(
        model_name="bench",
        device=device,
        seed=args.seed,
        batch_size=args.batch_size,
        eval_batch_size=65536,
        lr=1e-3,
        weight_decay=1e-6,
        patience=10**9,
        progress=False,
        log=lambda line: None,
    )
    common["precision"] = _precision(args.bf16)  # the runner's own autocast
    common["compile_model"] = args.compile  # torch.compile, compiled in the untimed warm-up
    common["retain_host_memory"] = not args.release_host_memory
    common["step_mode"] = args.step  # graph: the whole step replayed from one CUDA graph
    if args.warmup:
        warmup = min(args.warmup, full)
        fit(model, data.schema, train, valid, epochs=1, max_steps_per_epoch=warmup, **common)
    # More steps than one epoch holds: several epochs (each one's validation is untimed).
    per_epoch = min(args.steps, full)
    result = fit(
        model,
        data.schema,
        train,
        valid,
        epochs=math.ceil(args.steps / per_epoch),
        max_steps_per_epoch=per_epoch,
        **common,
    )
    state = result.state
    return {
        "samples": state.train_samples,
        "seconds": state.train_seconds,
        "samples_per_s": state.train_samples / state.train_seconds,
    }


def _batches(loader: DataLoader) -> Iterator[Any]:
    """Batches of ``loader`` forever, a new shuffled epoch whenever one ends."""
    while True:
        yield from loader


def measure_per_row(
    model: torch.nn.Module,
    data: LoadedDataset,
    device: torch.device,
    args: argparse.Namespace,
) -> dict[str, float]:
    """Samples/s of the per-row Dataset + DataLoader loop (data loading included)."""
    rows = RowDataset(data.train, data.schema, args.row_layout)
    loader = DataLoader(
        rows,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=0,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6)
    weights = task_weights(model, data.schema.n_tasks, device)
    model.train()
    stream = _batches(loader)

    def step() -> int:
        batch = to_batch(rows, next(stream)).to(device)
        with autocast(device, _precision(args.bf16)):
            loss = _loss(model, batch, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # the peers' running loss: one sync per step
        return len(batch)

    for _ in range(args.warmup):
        step()
    _sync(device)
    t = time.perf_counter()
    samples = sum(step() for _ in range(args.steps))
    _sync(device)
    seconds = time.perf_counter() - t
    return {"samples": samples, "seconds": seconds, "samples_per_s": samples / seconds}


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def run_one(
    registry: Registry,
    data: LoadedDataset,
    name: str,
    config: str,
    device: torch.device,
    peak_flops: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """All three figures for one model and configuration."""
    params = CONFIGS[config][name]
    model = make_model(registry, name, data.schema, params, device, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    probe = data.train.batch(slice(0, args.batch_size)).to(device)
    flops, by_op = count_matmul_flops(model, probe, data.schema, args.bf16)
    per_sample = flops / len(probe)
    ceiling = peak_flops / per_sample
    ours = measure_ours(model, data, device, args)
    model = make_model(registry, name, data.schema, params, device, args.seed)
    per_row = measure_per_row(model, data, device, args)
    return {
        "model": name,
        "config": config,
        "params": resolved_params(registry, name, params),
        "n_params": n_params,
        "batch_size": args.batch_size,
        "matmul_flops_per_sample": per_sample,
        "flops_per_sample_by_op": {k: v / len(probe) for k, v in by_op.items()},
        "ceiling_samples_per_s": ceiling,
        "ours": ours,
        "per_row": per_row,
        "efficiency_ours": ours["samples_per_s"] / ceiling,
        "efficiency_per_row": per_row["samples_per_s"] / ceiling,
        "speedup_over_per_row": ours["samples_per_s"] / per_row["samples_per_s"],
    }


def _print_result(r: dict[str, Any]) -> None:
    """Print the figures of one model and configuration."""
    print(
        f"{r['model']} {r['config']}: {r['n_params']:,} parameters, batch {r['batch_size']}, "
        f"{r['matmul_flops_per_sample'] / 1e6:,.2f} MFLOP/sample of matmul (fwd+bwd; "
        + ", ".join(f"{k} {v / 1e6:,.2f}" for k, v in r["flops_per_sample_by_op"].items())
        + ")"
    )
    for label, key in (("ours (fit)", "ours"), ("per-row DataLoader", "per_row")):
        m = r[key]
        print(
            f"  {label:>18}: {m['samples_per_s']:>10,.0f} samples/s  "
            f"{100 * r['efficiency_' + key]:5.1f}% of ceiling  "
            f"({m['samples']:,} samples in {m['seconds']:.2f} s)"
        )
    print(f"  {'ceiling':>18}: {r['ceiling_samples_per_s']:>10,.0f} samples/s")
    print(f"  ours / per-row: {r['speedup_over_per_row']:.2f}x")


def _print_targets(r: dict[str, Any], config: str, device: torch.device) -> None:
    """Print the targets of ``config`` that apply to result ``r``, met or not."""
    if config == "published" and device.type == "cpu":
        met = r["efficiency_ours"] >= TARGET_EFFICIENCY
        print(
            f"  target ({r['model']} {config}, CPU): ours >= {TARGET_EFFICIENCY:.0%} of "
            f"ceiling: {'met' if met else 'NOT met'} ({r['efficiency_ours']:.1%})"
        )
    if config == "small":
        met = r["speedup_over_per_row"] >= TARGET_SPEEDUP
        print(
            f"  target ({r['model']} {config}): ours >= {TARGET_SPEEDUP:.0f}x per-row: "
            f"{'met' if met else 'NOT met'} ({r['speedup_over_per_row']:.2f}x)"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mmoe,aesm")
    p.add_argument("--configs", default="published,small")
    p.add_argument("--rows", type=int, default=200_000, help="rows of aliexpress-synth")
    p.add_argument("--steps", type=int, default=10, help="timed steps (after warm-up)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0))),
        help="torch threads (default: $OMP_NUM_THREADS, else every core this process may use)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (matmul peak in bf16)")
    p.add_argument(
        "--compile", action="store_true", help="ours with torch.compile (the runner's --compile)"
    )
    p.add_argument(
        "--step",
        choices=STEPS,
        default="eager",
        help="ours with the runner's --step (graph: one CUDA graph per training step)",
    )
    p.add_argument("--row-layout", choices=("fields", "arrays"), default="fields")
    p.add_argument(
        "--release-host-memory",
        action="store_true",
        help="ours without the runner's retained host memory (glibc unmaps freed buffers)",
    )
    p.add_argument("--peak-repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="also write the figures to this file")
    args = p.parse_args()
    models = [m for m in args.models.split(",") if m]
    configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in configs if c not in CONFIGS] + [
        m for m in models if m not in CONFIGS["published"]
    ]
    if unknown:
        raise SystemExit(
            f"unknown model or config {unknown}; configs {list(CONFIGS)}, models mmoe, aesm"
        )

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    print(f"machine: {_machine(device)}; load average {os.getloadavg()[0]:.1f}")

    peaks = matmul_peak(device, dtype, args.peak_repeats)
    peak = max(peaks.values())
    print(
        f"matmul peak ({str(dtype).split('.')[-1]}, torch.mm, best of {args.peak_repeats}): "
        + ", ".join(f"[{k}] {v / 1e9:,.1f}" for k, v in peaks.items())
        + f" GFLOP/s; ceiling uses the best, {peak / 1e9:,.1f} GFLOP/s"
    )

    registry = load_registry()
    t = time.perf_counter()
    data = load_dataset(registry, DATASET, {"n_rows": args.rows, "seed": args.seed})
    print(
        f"data: {DATASET} (SYNTHETIC), {len(data.train):,} train rows "
        f"(loaded in {time.perf_counter() - t:.1f} s); {args.steps} timed steps after "
        f"{args.warmup} warm-up steps; per-row layout '{args.row_layout}'; device {device}"
        + (" with bf16 autocast" if args.bf16 else "")
    )

    results: list[dict[str, Any]] = []
    done: dict[str, dict[str, Any]] = {}
    for name in models:
        for config in configs:
            key = json.dumps([name, resolved_params(registry, name, CONFIGS[config][name])])
            if key in done:
                r = done[key]
                r["same_as"][config] = r["config"]
                print(f"{name} {config}: same hyper-parameters as {name} {r['config']} (above)")
            else:
                r = run_one(registry, data, name, config, device, peak, args)
                r["same_as"] = {}
                done[key] = r
                results.append(r)
                _print_result(r)
            _print_targets(r, config, device)

    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_rss = usage.ru_maxrss * 1024
    extra = ""
    if device.type == "cuda":
        extra = f"; peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    print(f"peak RSS {peak_rss / 2**30:.2f} GiB{extra}; load average {os.getloadavg()[0]:.1f}")
    if args.json:
        payload = {
            "machine": _machine(device),
            "args": vars(args),
            "matmul_flops_per_s": peaks,
            "matmul_peak_flops_per_s": peak,
            "results": results,
            "peak_rss_bytes": peak_rss,
        }
        Path(args.json).write_text(json.dumps(payload, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
