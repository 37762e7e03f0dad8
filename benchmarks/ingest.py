"""Ingestion benchmark (issue 7, part 3): raw Tianchi-layout files to the training cache.

Generates one synthetic country in the raw Tianchi layout (headerless user and item CSVs with
the real column counts and plain number formatting, optionally zipped twice as on Tianchi),
then times, each in a fresh subprocess so that peak memory is measured alone:

* ``mssbench``: ``mssbench_aliexpress.ingest.prepare`` (streaming parse, join, split, cache);
* ``pandas``: the peers' way, ``pandas.read_csv`` of the user and item files + ``merge``
  (not even writing the result);
* ``mtreclib``: the peers' whole preprocessing script (MTReclib ``data/preprocess.py``: the
  above, plus a Python loop over rows for the labels and ``to_csv`` of the processed files);
* ``pyarrow-whole``: ``pyarrow.csv.read_csv`` of both whole files + a join (pyarrow ``Table.join``).

Prints rows/s, input MB/s (CSV text), wall time and peak RSS of each, the machine and versions.

Usage::

    python benchmarks/ingest.py --items 2000000               # CSV layout, all three
    python benchmarks/ingest.py --items 2000000 --zip          # Tianchi zips (mssbench only)
    python benchmarks/ingest.py --items 200000 --only mssbench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

USER_CATEGORICAL = (2, 3, 4, 5, 6, 7, 8, 32, 33)
ITEM_CATEGORICAL = (19, 34, 35, 36, 40, 41, 42)
CODE_COUNTS = (11, 4, 7, 2, 33, 7, 50, 8, 8, 2, 2, 2, 2, 2, 2, 2)


def _format_block(columns: list[np.ndarray], kinds: list[str]) -> bytes:
    """CSV text of columns: ``i`` integers, ``f`` floats with up to 6 decimals ("0.30515")."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    arrays = []
    for col, kind in zip(columns, kinds):
        arrays.append(pa.array(col if kind == "i" else np.round(col, 6)))
    table = pa.table(arrays, names=[f"c{i}" for i in range(len(arrays))])
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, write_options=pacsv.WriteOptions(include_header=False))
    return sink.getvalue().to_pybytes()


def _numeric(rng: np.random.Generator, n: int) -> np.ndarray:
    """Values in [0, 1] shaped like the real ones: many exact 0s and 1s, short decimals."""
    x = rng.random(n)
    kind = rng.random(n)
    x = np.where(kind < 0.15, 0.0, x)
    x = np.where(kind > 0.95, 1.0, x)
    return np.where(kind % 0.1 < 0.03, np.round(x, 2), x)


