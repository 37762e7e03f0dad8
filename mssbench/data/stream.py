"""Streaming CSV reading for inputs larger than memory, with file/line/column errors.

:func:`stream_csv` reads a headerless (or one-header-line) comma-separated text from any byte
stream: a file, a member of a zip archive, a member of an archive inside an archive. A reader
thread cuts the text into chunks of about :data:`CHUNK_SIZE` bytes at line ends and parses each
with pyarrow (its blocks in parallel, explicit column types, no Python object per row) while
the caller processes the previous chunk; each chunk arrives as a :class:`StreamBlock` that
knows the file line of its first row, so the checks a loader makes on the values name the line
too (:meth:`StreamBlock.check`). When pyarrow rejects a chunk, the lines after the last good
chunk are scanned once more to find the first bad one::

    nl_item_train.csv: line 5: expected 49 comma-separated columns, got 48
    nl_item_test.csv: line 9, column 2 (item_2 = numerical_24): expected a number, got 'abc'

For a file that fits in memory, :func:`mssbench.data.read_csv` is simpler; its block-by-block
variant :func:`mssbench.data.iter_csv` reads paths only, in one thread.
"""

from __future__ import annotations

import threading
import time
import zipfile
import zlib
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Full, Queue
from typing import Any, Callable, Iterator, Mapping, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from mssbench.errors import DataError

__all__ = [
    "CHUNK_SIZE",
    "STREAM_TYPES",
    "ByteSource",
    "CountedStream",
    "FileSource",
    "StreamBlock",
    "StreamLayout",
    "stream_csv",
]

#: Bytes of CSV text per parse call; pyarrow splits it into blocks parsed in parallel.
CHUNK_SIZE = 8 << 20
#: Bytes per pyarrow block (1 MiB measured fastest: the block stays in cache).
BLOCK_SIZE = 1 << 20
#: Parsed chunks that may wait for the consumer.
QUEUE_DEPTH = 2
#: Longest line accepted.
MAX_LINE = 64 << 20
_PROGRESS_SECONDS = 2.0

#: Column types :class:`StreamLayout` accepts, with the pyarrow type each parses as.
STREAM_TYPES: Mapping[str, pa.DataType] = {
    "int": pa.int64(),
    "float": pa.float64(),
    "float32": pa.float32(),
}

Log = Callable[[str], None]


@dataclass(frozen=True)
class StreamLayout:
    """The columns of a CSV format, their types, and how messages name a column.

    Attributes:
        names: Every column, in file order.
        types: Column name -> ``"int"`` (int64), ``"float"`` (float64) or ``"float32"``. A code
            or label written ``1.0`` by some exporters parses as ``"float"``; check it whole
            with :meth:`StreamBlock.check`.
        header: The first line is a header that must equal ``names``.
        aliases: Column name -> what it means, shown in messages:
            ``column 19 (item_19 = categorical_10)``.
        title: What a wrong header is not: ``line 1: not the {title} header``.
    """

    names: tuple[str, ...]
    types: Mapping[str, str]
    header: bool = False
    aliases: Mapping[str, str] = field(default_factory=dict)
    title: str = "expected"

    def __post_init__(self) -> None:
        missing = [n for n in self.names if self.types.get(n) not in STREAM_TYPES]
        if missing:
            raise ValueError(
                f"every column needs a type in {', '.join(STREAM_TYPES)}; not {missing[:5]}"
            )

    def column(self, j: int) -> str:
        """``column 19 (item_19 = categorical_10)`` for 0-based column ``j``."""
        name = self.names[j]
        alias = self.aliases.get(name)
        return f"column {j + 1} ({name}{' = ' + alias if alias else ''})"

    def arrow_types(self) -> dict[str, pa.DataType]:
        """Column name -> pyarrow type."""
        return {n: STREAM_TYPES[self.types[n]] for n in self.names}


