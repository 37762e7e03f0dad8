"""Typed CSV reading that reports bad input as one line naming the file, line and column.

:func:`read_csv` parses a delimited text file (plain, gzip or bz2) with pyarrow's streaming
reader and explicit column types, so no Python object is made per row. When pyarrow rejects the
file, the file is scanned once more line by line to find the first offending line, and a
:class:`~mssbench.errors.DataError` says where it is and what was expected::

    ratings.csv: line 7, column 3 ('rating'): expected an integer, got 'x'
    train.csv: line 41: expected 33 columns, got 12 (truncated file?)

The result, a :class:`CsvTable`, keeps the line number of every row, so the checks a loader
makes after parsing (:meth:`CsvTable.check_binary`, :meth:`CsvTable.check_range`,
:meth:`CsvTable.check`) report lines too.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from mssbench.data.manifest import file_facts
from mssbench.errors import DataError

__all__ = ["COLUMN_TYPES", "CsvTable", "find_file", "iter_csv", "read_csv"]

#: Column types :func:`read_csv` accepts, with the NumPy dtype each becomes.
COLUMN_TYPES: Mapping[str, Any] = {"int": np.int64, "float": np.float64, "str": object}
_ARROW = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}
_EXPECTED = {"int": "an integer", "float": "a number", "str": "a value"}
_BLOCK = 1 << 22
#: Separator substituted for a multi-character delimiter before parsing (never in text data).
_UNIT_SEPARATOR = "\x1f"


@dataclass
class CsvTable:
    """The typed columns of one parsed file, with where each row came from.

    Attributes:
        path: The file.
        columns: Column name -> ``[N]`` NumPy array (``int64``, ``float64`` or ``object``).
        first_line: 1-based file line of row 0 (2 when the file has a header).
        facts: ``name``, ``bytes`` and ``sha256`` of the file as stored.
    """

    path: Path
    columns: dict[str, np.ndarray]
    first_line: int
    facts: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def line(self, row: int) -> int:
        """1-based file line of row ``row``."""
        return self.first_line + int(row)

    def check(self, column: str, ok: np.ndarray, expected: str) -> None:
        """Raise a :class:`DataError` at the first row where ``ok`` is false.

        Args:
            column: Column the rule is about (named in the message).
            ok: ``[N]`` booleans, true where the row is valid.
            expected: What a valid value is, e.g. ``"0 or 1"``.
        """
        bad = np.flatnonzero(~np.asarray(ok, dtype=bool))
        if bad.size:
            i = int(bad[0])
            more = f" ({bad.size - 1} more such rows)" if bad.size > 1 else ""
            raise DataError(
                f"{self.path}: line {self.line(i)}, column {column!r}: expected {expected}, "
                f"got {_show(self.columns[column][i])}{more}"
            )

    def check_binary(self, *columns: str) -> None:
        """Every value of each of ``columns`` is 0 or 1 (labels)."""
        for c in columns:
            self.check(c, (self.columns[c] == 0) | (self.columns[c] == 1), "0 or 1")

    def check_range(self, column: str, low: float, high: float) -> None:
        """Every value of ``column`` lies in ``[low, high]`` (ids, codes, scaled numerics)."""
        v = self.columns[column]
        self.check(column, (v >= low) & (v <= high), f"a value in [{low}, {high}]")

    def check_in(self, column: str, allowed: Sequence[Any]) -> None:
        """Every value of ``column`` is one of ``allowed`` (scenario codes, tabs)."""
        shown = ", ".join(str(a) for a in allowed)
        self.check(column, np.isin(self.columns[column], list(allowed)), f"one of {shown}")


def _show(value: Any) -> str:
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 40 else text[:37] + "..."


def _open_bytes(path: Path, encoding: str, delimiter: str) -> pa.NativeFile | io.BytesIO:
    """The file as a stream; a multi-character delimiter is replaced in memory first."""
    stream = pa.input_stream(str(path), compression="detect")
    if len(delimiter) == 1:
        return stream
    with stream:
        text = stream.read().decode(encoding)
    if _UNIT_SEPARATOR in text:
        raise DataError(f"{path}: contains the control character \\x1f; not a text table")
    return io.BytesIO(text.replace(delimiter, _UNIT_SEPARATOR).encode("utf-8"))


def _iter_lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    with pa.input_stream(str(path), compression="detect") as raw:
        text = io.TextIOWrapper(io.BufferedReader(raw), encoding=encoding, newline="")
        for number, line in enumerate(text, 1):
            yield number, line.rstrip("\r\n")


def _value_ok(value: str, kind: str) -> bool:
    if kind == "str":
        return True
    try:
        (int if kind == "int" else float)(value)
    except ValueError:
        return False
    return True


def _fields(line: str, delimiter: str, quote: bool) -> list[str]:
    if quote and len(delimiter) == 1:
        return next(csv.reader([line], delimiter=delimiter), [""])
    return line.split(delimiter)


def _diagnose(
    path: Path, names: Sequence[str], types: Mapping[str, str], skip: int, delimiter: str,
    encoding: str, quote: bool, cause: Exception,
) -> DataError:  # fmt: skip
    """Find the first line that breaks the layout or a column type; the error to raise."""
    for number, line in _iter_lines(path, encoding):
        if number <= skip:
            continue
        values = _fields(line, delimiter, quote)
        if len(values) != len(names):
            hint = " (truncated file?)" if len(values) < len(names) else ""
            got = 0 if line == "" else len(values)
            return DataError(
                f"{path}: line {number}: expected {len(names)} columns, got {got}{hint}"
            )
        for name, value in zip(names, values):
            kind = types.get(name)
            if kind is not None and not _value_ok(value, kind):
                return DataError(
                    f"{path}: line {number}, column {name!r}: expected {_EXPECTED[kind]}, "
                    f"got {_show(value)}"
                )
    return DataError(f"{path}: cannot parse ({str(cause).splitlines()[0]})")


def _header(path: Path, encoding: str) -> str:
    for _, line in _iter_lines(path, encoding):
        return line
    raise DataError(f"{path}: empty file (no header, no rows)")


def _layout(
    path: Path, columns: Mapping[str, str], header: bool | None, names: Sequence[str] | None,
    delimiter: str, encoding: str,
) -> tuple[list[str], bool]:  # fmt: skip
    """The file's column names and whether its first line is a header."""
    try:
        first = _header(path, encoding).split(delimiter)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    layout = list(names) if names is not None else list(columns)
    has_header = header if header is not None else first == layout or set(columns) <= set(first)
    if has_header:
        missing = [c for c in columns if c not in first]
        if missing:
            raise DataError(
                f"{path}: line 1: missing column(s) {', '.join(missing)} in the header "
                f"(expected {', '.join(columns)}; got {', '.join(first[:40])})"
            )
        return first, True
    if len(first) != len(layout):
        raise DataError(
            f"{path}: line 1: expected {len(layout)} columns ({', '.join(layout)}), "
            f"got {len(first)}"
        )
    return layout, False


