"""Repeat a recorded run and compare its numbers with the record's (``mssbench repeat``).

A record's digest catches an edit made after its run, not a record fabricated whole (see
CONTRIBUTING.md, *How a record is checked*); what settles a number is running its
configuration again. :func:`repeat` rebuilds the configuration the record's run hash stands
for, runs it with the torch thread count the record names, and compares every test cell and the
training facts (epochs run, best epoch, best validation score) with the record's, bit for bit
by default.

A bit-for-bit repeat needs the recorded hardware: another CPU model (another vendor's matmul
kernels) or GPU rounds differently in the last bits, and training amplifies those differences
into every number (on census-income an AMD-written record repeated on an Intel CPU moves AUC
interval ends by up to 0.01 and can change the best epoch). :func:`other_hardware` names such
a mismatch before anything runs, a difference found there is reported as one on other
hardware, and ``mssbench repeat --same-hardware`` leaves such records out.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from mssbench.config import RunConfig
from mssbench.errors import DataError, MssbenchError
from mssbench.plugins import Registry
from mssbench.records import (
    CPU_ID_FIELDS,
    cpu_identity,
    cpu_name,
    given_config,
    load_records,
    model_version,
    package_versions,
    read_record_file,
    verify_record,
)
from mssbench.runners.trainer import resolve_device, torch_threads

#: Training facts compared with the record (``training.<key>``).
TRAINING_FACTS = ("epochs_run", "best_epoch", "best_selection_score")

Cell = tuple[str, str, str]


@dataclass(frozen=True)
class Difference:
    """A number of the repeated run that is not the record's."""

    what: str
    recorded: float | None
    repeated: float | None

    @property
    def gap(self) -> float:
        """``|repeated - recorded|``; inf where only one of them is defined."""
        if self.recorded is None or self.repeated is None:
            return math.inf
        return abs(self.repeated - self.recorded)


@dataclass
class Comparison:
    """How a repeated run compares with its record."""

    source: str
    compared: int = 0
    identical: int = 0
    #: Numbers that differ but by no more than the tolerance.
    close: list[Difference] = field(default_factory=list)
    #: Numbers that differ by more than the tolerance (or are defined on one side only).
    differ: list[Difference] = field(default_factory=list)
    #: What differs between the record's environment and this one (library versions, CPU...).
    environment: list[str] = field(default_factory=list)
    #: Where the repeated run's record was written.
    repeated_path: str | None = None
    #: How the recorded hardware differs from this machine's (:func:`other_hardware`), if it does.
    other_hardware: str | None = None

    @property
    def repeats(self) -> bool:
        """Whether every compared number is within the tolerance."""
        return not self.differ

    def summary(self) -> str:
        """One line: identical, within tolerance, or the largest difference."""
        head = f"{self.source}: {self.identical} of {self.compared} numbers identical"
        if self.close:
            worst = max(self.close, key=lambda d: d.gap)
            head += (
                f", {len(self.close)} within the tolerance (largest {worst.gap:.3g}: {worst.what})"
            )
        if not self.differ:
            return f"repeats: {head}"
        worst = max(self.differ, key=lambda d: d.gap)
        verdict = "DIFFERS on other hardware" if self.other_hardware else "DIFFERS"
        return (
            f"{verdict}: {head}, {len(self.differ)} beyond the tolerance; largest: {worst.what} "
            f"{_fmt(worst.recorded)} recorded, {_fmt(worst.repeated)} repeated"
        )


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.6g}"


def _number(value: Any) -> float | None:
    """A recorded number as a float; None for undefined (NaN is stored as null)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _repeatable(record: Mapping[str, Any], registry: Registry) -> bool:
    """Whether the record's model is installed at the version the record ran."""
    name = str(record["model"]["name"])
    return name in registry.models and registry.model(name).version == model_version(dict(record))


def record_paths(
    targets: Sequence[str], registry: Registry, sample: int | None = None, seed: int = 0
) -> tuple[list[str], int]:
    """The record files to repeat, and how many records of a directory were left out.

    Files count as given. A directory stands for its finished records whose model is installed
    at the recorded version (the others, and tuning trials, cannot repeat and are left out).
    With ``sample``, that many of them, drawn at random with ``seed`` (an auditor's spot check
    of a page), in file order.
    """
    paths: list[str] = []
    left_out = 0
    for target in targets:
        if not Path(target).is_dir():
            paths.append(target)
            continue
        records, _ = load_records(target)
        usable = [str(r["_path"]) for r in records if _repeatable(r, registry)]
        left_out += len(records) - len(usable)
        paths += sorted(usable)
    if sample is not None and sample < len(paths):
        paths = sorted(random.Random(seed).sample(paths, sample))
    return paths, left_out