class CountedStream:
    """A read-only stream wrapper: exact-size reads, byte counting, errors kept for the caller.

    pyarrow calls ``read`` from its own thread; an exception raised there reaches the caller as
    itself, but it is also kept in :attr:`error` so that it wins over any pyarrow error it
    causes. A failed read of a damaged archive becomes ``LABEL: cannot read (...); download it
    again``.

    Args:
        raw: Any object with ``read(n)`` (a file, a zip member, a decompressor).
        label: How messages name the stream.

    Attributes:
        bytes: Bytes read so far (progress lines report MB/s of CSV text from it).
        error: The first read error, raised again in place of the parse error it causes.
    """

    closed = False

    def __init__(self, raw: Any, label: str) -> None:
        self._raw = raw
        self._label = label
        self.bytes = 0
        self.error: BaseException | None = None

    def read(self, n: int = -1) -> bytes:
        """Exactly ``n`` bytes (fewer only at the end); ``-1`` reads everything."""
        try:
            if n is None or n < 0:
                data = self._raw.read()
            else:
                parts = []
                got = 0
                while got < n:
                    part = self._raw.read(n - got)
                    if not part:
                        break
                    parts.append(part)
                    got += len(part)
                data = b"".join(parts)
        except DataError as exc:
            self.error = exc
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            self.error = DataError(f"{self._label}: cannot read ({exc}); download it again")
            raise self.error from None
        self.bytes += len(data)
        return data

    def readable(self) -> bool:
        """True (file protocol, for pyarrow)."""
        return True

    def seekable(self) -> bool:
        """False: the stream is read front to back."""
        return False

    def writable(self) -> bool:
        """False."""
        return False

    def tell(self) -> int:
        """Bytes read so far."""
        return self.bytes

    def close(self) -> None:
        """Mark closed (the underlying stream is closed by its owner)."""
        self.closed = True


class ByteSource(Protocol):
    """Where :func:`stream_csv` reads: a label for messages, the file on disk, a stream opener.

    ``path`` is the file on disk the text comes from (for an archive member, the archive): a
    read error already naming it is passed on as it is, any other gets ``label`` in front.
    """

    label: str
    path: Path

    def open(self, stack: ExitStack) -> CountedStream:
        """A sequential binary stream of the CSV text, closed with ``stack``."""
        ...


@dataclass(frozen=True)
class FileSource:
    """A plain CSV file on disk as a :class:`ByteSource`."""

    path: Path

    @property
    def label(self) -> str:
        """The path."""
        return str(self.path)

    def open(self, stack: ExitStack) -> CountedStream:
        """The file, opened for reading (closed with ``stack``)."""
        try:
            f = stack.enter_context(open(self.path, "rb"))
        except OSError as exc:
            raise DataError(f"{self.path}: cannot open ({exc.strerror or exc})") from None
        return CountedStream(f, self.label)


@dataclass(frozen=True)
class StreamBlock:
    """One parsed chunk of a CSV stream, with the file line of its first row.

    Attributes:
        label: The file, as messages name it.
        table: The layout it was parsed with.
        first_line: 1-based file line of row 0.
        batch: The parsed rows (one column per ``table.names``).
    """

    label: str
    table: StreamLayout
    first_line: int
    batch: pa.RecordBatch

    def __len__(self) -> int:
        return self.batch.num_rows

    def column(self, j: int) -> np.ndarray:
        """Column ``j`` (0-based) as a NumPy array."""
        return self.batch.column(j).to_numpy()

    def error(self, row: int, j: int | None, what: str) -> DataError:
        """``LABEL: line N, column J (NAME = ALIAS): WHAT`` for ``row`` of this block."""
        return _line_error(self.label, self.table, self.first_line + row, j, what)

    def check(self, ok: np.ndarray, j: int, what: Callable[[int], str]) -> None:
        """Raise at the first row where ``ok`` is false, with the message ``what(row)``.

        The message adds how many more rows of the block break the rule.
        """
        rows = np.flatnonzero(~np.asarray(ok, dtype=bool))
        if rows.size:
            more = f" ({rows.size - 1:,} more such rows in this block)" if rows.size > 1 else ""
            raise self.error(int(rows[0]), j, what(int(rows[0])) + more)


def _line_error(label: str, table: StreamLayout, line: int, j: int | None, what: str) -> DataError:
    col = f", {table.column(j)}" if j is not None else ""
    return DataError(f"{label}: line {line:,}{col}: {what}")


def _lines_after(stream: CountedStream, skip: int) -> Iterator[bytes]:
    """Lines of ``stream`` after the first ``skip`` (counted without splitting them)."""
    rest = b""
    while skip > 0:
        chunk = stream.read(4 << 20)
        if not chunk:
            return
        n = chunk.count(b"\n")
        if n < skip:
            skip -= n
            continue
        pos = -1
        for _ in range(skip):
            pos = chunk.index(b"\n", pos + 1)
        rest = chunk[pos + 1 :]
        skip = 0
    while True:
        chunk = stream.read(1 << 20)
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
        if not chunk:
            if rest:
                yield rest
            return