@dataclass(frozen=True)
class _Plan:
    """How to parse one file: its layout and the pyarrow options."""

    path: Path
    columns: Mapping[str, str]
    layout: list[str]
    has_header: bool
    delimiter: str
    encoding: str
    quote: bool

    def options(self, block_size: int) -> tuple[Any, Any, Any]:
        read = pacsv.ReadOptions(
            column_names=self.layout,
            skip_rows=int(self.has_header),
            block_size=block_size,
            encoding="utf-8" if len(self.delimiter) > 1 else self.encoding,
        )
        parse = pacsv.ParseOptions(
            delimiter=self.delimiter if len(self.delimiter) == 1 else _UNIT_SEPARATOR,
            quote_char='"' if self.quote else False,
            ignore_empty_lines=False,
        )
        convert = pacsv.ConvertOptions(
            column_types={c: _ARROW[t] for c, t in self.columns.items()},
            include_columns=list(self.columns),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        return read, parse, convert

    def error(self, cause: Exception) -> DataError:
        return _diagnose(
            self.path, self.layout, self.columns, int(self.has_header), self.delimiter,
            self.encoding, self.quote, cause,
        )  # fmt: skip

    def table(self, data: Any, first_line: int, facts: dict[str, Any]) -> CsvTable:
        """The typed NumPy columns of parsed rows starting at ``first_line``."""
        out = CsvTable(self.path, {}, first_line, facts)
        for name, kind in self.columns.items():
            col = data.column(name)
            if col.null_count:
                i = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
                raise DataError(
                    f"{self.path}: line {first_line + i}, column {name!r}: expected "
                    f"{_EXPECTED[kind]}, got an empty value"
                )
            out.columns[name] = col.to_numpy(zero_copy_only=False).astype(
                COLUMN_TYPES[kind], copy=False
            )
        return out


def _plan(
    path: str | Path, columns: Mapping[str, str], header: bool | None,
    names: Sequence[str] | None, delimiter: str, encoding: str, quote: bool,
) -> _Plan:  # fmt: skip
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    unknown = sorted(set(columns.values()) - set(COLUMN_TYPES))
    if unknown:
        raise ValueError(f"column types must be {', '.join(COLUMN_TYPES)}, got {unknown}")
    layout, has_header = _layout(path, columns, header, names, delimiter, encoding)
    return _Plan(path, columns, layout, has_header, delimiter, encoding, quote)


def read_csv(
    path: str | Path,
    columns: Mapping[str, str],
    *,
    header: bool | None = True,
    names: Sequence[str] | None = None,
    delimiter: str = ",",
    encoding: str = "utf-8",
    quote: bool = True,
) -> CsvTable:
    """Read the typed ``columns`` of a delimited text file.

    Args:
        path: The file (``.gz`` and ``.bz2`` are decompressed while reading).
        columns: Column name -> ``"int"``, ``"float"`` or ``"str"``: the columns to return.
            Every value must parse; an empty value is an error.
        header: True: the first line names the columns (others than ``columns`` are ignored);
            False: no header, the columns are ``names`` (or ``columns``) in file order;
            None: a header if the first line holds the column names, else none.
        names: Every column of a headerless file in order (default: ``columns``' keys).
        delimiter: Field separator; several characters are allowed (``"::"``, MovieLens; the
            file is then read into memory whole).
        encoding: Text encoding of the file.
        quote: Values may be quoted with ``"`` (a delimiter inside quotes is text).

    Returns:
        The table; ``facts`` has the file's size and sha256.

    Raises:
        DataError: A missing or empty file, a header without a required column, a line with
            the wrong number of fields (a truncated file), an empty or unparseable value; the
            message names the file, the 1-based line and the column.
    """
    plan = _plan(path, columns, header, names, delimiter, encoding, quote)
    try:
        with _open_bytes(plan.path, encoding, delimiter) as stream:
            data = pacsv.read_csv(stream, *plan.options(_BLOCK))
    except (pa.ArrowInvalid, UnicodeDecodeError, EOFError, OSError) as exc:
        raise plan.error(exc) from None
    if data.num_rows == 0:
        raise DataError(f"{plan.path}: no data rows")
    return plan.table(data, 1 + int(plan.has_header), file_facts(plan.path))


def iter_csv(
    path: str | Path,
    columns: Mapping[str, str],
    *,
    header: bool | None = True,
    names: Sequence[str] | None = None,
    delimiter: str = ",",
    encoding: str = "utf-8",
    quote: bool = True,
    block_size: int = _BLOCK,
) -> Iterator[CsvTable]:
    """:func:`read_csv` block by block, for files larger than memory.

    Yields one :class:`CsvTable` per block of about ``block_size`` bytes of text, with the
    line numbers of its rows in the file (``facts`` is empty: take :func:`file_facts` of the
    file). Raises the errors of :func:`read_csv`, when the block holding the bad line is read.
    """
    plan = _plan(path, columns, header, names, delimiter, encoding, quote)
    first, rows = 1 + int(plan.has_header), 0
    try:
        with _open_bytes(plan.path, encoding, delimiter) as stream:
            for batch in pacsv.open_csv(stream, *plan.options(block_size)):
                yield plan.table(batch, first, {})
                first += batch.num_rows
                rows += batch.num_rows
    except (pa.ArrowInvalid, UnicodeDecodeError, EOFError, OSError) as exc:
        raise plan.error(exc) from None
    if rows == 0:
        raise DataError(f"{plan.path}: no data rows")


def find_file(source: str | Path, names: Sequence[str], depth: int = 2) -> Path | None:
    """The first file under ``source`` (at most ``depth`` folders deep) named one of ``names``.

    Names are matched case-insensitively and in order of preference; shallower files win.
    Returns None when there is none (the caller says what is missing and where to get it).
    """
    wanted = [n.lower() for n in names]
    found: dict[str, Path] = {}
    level = [Path(source)]
    for _ in range(depth + 1):
        nxt = []
        for folder in level:
            try:
                entries = sorted(folder.iterdir())
            except OSError:
                continue
            for entry in entries:
                if entry.is_file() and entry.name.lower() in wanted:
                    found.setdefault(entry.name.lower(), entry)
                elif entry.is_dir() and not entry.name.startswith("."):
                    nxt.append(entry)
        for name in wanted:
            if name in found:
                return found[name]
        level = nxt
    return None