def load_for_repeat(path: str | Path) -> tuple[dict[str, Any], RunConfig]:
    """The checked record at ``path`` and the configuration its run hash stands for."""
    record = verify_record(read_record_file(path), str(path))
    if "trial" in record:
        raise DataError(f"{path}: a tuning trial's record (no test results to compare)")
    config = given_config(record)
    if config is None:
        raise DataError(f"{path}: no configuration gives the record's run_hash")
    return record, config


def check_versions(
    record: Mapping[str, Any], config: RunConfig, registry: Registry, source: str = "<record>"
) -> None:
    """Refuse a repeat that cannot give the record's numbers: another model version."""
    if not _repeatable(record, registry):
        here = registry.model(config.model).version
        recorded = model_version(dict(record))
        raise MssbenchError(
            f"{source}: model {config.model!r} is at version {here} here and version {recorded} "
            f"in the record: a version bump changes its numbers, so the run cannot repeat"
        )


def recorded_device(record: Mapping[str, Any]) -> str:
    """The device type the record's run trained on (``cpu``, ``cuda``, ``mps``)."""
    hw = (record.get("environment") or {}).get("hardware") or {}
    return str(hw.get("device", "cpu")).split(":")[0]


def repeat_device(record: Mapping[str, Any], config: RunConfig) -> str:
    """Where to repeat: the recorded device type where ``auto`` would pick another one.

    A CPU record repeated on a machine with a GPU runs on its CPU (under ``device: cpu``, so its
    record's run hash is not the original's); a GPU record on a machine without one runs on the
    CPU (and :func:`other_hardware` says so).
    """
    if config.device.strip().lower() != "auto":
        return config.device
    if recorded_device(record) == "cpu" and resolve_device("auto").type != "cpu":
        return "cpu"
    return config.device


def other_hardware(record: Mapping[str, Any], device: torch.device) -> str | None:
    """How the record's hardware differs from the repeat's on ``device``, or None if it does not.

    Compared: the device type, the GPU model on a GPU, the CPU model on a CPU and, where the
    record names them, the instruction set torch's CPU kernels dispatch to and the CPU's
    family, model, stepping, caches and flags (two machines both named "AMD EPYC" can differ
    there, and so do their numbers). A run resumed on other hardware differs from every
    machine (:func:`several_machines`). Library versions are :func:`environment_differences`'
    concern: they can be installed to match.
    """
    several = several_machines(record)
    if several:
        return several
    hw = (record.get("environment") or {}).get("hardware") or {}
    recorded = recorded_device(record)
    if recorded != device.type:
        return f"written on {recorded}; this repeat runs on {device.type}"
    if device.type == "cuda":
        recorded, here = hw.get("gpu"), torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        recorded, here = hw.get("cpu"), cpu_name()
        isa, isa_here = hw.get("cpu_capability"), torch.backends.cpu.get_cpu_capability()
        if recorded == here and isa and isa != isa_here:
            return f"written on {recorded} with {isa} kernels; this machine has {isa_here}"
        if recorded == here and hw.get("cpu_id"):
            return _cpu_id_difference(recorded, hw["cpu_id"], cpu_identity())
    else:
        return None
    if recorded and recorded != here:
        return f"written on {recorded}; this machine has {here}"
    return None


#: The hardware fields that tell two machines' arithmetic apart.
MACHINE_FIELDS = ("device", "gpu", "cpu", "cpu_capability", "cpu_id")


def several_machines(record: Mapping[str, Any]) -> str | None:
    """``trained on 2 machines (...)`` for a run resumed on other hardware, else None.

    Such a run's numbers mix two machines' arithmetic: no one machine repeats them bit for bit.
    """
    processes = (record.get("training") or {}).get("processes") or []
    hardware = [p.get("hardware") or {} for p in processes]
    machines = {
        json.dumps([hw.get(k) for k in MACHINE_FIELDS], sort_keys=True, default=str)
        for hw in hardware
    }
    if len(machines) < 2:
        return None
    where = "; ".join(
        f"epochs {p['first_epoch']}-{p['last_epoch']} on "
        f"{hw.get('gpu') or hw.get('cpu') or 'unknown hardware'}"
        for p, hw in zip(processes, hardware)
    )
    return f"trained on {len(machines)} machines ({where}): no one machine repeats it bit for bit"


def _cpu_id_difference(name: str, recorded: Mapping[str, Any], here: Any) -> str | None:
    """``written on AMD EPYC (model 1); this machine has model 17``, or None if they agree.

    Only the fields both sides name are compared (:func:`mssbench.records.cpu_identity`).
    """
    here = here or {}
    for key in CPU_ID_FIELDS:
        if key in recorded and key in here and recorded[key] != here[key]:
            label = "flags" if key == "flags_sha256" else key
            return (
                f"written on {name} ({label} {recorded[key]}); "
                f"this machine has {label} {here[key]}"
            )
    return None


