"""GPU training speed, side by side in one run: eager vs CUDA-graph steps, every model, streaming.

Every figure is the real runner, :func:`mssbench.runners.trainer.fit`, on the SYNTHETIC
AliExpress twin (``aliexpress-synth``), bf16 autocast on a GPU. A measurement is one ``fit`` call
of ``1 + --epochs`` epochs of ``--steps`` batches each (``max_steps_per_epoch``); the first epoch
(cuBLAS set-up, CUDA-graph capture, compilation) is left out and samples/s is the rows of the
later epochs over their training seconds (``history[*].train_seconds``: the validation pass of
each epoch is not timed). The same data, seed and initial weights for every variant.

Sections (``--sections``, comma list; each writes ``<out>/<section>.json`` and prints one line
per figure):

* ``step``: the published MMoE at batch 2048: ``eager`` and ``graph`` (``--step graph``).
* ``ceiling``: the published MMoE at batch 16384, eager and graph, as a share of its bf16 matmul
  ceiling (matmul FLOPs per sample counted by ``FlopCounterMode``, against the best
  ``torch.mm`` rate measured in the same run; ``benchmarks/train_efficiency.py``).
* ``models``: every registered built-in model at its defaults, batch 8192, eager and graph.
* ``grouping``: AESM² and SUPERMOE-style before and after grouping their experts (AESM²: the
  version-2 expert bank, a batched matmul over ``n`` copies of the shared input; SUPERMOE-style:
  the sparse per-expert loop), eager, plus the grouped version under a graph; with
  ``torch.profiler`` the number of GPU kernels of one eager training step and where its GPU time
  goes.
* ``stream``: an epoch over memory-mapped data streamed to the GPU in pinned, prefetched chunks
  (:mod:`mssbench.runners.streaming`), eager and graph; minutes per epoch at 50M and 170M
  training rows are extrapolated from the measured rate (and labelled so).
* ``compile``: the ``step`` configuration with the runner's ``--compile`` (last, since compiling
  takes up to a minute; skipped when less than a minute of the budget is left, and in
  ``--tiny``).

``--tiny`` runs every section on the CPU at toy sizes (for CI: it checks that the script works,
its figures mean nothing).

Usage::

    python benchmarks/gpu_speed.py --out benchmarks/gpu-results            # everything
    python benchmarks/gpu_speed.py --sections step,ceiling --out /tmp/gpu
    python benchmarks/gpu_speed.py --tiny --out /tmp/tiny                   # CPU smoke run
    python benchmarks/gpu_speed.py --report --out benchmarks/gpu-results    # merge to results.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import train_efficiency as te  # noqa: E402  (the benchmark next to this one)

from mssbench.api import BLOCK_ROWS, load_dataset  # noqa: E402
from mssbench.plugins import load_registry  # noqa: E402
from mssbench.runners.trainer import fit, resolve_device  # noqa: E402

SECTIONS = ("step", "ceiling", "models", "grouping", "stream", "compile")
PUBLISHED_MMOE = te.CONFIGS["published"]["mmoe"]
#: Built-in models, in the issue's table order.
MODELS = (
    "shared_bottom",
    "cross_stitch",
    "single_task",
    "mmoe",
    "star",
    "ple",
    "dephn",
    "aesm",
    "supermoe",
)
#: Training rows of the real five-country AliExpress data set (about), for extrapolation.
REAL_TRAIN_ROWS = 170_000_000


def sizes(tiny: bool) -> dict[str, Any]:
    """Rows, batch sizes and steps of a full (GPU) or ``--tiny`` (CPU smoke) run."""
    if tiny:
        return dict(
            rows=3000,
            b_step=64,
            b_ceiling=128,
            b_models=128,
            steps_step=3,
            steps_ceiling=2,
            steps_models=2,
            epochs=1,
            stream_rows=6000,
            peak_repeats=1,
            models=("mmoe", "aesm", "supermoe"),
        )
    return dict(
        rows=800_000,
        b_step=2048,
        b_ceiling=16384,
        b_models=8192,
        steps_step=200,
        steps_ceiling=30,
        steps_models=40,
        epochs=1,
        stream_rows=4_000_000,
        peak_repeats=3,
        models=MODELS,
    )


class Bench:
    """Shared state of one run: device, data, registry, sizes, results."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.tiny = args.tiny
        self.size = sizes(args.tiny)
        self.device = resolve_device("cpu" if args.tiny else args.device)
        self.precision = "fp32" if self.device.type == "cpu" else "bf16"
        self.registry = load_registry()
        self._data: Any = None
        #: Past this time (``time.perf_counter``) no new measurement starts.
        self.deadline = time.perf_counter() + args.budget
        self.section = ""
        self.partial: dict[str, Any] = {}
        self.out = Path(args.out)

    def left(self) -> float:
        """Seconds of the time budget left."""
        return self.deadline - time.perf_counter()

    def flush(self) -> None:
        """Write what the current section has measured so far (kept if it is cut short)."""
        path = self.out / f"{self.section}.partial.json"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps({"partial": True, **self.partial}, indent=1, default=str))
        os.replace(tmp, path)

    @property
    def data(self) -> Any:
        if self._data is None:
            t = time.perf_counter()
            self._data = load_dataset(
                self.registry, te.DATASET, {"n_rows": self.size["rows"], "seed": 0}
            )
            log(f"data: {len(self._data.train):,} train rows in {time.perf_counter() - t:.1f} s")
        return self._data

    def model(self, name: str, params: dict[str, Any]) -> torch.nn.Module:
        """``name`` at ``params`` (``--tiny``: at its small conformance-check size instead)."""
        if self.tiny:
            params = dict(self.registry.model(name).check_params)
        return te.make_model(self.registry, name, self.data.schema, params, self.device, 0)

    def measure(
        self,
        model: torch.nn.Module,
        batch_size: int,
        step_mode: str = "eager",
        compile_model: bool = False,
        data: Any = None,
        steps: int | None = None,
    ) -> dict[str, Any]:
        """Samples/s of ``fit`` after its first epoch (see the module docstring)."""
        data = data or self.data
        train, valid = data.train, data.valid.subset(torch.arange(min(len(data.valid), 4096)))
        block_rows = 0
        if getattr(data, "memory_mapped", False):
            block_rows = 512 if self.tiny else BLOCK_ROWS  # the runner's block shuffle
        elif self.device.type != "cpu":
            train, valid = train.to(self.device), valid.to(self.device)
        steps = min(steps or self.size["steps_models"], len(train) // batch_size)
        if steps < 1:
            raise SystemExit(f"{len(train):,} train rows: less than one batch of {batch_size}")
        t = time.perf_counter()
        result = fit(
            model,
            data.schema,
            train,
            valid,
            model_name="bench",
            device=self.device,
            seed=0,
            epochs=1 + self.size["epochs"],
            batch_size=batch_size,
            eval_batch_size=65536,
            lr=1e-3,
            weight_decay=1e-6,
            patience=10**9,
            max_steps_per_epoch=steps,
            block_rows=block_rows,
            progress=False,
            log=lambda line: None,
            precision=self.precision,
            compile_model=compile_model,
            step_mode=step_mode,
        )
        timed = result.state.history[1:] or result.state.history
        seconds = sum(h["train_seconds"] for h in timed)
        samples = sum(round(h["train_samples_per_s"] * h["train_seconds"]) for h in timed)
        first = result.state.history[0]
        return {
            "samples_per_s": samples / seconds,
            "samples": samples,
            "seconds": seconds,
            "first_epoch_seconds": first["train_seconds"],
            "wall_seconds": time.perf_counter() - t,
            "train_loss": [h["train_loss"] for h in result.state.history],
        }


def log(line: str) -> None:
    print(line, flush=True)


def _rate(m: dict[str, Any]) -> str:
    return f"{m['samples_per_s']:>12,.0f} samples/s"


def _variants(
    bench: Bench,
    label: str,
    build: Callable[[], torch.nn.Module],
    batch: int,
    modes: list[str],
    steps: int | None = None,
) -> dict[str, Any]:
    """Measure ``modes`` (eager, graph, compile) of a freshly built model each; print them.

    A mode is skipped (and says so) once the time budget is spent; ``compile`` needs a minute.
    """
    out: dict[str, Any] = {}
    bench.partial[label] = out
    for mode in modes:
        if mode == "compile" and bench.tiny:
            out[mode] = {"error": "skipped: --tiny (compiling on a CPU takes minutes)"}
            log(f"[{label}] {mode:>8}: SKIPPED (--tiny)")
            continue
        if bench.left() < (60 if mode == "compile" else 0):
            out[mode] = {"error": "skipped: time budget spent"}
            log(f"[{label}] {mode:>8}: SKIPPED (time budget spent)")
            continue
        try:
            m = bench.measure(
                build(),
                batch,
                step_mode="graph" if mode == "graph" else "eager",
                compile_model=mode == "compile",
                steps=steps,
            )
        except Exception as exc:  # one failing variant must not hide the others
            out[mode] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
            # A model that declares it cannot be captured is refused by design, not a failure.
            verdict = "REFUSED" if "cannot be captured" in str(exc) else "FAILED"
            log(f"[{label}] {mode:>8}: {verdict} {out[mode]['error']}")
            continue
        out[mode] = m
        bench.flush()
        ratio = ""
        if mode != "eager" and "samples_per_s" in out.get("eager", {}):
            ratio = f"  ({m['samples_per_s'] / out['eager']['samples_per_s']:.2f}x eager)"
        log(f"[{label}] {mode:>8}: {_rate(m)}{ratio}  first epoch {m['first_epoch_seconds']:.2f} s")
    return out


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def section_step(bench: Bench) -> dict[str, Any]:
    b = bench.size["b_step"]
    modes = ["eager", "graph"]
    res = _variants(
        bench,
        f"step mmoe published b{b}",
        lambda: bench.model("mmoe", PUBLISHED_MMOE),
        b,
        modes,
        steps=bench.size["steps_step"],
    )
    return {"model": "mmoe", "config": PUBLISHED_MMOE, "batch_size": b, "results": res}


def section_compile(bench: Bench) -> dict[str, Any]:
    """The runner's ``--compile`` on the ``step`` configuration (last: compiling takes a while)."""
    b = bench.size["b_step"]
    res = _variants(
        bench,
        f"step mmoe published b{b}",
        lambda: bench.model("mmoe", PUBLISHED_MMOE),
        b,
        ["compile"],
        steps=bench.size["steps_step"],
    )
    return {"model": "mmoe", "config": PUBLISHED_MMOE, "batch_size": b, "results": res}


def section_ceiling(bench: Bench) -> dict[str, Any]:
    b = bench.size["b_ceiling"]
    dtype = torch.float32 if bench.device.type == "cpu" else torch.bfloat16
    if bench.tiny:
        te.PEAK_SHAPES = ((128, 128, 128),)
    peaks = te.matmul_peak(bench.device, dtype, bench.size["peak_repeats"])
    peak = max(peaks.values())
    model = bench.model("mmoe", PUBLISHED_MMOE)
    probe = bench.data.train.batch(slice(0, b)).to(bench.device)
    flops, _ = te.count_matmul_flops(model, probe, bench.data.schema, bench.precision == "bf16")
    ceiling = peak / (flops / len(probe))
    log(
        f"[ceiling] matmul peak {peak / 1e12:,.1f} TFLOP/s ({str(dtype)[6:]}); "
        f"{flops / len(probe) / 1e6:,.2f} MFLOP/sample; ceiling {ceiling:,.0f} samples/s"
    )
    res = _variants(
        bench,
        f"ceiling mmoe published b{b}",
        lambda: bench.model("mmoe", PUBLISHED_MMOE),
        b,
        ["eager", "graph"],
        steps=bench.size["steps_ceiling"],
    )
    for mode, m in res.items():
        if "samples_per_s" in m:
            m["share_of_ceiling"] = m["samples_per_s"] / ceiling
            log(f"[ceiling] {mode:>8}: {100 * m['share_of_ceiling']:.1f}% of the bf16 ceiling")
    return {
        "batch_size": b,
        "matmul_flops_per_s": peaks,
        "ceiling_samples_per_s": ceiling,
        "matmul_flops_per_sample": flops / len(probe),
        "results": res,
    }


def section_models(bench: Bench) -> dict[str, Any]:
    b = bench.size["b_models"]
    out = {}
    for name in bench.size["models"]:
        out[name] = _variants(
            bench, f"models {name} b{b}", lambda n=name: bench.model(n, {}), b, ["eager", "graph"]
        )
    return {"batch_size": b, "results": out}


def legacy_expert_bank_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """AESM² version 2's ``ExpertBank.forward``: a batched matmul over n copies of the input."""
    b = x.shape[0]
    y = x.unsqueeze(1).expand(-1, self.n_experts, -1)  # [B, n, in]
    for weight, norm in zip(self.weights, self.norms):
        y = torch.einsum("bni,nio->bno", y, weight)  # [B, n, h]
        h = y.shape[2]
        y = self.dropout(self.act(norm(y.reshape(b, -1)).view(b, self.n_experts, h)))
    return y


def _kernel_profile(bench: Bench, model: torch.nn.Module, batch_size: int) -> dict[str, Any]:
    """Kernels (GPU) or operators (CPU) of one eager training step, and the five costliest."""
    from torch.profiler import ProfilerActivity, profile

    data = bench.data.train.batch(slice(0, batch_size)).to(bench.device)
    weights = te.task_weights(model, bench.data.schema.n_tasks, bench.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def step() -> None:
        with te.autocast(bench.device, bench.precision):
            loss = te._loss(model, data, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    te._sync(bench.device)
    cuda = bench.device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        step()
        te._sync(bench.device)
    events = prof.key_averages()
    if cuda:
        kernels = [
            e
            for e in events
            if getattr(e, "device_type", None) is not None
            and str(e.device_type).endswith("CUDA")
            and e.self_device_time_total > 0
        ]
        key = "self_device_time_total"
    else:
        kernels = [e for e in events if e.key.startswith("aten::")]
        key = "self_cpu_time_total"
    top = sorted(kernels, key=lambda e: getattr(e, key), reverse=True)[:5]
    total = sum(getattr(e, key) for e in kernels) or 1.0
    return {
        "kernels_per_step": sum(e.count for e in kernels),
        "time_us": total,
        "top": [(e.key[:60], round(100 * getattr(e, key) / total, 1)) for e in top],
    }


def section_grouping(bench: Bench) -> dict[str, Any]:
    from mssbench_aesm.model import ExpertBank
    from mssbench_supermoe.model import MoEFFN

    b = bench.size["b_models"]
    out: dict[str, Any] = {"batch_size": b}
    grouped_bank = ExpertBank.forward

    def aesm(before: bool) -> torch.nn.Module:
        ExpertBank.forward = legacy_expert_bank_forward if before else grouped_bank
        return bench.model("aesm", {})

    def supermoe(dispatch: str) -> torch.nn.Module:
        model = bench.model("supermoe", {})
        for mod in model.modules():
            if isinstance(mod, MoEFFN):
                mod.dispatch = dispatch
        return model

    try:
        for label, build, modes in (
            ("aesm before", lambda: aesm(True), ["eager", "graph"]),
            ("aesm after", lambda: aesm(False), ["eager", "graph"]),
            ("supermoe before (loop)", lambda: supermoe("loop"), ["eager"]),
            ("supermoe after (grouped)", lambda: supermoe("grouped"), ["eager", "graph"]),
        ):
            key = label.replace(" ", "_")
            out[key] = _variants(bench, f"grouping {label} b{b}", build, b, modes)
            try:
                prof = _kernel_profile(bench, build(), b)
            except Exception as exc:
                prof = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            out[key]["profile"] = prof
            log(f"[grouping {label}] profile of one eager step: {json.dumps(prof)}")
    finally:
        ExpertBank.forward = grouped_bank
    return out


def _bytes_per_row(split: Any) -> int:
    parts = (split.categorical, split.numeric, split.scenario, split.labels)
    return sum(t.element_size() * (t[0].numel() if t.dim() > 1 else 1) for t in parts)


#: Training rows behind the extrapolated epoch times: the twin at 50M rows (63.2% of its rows
#: are training rows) and the real five-country AliExpress data (about).
EXTRAPOLATE = {"twin_50M_rows": 0.632 * 50e6, "real_170M_train_rows": float(REAL_TRAIN_ROWS)}


def section_stream(bench: Bench) -> dict[str, Any]:
    rows = bench.size["stream_rows"]
    cache = Path(tempfile.mkdtemp(prefix="mssbench-stream-"))
    try:
        t = time.perf_counter()
        data = load_dataset(
            bench.registry, te.DATASET, {"n_rows": rows, "seed": 0, "cache": str(cache)}
        )
        gen_seconds = time.perf_counter() - t
        n, b = len(data.train), bench.size["b_models"]
        log(
            f"[stream] {rows:,} rows generated into a memory-mapped cache in {gen_seconds:.1f} s;"
            f" {n:,} train rows of {_bytes_per_row(data.train)} bytes"
        )
        out: dict[str, Any] = {
            "n_rows": rows,
            "train_rows": n,
            "batch_size": b,
            "generation_seconds": gen_seconds,
        }
        for mode in ("eager", "graph"):
            try:
                m = bench.measure(
                    bench.model("mmoe", {}), b, step_mode=mode, data=data, steps=n // b
                )
            except Exception as exc:
                out[mode] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
                log(f"[stream] {mode:>8}: FAILED {out[mode]['error']}")
                continue
            minutes = {k: v / m["samples_per_s"] / 60 for k, v in EXTRAPOLATE.items()}
            m["extrapolated_minutes_per_epoch"] = minutes
            out[mode] = m
            log(
                f"[stream mmoe b{b}] {mode:>8}: {_rate(m)} over whole epochs of {n:,} rows; "
                "EXTRAPOLATED minutes/epoch: "
                + ", ".join(f"{k} {v:.2f}" for k, v in minutes.items())
            )
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return out


RUNNERS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "step": section_step,
    "ceiling": section_ceiling,
    "models": section_models,
    "grouping": section_grouping,
    "stream": section_stream,
    "compile": section_compile,
}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _cell(m: dict[str, Any] | None) -> str:
    if not m:
        return ""
    if "error" in m:
        if m["error"].startswith("skipped"):
            return "skipped"
        return "refused" if "cannot be captured" in m["error"] else "failed"
    return f"{m['samples_per_s']:,.0f}"


def report(out: Path) -> str:
    """``results.md``: every section's figures found under ``out``, as Markdown tables."""
    lines = ["# GPU speed (`benchmarks/gpu.sh`)", ""]
    meta = out / "machine.json"
    if meta.is_file():
        lines += [f"Machine: {json.loads(meta.read_text())['machine']}", ""]
    for name in SECTIONS:
        path = out / f"{name}.json"
        partial = out / f"{name}.partial.json"
        if not path.is_file():
            if partial.is_file():  # cut short: what was measured, raw
                lines += [f"## {name} (cut short)", "", "```", partial.read_text(), "```", ""]
            else:
                lines += [f"## {name}", "", "not run (or did not finish)", ""]
            continue
        data = json.loads(path.read_text())
        lines += [f"## {name}", ""]
        if "error" in data:
            lines += [f"FAILED: {data['error']}", ""]
            continue
        lines += _section_table(name, data) + [""]
    return "\n".join(lines)


def _section_table(name: str, data: dict[str, Any]) -> list[str]:
    rows = ["| what | eager | graph | compile | graph / eager |", "|---|---|---|---|---|"]

    def row(label: str, res: dict[str, Any]) -> str:
        e, g = res.get("eager", {}), res.get("graph", {})
        ratio = ""
        if "samples_per_s" in e and "samples_per_s" in g:
            ratio = f"{g['samples_per_s'] / e['samples_per_s']:.2f}x"
        return f"| {label} | {_cell(e)} | {_cell(g)} | {_cell(res.get('compile'))} | {ratio} |"

    b = data.get("batch_size")
    if name in ("step", "ceiling", "compile"):
        rows.append(row(f"mmoe published, batch {b} (samples/s)", data["results"]))
        if name == "ceiling":
            shares = {k: v.get("share_of_ceiling") for k, v in data["results"].items()}
            rows.append(
                f"| share of bf16 ceiling ({data['ceiling_samples_per_s']:,.0f} samples/s) | "
                + " | ".join(
                    f"{100 * shares[k]:.1f}%" if shares.get(k) else "" for k in ("eager", "graph")
                )
                + " | | |"
            )
    elif name == "models":
        rows += [row(f"{m}, batch {b}", r) for m, r in data["results"].items()]
    elif name == "grouping":
        for key, res in data.items():
            if isinstance(res, dict):
                prof = res.get("profile", {})
                extra = (
                    f" ({prof['kernels_per_step']} kernels/step)"
                    if "kernels_per_step" in prof
                    else ""
                )
                rows.append(row(f"{key.replace('_', ' ')}, batch {b}{extra}", res))
    elif name == "stream":
        rows.append(row(f"mmoe, {data['train_rows']:,} memory-mapped train rows, batch {b}", data))
        for mode in ("eager", "graph"):
            ex = data.get(mode, {}).get("extrapolated_minutes_per_epoch")
            if ex:
                rows.append(
                    f"| EXTRAPOLATED minutes/epoch ({mode}) | "
                    + ", ".join(f"{k}: {v:.2f}" for k, v in ex.items())
                    + " | | | |"
                )
    return rows


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument("--out", default=os.environ.get("OUT") or str(HERE / "gpu-results"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="CPU smoke run at toy sizes")
    p.add_argument("--report", action="store_true", help="only merge results into results.md")
    p.add_argument(
        "--budget", type=float, default=280.0, help="seconds after which no measurement starts"
    )
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report:
        text = report(out)
        (out / "results.md").write_text(text + "\n")
        print(text)
        return 0
    sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    if args.tiny:
        torch.set_num_threads(1)  # tiny tensors: one thread is fastest on a shared machine
    bench = Bench(args)
    machine = te._machine(bench.device)
    (out / "machine.json").write_text(json.dumps({"machine": machine}) + "\n")
    log(f"machine: {machine}")
    failed = 0
    for name in sections:
        t = time.perf_counter()
        bench.section, bench.partial = name, {}
        try:
            data = RUNNERS[name](bench)
        except Exception as exc:
            traceback.print_exc()
            data = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            failed += 1
        data["section_seconds"] = time.perf_counter() - t
        data["tiny"] = args.tiny
        tmp = out / f".{name}.json.tmp"
        tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
        os.replace(tmp, out / f"{name}.json")
        (out / f"{name}.partial.json").unlink(missing_ok=True)
        log(f"[{name}] section done in {data['section_seconds']:.1f} s -> {out / (name + '.json')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