def generate(root: Path, n_items: int, seed: int = 0, zipped: bool = False) -> dict:
    """Write NL in the raw layout under ``root``; returns sizes and row counts."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / "aliexpress_NL_datasets"
    folder.mkdir(exist_ok=True)
    facts = {}
    next_id = 1
    for split, n in (("train", n_items), ("test", max(n_items // 10, 1000))):
        sizes = rng.geometric(1 / 20, size=n // 10 + 10)
        sizes = sizes[: np.searchsorted(np.cumsum(sizes), n) + 1]
        sizes[-1] -= sizes.sum() - n
        sizes = sizes[sizes > 0]
        pages = len(sizes)
        ids = np.arange(next_id, next_id + pages, dtype=np.int64)
        next_id += pages
        # The user file: one row per page, in a different order from the items.
        cols, kinds = [rng.permutation(ids)], ["i"]
        for j in range(2, 34):
            if j in USER_CATEGORICAL:
                k = CODE_COUNTS[USER_CATEGORICAL.index(j)]
                cols.append(rng.integers(0, k, pages))
                kinds.append("i")
            else:
                cols.append(_numeric(rng, pages))
                kinds.append("f")
        (folder / f"nl_user_{split}.csv").write_bytes(_format_block(cols, kinds))
        with open(folder / f"nl_item_{split}.csv", "wb") as f:
            page_of = np.repeat(ids, sizes)
            for lo in range(0, n, 250_000):
                hi = min(n, lo + 250_000)
                m = hi - lo
                cols, kinds = [page_of[lo:hi]], ["i"]
                for j in range(2, 49):
                    if j in ITEM_CATEGORICAL:
                        cols.append(rng.integers(0, 2, m))
                        kinds.append("i")
                    else:
                        cols.append(_numeric(rng, m))
                        kinds.append("f")
                u = rng.random(m)
                cols.append(np.where(u < 0.0003, 2, np.where(u < 0.025, 1, 0)))
                kinds.append("i")
                f.write(_format_block(cols, kinds))
        facts[split] = {"items": n, "pages": pages}
    if zipped:
        outer = root / "aliexpress_NL_datasets.zip"
        with zipfile.ZipFile(outer, "w", zipfile.ZIP_STORED) as zo:
            for csv in sorted(folder.glob("*.csv")):
                inner = folder / (csv.stem + ".zip")
                with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zi:
                    zi.write(csv, csv.name)
                zo.write(inner, f"aliexpress_NL_datasets/{inner.name}")
                inner.unlink()
        facts["zip_bytes"] = outer.stat().st_size
    facts["csv_bytes"] = sum(p.stat().st_size for p in folder.glob("*.csv"))
    facts["item_train_bytes"] = (folder / "nl_item_train.csv").stat().st_size
    if zipped:
        shutil.rmtree(folder)
    return facts


def _run_mssbench(root: Path, cache: Path) -> dict:
    from mssbench_aliexpress.ingest import prepare

    lines: list[str] = []
    t = time.perf_counter()
    rows = prepare(root, cache, lines.append)
    return {"seconds": time.perf_counter() - t, "rows": sum(r["rows"] for r in rows)}


def _run_pandas(root: Path) -> dict:
    import pandas as pd

    folder = root / "aliexpress_NL_datasets"
    t = time.perf_counter()
    n = 0
    for split in ("train", "test"):
        user = pd.read_csv(folder / f"nl_user_{split}.csv", header=None)
        item = pd.read_csv(folder / f"nl_item_{split}.csv", header=None)
        user.columns = [f"u{i}" for i in range(1, 34)]
        item.columns = [f"i{i}" for i in range(1, 50)]
        merged = pd.merge(user, item, left_on="u1", right_on="i1")
        n += len(merged)
        del user, item, merged
    return {"seconds": time.perf_counter() - t, "rows": n}


def _run_mtreclib(root: Path) -> dict:
    """The peers' whole preprocessing (MTReclib data/preprocess.py), zip extraction aside.

    read_csv, merge, concat, a Python loop for the labels, to_csv of the processed files.
    """
    import pandas as pd

    folder = root / "aliexpress_NL_datasets"
    out = root.parent / "mtreclib-out"
    out.mkdir(exist_ok=True)
    t = time.perf_counter()
    frames = {}
    for split in ("train", "test"):
        user = pd.read_csv(folder / f"nl_user_{split}.csv", header=None)
        item = pd.read_csv(folder / f"nl_item_{split}.csv", header=None)
        user.columns = [f"user_{i}" for i in range(1, 34)]
        item.columns = [f"item_{i}" for i in range(1, 50)]
        frames[split] = pd.merge(user, item, left_on="user_1", right_on="item_1", how="inner")
    n_train = len(frames["train"])
    data = pd.concat([frames["train"], frames["test"]]).reset_index(drop=True)
    del frames
    cats = [f"user_{i}" for i in (*range(1, 9), 32, 33)]
    cats += [f"item_{i}" for i in ITEM_CATEGORICAL]
    nums = [f"user_{i}" for i in range(9, 32)]
    nums += [f"item_{i}" for i in range(2, 49) if i not in ITEM_CATEGORICAL]
    labels = []
    for value in data["item_49"].values:  # as the peers do: one Python step per row
        labels.append([0, 0] if value == 0 else [1, 0] if value == 1 else [1, 1])
    cat = data[cats].set_axis(
        ["search_id"] + [f"categorical_{i}" for i in range(1, len(cats))], axis=1
    )
    num = data[nums].set_axis([f"numerical_{i}" for i in range(1, len(nums) + 1)], axis=1)
    lab = pd.DataFrame(np.array(labels), columns=["click", "conversion"])
    final = pd.concat([cat, num, lab], axis=1)
    final.iloc[:n_train].to_csv(out / "train.csv", index=False)
    final.iloc[n_train:].to_csv(out / "test.csv", index=False)
    n = len(final)
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": time.perf_counter() - t, "rows": n}


def _run_pyarrow(root: Path) -> dict:
    import pyarrow.csv as pacsv

    folder = root / "aliexpress_NL_datasets"
    t = time.perf_counter()
    n = 0
    for split in ("train", "test"):
        ro_u = pacsv.ReadOptions(column_names=[f"u{i}" for i in range(1, 34)])
        ro_i = pacsv.ReadOptions(column_names=[f"i{i}" for i in range(1, 50)])
        user = pacsv.read_csv(folder / f"nl_user_{split}.csv", read_options=ro_u)
        item = pacsv.read_csv(folder / f"nl_item_{split}.csv", read_options=ro_i)
        merged = item.join(user, keys="i1", right_keys="u1", join_type="inner")
        n += merged.num_rows
        del user, item, merged
    return {"seconds": time.perf_counter() - t, "rows": n}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(args: argparse.Namespace) -> None:
    root = Path(args.root)
    import pandas  # noqa: F401 - imported before the clock starts, like mssbench below
    import pyarrow.csv  # noqa: F401
    from mssbench_aliexpress import ingest  # noqa: F401

    cpu_before = _cpu()
    if args.child == "mssbench":
        cache = root.parent / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        out = _run_mssbench(root, cache)
        shutil.rmtree(cache, ignore_errors=True)
    elif args.child == "pandas":
        out = _run_pandas(root)
    elif args.child == "mtreclib":
        out = _run_mtreclib(root)
    else:
        out = _run_pyarrow(root)
    out["cpu_before"] = cpu_before
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["peak_rss_bytes"] = usage.ru_maxrss * 1024
    out["cpu_seconds"] = usage.ru_utime + usage.ru_stime - out.pop("cpu_before")
    print(json.dumps(out))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown (pyarrow's pools); the figures are printed


def _machine() -> str:
    import numpy
    import pandas
    import pyarrow

    from mssbench.records import cpu_name  # here, not at the top: the children stay torch-free

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu_name()}, {os.cpu_count()} CPUs (affinity {len(os.sched_getaffinity(0))}), "
        f"{mem:.0f} GiB RAM; Python {platform.python_version()}, numpy {numpy.__version__}, "
        f"pandas {pandas.__version__}, pyarrow {pyarrow.__version__}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=2_000_000, help="item rows of the train file")
    p.add_argument("--root", default="/tmp/mssbench-ingest-bench")
    p.add_argument("--zip", action="store_true", help="Tianchi archives (mssbench only)")
    p.add_argument("--only", default="mssbench,pyarrow-whole,pandas,mtreclib")
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args)
        return
    root = Path(args.root) / "source"
    shutil.rmtree(root, ignore_errors=True)
    t = time.perf_counter()
    facts = generate(root, args.items, zipped=args.zip)
    print(f"machine: {_machine()}; load average {os.getloadavg()[0]:.1f}")
    print(
        f"input: {facts['train']['items']:,} + {facts['test']['items']:,} item rows, "
        f"{facts['train']['pages']:,} + {facts['test']['pages']:,} pages, "
        f"{facts['csv_bytes'] / 1e6:,.0f} MB of CSV"
        + (f" in {facts['zip_bytes'] / 1e6:,.0f} MB of zip" if args.zip else "")
        + f" (generated in {time.perf_counter() - t:,.0f} s)"
    )
    items = facts["train"]["items"] + facts["test"]["items"]
    results = {}
    for name in args.only.split(","):
        if args.zip and name != "mssbench":
            continue
        proc = subprocess.run(
            [sys.executable, __file__, "--child", name, "--root", str(root)],
            capture_output=True,
            text=True,
        )
        if proc.returncode:
            print(f"{name}: failed\n{proc.stderr[-2000:]}")
            continue
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        results[name] = out
        print(
            f"{name:>14}: {out['seconds']:7.1f} s wall ({out['cpu_seconds']:6.1f} s CPU)  "
            f"{items / out['seconds']:>9,.0f} item rows/s  "
            f"{facts['csv_bytes'] / 1e6 / out['seconds']:6.1f} MB/s of CSV  "
            f"peak RSS {out['peak_rss_bytes'] / 2**30:5.2f} GiB  ({out['rows']:,} rows out)"
        )
    if "mssbench" in results:
        for other in ("pandas", "mtreclib", "pyarrow-whole"):
            if other in results:
                wall = results[other]["seconds"] / results["mssbench"]["seconds"]
                cpu = results[other]["cpu_seconds"] / results["mssbench"]["cpu_seconds"]
                print(f"speed-up over {other}: {wall:.1f}x wall, {cpu:.1f}x CPU time")
    if not args.keep:
        shutil.rmtree(Path(args.root), ignore_errors=True)


if __name__ == "__main__":
    main()
