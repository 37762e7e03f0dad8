"""Run records: one JSON file per finished run, written atomically and never overwritten.

The record has one typed definition, :class:`RunRecord` (its JSON Schema is what
``mssbench schema record`` prints), built by :func:`start_record` and :func:`finish_record`
and checked when read back by :func:`verify_record`: the schema, the value ranges, the content
digest (:func:`content_digest`), the ``run_hash`` recomputed from the configuration and the
test summary recomputed from the test cells.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shlex
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Optional, Union

import numpy as np
import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from mssbench.codehash import file_sha256, module_code_sha256
from mssbench.errors import ConfigError, DataError
from mssbench.io import write_json

if TYPE_CHECKING:
    from mssbench.config import RunConfig

#: Version of the record layout :func:`finish_record` writes. Version 2 added ``digest``,
#: ``config.requested`` and the plugins' ``source``; version 1 records (no digest) are read as
#: legacy records: checked in every other way and marked as such on the pages.
RECORD_SCHEMA_VERSION = 2
#: Record versions that are read without a content digest.
LEGACY_RECORD_VERSIONS = (1,)
#: Optional top-level key naming who produced a record (a contributed result): a string or an
#: object ``{"name": ..., "url": ..., "affiliation": ...}`` of strings. Added by hand, so it is
#: outside the content digest.
CONTRIBUTOR_KEY = "contributor"
#: Top-level keys the content digest does not cover (and keys starting with ``_``, added when a
#: record is read).
DIGEST_EXCLUDED = (CONTRIBUTOR_KEY, "digest")
#: Largest record file that is parsed, in bytes (a real record is some 100 KB).
MAX_RECORD_BYTES = 32 * 1024 * 1024
#: Deepest nesting of JSON arrays and objects that is parsed (a real record nests about 8 deep).
MAX_JSON_DEPTH = 64

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


#: Changed files of a checkout that cannot change a number (``fnmatch`` patterns, relative to
#: the repository root): the leaderboards' records, pages and scripts (a run's configuration is
#: in its record) and prose. A commit whose only changes are these is not reported as "dirty".
NON_CODE_PATHS = ("leaderboards/*", "*.md")


def git_commit(path: str | Path | None = None) -> dict[str, Any] | None:
    """Commit, dirty flag and changed tracked files of the checkout holding ``path``.

    ``path`` is the package by default. ``dirty_paths`` lists the modified tracked files
    (relative to the repository root), so a reader can tell a changed page from changed code.
    """
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
        )
        if sha.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    paths = [line[3:].split(" -> ")[-1].strip('"') for line in status.stdout.splitlines()]
    return {"commit": sha.stdout.strip(), "dirty": bool(paths), "dirty_paths": paths}


def dirty_code(git: Mapping[str, Any]) -> bool | None:
    """Whether a record's checkout had changes that could change a number.

    False when it was clean or every changed file matches :data:`NON_CODE_PATHS`; None when the
    record does not list its changed files (records written before ``dirty_paths``).
    """
    if not git.get("dirty"):
        return False
    paths = git.get("dirty_paths")
    if paths is None:
        return None
    return not all(any(fnmatch.fnmatch(p, pat) for pat in NON_CODE_PATHS) for p in paths)


def cpu_name() -> str:
    """Human-readable CPU model name."""
    return _first_cpuinfo_block().get("model name") or platform.processor() or platform.machine()


#: ``/proc/cpuinfo`` fields that, with the caches and the flags, tell CPUs apart that a virtual
#: machine names alike ("AMD EPYC").
_CPUINFO_FIELDS = {
    "vendor_id": "vendor",
    "cpu family": "family",
    "model": "model",
    "stepping": "stepping",
}

#: The fields of :func:`cpu_identity`, in the order :mod:`mssbench.repeat` compares them.
CPU_ID_FIELDS = (*_CPUINFO_FIELDS.values(), "caches", "flags_sha256")


def _first_cpuinfo_block() -> dict[str, str]:
    """The first processor's ``/proc/cpuinfo`` fields (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def _cpu_caches() -> str | None:
    """``"L1d 32K, L1i 32K, L2 512K, L3 32768K"`` of the first CPU (Linux sysfs), else None."""
    names = {"Data": "d", "Instruction": "i", "Unified": ""}
    out = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = (
                (index / name).read_text().strip() for name in ("level", "type", "size")
            )
        except OSError:
            continue
        out.append(f"L{level}{names.get(kind, kind)} {size}")
    return ", ".join(out) or None


def cpu_identity() -> dict[str, Any] | None:
    """What tells one CPU from another where their names are alike, or None off Linux.

    Vendor, family, model and stepping, the cache sizes (math libraries block their kernels by
    them) and a digest of the instruction-set flags. Two virtual machines that both report "AMD
    EPYC" can run different CPU generations, and a model's last bits differ between them: a
    record that names its CPU this way can be told apart (:func:`mssbench.repeat.other_hardware`).
    """
    info = _first_cpuinfo_block()
    if not info:
        return None
    out: dict[str, Any] = {name: info[key] for key, name in _CPUINFO_FIELDS.items() if key in info}
    out["caches"] = _cpu_caches()
    flags = sorted(info.get("flags", "").split())
    if flags:
        out["flags_sha256"] = hashlib.sha256(" ".join(flags).encode()).hexdigest()[:16]
    return out


