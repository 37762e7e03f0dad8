"""Scale benchmark (issue 7, part 4): a large ``aliexpress-synth`` through the memory-mapped path.

Runs ``mssbench run`` on ``aliexpress-synth`` with ``--rows`` generated rows written to a cache
directory (``-D cache=DIR``), one epoch, in a child process, twice: the first run generates the
data into the cache and trains; with ``--reuse`` only the training run is made (the cache must
exist). While the child runs, its memory is sampled from ``/proc/PID/status`` every
``--interval`` seconds:

* ``RssAnon``: anonymous memory (heap, tensors): what can run a machine out of memory;
* ``RssFile``: pages of mapped files (the cache written by the generator, then the memory map
  read by training): page cache, which the kernel reclaims under pressure;
* ``VmHWM``: the kernel's own peak of the two together (what ``/usr/bin/time`` reports).

Prints the phases' figures (generation rows/s from the child's log, training samples/s and
test metrics from its run record), the peaks, the machine and the versions.

Usage::

    python benchmarks/scale.py --rows 50000000 --cache /tmp/synth-cache
    python benchmarks/scale.py --rows 50000000 --cache /tmp/synth-cache --reuse
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

#: The small MMoE of the training-efficiency benchmark (embedding 16, 4 experts of (64, 32)).
MODEL = ["-m", "mmoe", "-p", "embed_dim=16", "-p", "n_experts=4", "-p", "expert_hidden=64,32"]


def read_status(pid: int) -> dict[str, int]:
    """``RssAnon``, ``RssFile`` and ``VmHWM`` of a process, in KiB (empty once it has exited)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile", "VmHWM"):
                    out[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


class Sampler(threading.Thread):
    """Keeps the maximum of each ``/proc/PID/status`` field while the process lives."""

    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peaks: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for key, value in read_status(self.pid).items():
                self.peaks[key] = max(value, self.peaks.get(key, 0))
            self.stop.wait(self.interval)


def gib(kib: int) -> str:
    return f"{kib / 2**20:.2f} GiB"


def run_child(args: argparse.Namespace, out: Path) -> tuple[int, dict[str, int], float, str]:
    """Run ``mssbench run`` on the big dataset; return exit code, memory peaks, wall, stderr."""
    cmd = [
        sys.executable,
        "-m",
        "mssbench",
        "run",
        *MODEL,
        "-d",
        "aliexpress-synth",
        "-D",
        f"n_rows={args.rows}",
        "-D",
        f"cache={args.cache}",
        "--epochs",
        "1",
        "--batch-size",
        str(args.batch_size),
        "--no-progress",
        "--out",
        str(out),
    ]
    print("command:", " ".join(cmd[2:]), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    sampler = Sampler(proc.pid, args.interval)
    sampler.start()
    _, err = proc.communicate()
    sampler.stop.set()
    sampler.join()
    return proc.returncode, sampler.peaks, time.perf_counter() - t0, err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000_000)
    parser.add_argument("--cache", required=True, help="directory of the generated data")
    parser.add_argument("--reuse", action="store_true", help="the cache exists: train only")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    import torch

    from mssbench.records import cpu_name

    print(
        f"machine: {cpu_name()}, {os.cpu_count()} CPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM; "
        f"Python {platform.python_version()}, torch {torch.__version__}",
        flush=True,
    )
    cache = Path(args.cache)
    if args.reuse and not cache.is_dir():
        sys.exit(f"--reuse: no cache directory {cache}")
    with tempfile.TemporaryDirectory(prefix="mssbench-scale-") as tmp:
        code, peaks, wall, err = run_child(args, Path(tmp))
        if code != 0:
            sys.exit(f"mssbench run failed (exit {code}):\n{err[-3000:]}")
        record = json.loads(next(Path(tmp).glob("*.json")).read_text())
    training = record["training"]
    figures = {
        "rows": args.rows,
        "rows_train": record["dataset"]["rows"]["train"],
        "load_seconds": record["dataset"]["load_seconds"],
        "generated": not args.reuse,
        "train_seconds": training["train_seconds"],
        "train_samples_per_s": training["train_samples_per_s"],
        "wall_seconds": wall,
        "peak_rss_anon_gib": peaks.get("RssAnon", 0) / 2**20,
        "peak_rss_file_gib": peaks.get("RssFile", 0) / 2**20,
        "vm_hwm_gib": peaks.get("VmHWM", 0) / 2**20,
        "test": {k: v for k, v in record["test"]["summary"].items() if k.startswith("auc/")},
        "memory_mapped": record["config"]["shuffle"],
        "threads": torch.get_num_threads(),
    }
    load = figures["load_seconds"]
    what = (
        "generated into the cache and loaded" if not args.reuse else "memory-mapped from the cache"
    )
    print(
        f"data: {args.rows:,} rows ({figures['rows_train']:,} train), {what} in {load:.0f} s "
        f"({args.rows / load:,.0f} rows/s)"
    )
    print(
        f"training: one epoch in {figures['train_seconds']:.0f} s, "
        f"{figures['train_samples_per_s']:,.0f} samples/s ({figures['memory_mapped']})"
    )
    print(f"test AUC: {', '.join(f'{k[4:]} {v:.4f}' for k, v in figures['test'].items())}")
    print(
        f"peak memory: anonymous {gib(peaks.get('RssAnon', 0))}, mapped files "
        f"{gib(peaks.get('RssFile', 0))}, VmHWM {gib(peaks.get('VmHWM', 0))}; wall {wall:.0f} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