def _diagnose(src: ByteSource, table: StreamLayout, skip: int, cause: Exception) -> DataError:
    """The first bad line after line ``skip`` (the block pyarrow rejected), as a DataError."""
    n = len(table.names)
    with ExitStack() as stack:
        stream = src.open(stack)
        for k, line in enumerate(_lines_after(stream, skip)):
            if k > 2_000_000:
                break
            lineno = skip + k + 1
            text = line.rstrip(b"\r")
            fields = text.split(b",")
            if not text.strip():
                return _line_error(src.label, table, lineno, None, "empty line")
            if len(fields) != n:
                return _line_error(
                    src.label,
                    table,
                    lineno,
                    None,
                    f"expected {n} comma-separated columns, got {len(fields)}",
                )
            for j, value in enumerate(fields):
                is_int = table.types[table.names[j]] == "int"
                try:
                    int(value) if is_int else float(value)
                except ValueError:
                    want = "an integer" if is_int else "a number"
                    shown = value.decode("utf-8", "replace")
                    return _line_error(
                        src.label, table, lineno, j, f"expected {want}, got {shown!r}"
                    )
    return DataError(f"{src.label}: cannot parse after line {skip:,} ({cause})")


def _read_header(src: ByteSource, table: StreamLayout) -> None:
    with ExitStack() as stack:
        first = next(_lines_after(src.open(stack), 0), b"")
    got = [c.strip().decode("utf-8", "replace") for c in first.rstrip(b"\r").split(b",")]
    if got and got[0].startswith("\ufeff"):
        got[0] = got[0][1:]
    if not first.strip():
        raise DataError(f"{src.label}: empty file")
    if tuple(got) != table.names:
        if len(got) != len(table.names):
            what = f"{len(got)} columns, expected {len(table.names)}"
        else:
            j = next(j for j, (a, b) in enumerate(zip(got, table.names)) if a != b)
            what = f"column {j + 1} is {got[j]!r}, expected {table.names[j]!r}"
        raise DataError(
            f"{src.label}: line 1: not the {table.title} header ({what}); expected "
            f"{','.join(table.names[:3])},...,{','.join(table.names[-2:])}"
        )


class _Progress:
    """Rows/s and MB/s lines through ``log`` every couple of seconds."""

    def __init__(self, log: Log, label: str, stream: CountedStream) -> None:
        self.log = log
        self.label = label
        self.stream = stream
        self.start = self.last = time.perf_counter()
        self.rows = 0

    def line(self, done: bool = False) -> str:
        dt = max(time.perf_counter() - self.start, 1e-9)
        mb = self.stream.bytes / 1e6
        state = "done" if done else "..."
        return (
            f"  {self.label}: {self.rows:,} rows {state} ({self.rows / dt:,.0f} rows/s, "
            f"{mb / dt:,.0f} MB/s of CSV, {dt:,.1f} s)"
        )

    def update(self, rows: int) -> None:
        self.rows += rows
        now = time.perf_counter()
        if self.log is not None and now - self.last >= _PROGRESS_SECONDS:
            self.last = now
            self.log(self.line())


def _text_chunks(stream: CountedStream, skip_header: bool) -> Iterator[memoryview]:
    """Newline-aligned pieces of about :data:`CHUNK_SIZE` bytes of the CSV text."""
    tail = b""
    while True:
        data = stream.read(CHUNK_SIZE)
        if not data:
            if tail:
                yield memoryview(tail)
            return
        buf = tail + data if tail else data
        if skip_header:
            nl = buf.find(b"\n")
            if nl < 0:
                tail = buf
                continue
            buf, skip_header = buf[nl + 1 :], False
        cut = buf.rfind(b"\n") + 1
        if cut == 0 and len(buf) > MAX_LINE:
            raise DataError(f"a line longer than {MAX_LINE >> 20} MiB: this is not a CSV file")
        tail = buf[cut:]
        if cut:
            yield memoryview(buf)[:cut]