def hardware(device: torch.device) -> dict[str, Any]:
    """Device, CPU and GPU description for a record."""
    out: dict[str, Any] = {
        "device": str(device),
        "cpu": cpu_name(),
        # The instruction set torch's CPU kernels dispatch to (AVX2, AVX512...): a virtual
        # machine's generic CPU name ("Intel(R) Xeon(R) Processor") does not tell it.
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_id": cpu_identity(),
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


# --- The typed definition ------------------------------------------------------------------------

#: Metrics with a known range: ``name -> (low, high)`` (None: unbounded on that side).
METRIC_RANGES: dict[str, tuple[float | None, float | None]] = {
    "auc": (0.0, 1.0),
    "logloss": (0.0, None),
}
#: Scenario name of the macro average; its ``n`` counts scenarios and its ``n_pos`` is -1.
MACRO_SCENARIO = "macro"
_HASH = re.compile(r"^[0-9a-f]{12}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class _Block(BaseModel):
    """A record block: typed where the harness relies on a field, open for the rest."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class PluginSource(_Block):
    """Where the plugin behind a model, dataset or metric came from.

    ``kind`` is ``distribution`` (an installed package: ``distribution`` and ``version``),
    ``file`` (``--plugin ./file.py``: ``path`` and the file's ``sha256``), ``module`` (a module
    outside any installed distribution: ``module``) or ``unknown``.
    """

    kind: Literal["distribution", "file", "module", "unknown"]
    distribution: Optional[str] = None
    version: Optional[str] = None
    path: Optional[str] = None
    sha256: Optional[str] = None
    module: Optional[str] = None
    #: :func:`code_sha256` of the Python sources of the plugin's top-level package (or file) as
    #: the run found them: what the distribution's version alone does not pin (an editable
    #: install, a checkout with changes, code imported from another checkout).
    code_sha256: Optional[str] = None


class ModelBlock(_Block):
    """The model that was trained."""

    name: str = Field(min_length=1)
    plugin: Optional[str] = None
    version: int = Field(default=1, ge=1)
    n_params: Optional[NonNegativeInt] = None
    source: Optional[PluginSource] = None


class DatasetBlock(_Block):
    """The dataset it was trained on."""

    name: str = Field(min_length=1)
    plugin: Optional[str] = None
    rows: Optional[dict[str, NonNegativeInt]] = None
    info: Optional[dict[str, Any]] = None
    source: Optional[PluginSource] = None


class ProtocolBlock(_Block):
    """The dataset protocol (split rule, encoding); its ``id`` names the page."""

    id: str = Field(min_length=1)
    scenarios: Optional[list[str]] = None
    synthetic: Optional[bool] = None


class ConfigBlock(_Block):
    """The resolved configuration (every hyper-parameter and data option present).

    ``requested`` holds the values as given (``-p``, ``-D``, ``--head``, ``--batching`` before
    the plugin defaults were applied): ``run_hash`` is computed from them. Its other keys are
    the :class:`~mssbench.config.RunConfig` fields and the facts of how the run trained
    (``shuffle``, ``optimizer``, ``weight_decay_groups``, ``bias_init_note``, ``distributed``);
    no other key is allowed
    (:func:`config_keys`).
    """

    model: Optional[str] = None
    dataset: Optional[str] = None
    seed: int
    params: dict[str, Any] = Field(default_factory=dict)
    data_options: dict[str, Any] = Field(default_factory=dict)
    requested: Optional[dict[str, Any]] = None
    shuffle: Optional[str] = None
    optimizer: Optional[str] = None
    weight_decay_groups: Optional[Any] = None
    bias_init_note: Optional[str] = None
    distributed: Optional[Any] = None


class MetricInfo(_Block):
    """A plugin test metric the run computed."""

    name: str = Field(min_length=1)
    plugin: Optional[str] = None
    version: int = Field(default=1, ge=1)
    source: Optional[PluginSource] = None


class EnvironmentBlock(_Block):
    """Package versions, git commit and hardware."""

    versions: dict[str, str] = Field(default_factory=dict)
    git: Optional[dict[str, Any]] = None
    hardware: Optional[dict[str, Any]] = None
    #: :func:`code_sha256` of the ``mssbench`` package's Python sources the run imported.
    code_sha256: Optional[str] = None


class TrainingProcess(_Block):
    """One of the processes that trained a resumed run: its epochs and its environment."""

    first_epoch: PositiveInt
    last_epoch: PositiveInt
    started_at: Optional[str] = None
    hardware: Optional[dict[str, Any]] = None
    versions: Optional[dict[str, str]] = None
    git: Optional[dict[str, Any]] = None
    code_sha256: Optional[str] = None


class TrainingBlock(_Block):
    """How training went."""

    epochs_run: Optional[NonNegativeInt] = None
    best_epoch: Optional[NonNegativeInt] = None
    train_samples: Optional[NonNegativeInt] = None
    train_seconds: Optional[float] = Field(default=None, ge=0)
    train_samples_per_s: Optional[float] = Field(default=None, ge=0)
    #: One entry per epoch: training loss and speed, ``selection_score`` and the validation
    #: metrics (``valid``): the validation curve.
    history: list[dict[str, Any]] = Field(default_factory=list)
    #: How the epoch kept was chosen (``--select``, in words).
    selection_metric: Optional[str] = None
    #: :func:`mssbench.runners.trainer.converged`: true when early stopping ended the run;
    #: otherwise false when the best epoch is the last or the last epoch still improved the
    #: selection score by more than ``mssbench.config.CONVERGENCE_TOLERANCE``; absent in older
    #: records (pages recompute it from the curve).
    converged: Optional[bool] = None
    #: True when the kept epoch predicts no better than the train base rates
    #: (:func:`mssbench.base_rate.stalled`); absent in older records.
    stalled: Optional[bool] = None
    #: A resumed run's processes in order (:class:`TrainingProcess`), when more than one
    #: trained it (another machine, or other code, may have trained some epochs); absent when
    #: one process trained every epoch, and in older records.
    processes: Optional[list[TrainingProcess]] = None


class MetricCell(_Block):
    """One test value: a metric of a task on a scenario (or ``pooled`` or ``macro``)."""

    scenario: str = Field(min_length=1)
    task: str = Field(min_length=1)
    metric: str = Field(min_length=1)
    value: Optional[float] = None
    n: Optional[NonNegativeInt] = None
    n_pos: Optional[int] = Field(default=None, ge=-1)
    reason: Optional[str] = None

    @model_validator(mode="after")
    def _in_range(self) -> MetricCell:
        low, high = METRIC_RANGES.get(self.metric, (None, None))
        v = self.value
        if v is not None and ((low is not None and v < low) or (high is not None and v > high)):
            span = f"[{low}, {high}]" if high is not None else f">= {low}"
            raise ValueError(f"{self.metric} {v!r} is outside {span}")
        if self.n_pos is not None:
            if self.n_pos == -1 and self.scenario != MACRO_SCENARIO:
                raise ValueError("n_pos -1 is allowed on macro rows only")
            if self.n is not None and self.n_pos > self.n:
                raise ValueError(f"n_pos {self.n_pos} is more than n {self.n}")
        return self


class TestBlock(_Block):
    """Test results: the tidy cells and the headline summary derived from them."""

    __test__ = False  # not a pytest class

    summary: Optional[dict[str, Optional[float]]] = None
    metrics: list[MetricCell] = Field(min_length=1)
    oracle_summary: Optional[dict[str, Optional[float]]] = None
    oracle_metrics: Optional[list[MetricCell]] = None


class TrialBudget(_Block):
    """The budget every model of a study gets: the same for all, so that pages can state it."""

    trials: int = Field(ge=1)
    samples_per_trial: int = Field(ge=1)


class TrialBlock(_Block):
    """Present in the record of a tuning trial (``mssbench tune``), which reads no test rows."""

    study: str = Field(min_length=1, description="The study's name (its directory)")
    number: NonNegativeInt = Field(description="The trial's number in the study")
    budget: TrialBudget
    point: dict[str, Any] = Field(description="The search-space point this trial ran")
    selection: str = Field(min_length=1, description="The validation score the study maximises")


class Contributor(_Block):
    """Who contributed a record."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1)
    affiliation: Optional[str] = None
    url: Optional[str] = None


class RunRecord(_Block):
    """A finished run record, as ``mssbench run`` writes it (one JSON file per run)."""

    # A run has test results; a tuning trial, which reads no test row, a trial block instead.
    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["test"]}, {"required": ["trial"]}]}
    )

    record_version: int = Field(description="Layout version: 2 (with digest) or 1 (legacy)")
    status: Literal["finished"]
    run_hash: str = Field(pattern=_HASH.pattern, description="Hash of the configuration")
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    command: Optional[list[str]] = None
    model: ModelBlock
    dataset: DatasetBlock
    protocol: ProtocolBlock
    config: ConfigBlock
    metrics: list[MetricInfo] = Field(default_factory=list)
    environment: EnvironmentBlock
    training: TrainingBlock
    test: Optional[TestBlock] = Field(
        default=None, description="Test results; absent exactly in a tuning trial's record"
    )
    trial: Optional[TrialBlock] = None
    wall_seconds: Optional[float] = Field(default=None, ge=0)
    digest: Optional[str] = Field(
        default=None,
        pattern=_DIGEST.pattern,
        description="sha256 of the canonical JSON of every field but contributor and digest",
    )
    contributor: Optional[Union[str, Contributor]] = None

    @field_validator("record_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        known = (*LEGACY_RECORD_VERSIONS, RECORD_SCHEMA_VERSION)
        if v not in known:
            raise ValueError(f"{v} is not supported (expected one of {', '.join(map(str, known))})")
        return v

    @model_validator(mode="after")
    def _test_unless_trial(self) -> RunRecord:
        if (self.test is None) == (self.trial is None):
            raise ValueError(
                "a run record has a test block, a tuning trial's record a trial block instead"
            )
        return self

    @field_validator("contributor", mode="before")
    @classmethod
    def _contributor(cls, v: Any) -> Any:
        ok = (isinstance(v, str) and v.strip()) or (
            isinstance(v, dict)
            and isinstance(v.get("name"), str)
            and v["name"].strip()
            and all(isinstance(x, str) for x in v.values())
        )
        if v is not None and not ok:
            raise ValueError(
                'must be a non-empty string or an object with a "name" (and optional "url", '
                '"affiliation") of strings'
            )
        return v


def record_json_schema() -> dict[str, Any]:
    """The JSON Schema of a finished run record (what ``mssbench schema record`` prints)."""
    schema = RunRecord.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mssbench run record"
    return schema


# --- Canonical form and digest ----------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """``value`` as it reads back from the record file (what the digest is computed over)."""
    return json.loads(json.dumps(value, default=str, allow_nan=True))


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8."""
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True
    )
    return text.encode("utf-8")


def content_digest(record: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` over the canonical JSON of a record, less :data:`DIGEST_EXCLUDED`.

    It covers configuration, test metrics, training history, environment and every other
    field a run writes; not the ``contributor`` a submitter adds, nor keys starting with ``_``.
    """
    covered = {
        k: v for k, v in record.items() if k not in DIGEST_EXCLUDED and not k.startswith("_")
    }
    return "sha256:" + hashlib.sha256(canonical_json(covered)).hexdigest()


# --- Reading a record file safely ---------------------------------------------------------------

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(data: bytes) -> int:
    """Deepest nesting of arrays and objects in JSON text (brackets inside strings ignored)."""
    bare = np.frombuffer(_JSON_STRING.sub(b"", data), dtype=np.uint8)
    step = np.isin(bare, np.frombuffer(b"[{", np.uint8)).astype(np.int32)
    step -= np.isin(bare, np.frombuffer(b"]}", np.uint8)).astype(np.int32)
    return int(np.cumsum(step).max(initial=0))


def read_record_file(path: str | Path) -> Any:
    """Parse a record file, refusing what could exhaust the reader.

    Raises:
        DataError: ``"<path>: <reason>"`` for a file that cannot be opened (a symlink loop),
            is not a regular file (a directory named ``x.json``), is larger than
            :data:`MAX_RECORD_BYTES`, is not UTF-8, nests deeper than :data:`MAX_JSON_DEPTH`
            or is not valid JSON.
    """
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise DataError(f"{path}: {kind}, not a record file")
        if info.st_size > MAX_RECORD_BYTES:
            raise DataError(
                f"{path}: {info.st_size:,} bytes, more than a record may have "
                f"({MAX_RECORD_BYTES:,})"
            )
        with open(path, "rb") as fh:
            data = fh.read(MAX_RECORD_BYTES + 1)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_RECORD_BYTES:
        raise DataError(f"{path}: more than a record may have ({MAX_RECORD_BYTES:,} bytes)")
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise DataError(f"{path}: JSON nested {depth} deep, more than {MAX_JSON_DEPTH}")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None


# --- Checking a record read back ------------------------------------------------------------------

#: Configuration fields whose value as given differs from the resolved one in ``config``: the
#: run hash is computed from the values as given (``config.requested``).
REQUESTED_FIELDS = ("params", "data_options", "head", "batching")
_FLAGS = {
    "params": ("-p", "--param"),
    "data_options": ("-D", "--data-option"),
    "head": ("--head",),
    "batching": ("--batching",),
}


def _flag_values(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """Values of ``flags`` in an argument list (``-p X``, ``--param X``, ``--param=X``)."""
    out = []
    for i, arg in enumerate(argv):
        for flag in flags:
            if arg == flag and i + 1 < len(argv):
                out.append(argv[i + 1])
            elif arg.startswith(flag + "=") and flag.startswith("--"):
                out.append(arg[len(flag) + 1 :])
    return out


def _requested_from_command(record: Mapping[str, Any]) -> dict[str, Any]:
    """The values as given, read from a version 1 record's command line.

    Version 1 records have no ``config.requested``: these are the ``-p``/``-D`` assignments
    that apply to this model (``key=value`` for a declared key, ``model.key=value`` for this
    model), ``--head`` and ``--batching``.
    """
    argv = [str(a) for a in record.get("command") or []]
    config = record["config"]
    model = str(record["model"]["name"])
    out: dict[str, Any] = {"head": "auto", "batching": "auto"}
    for key in ("params", "data_options"):
        declared = config.get(key) or {}
        given: dict[str, str] = {}
        for item in _flag_values(argv, _FLAGS[key]):
            name, _, value = item.partition("=")
            owner, dot, short = name.partition(".")
            if dot and owner == model:
                given[short] = value
            elif name in declared:
                given[name] = value
        out[key] = given
    if _flag_values(argv, ("--scenarios",)):
        out["data_options"]["scenarios"] = _flag_values(argv, ("--scenarios",))[-1]
    for key in ("head", "batching"):
        values = _flag_values(argv, _FLAGS[key])
        if values:
            out[key] = values[-1]
    return out


def _hash_candidates(record: Mapping[str, Any]) -> list[tuple[str, dict[str, Any], RunConfig]]:
    """``(run_hash, values as given, RunConfig)`` for each reading of a record's configuration."""
    from mssbench.config import RunConfig  # config imports nothing from here; avoid a cycle

    names = {f for f in RunConfig.__dataclass_fields__}
    config = record["config"]
    base = {k: v for k, v in config.items() if k in names and k not in REQUESTED_FIELDS}
    # Options added later: an older record ran with the value every run had then.
    base = {**{k: v for k, v in RunConfig.LATER_FIELDS.items() if k not in config}, **base}
    requested = config.get("requested")
    candidates = (
        [requested]
        if isinstance(requested, dict)
        else [
            _requested_from_command(record),
            {
                "params": config.get("params") or {},
                "data_options": config.get("data_options") or {},
                "head": "auto",
                "batching": "auto",
            },
        ]
    )
    out = []
    for given in candidates:
        merged = {**base, **{k: v for k, v in given.items() if k in REQUESTED_FIELDS}}
        try:
            config = RunConfig(**merged)
        except TypeError:
            continue
        out.append((config.result_hash(), given, config))
    return out


def recomputed_run_hash(record: Mapping[str, Any]) -> list[str]:
    """The ``run_hash`` values a record's configuration gives.

    One for a record with ``config.requested``; for a version 1 record, the hash of the values
    read from its command line and of the resolved values (a run started from Python).
    """
    return [h for h, _, _ in _hash_candidates(record)]


def given_config(record: Mapping[str, Any]) -> RunConfig | None:
    """The :class:`RunConfig` as given that has the record's ``run_hash`` (``None``: none has)."""
    for run_hash, _, config in _hash_candidates(record):
        if run_hash == record.get("run_hash"):
            return config
    return None


def requested_values(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The values as given that give the record's ``run_hash`` (``None`` if none do).

    ``params``, ``data_options``, ``head`` and ``batching`` as the user gave them: a command
    rebuilt from them reruns the same configuration under the same hash, so a suite finds the
    run finished.
    """
    for run_hash, given, _ in _hash_candidates(record):
        if run_hash == record.get("run_hash"):
            return dict(given)
    return None


def _check_requested(config: Mapping[str, Any], requested: Mapping[str, Any]) -> None:
    """The values as given must resolve to the recorded ones (params, data options, head...)."""
    from mssbench.config import resolve

    for key in ("params", "data_options"):
        given = requested.get(key) or {}
        resolved = config.get(key) or {}
        try:
            again = resolve("value", f"config.{key}", resolved, given)
        except ConfigError as exc:
            raise ValueError(f"config.requested.{key} does not match config.{key}: {exc}") from None
        if again != resolved:
            bad = sorted(k for k in resolved if again.get(k) != resolved[k])
            raise ValueError(
                f"config.{key} {', '.join(bad)} differ from the values requested "
                f"(config.requested.{key})"
            )
    for key in ("head", "batching"):
        given = requested.get(key, "auto")
        if given != "auto" and given != config.get(key):
            raise ValueError(f"config.{key} {config.get(key)!r} is not the {given!r} requested")


def summary_from_cells(cells: list[Mapping[str, Any]]) -> dict[str, float]:
    """The headline summary (:func:`mssbench.metrics.report.summary_of_cells`) of test cells."""
    from mssbench.metrics.report import summary_of_cells

    return summary_of_cells(
        (c.get("scenario"), c.get("task"), c.get("metric"), c.get("value")) for c in cells
    )


def _same_summary(stated: Mapping[str, Any], cells: list[Mapping[str, Any]], where: str) -> None:
    expected = summary_from_cells(cells)
    for key in sorted(set(stated) | set(expected)):
        a, b = stated.get(key, "missing"), expected.get(key, "missing")
        a = math.nan if a is None else a
        same = a == b or (
            isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
        )
        if not same:
            raise ValueError(f"{where}.summary[{key!r}] is {a!r}, but its cells give {b!r}")


def _loc(parts: tuple[Any, ...]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _describe_errors(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    text = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] in ("float_type", "int_type", "string_type", "bool_type", "dict_type"):
        kind = first["type"].split("_")[0]
        word = {"float": "a number", "int": "an integer", "string": "a string"}.get(kind, kind)
        text = f"must be {word}, got {first.get('input')!r:.60}"
    where = _loc(tuple(p for p in first["loc"] if not str(p).startswith("function-")))
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    if not where:
        return f"{text}{more}"
    return f"{where}{' ' if text.startswith('must be') else ': '}{text}{more}"


#: Longest reason given for refusing a record (record text can be arbitrarily long).
MAX_REASON_CHARS = 400


def clip(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def verify_record(record: Any, source: str = "<record>") -> dict[str, Any]:
    """Check that ``record`` is a genuine finished run record.

    In order: it is a :class:`RunRecord` (types, value ranges), its content digest matches
    (required from record version 2 on), its ``run_hash`` is what its configuration gives, the
    configuration as given resolves to the recorded one, and ``test.summary`` (and the oracle
    summary) equal what the test cells give.

    Returns:
        ``record`` itself.

    Raises:
        DataError: ``"<source>: <field>: <what is wrong>"``.
    """
    if not isinstance(record, dict):
        raise DataError(f"{source}: a run record must be a JSON object")
    required = [n for n, f in RunRecord.model_fields.items() if f.is_required()]
    missing = [k for k in required if k not in record]
    if missing:
        raise DataError(f"{source}: not a run record, missing key(s) {', '.join(missing)}")
    if record["status"] != "finished":
        raise DataError(f"{source}: status is {clip(repr(record['status']), 60)}, not 'finished'")
    try:
        RunRecord.model_validate(record)
    except ValidationError as exc:
        raise DataError(f"{source}: {clip(_describe_errors(exc))}") from None
    try:
        _check_integrity(record)
    except ValueError as exc:
        raise DataError(f"{source}: {clip(str(exc))}") from None
    except (TypeError, KeyError, AttributeError, RecursionError) as exc:  # one file, never all
        reason = clip(f"cannot be checked: {type(exc).__name__}: {exc}")
        raise DataError(f"{source}: {reason}") from None
    return record


def is_legacy(record: Mapping[str, Any]) -> bool:
    """A record of a version read without a content digest (and carrying none)."""
    return record.get("record_version") in LEGACY_RECORD_VERSIONS and not record.get("digest")


def _check_integrity(record: dict[str, Any]) -> None:
    digest = record.get("digest")
    if digest is None and not is_legacy(record):
        raise ValueError(
            f"digest: missing (required from record version {RECORD_SCHEMA_VERSION} on)"
        )
    if digest is not None and digest != content_digest(record):
        raise ValueError(
            "digest: does not match the content (the record was changed after the run)"
        )
    _check_config_keys(record["config"])
    candidates = _hash_candidates(record)
    matching = [given for h, given, _ in candidates if h == record["run_hash"]]
    if not matching:
        raise ValueError(
            f"run_hash {record['run_hash']!r} is not what its config gives "
            f"({candidates[0][0] if candidates else 'no valid config'})"
        )
    _check_requested(record["config"], matching[0])
    _check_command(record)
    test = record.get("test") or {}
    if test.get("summary") is not None:
        _same_summary(test["summary"], test["metrics"], "test")
    if test.get("oracle_summary") is not None and test.get("oracle_metrics"):
        _same_summary(test["oracle_summary"], test["oracle_metrics"], "test.oracle")


def config_keys() -> frozenset[str]:
    """Keys a record's ``config`` may have.

    The :class:`~mssbench.config.RunConfig` fields and the typed fields of :class:`ConfigBlock`
    (``requested`` and the facts of how the run trained).
    """
    from mssbench.config import RunConfig

    return frozenset(f.name for f in dataclasses.fields(RunConfig)) | frozenset(
        ConfigBlock.model_fields
    )


def _check_config_keys(config: Mapping[str, Any]) -> None:
    """Refuse a config key no run configuration defines (text that only a page would show)."""
    unknown = sorted(set(config) - config_keys())
    if unknown:
        raise ValueError(
            f"config.{unknown[0]}: not a key of a run's configuration"
            + (f" (nor {', '.join(unknown[1:])})" if len(unknown) > 1 else "")
        )
    extra = sorted(set(config.get("requested") or {}) - set(REQUESTED_FIELDS))
    if extra:
        raise ValueError(
            f"config.requested.{extra[0]}: not a value as given "
            f"(expected {', '.join(REQUESTED_FIELDS)})"
        )


def _is_python_program(program: str) -> bool:
    """A program a run started from Python records as its command.

    A script, ``python -c``, or a console script installed here (``pytest``, ``torchrun``).
    """
    name = Path(program).name
    if name.endswith(".py") or name in ("", "-c", "-m") or name.startswith("python"):
        return True
    scripts = importlib.metadata.entry_points(group="console_scripts")
    return name in {e.name for e in scripts}


def _check_command(record: Mapping[str, Any]) -> None:
    """``command`` is the command line that ran: an ``mssbench`` one must give the config.

    A record made from Python holds its process's command line (a script), which cannot give
    the config and is never shown as the run's command; any other program is refused.
    """
    from mssbench.reproduce import command_mismatch

    argv = record.get("command")
    if not argv:
        return
    program = Path(str(argv[0])).stem
    if program == "mssbench":
        wrong = command_mismatch(record)
        if wrong:
            raise ValueError(f"command: {wrong} ({clip(shlex.join(map(str, argv)), 120)})")
    elif not _is_python_program(str(argv[0])):
        raise ValueError(
            f"command: {clip(repr(str(argv[0])), 60)} is neither mssbench nor a Python program "
            "(a record's command is the command line of the process that ran it)"
        )


def run_identity(record: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """What names one run: ``(model, dataset, started_at)``.

    Two files with the same identity claim to be the same run. None without ``started_at``.
    """
    started = record.get("started_at")
    if not started:
        return None
    return (str(record["model"]["name"]), str(record["dataset"]["name"]), str(started))


# --- Plugin provenance ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _loaded_code_state() -> tuple[dict[str, Any] | None, str | None]:
    return git_commit(), module_code_sha256(sys.modules["mssbench"])


def loaded_code_state() -> dict[str, Any]:
    """The checkout's git state and the ``mssbench`` code digest, read once per process.

    A process runs the code it imported; a commit or an edit made while it runs (during a long
    suite, say) must not be recorded as the code that ran. So both are read the first time they
    are asked for -- when a suite or tuning worker starts, else when the first run of the
    process starts -- and every record the process writes names that state.
    """
    git, code = _loaded_code_state()
    return {"git": json.loads(json.dumps(git)), "code_sha256": code}


def plugin_source(registry: Any, plugin: str) -> dict[str, Any]:
    """Where the plugin ``plugin`` of a loaded registry came from, and its code's digest.

    A ``--plugin`` file is pinned by its own ``sha256``; any other plugin gets the digest of
    its package's sources (:func:`module_code_sha256`).
    """
    source = _plugin_origin(registry, plugin)
    if source["kind"] == "file":
        return source
    code = module_code_sha256(registry.pm.get_plugin(plugin))
    return {**source, "code_sha256": code} if code else source


def _plugin_origin(registry: Any, plugin: str) -> dict[str, Any]:
    """Where the plugin ``plugin`` of a loaded registry came from (:class:`PluginSource`).

    An entry point of the ``mssbench`` group: its distribution and version. A ``--plugin``
    file: its path as given and its sha256. A module: the installed distribution that provides
    it, else just the module name.
    """
    from mssbench.plugins import ENTRY_POINT_GROUP, is_plugin_file

    module = registry.pm.get_plugin(plugin)
    file = getattr(module, "__file__", None)
    if is_plugin_file(plugin) and file:
        return {"kind": "file", "path": plugin, "sha256": file_sha256(str(Path(file).resolve()))}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == plugin and ep.dist is not None:
            return {
                "kind": "distribution",
                "distribution": ep.dist.metadata["Name"],
                "version": ep.dist.version,
            }
    name = getattr(module, "__name__", None)
    if not isinstance(name, str):
        return {"kind": "unknown"}
    dists = importlib.metadata.packages_distributions().get(name.split(".")[0]) or []
    if dists:
        return {
            "kind": "distribution",
            "distribution": dists[0],
            "version": importlib.metadata.version(dists[0]),
        }
    return {"kind": "module", "module": name}


def source_label(source: Any) -> str | None:
    """``mssbench-aitm 0.1.0``, ``file sha256 0123456789ab`` or ``module x``; None if unknown."""
    if not isinstance(source, dict):
        return None
    kind = source.get("kind")
    if kind == "distribution" and source.get("distribution"):
        return f"{source['distribution']} {source.get('version') or '?'}"
    if kind == "file" and source.get("sha256"):
        return f"file sha256 {str(source['sha256'])[:12]}"
    if kind == "module" and source.get("module"):
        return f"module {source['module']}"
    return None


# --- Building a record ------------------------------------------------------------------------


def nan_to_none(value: Any) -> Any:
    """NaN floats (undefined metrics) become JSON null, recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_to_none(v) for v in value]
    return value


@dataclass(frozen=True)
class RunFacts:
    """What a run knows once its data is loaded and its model built.

    Attributes:
        rows: Rows per split.
        counts: Rows and positives per split and scenario (:func:`mssbench.data.contract.validate`).
        n_params: Parameters of the built model.
        load_seconds: Time to load the data.
        metric_specs: The plugin metrics computed.
        device: The training device.
        started_at: ISO time stamp.
    """

    rows: Mapping[str, int]
    counts: Mapping[str, Any]
    n_params: int
    load_seconds: float
    metric_specs: list[Any]
    device: torch.device
    started_at: str


def start_record(
    config: Any, resolved: Mapping[str, Any], registry: Any, data: Any, facts: RunFacts
) -> dict[str, Any]:
    """The record of a run that has started (``status: running``), as lifecycle hooks see it.

    Args:
        config: The :class:`mssbench.config.RunConfig` as given.
        resolved: Its resolved form (``to_dict()`` with every hyper-parameter and data option,
            the head and batching chosen, and the training facts such as ``shuffle``).
        registry: The loaded plugins.
        data: The :class:`mssbench.spec.LoadedDataset`.
        facts: Rows, counts, parameters, timings, metrics and device of the run.
    """
    model_spec = registry.model(config.model)
    model_plugin = registry.plugin_of("model", config.model)
    dataset_plugin = registry.plugin_of("dataset", config.dataset)
    requested = {k: getattr(config, k) for k in REQUESTED_FIELDS}
    return {
        "record_version": RECORD_SCHEMA_VERSION,
        "status": "running",
        "run_hash": config.result_hash(),
        "started_at": facts.started_at,
        "command": command_line(),
        "model": {
            "name": config.model,
            "summary": model_spec.summary,
            "paper": model_spec.paper,
            "plugin": model_plugin,
            "source": plugin_source(registry, model_plugin),
            "version": model_spec.version,
            "n_params": facts.n_params,
        },
        "dataset": {
            "name": config.dataset,
            "plugin": dataset_plugin,
            "source": plugin_source(registry, dataset_plugin),
            "schema": data.schema.to_dict(),
            "rows": dict(facts.rows),
            "counts": jsonable(dict(facts.counts)),
            "info": dict(data.info),
            "load_seconds": facts.load_seconds,
        },
        "protocol": data.protocol.to_dict(),
        "config": {**resolved, "requested": jsonable(requested)},
        "metrics": [_metric_info(registry, m) for m in facts.metric_specs],
        "environment": {
            "versions": package_versions(),
            "hardware": hardware(facts.device),
            **loaded_code_state(),  # git, code_sha256
        },
    }


def _metric_info(registry: Any, spec: Any) -> dict[str, Any]:
    plugin = registry.plugin_of("metric", spec.name)
    return {
        "name": spec.name,
        "plugin": plugin,
        "source": plugin_source(registry, plugin),
        "version": spec.version,
        "higher_is_better": spec.higher_is_better,
        "summary": spec.summary,
        "reference": spec.reference,
    }


def finish_record(
    record: Mapping[str, Any],
    *,
    finished_at: str,
    wall_seconds: float,
    training: Mapping[str, Any],
    test_cells: list[dict[str, Any]] | None,
    oracle_cells: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """The finished record: training facts, test cells and their summary, the digest.

    The summaries are derived from the cells here (the same function the check at read time
    uses), NaN becomes null, and the result is checked against :class:`RunRecord`.
    ``test_cells`` is None for a tuning trial (a record with a ``trial`` block): no test block.

    Raises:
        DataError: The finished record is not valid (e.g. an infinite log loss).
    """
    out = dict(record)
    out.update(
        {
            "status": "finished",
            "finished_at": finished_at,
            "wall_seconds": wall_seconds,
            "training": dict(training),
            "test": None
            if test_cells is None
            else {
                "summary": summary_from_cells(test_cells),
                "metrics": test_cells,
                "oracle_summary": (
                    None if oracle_cells is None else summary_from_cells(oracle_cells)
                ),
                "oracle_metrics": oracle_cells,
            },
        }
    )
    if out["test"] is None:
        del out["test"]
    out = jsonable(nan_to_none(out))
    out["digest"] = content_digest(out)
    verify_record(out, "the finished run record")
    return out


def relocated(record: Mapping[str, Any], out: str) -> dict[str, Any]:
    """``record`` with ``config.out`` set to where it is stored, its digest recomputed.

    For a record made elsewhere (a Ray worker's temporary directory) and written by the
    driver: ``out`` changes no number and is not in the run hash.
    """
    moved = {**record, "config": {**record["config"], "out": out}}
    if record.get("digest") is not None:
        moved["digest"] = content_digest(moved)
    return moved


# --- Reading a results directory --------------------------------------------------------------


def model_version(record: dict[str, Any]) -> int:
    """The model version a record states (:attr:`mssbench.spec.ModelSpec.version`); 1 if none."""
    version = record["model"].get("version", 1)
    return version if isinstance(version, int) and not isinstance(version, bool) else 1


def _record_files(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every ``*.json`` entry below ``root`` (hidden ones skipped; symlinks not followed).

    Directories named ``*.json`` are listed too, so that they are refused with a reason.

    Returns:
        ``(entries, problems)``: the entries, and ``(directory, reason)`` for each directory
        that could not be listed.
    """
    found: list[Path] = []
    problems: list[tuple[Path, str]] = []

    def unreadable(exc: OSError) -> None:
        problems.append((Path(exc.filename), f"cannot be listed: {exc.strerror or exc}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in [*filenames, *dirnames]:
            if name.endswith(".json") and not name.startswith("."):
                found.append(Path(dirpath) / name)
    return sorted(found), problems


def _same_run_refusals(records: list[dict[str, Any]]) -> dict[str, str]:
    """``{path: reason}`` for records that claim to be the same run (:func:`run_identity`).

    Byte-for-byte the same content: the first path is kept, the others are duplicates. Any
    difference: every one of them is refused, as none can be told to be the original.
    """
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for rec in records:
        identity = run_identity(rec)
        if identity is not None:
            groups.setdefault(identity, []).append(rec)
    out = {}
    for identity, group in groups.items():
        if len(group) < 2:
            continue
        paths = [r["_path"] for r in group]
        if len({content_digest(r) for r in group}) == 1:
            for path in paths[1:]:
                out[path] = f"a copy of {paths[0]} (the same run, counted once)"
            continue
        for path in paths:
            others = ", ".join(p for p in paths if p != path)
            out[path] = clip(
                f"claims to be the same run as {others} (model {identity[0]}, dataset "
                f"{identity[1]}, started {identity[2]}) with different content"
            )
    return out


def load_records(
    directory: str | Path, strict: bool = False, trials: bool = False
) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """Read every ``*.json`` run record below ``directory``.

    Args:
        directory: A results directory (searched recursively; hidden entries skipped).
        strict: Raise on the first invalid record instead of collecting it.
        trials: Return only tuning trials' records (which have no test results) instead of
            only the others.

    Returns:
        ``(records, rejected)``: valid records (each with ``_path`` added) and
        ``(path, reason)`` for each file that is not a valid finished record.
    """
    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"results directory {str(root)!r} does not exist")
    records = []
    files, rejected = _record_files(root)
    if rejected and strict:
        path, reason = rejected[0]
        raise DataError(f"{path}: {reason}")
    for path in files:
        try:
            record = verify_record(read_record_file(path), str(path))
        except DataError as exc:
            if strict:
                raise
            rejected.append((path, str(exc).removeprefix(f"{path}: ")))
            continue
        if ("trial" in record) != trials:
            continue
        record["_path"] = str(path)
        records.append(record)
    refused = _same_run_refusals(records)
    if refused and strict:
        path, reason = next(iter(refused.items()))
        raise DataError(f"{path}: {reason}")
    rejected += [(Path(r["_path"]), refused[r["_path"]]) for r in records if r["_path"] in refused]
    records = [r for r in records if r["_path"] not in refused]
    return records, sorted(rejected)
