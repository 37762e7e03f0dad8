"""Loader for the UCI Census-Income (KDD) data set, as used by the MMoE and PLE papers.

The raw files are headerless, comma-separated, 42 columns, with a leading space before each
value and ``?`` for missing values. This module reads them (plain or gzip), validates them
strictly (every problem is a :class:`~mssbench.errors.DataError` naming the file, the 1-based
line and the column), splits them with a content hash so that the split does not depend on row
order, and encodes them with vocabularies and scalers fitted on the training split only.

Two protocols exist:

* ``bundled`` (v1): only the UCI test file (package data in ``mssbench_census/data``) is used;
  ``bucket = hash(row) % 100`` puts buckets 0-59 in train, 60-79 in valid and 80-99 in test.
* ``official`` (v1): the user-provided UCI training file is the train split; the UCI test file
  is split by bucket, 0-49 valid and 50-99 test.

The row hash is ``pandas.util.hash_pandas_object(frame, index=False)`` (vectorised SipHash-2-4
of each value's UTF-8 bytes with pandas' default key, combined across columns) over the row's 41
raw string values other than ``instance weight``, leading spaces stripped. Rows that are
identical in everything the models see (and in both labels) therefore always land in the same
split, whatever their position in the file.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from mssbench.data import TabularLayout, tabular_dataset
from mssbench.errors import DataError
from mssbench.spec import LoadedDataset, Protocol, Task

__all__ = [
    "CATEGORICAL",
    "COLUMNS",
    "NUMERIC",
    "PROTOCOLS",
    "SCENARIOS",
    "UCI_URL",
    "default_data_dir",
    "find_file",
    "load",
    "load_files",
    "read_census_file",
    "row_buckets",
]

DATASET = "census-income"
UCI_URL = "https://archive.ics.uci.edu/dataset/117/census+income+kdd"

COLUMNS: tuple[str, ...] = (
    "age",
    "class of worker",
    "industry code",
    "occupation code",
    "education",
    "wage per hour",
    "enrolled in edu inst last wk",
    "marital status",
    "major industry code",
    "major occupation code",
    "race",
    "hispanic origin",
    "sex",
    "member of a labor union",
    "reason for unemployment",
    "full or part time employment stat",
    "capital gains",
    "capital losses",
    "divdends from stocks",
    "tax filer status",
    "region of previous residence",
    "state of previous residence",
    "detailed household and family stat",
    "detailed household summary in household",
    "instance weight",
    "migration code-change in msa",
    "migration code-change in reg",
    "migration code-move within reg",
    "live in this house 1 year ago",
    "migration prev res in sunbelt",
    "num persons worked for employer",
    "family members under 18",
    "country of birth father",
    "country of birth mother",
    "country of birth self",
    "citizenship",
    "own business or self employed",
    "fill inc questionnaire for veterans admin",
    "veterans benefits",
    "weeks worked in year",
    "year",
    "income",
)
N_COLUMNS = len(COLUMNS)

WEIGHT = "instance weight"
SCENARIO_FIELD = "class of worker"
INCOME = "income"
MARITAL = "marital status"
INCOME_POSITIVE = "50000+."
INCOME_NEGATIVE = "- 50000."
NEVER_MARRIED = "Never married"

NUMERIC: tuple[str, ...] = (
    "age",
    "wage per hour",
    "capital gains",
    "capital losses",
    "divdends from stocks",
    "num persons worked for employer",
    "weeks worked in year",
)
CATEGORICAL: tuple[str, ...] = tuple(
    c for c in COLUMNS if c not in NUMERIC and c not in (WEIGHT, SCENARIO_FIELD, INCOME, MARITAL)
)
# Columns the split hash covers: everything but the dropped sampling weight.
HASHED: tuple[str, ...] = tuple(c for c in COLUMNS if c != WEIGHT)

SCENARIOS: tuple[str, ...] = ("private", "government", "self_employed", "not_working")
CLASS_TO_SCENARIO: Mapping[str, str] = {
    "Private": "private",
    "Federal government": "government",
    "State government": "government",
    "Local government": "government",
    "Self-employed-incorporated": "self_employed",
    "Self-employed-not incorporated": "self_employed",
    "Not in universe": "not_working",
    "Never worked": "not_working",
    "Without pay": "not_working",
}

TASKS: tuple[Task, ...] = (Task("income", INCOME), Task("never_married", MARITAL))

TRAIN_NAMES: tuple[str, ...] = ("census-income.data", "census-income.data.gz")
TEST_NAMES: tuple[str, ...] = ("census-income.test", "census-income.test.gz")

_HASH_RULE = "bucket = hash_pandas_object(41 raw values but instance weight) % 100"
PROTOCOLS: Mapping[str, Protocol] = {
    "bundled": Protocol(
        dataset=DATASET,
        name="bundled",
        version=1,
        scenarios=SCENARIOS,
        split_rule=(
            f"UCI census-income.test only; {_HASH_RULE}: 0-59 train, 60-79 valid, 80-99 test"
        ),
    ),
    "official": Protocol(
        dataset=DATASET,
        name="official",
        version=1,
        scenarios=SCENARIOS,
        split_rule=(
            f"train = UCI census-income.data; UCI census-income.test split by {_HASH_RULE}: "
            "0-49 valid, 50-99 test"
        ),
    ),
}

_GZIP_MAGIC = b"\x1f\x8b"


def default_data_dir() -> Path:
    """The directory holding the bundled file: ``data/`` next to this module.

    It is package data of ``mssbench_census``, so it is there in a wheel install as in a
    checkout (no repository needed).
    """
    return Path(__file__).resolve().parent / "data"


class RawFile:
    """One validated raw file.

    Attributes:
        path: Where it was read from.
        frame: ``[N, 42]`` object DataFrame of raw string values (leading spaces stripped),
            columns named as in :data:`COLUMNS`.
        lines: ``[N]`` 1-based file line of each row.
        numeric: ``[N, 7]`` float64 values of the :data:`NUMERIC` columns.
        scenario: ``[N]`` int64 scenario ids.
        info: Size and sha256 of the file as stored.
    """

    def __init__(
        self,
        path: Path,
        frame: pd.DataFrame,
        lines: np.ndarray,
        numeric: np.ndarray,
        scenario: np.ndarray,
        info: dict[str, Any],
    ) -> None:
        self.path = path
        self.frame = frame
        self.lines = lines
        self.numeric = numeric
        self.scenario = scenario
        self.info = info

    def __len__(self) -> int:
        return len(self.frame)


def _line_of_offset(data: bytes, offset: int) -> int:
    """1-based line number of byte ``offset`` in ``data``."""
    return data.count(b"\n", 0, offset) + 1


def _read_bytes(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The decompressed content of ``path`` and its file facts (size, sha256)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    facts = {
        "name": path.name,
        "path": str(path),
        "bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    if raw[:2] == _GZIP_MAGIC or path.name.endswith(".gz"):
        try:
            data = gzip.decompress(raw)
        except EOFError as exc:
            raise DataError(f"{path}: truncated gzip file ({exc})") from None
        except (OSError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip file ({exc})") from None
        facts["compression"] = "gzip"
    else:
        data = raw
        facts["compression"] = None
    return data, facts


def _split_lines(path: Path, data: bytes) -> np.ndarray:
    """Check every line's field count; return the 1-based numbers of the non-empty lines.

    Counting is vectorised over the bytes: the number of fields of a line is its comma count
    plus one (the files use no quoting). Empty lines are skipped, as the CSV parser does.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(arr == ord("\n"))
    ends = newlines if data.endswith(b"\n") else np.append(newlines, len(data))
    starts = np.concatenate(([0], newlines + 1))[: len(ends)]
    commas = np.flatnonzero(arr == ord(","))
    fields = np.searchsorted(commas, ends) - np.searchsorted(commas, starts) + 1
    empty = ends == starts
    bad = np.flatnonzero(~empty & (fields != N_COLUMNS))
    if bad.size:
        i = int(bad[0])
        more = f" ({bad.size - 1} more such lines)" if bad.size > 1 else ""
        raise DataError(
            f"{path}: line {i + 1}: expected {N_COLUMNS} comma-separated columns, "
            f"got {int(fields[i])}{more}"
        )
    lines = np.flatnonzero(~empty) + 1
    if lines.size == 0:
        raise DataError(f"{path}: empty file (no data lines)")
    return lines


