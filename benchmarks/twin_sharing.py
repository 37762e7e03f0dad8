"""Does sharing pay on the synthetic twin? Per-scenario AUC of MS-MT models against single-task.

Trains ``single_task`` (one network per task, the scenario id as an input feature) and the
multi-task models ``shared_bottom`` and ``mmoe`` (optionally ``ple``, ``star``; all with the
scenario id as an input feature where the model has that option) on ``aliexpress-synth`` with
several training seeds, all at one small size (``--size``), and prints for every scenario and
task the test AUC mean ± std over the seeds, each model's difference to single-task (mean of
the per-seed paired differences ± their std) and the oracle AUC. The generator options are
the dataset defaults unless given with ``-D key=value``.

The twin's card (``plugins/mssbench_aliexpress_synth/README.md``) holds a measured table.

Usage::

    python benchmarks/twin_sharing.py                           # 300k rows, 3 seeds
    python benchmarks/twin_sharing.py --rows 1500000 --seeds 0 1 2 --models single_task mmoe
    python benchmarks/twin_sharing.py -D conflict=0 --epochs 2 --json out.json
    # seeds in parallel processes, then one table from their per-seed AUCs:
    python benchmarks/twin_sharing.py --seeds 0 2 --raw a.csv & \
        python benchmarks/twin_sharing.py --seeds 1 3 --raw b.csv; wait
    python benchmarks/twin_sharing.py --summarise a.csv b.csv
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

BASELINE = "single_task"
MODELS = ("single_task", "shared_bottom", "mmoe")
OPTIONAL = ("ple", "star")
#: Small networks, so that a CPU run takes minutes: name -> {size: params}.
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "small": {
        "single_task": {"embed_dim": 8, "bottom_hidden": [64, 32], "tower_hidden": [16]},
        "shared_bottom": {"embed_dim": 8, "bottom_hidden": [64, 32], "tower_hidden": [16]},
        "mmoe": {
            "embed_dim": 8,
            "n_experts": 4,
            "expert_hidden": [64, 32],
            "tower_hidden": [16],
            "scenario_as_feature": True,
        },
        "ple": {"embed_dim": 8},
        "star": {"embed_dim": 8},
    },
    "default": {},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=300_000, help="n_rows of the twin")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    p.add_argument(
        "--models",
        nargs="+",
        default=list(MODELS),
        choices=[*MODELS, *OPTIONAL],
        help=f"models; {BASELINE} is always run (the baseline)",
    )
    p.add_argument("--size", choices=sorted(SIZES), default="small", help="model sizes")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument(
        "--patience",
        type=int,
        default=2,
        help="early stopping on validation: epochs without improvement (with --epochs large, "
        "every run trains to convergence)",
    )
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument(
        "-D",
        dest="options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a generator option (repeatable)",
    )
    p.add_argument("--json", default="", help="also write the table as JSON here")
    p.add_argument(
        "--raw",
        default="",
        help="also write every (model, seed, scenario, task) test AUC and the oracle's as CSV",
    )
    p.add_argument(
        "--summarise",
        nargs="+",
        default=[],
        metavar="CSV",
        help="train nothing: print the table of the --raw files of earlier runs (seeds of "
        "parallel processes)",
    )
    return p.parse_args(argv)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"n_rows": args.rows, "seed": 0}
    for item in args.options:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"-D {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _auc_rows(frame: pd.DataFrame, model: str, seed: int) -> list[dict[str, Any]]:
    m = frame[(frame["metric"] == "auc") & frame["task"].isin(["ctr", "ctcvr"])]
    return [
        {"model": model, "seed": seed, "scenario": r.scenario, "task": r.task, "auc": r.value}
        for r in m.itertuples()
    ]


def run_all(args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Train every (model, seed); returns the tidy AUCs, the oracle AUCs and the timings."""
    from mssbench.api import run
    from mssbench.config import RunConfig
    from mssbench.plugins import load_registry

    registry = load_registry()
    models = [BASELINE, *[m for m in args.models if m != BASELINE]]
    rows, oracle, seconds = [], None, {}
    with tempfile.TemporaryDirectory() as out:
        for model in models:
            started = time.perf_counter()
            for seed in args.seeds:
                config = RunConfig(
                    model=model,
                    dataset="aliexpress-synth",
                    data_options=_options(args),
                    params=dict(SIZES[args.size].get(model, {})),
                    seed=seed,
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    lr=args.lr,
                    patience=args.patience,
                    head="direct",
                    device="cpu",
                    out=out,
                    progress=False,
                )
                result = run(config, registry, log=lambda _m: None)
                rows += _auc_rows(result.test_metrics, model, seed)
                print(_convergence(model, seed, result.record["training"]), flush=True)
                if oracle is None and result.oracle_metrics is not None:
                    oracle = pd.DataFrame(_auc_rows(result.oracle_metrics, "oracle", 0))
            seconds[model] = round(time.perf_counter() - started, 1)
            print(f"{model}: {len(args.seeds)} seeds in {seconds[model]} s", flush=True)
    return pd.DataFrame(rows), oracle, seconds


def _convergence(model: str, seed: int, training: dict[str, Any]) -> str:
    epochs = len(training["history"])
    state = "converged" if training.get("converged") else "NOT converged"
    return f"  {model} seed {seed}: best epoch {training['best_epoch']} of {epochs}, {state}"


