"""Dataset contract benchmark: what ``load_dataset``'s checks cost on the AliExpress twin.

Generates ``--rows`` rows of the SYNTHETIC AliExpress twin (``aliexpress-synth``: 16
categorical fields, 63 numerics, ctr and ctcvr with ctcvr implying ctr, 5 scenarios) in memory,
then times, best of ``--repeats``, on the loaded splits:

* ``baseline``: one streaming pass over every tensor (``tensor.sum()`` of each, in its own
  dtype: the least any check that looks at every value must do), measured in the same run;
* ``violations``: :func:`mssbench.data.contract.violations` (ids, labels, relations,
  numerics);
* ``counts``: :func:`mssbench.data.contract.split_counts` (per-split, per-scenario rows and
  positives for the record);
* ``validate``: both, as ``load_dataset`` runs them.

Each figure is printed in seconds, in million rows per second, and as a ratio to the baseline
and to the time the loader took to produce the data.

Usage::

    python benchmarks/contract.py                 # 5 million rows
    python benchmarks/contract.py --rows 200000 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Callable

import torch

from mssbench.api import load_dataset
from mssbench.data import contract
from mssbench.plugins import load_registry
from mssbench.records import cpu_name, package_versions
from mssbench.spec import LoadedDataset


def baseline(data: LoadedDataset) -> None:
    """One pass over every value of every split: the floor of a full check."""
    for name in contract.SPLITS:
        split = getattr(data, name)
        for t in (split.categorical, split.numeric, split.scenario, split.labels):
            t.sum()


def best(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    """Generate the twin, time the checks, print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=5_000_000, help="rows of the twin (all splits)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    registry = load_registry()
    start = time.perf_counter()
    data = load_dataset(registry, "aliexpress-synth", {"n_rows": args.rows})
    load_seconds = time.perf_counter() - start  # generation, the contract check included
    rows = sum(len(getattr(data, s)) for s in contract.SPLITS)

    base = best(lambda: baseline(data), args.repeats)
    figures = {
        "baseline (one pass)": base,
        "violations": best(lambda: contract.violations(data, "aliexpress-synth"), args.repeats),
        "counts": best(lambda: contract.split_counts(data), args.repeats),
        "validate": best(
            lambda: contract.validate(data, "aliexpress-synth", lambda _l: None), args.repeats
        ),
    }
    versions = package_versions()
    print(
        f"machine: {cpu_name()}, {torch.get_num_threads()} torch threads, load average "
        f"{os.getloadavg()[0]:.1f}; "
        f"Python {platform.python_version()}, torch {versions.get('torch')}"
    )
    print(f"aliexpress-synth: {rows:,} rows, generated and loaded in {load_seconds:.1f} s")
    print(f"{'step':<22}{'seconds':>9}{'M rows/s':>10}{'x baseline':>12}{'% of load':>11}")
    for step, seconds in figures.items():
        print(
            f"{step:<22}{seconds:>9.3f}{rows / seconds / 1e6:>10.1f}{seconds / base:>12.2f}"
            f"{100 * seconds / load_seconds:>10.1f}%"
        )


if __name__ == "__main__":
    main()