def _first_bad(
    path: Path, lines: np.ndarray, mask: np.ndarray, column: str, values: np.ndarray, what: str
) -> None:
    """Raise a DataError for the first row where ``mask`` is true."""
    bad = np.flatnonzero(mask)
    if bad.size:
        i = int(bad[0])
        more = f" ({bad.size - 1} more such rows)" if bad.size > 1 else ""
        raise DataError(
            f"{path}: line {int(lines[i])}, column {COLUMNS.index(column) + 1} "
            f"({column!r}): {what} {values[i]!r}{more}"
        )


def read_census_file(path: str | Path) -> RawFile:
    """Read and validate one UCI census-income file (plain or gzip).

    Args:
        path: The file.

    Returns:
        The raw values with their line numbers, parsed numerics and scenario ids.

    Raises:
        DataError: The file is missing, empty, not valid gzip or UTF-8, or has a line with the
            wrong number of columns, a non-numeric value in a numeric column, an income label
            other than ``- 50000.`` / ``50000+.`` or an unknown class of worker.
    """
    path = Path(path)
    data, facts = _read_bytes(path)
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
        pos = data.find(b"\r")
        if pos >= 0:
            raise DataError(
                f"{path}: line {_line_of_offset(data, pos)}: stray carriage return (\\r)"
            )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: line {_line_of_offset(data, exc.start)}: not UTF-8 text ({exc.reason})"
        ) from None
    lines = _split_lines(path, data)
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            header=None,
            names=list(COLUMNS),
            index_col=False,
            dtype=object,
            skipinitialspace=True,
            quoting=csv.QUOTE_NONE,
            keep_default_na=False,
            na_filter=False,
            lineterminator="\n",
            skip_blank_lines=True,
            engine="c",
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"{path}: cannot parse as CSV ({exc})") from None
    if len(frame) != len(lines):  # pragma: no cover - guarded by _split_lines
        raise DataError(f"{path}: parsed {len(frame)} rows but found {len(lines)} data lines")
    values = {c: frame[c].to_numpy(dtype=object) for c in COLUMNS}

    numeric = np.empty((len(frame), len(NUMERIC)), dtype=np.float64)
    for j, col in enumerate(NUMERIC):
        parsed = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
        _first_bad(path, lines, ~np.isfinite(parsed), col, values[col], "non-numeric value")
        numeric[:, j] = parsed

    income = values[INCOME]
    _first_bad(
        path,
        lines,
        (income != INCOME_POSITIVE) & (income != INCOME_NEGATIVE),
        INCOME,
        income,
        f"expected {INCOME_NEGATIVE!r} or {INCOME_POSITIVE!r}, got",
    )

    classes = list(CLASS_TO_SCENARIO)
    class_ids = pd.Index(classes).get_indexer(values[SCENARIO_FIELD])
    _first_bad(
        path,
        lines,
        class_ids < 0,
        SCENARIO_FIELD,
        values[SCENARIO_FIELD],
        f"unknown class of worker (known: {', '.join(classes)}), got",
    )
    class_to_id = np.array([SCENARIOS.index(CLASS_TO_SCENARIO[c]) for c in classes], np.int64)
    scenario = class_to_id[class_ids]
    facts["rows"] = len(frame)
    return RawFile(path, frame, lines, numeric, scenario, facts)


