"""Evaluation benchmark: per-scenario x per-task AUC, ``mssbench.metrics`` against pandas + sklearn.

Generates ``--rows`` predictions shaped like an AliExpress test set (5 scenarios with the
AliExpress country proportions, ``ctr`` with about 4% positives, ``ctcvr`` with about 2%, a
purchase always implying a click, and logits from a noisy ESMM-style model) in two variants:

* ``continuous``: float32 logits, almost no ties;
* ``ties``: the predicted probabilities rounded to ``--decimals`` decimals (few hundred
  distinct values per task), so that tie handling decides the AUC.

Then times, each in a fresh subprocess, best of ``--repeats`` after an untimed warm-up on 10,000
rows, starting from the same tensors ``[N, T]`` logits, ``[N, T]`` labels and ``[N]`` scenario
ids (on ``--device``):

* ``ours``, bare: ``mssbench.metrics.grouped_auc(..., pooled=True)`` per task: the scenarios
  and all rows together (pooled);
* ``ours``, full: ``mssbench.metrics.evaluate``, the table of a run: AUC and logloss of ctr,
  ctcvr and the conditional cvr-on-clicked view, per scenario, pooled and macro;
* ``sklearn``, bare: the peers' way, a pandas DataFrame, ``groupby(scenario)`` and
  ``sklearn.metrics.roc_auc_score`` per group and task, plus pooled;
* ``sklearn``, full: the same table (``roc_auc_score`` and ``log_loss`` on
  ``sigmoid(logit)``; the cvr score computed in NumPy with the formula of
  ``mssbench.metrics.conditional_logit``; macro = mean over scenarios).

Every value of ours is checked against sklearn's (max absolute difference; must be < 1e-9).
Memory: the peak resident set size (``VmHWM``) of the subprocess during the timed calls, after
resetting it (``/proc/self/clear_refs``) once the inputs are loaded; printed with the RSS just
before, so their difference is the memory the computation itself needed. On CUDA, ours also
reports ``torch.cuda.max_memory_allocated``; sklearn's time includes moving the tensors to the
CPU, as the peers' code must.

Usage::

    python benchmarks/evaluation.py                        # 10 million rows, both variants
    python benchmarks/evaluation.py --rows 200000 --repeats 1
    python benchmarks/evaluation.py --device cuda --variants continuous
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

TASKS = ("ctr", "ctcvr")
CONDITIONAL = "cvr"  # cvr on clicked rows: ctcvr implies ctr
METRICS = ("auc", "logloss")
TARGET_SPEEDUP = 5.0  # ours >= 5x pandas + sklearn on CPU
TOLERANCE = 1e-9
# Same capping as mssbench.metrics.conditional_logit (the logloss clipping of probabilities).
_LOG_MAX_P = math.log1p(-1e-7)
SKLEARN_HINT = (
    "benchmarks/evaluation.py needs scikit-learn for its baseline; install the benchmark "
    "extra: pip install -e '.[bench]'"
)


def _require_sklearn() -> None:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise SystemExit(SKLEARN_HINT) from None


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))


def _log1mexp(x: np.ndarray) -> np.ndarray:
    """``log(1 - exp(x))`` for ``x < 0``, as ``mssbench.nn.log1mexp`` computes it."""
    x = np.minimum(x, -np.finfo(x.dtype).tiny)
    near_zero = x > -math.log(2.0)
    upper = np.log(-np.expm1(np.where(near_zero, x, -1.0)))
    lower = np.log1p(-np.exp(np.where(near_zero, -1.0, x)))
    return np.where(near_zero, upper, lower)


def conditional_logit_np(child: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """Logit of ``P(child) / P(parent)`` in float64, the formula of ``conditional_logit``."""
    child, parent = child.astype(np.float64), parent.astype(np.float64)
    log_p = np.minimum(_log_sigmoid(child) - _log_sigmoid(parent), _LOG_MAX_P)
    return log_p - _log1mexp(log_p)


def scenario_shares() -> tuple[tuple[str, ...], np.ndarray]:
    """Scenario names and their share of rows: the AliExpress countries and proportions."""
    from mssbench_aliexpress.schema import COUNTRIES
    from mssbench_aliexpress_synth.generator import COUNTRY_SIZE

    sizes = np.array([COUNTRY_SIZE[c] for c in COUNTRIES], dtype=np.float64)
    return tuple(COUNTRIES), sizes / sizes.sum()


def generate(root: Path, n_rows: int, decimals: int, seed: int = 0) -> dict[str, Any]:
    """Write scenario ids, labels and both variants' logits under ``root`` as ``.npy`` files.

    Returns:
        Facts for the report: rows per scenario, positives per task, distinct scores.
    """
    rng = np.random.default_rng(seed)
    names, shares = scenario_shares()
    scenario = rng.choice(len(names), size=n_rows, p=shares).astype(np.int64)  # [N]
    # True click logit: a country intercept (ctr 3-5%) plus a latent interest; cvr about 50%.
    intercept = np.array([-3.9, -3.6, -3.7, -3.4, -3.8])[scenario]
    interest = rng.standard_normal(n_rows)
    click = rng.random(n_rows) < 1 / (1 + np.exp(-(intercept + 1.2 * interest)))
    intent = rng.standard_normal(n_rows)
    buy = click & (rng.random(n_rows) < 1 / (1 + np.exp(-intent)))
    labels = np.stack([click, buy], axis=1).astype(np.float32)  # [N, 2]
    # A noisy ESMM-style model: CTR and CVR towers, CTCVR logit from both in log space.
    ctr = intercept + 1.2 * interest + 0.9 * rng.standard_normal(n_rows)
    cvr = intent + 0.9 * rng.standard_normal(n_rows)
    log_p = _log_sigmoid(ctr) + _log_sigmoid(cvr)
    ctcvr = log_p - _log1mexp(log_p)
    continuous = np.stack([ctr, ctcvr], axis=1).astype(np.float32)  # [N, 2]
    # Probabilities rounded to `decimals` (monotone, so P(ctcvr) <= P(ctr) still holds), kept
    # inside (0, 1) so that every logit is finite.
    step = 10.0**-decimals
    p = np.clip(
        np.round(1 / (1 + np.exp(-continuous.astype(np.float64))), decimals), step, 1 - step
    )
    ties = (np.log(p) - np.log1p(-p)).astype(np.float32)  # [N, 2]
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "scenario.npy", scenario)
    np.save(root / "labels.npy", labels)
    np.save(root / "logits_continuous.npy", continuous)
    np.save(root / "logits_ties.npy", ties)
    return {
        "scenarios": list(names),
        "rows": np.bincount(scenario, minlength=len(names)).tolist(),
        "positives": {t: int(labels[:, j].sum()) for j, t in enumerate(TASKS)},
        "distinct": {
            v: [int(len(np.unique(x[:, j]))) for j in range(len(TASKS))]
            for v, x in (("continuous", continuous), ("ties", ties))
        },
    }


def make_schema(names: tuple[str, ...]):
    """The AliExpress schema (tasks ctr, ctcvr; cvr = ctcvr on ctr-positive rows)."""
    from mssbench_aliexpress.schema import make_schema as aliexpress_schema

    return aliexpress_schema(names)


# --------------------------------------------------------------------------------------------
# The two implementations. Each returns {"scenario|task|metric": value}.
# --------------------------------------------------------------------------------------------


def ours_bare(logits, labels, scenario, names: tuple[str, ...]) -> dict[str, float]:
    """``grouped_auc`` per task over the scenarios, and over all rows (pooled)."""
    from mssbench.metrics import grouped_auc

    out: dict[str, float] = {}
    for j, task in enumerate(TASKS):
        auc, _, _ = grouped_auc(logits[:, j], labels[:, j], scenario, len(names), pooled=True)
        for name, value in zip((*names, "pooled"), auc.tolist(), strict=True):
            out[f"{name}|{task}|auc"] = value
    return out


def ours_full(logits, labels, scenario, names: tuple[str, ...]) -> dict[str, float]:
    """``evaluate``: the whole table of a run."""
    from mssbench.metrics import evaluate

    df = evaluate(logits, labels, scenario, make_schema(names))
    return {
        f"{s}|{t}|{m}": float(v)
        for s, t, m, v in zip(df["scenario"], df["task"], df["metric"], df["value"])
    }


def _sklearn_cell(fn: Callable[..., float], y: Any, score: Any) -> float:
    """One sklearn metric; NaN where it is undefined (one class only), as ours reports it."""
    try:
        return float(fn(y, score))
    except ValueError:
        return math.nan


def sklearn_table(logits, labels, scenario, names: tuple[str, ...], full: bool) -> dict[str, float]:
    """The peers' way: pandas ``groupby(scenario)`` + sklearn per group and task, plus pooled.

    With ``full``: also ``log_loss`` of ``sigmoid(logit)``, the cvr view on clicked rows and
    the macro row, like :func:`ours_full`.
    """
    import pandas as pd
    from sklearn.metrics import log_loss, roc_auc_score

    def logloss(y: Any, logit: Any) -> float:
        return log_loss(
            y, 1.0 / (1.0 + np.exp(-np.asarray(logit, dtype=np.float64))), labels=[0, 1]
        )

    x, y, s = (t.cpu().numpy() for t in (logits, labels, scenario))
    df = pd.DataFrame({"scenario": s})
    for j, task in enumerate(TASKS):
        df[task] = y[:, j]
        df[f"{task}_logit"] = x[:, j]
    views = [(task, df, task, f"{task}_logit") for task in TASKS]
    if full:
        clicked = df[df["ctr"] == 1].copy()
        clicked["cvr_logit"] = conditional_logit_np(
            clicked["ctcvr_logit"].to_numpy(), clicked["ctr_logit"].to_numpy()
        )
        views.append((CONDITIONAL, clicked, "ctcvr", "cvr_logit"))
    metrics = [("auc", roc_auc_score)] + ([("logloss", logloss)] if full else [])
    out: dict[str, float] = {}
    for task, frame, label, score in views:
        for metric, fn in metrics:
            per_scenario = {
                int(k): _sklearn_cell(fn, g[label], g[score]) for k, g in frame.groupby("scenario")
            }
            for k, name in enumerate(names):
                out[f"{name}|{task}|{metric}"] = per_scenario.get(k, math.nan)
            out[f"pooled|{task}|{metric}"] = _sklearn_cell(fn, frame[label], frame[score])
            if full:
                defined = [v for v in per_scenario.values() if not math.isnan(v)]
                out[f"macro|{task}|{metric}"] = (
                    math.fsum(defined) / len(defined) if defined else math.nan
                )
    return out


# --------------------------------------------------------------------------------------------
# Child process: one implementation, one variant
# --------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Reset the peak RSS (VmHWM) of this process; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _child(args: argparse.Namespace) -> None:
    _require_sklearn()
    import pandas  # noqa: F401 - imported before the clocks start, like torch below
    import sklearn.metrics  # noqa: F401
    import torch

    import mssbench.metrics  # noqa: F401

    torch.set_num_threads(args.threads)
    root = Path(args.root)
    device = torch.device(args.device)
    names = tuple(json.loads((root / "facts.json").read_text())["scenarios"])
    logits = torch.from_numpy(np.load(root / f"logits_{args.variant}.npy")).to(device)
    labels = torch.from_numpy(np.load(root / "labels.npy")).to(device)
    scenario = torch.from_numpy(np.load(root / "scenario.npy")).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if args.child == "ours":
        jobs = {"bare": ours_bare, "full": ours_full}
    else:
        jobs = {
            "bare": lambda *a: sklearn_table(*a, full=False),
            "full": lambda *a: sklearn_table(*a, full=True),
        }
    out: dict[str, Any] = {}
    for kind, fn in jobs.items():
        k = min(10_000, len(scenario))
        fn(logits[:k], labels[:k], scenario[:k], names)  # warm-up: lazy imports, first calls
        sync()
        resettable = _reset_peak()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rss_before = _status_kib("VmRSS") * 1024
        seconds = []
        values: dict[str, float] = {}
        for _ in range(args.repeats):
            values = {}  # the previous result is freed before the next call
            sync()
            t = time.perf_counter()
            values = fn(logits, labels, scenario, names)
            sync()
            seconds.append(time.perf_counter() - t)
        out[kind] = {
            "seconds": seconds,
            "values": values,
            "rss_before_bytes": rss_before,
            "peak_rss_bytes": (
                _status_kib("VmHWM") * 1024
                if resettable
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            ),
            "peak_reset": resettable,
            "gpu_peak_bytes": (
                torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
            ),
        }
    print(json.dumps(out))
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------
# Parent: generate, run the children, compare, report
# --------------------------------------------------------------------------------------------


def _machine() -> str:
    import pandas
    import sklearn
    import torch

    from mssbench.records import cpu_name

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu_name()}, {os.cpu_count()} CPUs (affinity {len(os.sched_getaffinity(0))}), "
        f"{mem:.0f} GiB RAM; Python {platform.python_version()}, torch {torch.__version__}, "
        f"numpy {np.__version__}, pandas {pandas.__version__}, scikit-learn {sklearn.__version__}"
    )


def max_difference(a: dict[str, float], b: dict[str, float]) -> tuple[float, str, int]:
    """Largest ``|a - b|`` over the keys of ``b`` (both NaN counts as equal).

    Returns:
        ``(difference, key, cells both NaN)``; ``inf`` if a key is missing or only one is NaN.
    """
    worst, where, both_nan = 0.0, "", 0
    for key, vb in b.items():
        if key not in a:
            return math.inf, f"{key} (missing)", both_nan
        va = a[key]
        if math.isnan(va) and math.isnan(vb):
            both_nan += 1
            continue
        diff = abs(va - vb) if not (math.isnan(va) or math.isnan(vb)) else math.inf
        if diff > worst:
            worst, where = diff, key
    return worst, where, both_nan


def _run_child(args: argparse.Namespace, tool: str, variant: str, root: Path) -> dict[str, Any]:
    cmd = [
        sys.executable, __file__, "--child", tool, "--variant", variant, "--root", str(root),
        "--repeats", str(args.repeats), "--threads", str(args.threads), "--device", args.device,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{tool} ({variant}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _print_line(label: str, m: dict[str, Any], gpu: bool) -> None:
    best = min(m["seconds"])
    peak = m["peak_rss_bytes"] / 2**30
    grown = (m["peak_rss_bytes"] - m["rss_before_bytes"]) / 2**30
    extra = (
        f", GPU peak {m['gpu_peak_bytes'] / 2**30:.2f} GiB" if gpu and m["gpu_peak_bytes"] else ""
    )
    print(
        f"  {label:>24}: {best:8.3f} s (best of {len(m['seconds'])}; "
        + ", ".join(f"{s:.3f}" for s in m["seconds"])
        + f")  peak RSS {peak:5.2f} GiB (+{grown:.2f} GiB over its inputs{extra})"
        + ("" if m["peak_reset"] else " [peak since process start]")
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--variants", default="continuous,ties")
    p.add_argument("--decimals", type=int, default=3, help="rounding of the ties variant")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0))),
        help="torch threads (default: $OMP_NUM_THREADS, else every core this process may use)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (where ours runs)")
    p.add_argument("--root", default="/tmp/mssbench-eval-bench")
    p.add_argument("--json", default="", help="also write the figures to this file")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    _require_sklearn()
    if args.child:
        _child(args)
        return
    variants = [v for v in args.variants.split(",") if v]
    if not set(variants) <= {"continuous", "ties"}:
        raise SystemExit(f"--variants: expected continuous and/or ties, got {variants}")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(f"--device {args.device}: CUDA is not available")

    root = Path(args.root)
    shutil.rmtree(root, ignore_errors=True)
    t = time.perf_counter()
    facts = generate(root, args.rows, args.decimals)
    (root / "facts.json").write_text(json.dumps(facts))
    print(f"machine: {_machine()}; load average {os.getloadavg()[0]:.1f}")
    shares = ", ".join(
        f"{s} {n:,} ({100 * n / args.rows:.0f}%)" for s, n in zip(facts["scenarios"], facts["rows"])
    )
    print(
        f"input: {args.rows:,} rows (SYNTHETIC, generated in {time.perf_counter() - t:.1f} s); "
        f"scenarios {shares}; positives "
        + ", ".join(
            f"{t} {n:,} ({100 * n / args.rows:.2f}%)" for t, n in facts["positives"].items()
        )
        + f"; distinct scores per task: continuous {facts['distinct']['continuous']}, "
        f"ties ({args.decimals} decimals) {facts['distinct']['ties']}; {args.threads} threads, "
        f"ours on {args.device}"
    )

    report: dict[str, Any] = {"machine": _machine(), "args": vars(args), "facts": facts}
    ok = True
    gpu = args.device.startswith("cuda")
    for variant in variants:
        ours = _run_child(args, "ours", variant, root)
        base = _run_child(args, "sklearn", variant, root)
        print(f"{variant}:")
        for kind, what in (
            ("bare", "AUC of ctr, ctcvr per scenario + pooled"),
            ("full", "evaluate(): AUC + logloss of ctr, ctcvr, cvr; scenarios, pooled, macro"),
        ):
            print(f" {kind} ({what}), {len(base[kind]['values'])} cells:")
            _print_line("ours", ours[kind], gpu)
            _print_line("pandas + sklearn", base[kind], gpu)
            ratio = min(base[kind]["seconds"]) / min(ours[kind]["seconds"])
            diff, where, both_nan = max_difference(ours[kind]["values"], base[kind]["values"])
            ok &= diff < TOLERANCE
            target = ""
            if not gpu:
                met = "met" if ratio >= TARGET_SPEEDUP else "NOT met"
                target = f" (target >= {TARGET_SPEEDUP:.0f}x on CPU: {met})"
            print(
                f"  speed-up {ratio:.1f}x{target}; "
                f"max |ours - sklearn| {diff:.2e}"
                + (f" at {where}" if where else "")
                + (f"; {both_nan} cells undefined in both" if both_nan else "")
            )
            report.setdefault(variant, {})[kind] = {
                "ours": ours[kind],
                "sklearn": base[kind],
                "speedup": ratio,
                "max_abs_difference": diff,
            }
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"parent peak RSS {usage.ru_maxrss / 2**20:.2f} GiB (generation)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    shutil.rmtree(root, ignore_errors=True)
    if not ok:
        raise SystemExit(f"values differ by {TOLERANCE:g} or more between ours and sklearn")


if __name__ == "__main__":
    main()
