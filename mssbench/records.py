"""Run records: one JSON file per finished run, written atomically and never overwritten."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from mssbench.errors import ConfigError
from mssbench.io import write_json

RECORD_SCHEMA_VERSION = 1

_PACKAGES = ("mssbench", "torch", "numpy", "pandas", "pyarrow", "pluggy")


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the packages that can change a number."""
    out = {"python": platform.python_version()}
    for name in (*_PACKAGES, *extra):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def git_commit(path: str | Path | None = None) -> dict[str, Any] | None:
    """Commit and dirty flag of the git checkout holding ``path`` (the package by default)."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_name() -> str:
    """Human-readable CPU model name."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: torch.device) -> dict[str, Any]:
    """Device, CPU and GPU description for a record."""
    out: dict[str, Any] = {
        "device": str(device),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
        out["cuda"] = torch.version.cuda
    return out


def ensure_writable(directory: str | Path) -> Path:
    """Create ``directory`` if needed and check that files can be written into it."""
    path = Path(directory).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-", delete=True):
            pass
    except OSError as exc:
        raise ConfigError(
            f"output directory {str(path)!r} is not writable: {exc.strerror}"
        ) from None
    return path


def write_json_atomic(path: Path, payload: Mapping[str, Any], overwrite: bool = False) -> Path:
    """Write JSON to ``path`` atomically (:func:`mssbench.io.write_json`).

    Without ``overwrite`` an existing file is never replaced: the call raises
    ``FileExistsError`` instead.
    """
    return write_json(path, payload, overwrite=overwrite)


def write_record(directory: Path, stem: str, record: Mapping[str, Any]) -> Path:
    """Write a finished run record as ``<directory>/<stem>.json`` (``-2``, ``-3``... if taken)."""
    for i in range(1, 10_000):
        name = f"{stem}.json" if i == 1 else f"{stem}-{i}.json"
        try:
            return write_json_atomic(directory / name, record)
        except FileExistsError:
            continue
    raise ConfigError(f"cannot find a free record name for {stem!r} in {directory}")


def command_line() -> list[str]:
    """The command line of this process, program name shortened."""
    argv = list(sys.argv)
    if argv:
        argv[0] = Path(argv[0]).name
    return argv