def row_buckets(frame: pd.DataFrame) -> np.ndarray:
    """Hash bucket ``0..99`` of each raw row (see the module docstring for the rule).

    Args:
        frame: Raw string values with the :data:`COLUMNS` names (``instance weight`` ignored).

    Returns:
        ``[N]`` int64 buckets; a function of each row's content only.
    """
    hashes = pd.util.hash_pandas_object(frame[list(HASHED)], index=False).to_numpy()
    return (hashes % np.uint64(100)).astype(np.int64)


class _Part:
    """A subset of a :class:`RawFile`'s rows destined for one split."""

    def __init__(self, raw: RawFile, rows: np.ndarray | slice) -> None:
        self.frame = raw.frame.iloc[rows]
        self.numeric = raw.numeric[rows]
        self.scenario = raw.scenario[rows]

    def __len__(self) -> int:
        return len(self.frame)


#: The columns as :func:`mssbench.data.encode_splits` sees them (labels are 0/1 columns).
LAYOUT = TabularLayout(
    categorical=CATEGORICAL,
    numeric=NUMERIC,
    scenario=SCENARIO_FIELD,
    scenarios=dict(enumerate(SCENARIOS)),
    tasks=TASKS,
)


def _columns(part: _Part) -> dict[str, np.ndarray]:
    """The part's raw categorical strings, numerics, scenario ids and 0/1 labels by column."""
    cols = {c: part.frame[c].to_numpy(dtype=object) for c in CATEGORICAL}
    cols.update({c: part.numeric[:, j] for j, c in enumerate(NUMERIC)})
    cols[SCENARIO_FIELD] = part.scenario
    cols[INCOME] = part.frame[INCOME].to_numpy(dtype=object) == INCOME_POSITIVE
    cols[MARITAL] = part.frame[MARITAL].to_numpy(dtype=object) == NEVER_MARRIED
    return cols