def mismatch(path: str | Path) -> str | None:
    """:func:`other_hardware` for the record at ``path`` (checked on reading) and its repeat."""
    record, config = load_for_repeat(path)
    return other_hardware(record, resolve_device(repeat_device(record, config)))


def environment_differences(record: Mapping[str, Any]) -> list[str]:
    """Which library versions differ between the record's environment and this one."""
    recorded_versions = ((record.get("environment") or {}).get("versions")) or {}
    here = package_versions()
    return [
        f"{name} {recorded_versions[name]} recorded, {here.get(name, 'absent')} here"
        for name in sorted(recorded_versions)
        if name in here and recorded_versions[name] != here[name]
    ]


def code_differences(record: Mapping[str, Any], repeated: Mapping[str, Any]) -> list[str]:
    """Which code digests (mssbench, the model's and the dataset's plugins) differ, if recorded."""
    pairs = [
        ("mssbench", record["environment"], repeated["environment"]),
        (
            f"model plugin {record['model'].get('plugin')}",
            record["model"].get("source") or {},
            repeated["model"].get("source") or {},
        ),
        (
            f"dataset plugin {record['dataset'].get('plugin')}",
            record["dataset"].get("source") or {},
            repeated["dataset"].get("source") or {},
        ),
    ]
    return [
        f"code of {name} differs from the record's ({a['code_sha256'][:19]} recorded)"
        for name, a, b in pairs
        if a.get("code_sha256") and a.get("code_sha256") != b.get("code_sha256")
    ]


def _cells(record: Mapping[str, Any]) -> dict[Cell, float | None]:
    test = record.get("test") or {}
    return {
        (str(c["scenario"]), str(c["task"]), str(c["metric"])): _number(c.get("value"))
        for c in test.get("metrics") or []
    }


def compare(
    recorded: Mapping[str, Any], repeated: Mapping[str, Any], tolerance: float, source: str
) -> Comparison:
    """Compare every test cell and the training facts of two records of one configuration."""
    result = Comparison(source)
    pairs: list[tuple[str, float | None, float | None]] = []
    mine, theirs = _cells(recorded), _cells(repeated)
    for key in sorted(set(mine) | set(theirs)):
        pairs.append(("/".join(key), mine.get(key), theirs.get(key)))
    for key in TRAINING_FACTS:
        a, b = recorded["training"].get(key), repeated["training"].get(key)
        pairs.append((f"training.{key}", _number(a), _number(b)))
    for what, a, b in pairs:
        result.compared += 1
        if a == b:  # both undefined, or bit for bit the same float
            result.identical += 1
            continue
        diff = Difference(what, a, b)
        (result.close if diff.gap <= tolerance else result.differ).append(diff)
    return result


def repeat(
    path: str | Path,
    registry: Registry,
    out: str | None = None,
    tolerance: float = 0.0,
    log: Callable[[str], None] = print,
) -> Comparison:
    """Run the configuration of the record at ``path`` again and compare the two.

    Args:
        path: A finished run record (checked as every record read is).
        registry: The installed plugins (the record's model must be at its recorded version).
        out: Where the repeated run's record goes (a temporary directory, removed, by default).
        tolerance: The largest absolute difference accepted for a number that is not identical.
        log: Progress lines.
    """
    from mssbench import api

    record, config = load_for_repeat(path)
    check_versions(record, config, registry, str(path))
    threads = (record["environment"].get("hardware") or {}).get("torch_threads")
    threads = int(threads) if threads else torch.get_num_threads()
    log(f"{path}: {config.model} on {config.dataset}, seed {config.seed}, {threads} torch threads")
    run_config = replace(config, device=repeat_device(record, config))
    elsewhere = other_hardware(record, resolve_device(run_config.device))
    if elsewhere and tolerance == 0:
        log(f"  note: {elsewhere}: the numbers can differ for that reason alone")
    with tempfile.TemporaryDirectory(prefix="mssbench-repeat-") as tmp, torch_threads(threads):
        run_config = replace(run_config, out=out or tmp, progress=False, resume=False, trackers=[])
        result = api.run(run_config, registry=registry, log=lambda _m: None)
        comparison = compare(record, result.record, tolerance, str(path))
        if out:
            comparison.repeated_path = str(result.path)
    comparison.other_hardware = elsewhere
    comparison.environment = (
        ([elsewhere] if elsewhere else [])
        + environment_differences(record)
        + code_differences(record, result.record)
    )
    return comparison
