"""Suites: models x datasets x seeds, run in parallel, resumable, one record per run."""

from __future__ import annotations

import math
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Sequence

import pandas as pd
import torch

from mssbench.config import RunConfig, resolve
from mssbench.errors import ConfigError, MssbenchError
from mssbench.identity import record_identity, run_identity
from mssbench.plugins import Registry, load_registry
from mssbench.records import load_records, loaded_code_state


@dataclass
class SuiteJob:
    """One run of a suite."""

    config: RunConfig
    status: str = "pending"  # pending | skipped | finished | error
    path: str | None = None
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, int]:
        """``(dataset, model, seed)``."""
        return (self.config.dataset, self.config.model, self.config.seed)


def parse_seeds(text: str) -> list[int]:
    """``"5"`` means seeds 0-4; ``"0,3,7"`` means exactly those."""
    text = text.strip()
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise ConfigError(f"--seeds expects a count (5) or a list (0,1,2), got {text!r}") from None
    if not seeds:
        raise ConfigError("--seeds gives no seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds has duplicates: {text!r}")
    return seeds


def _names(kind: str, text: str, known: Iterable[str]) -> list[str]:
    known = sorted(known)
    if text.strip() == "all":
        return known
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"--{kind}s gives no {kind}")
    return names


def split_params(
    registry: Registry,
    models: Sequence[str],
    params: dict[str, str],
    optional: Collection[str] = (),
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Distribute ``-p`` values over models.

    ``model.key=value`` applies to that model only; ``key=value`` applies to every model that
    declares ``key`` (a suite-wide override such as ``embed_dim=16``). A global key no model
    declares is an error; models that lack a global key are reported in the returned notes.
    Keys in ``optional`` (a config file's ``params`` that the command line did not repeat) are
    left out with a note where they apply to no model of the suite, so one file serves any
    ``--models`` subset; a typed ``-p`` that applies to nothing stays an error.
    """
    per_model: dict[str, dict[str, str]] = {m: {} for m in models}
    notes, left_out = [], []
    for key, value in params.items():
        model, dot, name = key.partition(".")
        takers = [model] if model in per_model else []
        if not dot:
            model, name = "", key
            takers = [m for m in models if key in registry.model(m).defaults]
        if not takers and key in optional:
            left_out.append(key)
            continue
        if not takers:
            why = f"model {model!r} is not in this suite" if model else (
                f"no model of this suite takes {key!r}"
            )
            raise ConfigError(f"-p {key}: {why}")
        for m in takers:
            per_model[m][name] = value
        skipped = sorted(set(models) - set(takers))
        if skipped and not model:
            notes.append(f"-p {key}={value} does not apply to {', '.join(skipped)}")
    if left_out:
        notes.append(f"the config file's {', '.join(left_out)} apply to no model of this suite")
    return per_model, notes


def plan(
    registry: Registry,
    models: str,
    datasets: str,
    seeds: Sequence[int],
    base: RunConfig,
    params: dict[str, str],
    optional: Collection[str] = (),
) -> tuple[list[SuiteJob], list[str]]:
    """Every (dataset, model, seed) job of a suite, with finished runs marked ``skipped``.

    A run counts as finished when the output directory holds a finished record with the same
    configuration hash (everything that determines the numbers, seed included) and the same
    model version (:attr:`mssbench.spec.ModelSpec.version`).
    """
    model_names = _names("model", models, registry.models)
    dataset_names = _names("dataset", datasets, registry.datasets)
    for m in model_names:
        registry.model(m)  # unknown names: one clear error before anything runs
    for d in dataset_names:
        registry.dataset(d)
    per_model, notes = split_params(registry, model_names, params, optional)
    for m in model_names:  # wrong types and declared ranges: one error before anything runs
        spec = registry.model(m)
        resolve("param", f"model {m!r}", spec.defaults, per_model[m], spec.constraints)
    jobs = [
        SuiteJob(replace(base, model=m, dataset=d, seed=seed, params=dict(per_model[m])))
        for d in dataset_names
        for m in model_names
        for seed in seeds
    ]
    return mark_finished(jobs, registry, base.out), notes


def mark_finished(jobs: list[SuiteJob], registry: Registry, out: str) -> list[SuiteJob]:
    """Mark ``skipped`` every job whose run already has a finished record in ``out``.

    A run counts as finished when ``out`` holds a finished record of the same run: the same
    configuration with the dataset's options resolved, and the same model version
    (:mod:`mssbench.identity`).
    """
    if not Path(out).is_dir():
        return jobs
    records, _ = load_records(out)
    done = {record_identity(r, registry): r["_path"] for r in records}
    done.pop(None, None)  # records of data no installed dataset gives
    for job in jobs:
        key = run_identity(job.config, registry)
        if key in done:
            job.status, job.path = "skipped", done[key]
    return jobs


def _worker_init(threads: int, gpus: Any = None) -> None:
    """Set a worker's torch threads and, with several GPUs, give it one of them.

    ``gpus`` is a queue of GPU indices, one per worker: the worker takes one and sees only that
    GPU (``CUDA_VISIBLE_DEVICES``), so ``--device auto`` runs there while the run's
    configuration, and with it the hash that finds finished runs, stays unchanged. The code
    state the worker's records name is read now, when it has just imported the package
    (:func:`mssbench.records.loaded_code_state`).
    """
    loaded_code_state()
    torch.set_num_threads(threads)
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get(timeout=60))


def gpu_slots(n_jobs: int, n_gpus: int) -> list[int]:
    """The GPU of each of ``n_jobs`` workers: round-robin, none when there are fewer than 2."""
    if n_gpus < 2:
        return []
    return [i % n_gpus for i in range(n_jobs)]


def _quiet(_message: str) -> None:
    """The log of runs inside a suite: each run is reported by one progress line instead."""


def _guarded(attempt: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Call ``attempt``; an exception becomes an error result (a crashing model is one row)."""
    try:
        return attempt()
    except MssbenchError as exc:
        return {"status": "error", "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a crashing model becomes an error row
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}{where}"}


def _finished(result: Any) -> dict[str, Any]:
    """The result of a finished :class:`mssbench.api.RunResult`: record path and test summary.

    A run another process finished meanwhile (an overlapping suite) counts as ``skipped``.
    """
    return {
        "status": "skipped" if getattr(result, "skipped", False) else "finished",
        "path": str(result.path),
        "summary": result.record["test"]["summary"],
    }


def _run_one(config: RunConfig, plugins: tuple[str, ...], disabled: tuple[str, ...]) -> dict:
    """Run one job in a worker; never raises (errors become a result)."""
    from mssbench import api

    def attempt() -> dict[str, Any]:
        registry = load_registry(plugins=plugins, disable=disabled)
        # An overlapping suite running this configuration into the same --out: wait for it,
        # then take its record instead of training the configuration a second time.
        result = api.run(config, registry=registry, log=_quiet, wait=True, skip_finished=True)
        return _finished(result)

    return _guarded(attempt)


def eta_text(elapsed: float, done: int, total: int) -> str:
    """``"1:05 elapsed, about 3:15 left"``: the remaining runs at the mean pace so far."""

    def clock(seconds: float) -> str:
        minutes, secs = divmod(int(round(seconds)), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"

    left = elapsed / done * (total - done) if done else float("nan")
    tail = "done" if done >= total else f"about {clock(left)} left"
    return f"{clock(elapsed)} elapsed, {tail}"


def _finish(
    job: SuiteJob, result: dict, done: int, total: int, log: Callable[[str], None], started: float
) -> None:
    """Fill in ``job`` from a worker's result and print its progress line with the ETA."""
    job.status = result["status"]
    job.path = result.get("path")
    job.error = result.get("error")
    job.summary = result.get("summary") or {}
    d, m, s = job.key
    what = {"finished": job.path, "skipped": f"finished by another process: {job.path}"}.get(
        job.status, f"ERROR {job.error}"
    )
    eta = eta_text(time.monotonic() - started, done, total)
    log(f"[{done}/{total}] {d} {m} seed {s}: {what} ({eta})")


def default_jobs() -> int:
    """GPUs present: one run per GPU; CPU only: one run per 4 cores (at least 1)."""
    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return max(1, (os.cpu_count() or 1) // 4)


def run_suite(
    jobs: list[SuiteJob],
    n_jobs: int,
    plugins: tuple[str, ...] = (),
    disabled: tuple[str, ...] = (),
    log: Callable[[str], None] = print,
) -> list[SuiteJob]:
    """Run the pending jobs, ``n_jobs`` at a time, and fill in their status.

    With ``n_jobs == 1`` runs happen in this process. Otherwise each runs in a fresh worker
    process with ``cpu_count // n_jobs`` torch threads; with several GPUs every worker sees one
    GPU of its own (:func:`gpu_slots`), where ``device=auto`` runs.
    """
    pending = [j for j in jobs if j.status == "pending"]
    total = len(pending)
    if not pending:
        return jobs
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n_jobs > 1:
        for job in pending:
            job.config = replace(job.config, progress=False)

    started = time.monotonic()
    if n_jobs <= 1:
        for i, job in enumerate(pending, 1):
            _finish(job, _run_one(job.config, plugins, disabled), i, total, log, started)
        return jobs
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    ctx = get_context("spawn")
    slots = gpu_slots(n_jobs, n_gpus)
    gpus = None
    if slots:
        gpus = ctx.Queue()
        for index in slots:
            gpus.put(index)
    with ProcessPoolExecutor(
        n_jobs, mp_context=ctx, initializer=_worker_init, initargs=(threads, gpus)
    ) as pool:
        futures = {pool.submit(_run_one, j.config, plugins, disabled): j for j in pending}
        for i, future in enumerate(as_completed(futures), 1):
            _finish(futures[future], future.result(), i, total, log, started)
    return jobs


def plan_frame(jobs: Sequence[SuiteJob], registry: Registry, out: str) -> pd.DataFrame:
    """One row per planned run, to see what a long suite has left before starting it.

    A run is ``finished`` (with its record), ``running`` (another process holds its lock) or
    ``to run``, with the epochs its checkpoint holds where it has one (it resumes from there).
    ``hours``: a finished run's wall time; for the others, the median of the finished runs of
    the same model and dataset (blank where none has finished): what this machine's records
    say, not a promise for another one. ``hours so far``: the wall time of the processes that
    trained a checkpoint's epochs. Reads the output directory; writes nothing.
    """
    from mssbench.api import checkpoint_path

    hours = _finished_hours(jobs)
    rows = []
    for job in jobs:
        dataset, model, seed = job.key
        row = {"dataset": dataset, "model": model, "seed": seed, "status": "to run"}
        row["epochs done"], row["file"], so_far = "", "", ""
        if job.status == "skipped":
            row["status"], row["file"] = "finished", Path(job.path or "").name
        else:
            checkpoint = checkpoint_path(out, job.config, registry)
            if _lock_held(checkpoint.with_suffix(".lock")):
                row["status"] = "running"
            if checkpoint.is_file():
                row["epochs done"], so_far = _checkpoint_progress(checkpoint)
                row["file"] = checkpoint.name
        known = hours.get(job.path or "") or hours.get(job.key[:2])
        row["hours"] = f"{known:.2f}" if known is not None else ""
        row["hours so far"] = so_far
        rows.append(row)
    return pd.DataFrame(rows)


def _finished_hours(jobs: Sequence[SuiteJob]) -> dict[Any, float]:
    """Wall hours by a finished job's record path, and their median by (dataset, model)."""
    import json
    import statistics

    by_path: dict[Any, float] = {}
    by_model: dict[tuple[str, str], list[float]] = {}
    for job in jobs:
        if job.status != "skipped" or not job.path:
            continue
        seconds = json.loads(Path(job.path).read_text()).get("wall_seconds")
        if isinstance(seconds, (int, float)):
            by_path[job.path] = seconds / 3600
            by_model.setdefault(job.key[:2], []).append(seconds / 3600)
    return {**by_path, **{k: statistics.median(v) for k, v in by_model.items()}}


def _checkpoint_progress(path: Path) -> tuple[str, str]:
    """The epochs a run's checkpoint holds and the wall hours they took, as text.

    Both are "?" when the checkpoint cannot be read.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["state"]
        return str(int(state["epoch"])), f"{float(state.get('wall_seconds', 0.0)) / 3600:.2f}"
    except Exception:  # noqa: BLE001 - a plan is a report: an unreadable checkpoint is a "?"
        return "?", "?"


def _lock_held(path: Path) -> bool:
    """Whether a process holds the run lock ``path`` (filelock's ``flock``; POSIX only)."""
    try:
        import fcntl
    except ImportError:  # Windows: filelock locks otherwise; the plan cannot tell
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # no lock file: nobody runs it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def summary_frame(jobs: Sequence[SuiteJob], out: str) -> pd.DataFrame:
    """Per (dataset, model): runs finished/skipped/failed and pooled test AUC mean ± std."""
    records, _ = load_records(out) if Path(out).is_dir() else ([], [])
    by_path = {r["_path"]: r for r in records}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for job in jobs:
        d, m, _ = job.key
        row = rows.setdefault(
            (d, m), {"dataset": d, "model": m, "finished": 0, "errors": 0, "aucs": {}}
        )
        if job.status in ("finished", "skipped"):
            row["finished"] += 1
            rec = by_path.get(job.path or "")
            summary = job.summary or (rec["test"]["summary"] if rec else {})
            for key, value in summary.items():
                if key.startswith("auc/") and value is not None:
                    row["aucs"].setdefault(key[4:], []).append(value)
        elif job.status == "error":
            row["errors"] += 1
    out_rows = []
    for row in rows.values():
        flat = {k: row[k] for k in ("dataset", "model", "finished", "errors")}
        for task, values in row["aucs"].items():
            mean = sum(values) / len(values)
            std = (
                math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
                if len(values) > 1
                else float("nan")
            )
            flat[f"{task} AUC"] = f"{mean:.4f} ± {std:.4f}" if len(values) > 1 else f"{mean:.4f}"
        out_rows.append(flat)
    return pd.DataFrame(out_rows)