def load_files(
    protocol: str, test_file: str | Path, train_file: str | Path | None = None
) -> LoadedDataset:
    """Load the data set from explicit files.

    Args:
        protocol: ``"bundled"`` (``test_file`` split three ways; ``train_file`` must be None)
            or ``"official"`` (``train_file`` is the train split; ``test_file`` is split into
            valid and test).
        test_file: The UCI ``census-income.test`` file (plain or gzip).
        train_file: The UCI ``census-income.data`` file (plain or gzip), official protocol only.

    Returns:
        The loaded data set with schema, protocol, splits and ``info``.

    Raises:
        DataError: Unknown protocol, wrong files for the protocol, or bad input (see
            :func:`read_census_file`).
    """
    if not isinstance(protocol, str) or protocol not in PROTOCOLS:
        raise DataError(
            f"census-income: unknown protocol {protocol!r}; valid protocols: "
            f"{', '.join(sorted(PROTOCOLS))}"
        )
    proto = PROTOCOLS[protocol]
    test_raw = read_census_file(test_file)
    test_buckets = row_buckets(test_raw.frame)
    files: list[dict[str, Any]] = []
    if protocol == "bundled":
        if train_file is not None:
            raise DataError("census-income: the bundled protocol uses the test file only")
        parts = {
            "train": _Part(test_raw, test_buckets < 60),
            "valid": _Part(test_raw, (test_buckets >= 60) & (test_buckets < 80)),
            "test": _Part(test_raw, test_buckets >= 80),
        }
        files.append({"role": "train+valid+test", **test_raw.info})
    else:
        if train_file is None:
            raise DataError("census-income: the official protocol needs the training file")
        train_raw = read_census_file(train_file)
        parts = {
            "train": _Part(train_raw, slice(None)),
            "valid": _Part(test_raw, test_buckets < 50),
            "test": _Part(test_raw, test_buckets >= 50),
        }
        files.append({"role": "train", **train_raw.info})
        files.append({"role": "valid+test", **test_raw.info})
    if len(parts["train"]) == 0:
        raise DataError(f"census-income: the {protocol} protocol left the train split empty")

    columns = {name: _columns(part) for name, part in parts.items()}
    return tabular_dataset(columns, LAYOUT, proto, info={"files": files})


def find_file(data_dir: Path, names: Sequence[str]) -> Path:
    """The first of ``names`` that exists in ``data_dir``.

    Args:
        data_dir: Directory to look in.
        names: Accepted file names, in order of preference.

    Returns:
        The path found.

    Raises:
        DataError: None of the names exists; the message names them and the UCI download page.
    """
    for name in names:
        p = data_dir / name
        if p.is_file():
            return p
    raise DataError(
        f"census-income: none of {' or '.join(names)} found in {data_dir}; download "
        f"Census-Income (KDD) from {UCI_URL} and put the file there (plain or gzip), or set "
        "the data_dir option to the directory that holds it"
    )


def load(options: Mapping[str, Any]) -> LoadedDataset:
    """Load Census-Income (KDD) under one protocol (the registered ``load`` entry point).

    Args:
        options: ``protocol`` (``"bundled"`` or ``"official"``, default ``"bundled"``) and
            ``data_dir`` (directory with the UCI files; ``""`` means the bundled copy,
            :func:`default_data_dir`).

    Returns:
        The loaded data set.

    Raises:
        DataError: Unknown protocol, missing directory or files, or bad input.
    """
    protocol = options.get("protocol", "bundled")
    if not isinstance(protocol, str) or protocol not in PROTOCOLS:
        raise DataError(
            f"census-income: unknown protocol {protocol!r}; valid protocols: "
            f"{', '.join(sorted(PROTOCOLS))}"
        )
    data_dir_opt = options.get("data_dir", "") or ""
    if str(data_dir_opt) == "":
        data_dir = default_data_dir()
        if not data_dir.is_dir():
            raise DataError(
                f"census-income: bundled data directory {data_dir} does not exist; the bundled "
                f"file census-income.test.gz is expected there. It ships as package data of "
                "mssbench_census: reinstall mssbench (pip install --force-reinstall mssbench) "
                "or pass -D data_dir=DIR"
            )
    else:
        data_dir = Path(str(data_dir_opt)).expanduser()
        if not data_dir.is_dir():
            raise DataError(f"census-income: data_dir {data_dir} is not a directory")
    test_file = find_file(data_dir, TEST_NAMES)
    if protocol == "bundled":
        return load_files("bundled", test_file)
    train_file = find_file(data_dir, TRAIN_NAMES)
    return load_files("official", test_file, train_file)