def summarise(aucs: pd.DataFrame, oracle: pd.DataFrame | None) -> pd.DataFrame:
    """Mean ± std per (scenario, task, model) and the paired difference to single-task."""
    base = aucs[aucs["model"] == BASELINE].set_index(["scenario", "task", "seed"])["auc"]
    out = []
    for (scen, task, model), g in aucs.groupby(["scenario", "task", "model"], sort=False):
        own = g.set_index(["scenario", "task", "seed"])["auc"]
        diff = own - base.reindex(own.index)
        out.append(
            {
                "scenario": scen,
                "task": task,
                "model": model,
                "auc_mean": g["auc"].mean(),
                "auc_std": g["auc"].std(ddof=1) if len(g) > 1 else 0.0,
                "diff_mean": diff.mean(),
                "diff_std": diff.std(ddof=1) if len(diff) > 1 else 0.0,
            }
        )
    table = pd.DataFrame(out)
    if oracle is not None:
        table = table.merge(
            oracle.rename(columns={"auc": "oracle"})[["scenario", "task", "oracle"]],
            on=["scenario", "task"],
            how="left",
        )
    return table


def render(table: pd.DataFrame) -> str:
    """One line per scenario x task: every model's AUC and its difference to single-task."""
    models = list(dict.fromkeys(table["model"]))
    head = ["scenario", "task", *models, *(f"{m} - {BASELINE}" for m in models[1:])]
    if "oracle" in table:
        head.append("oracle")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (scen, task), g in table.groupby(["scenario", "task"], sort=False):
        by = g.set_index("model")
        cells = [scen, task]
        cells += [f"{by.at[m, 'auc_mean']:.4f} ± {by.at[m, 'auc_std']:.4f}" for m in models]
        cells += [f"{by.at[m, 'diff_mean']:+.4f} ± {by.at[m, 'diff_std']:.4f}" for m in models[1:]]
        if "oracle" in table:
            cells.append(f"{g['oracle'].iloc[0]:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(table: pd.DataFrame, small: tuple[str, ...] = ("NL", "US")) -> list[str]:
    """The two checks of the twin's design, as lines of text."""
    others = table[table["model"] != BASELINE]
    lines = []
    for task in ("ctr", "ctcvr"):
        for scen in small:
            g = others[(others["scenario"] == scen) & (others["task"] == task)].dropna(
                subset=["diff_mean"]
            )
            if g.empty:
                continue
            best = g.loc[g["diff_mean"].idxmax()]
            ok = best["diff_mean"] > best["diff_std"]
            lines.append(
                f"{scen} {task}: best MS-MT {best['model']} {best['diff_mean']:+.4f} "
                f"(seed std {best['diff_std']:.4f}) -> {'beats' if ok else 'does not beat'} "
                f"{BASELINE} by more than the seed std"
            )
    sb = table[(table["model"] == "shared_bottom") & ~table["scenario"].isin(["pooled", "macro"])]
    worse = sb[sb["diff_mean"] < 0]
    lines.append(
        "shared_bottom worse than single_task on: "
        + (
            ", ".join(f"{r.scenario}/{r.task} ({r.diff_mean:+.4f})" for r in worse.itertuples())
            or "none"
        )
    )
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.summarise:
        aucs, oracle = read_raw(args.summarise)
        report(summarise(aucs, oracle), args, {})
        return
    print(
        f"aliexpress-synth options {_options(args)}, seeds {args.seeds}, size {args.size}, "
        f"{args.epochs} epochs",
        flush=True,
    )
    aucs, oracle, seconds = run_all(args)
    if args.raw:
        write_raw(args.raw, aucs, oracle)
    report(summarise(aucs, oracle), args, seconds)


def write_raw(path: str | Path, aucs: pd.DataFrame, oracle: pd.DataFrame | None) -> None:
    """The per-seed AUCs, the oracle's as model ``oracle``: what ``--summarise`` reads."""
    pd.concat([aucs, oracle]).to_csv(path, index=False)


def read_raw(paths: list[str] | list[Path]) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Per-seed AUCs of several ``--raw`` files; a (model, seed) present twice is an error."""
    names = ", ".join(map(str, paths))
    try:
        frame = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise SystemExit(f"--summarise: cannot read {names}: {err}") from None
    missing = {"model", "seed", "scenario", "task", "auc"} - set(frame.columns)
    if missing:
        raise SystemExit(f"--summarise: {names}: missing columns {sorted(missing)}")
    is_oracle = frame["model"] == "oracle"
    aucs = frame[~is_oracle]
    if aucs.duplicated(["model", "seed", "scenario", "task"]).any():
        raise SystemExit(f"--summarise: a (model, seed) appears in two of {names}")
    if BASELINE not in set(aucs["model"]):
        raise SystemExit(f"--summarise: no {BASELINE} rows (the baseline) in {names}")
    oracle = frame[is_oracle].drop_duplicates(["scenario", "task"])
    return aucs.reset_index(drop=True), (oracle if len(oracle) else None)


def report(table: pd.DataFrame, args: argparse.Namespace, seconds: dict[str, float]) -> None:
    print(render(table))
    for line in verdict(table):
        print(line)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "args": vars(args),
                    "seconds": seconds,
                    "table": table.replace({np.nan: None}).to_dict("records"),
                },
                fh,
                indent=1,
            )


if __name__ == "__main__":
    main()