def _parse(chunk: memoryview, table: StreamLayout) -> pa.RecordBatch:
    """One chunk of CSV lines as one record batch (pyarrow parses its blocks in parallel)."""
    # An arrow-owned copy, not pa.py_buffer(chunk): pyarrow's worker threads may release the
    # last reference to the input after read_csv returns, and releasing a Python-owned buffer
    # needs the GIL; at interpreter exit that aborts the process (apache/arrow#34314).
    data = pa.allocate_buffer(len(chunk))
    memoryview(data).cast("B")[:] = chunk
    parsed = pacsv.read_csv(
        pa.BufferReader(data),
        read_options=pacsv.ReadOptions(
            column_names=list(table.names), block_size=BLOCK_SIZE, use_threads=True
        ),
        parse_options=pacsv.ParseOptions(
            quote_char=False, double_quote=False, escape_char=False, ignore_empty_lines=False
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=table.arrow_types(),
            null_values=[],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    return parsed.combine_chunks().to_batches()[0]


class _Reader:
    """The thread that reads and parses the chunks of a stream into a bounded queue.

    Items: ``("batch", batch)``, ``("end",)``, ``("invalid", rows_before, arrow_error)`` when
    pyarrow rejects a chunk, ``("raise", exc)`` for any other error (raised by the consumer).
    """

    def __init__(self, stream: CountedStream, table: StreamLayout, skip_header: bool) -> None:
        self.queue: Queue = Queue(maxsize=QUEUE_DEPTH)
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self._produce, args=(stream, table, skip_header), name="csv-reader", daemon=True
        )
        self.thread.start()

    def _put(self, item: tuple) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except Full:
                continue

    def _produce(self, stream: CountedStream, table: StreamLayout, skip_header: bool) -> None:
        done = 0
        try:
            for chunk in _text_chunks(stream, skip_header):
                if self.stop.is_set():
                    return
                try:
                    batch = _parse(chunk, table)
                except pa.ArrowInvalid as exc:
                    self._put(("invalid", done, exc))
                    return
                self._put(("batch", batch))
                done += batch.num_rows
            self._put(("end",))
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(("raise", exc))

    def close(self) -> None:
        """Stop the thread (it may be blocked on a full queue) and wait for it."""
        self.stop.set()
        while self.thread.is_alive():
            try:
                self.queue.get(timeout=0.05)
            except Empty:
                pass
        self.thread.join()


def _failure(
    src: ByteSource, table: StreamLayout, header: int, stream: CountedStream, item: tuple
) -> BaseException:
    """The error to raise for a reader's ``invalid`` or ``raise`` item."""
    if item[0] == "invalid":
        if stream.error is not None:  # a read error wins over the parse error it caused
            return stream.error
        return _diagnose(src, table, item[1] + header, item[2])
    exc = item[1]
    if isinstance(exc, DataError) and not str(exc).startswith(str(src.path)):
        return DataError(f"{src.label}: {exc}")
    return exc


def stream_csv(
    src: ByteSource, table: StreamLayout, log: Log | None = None, label: str = ""
) -> Iterator[StreamBlock]:
    """Every chunk of ``src`` parsed as ``table``, as blocks that know their file lines.

    A reader thread reads (and decompresses) the text and parses it chunk by chunk while the
    caller processes the previous chunks, so parsing and processing use two cores; at most
    :data:`QUEUE_DEPTH` parsed chunks wait, which bounds the memory to a few
    :data:`CHUNK_SIZE` chunks whatever the size of the file.

    Args:
        src: Where the CSV text comes from (:class:`FileSource`, or a member of an archive).
        table: Its columns, their types and whether a header line comes first.
        log: Receives a progress line every couple of seconds and one at the end (rows/s,
            MB/s of CSV text); None: no progress lines.
        label: Names the file in progress lines (default ``src.label``).

    Yields:
        One :class:`StreamBlock` per chunk of about :data:`CHUNK_SIZE` bytes of text.

    Raises:
        DataError: An empty file, a header other than ``table.names``, a line with another
            number of fields, an empty line, a value that does not parse as its column's type,
            a line longer than :data:`MAX_LINE`, or a read error of the stream; the message
            names the file, the 1-based line and the column.
    """
    if table.header:
        _read_header(src, table)
    header = 1 if table.header else 0
    rows = 0
    with ExitStack() as stack:
        stream = src.open(stack)
        progress = _Progress(log, label or src.label, stream)
        reader = _Reader(stream, table, bool(header))
        try:
            while True:
                item = reader.queue.get()
                if item[0] == "end":
                    break
                if item[0] != "batch":
                    reader.thread.join()
                    err = _failure(src, table, header, stream, item)
                    if err is item[-1]:
                        raise err  # the reader's own exception, as it was raised
                    raise err from None
                yield StreamBlock(src.label, table, rows + header + 1, item[1])
                rows += item[1].num_rows
                progress.update(item[1].num_rows)
        finally:
            reader.close()
    if rows == 0:
        raise DataError(f"{src.label}: empty file (no data lines)")
    if log is not None:
        log(progress.line(done=True))
