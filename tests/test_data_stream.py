"""mssbench.data.stream: streaming CSV reading from any byte stream, errors by file/line/column."""

from __future__ import annotations

import gzip
import io
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mssbench.data.stream as stream
from mssbench.data import ZipMemberStream, open_zip, zip_members
from mssbench.data.stream import CountedStream, FileSource, StreamLayout, stream_csv
from mssbench.errors import DataError

LAYOUT = StreamLayout(
    ("id", "code", "x"),
    {"id": "int", "code": "float", "x": "float32"},
    aliases={"code": "categorical_1"},
    title="demo",
)


def write(path: Path, lines: list[str]) -> FileSource:
    path.write_text("".join(f"{line}\n" for line in lines))
    return FileSource(path)


def rows_text(rows) -> list[str]:
    return [f"{i},{c},{x}" for i, c, x in rows]


def collect(src, layout=LAYOUT, log=None):
    blocks = list(stream_csv(src, layout, log))
    cols = [np.concatenate([b.column(j) for b in blocks]) for j in range(len(layout.names))]
    return blocks, cols


rows_st = st.lists(
    st.tuples(st.integers(-(10**12), 10**12), st.integers(0, 500), st.integers(0, 1000)),
    min_size=1,
    max_size=300,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(rows_st, st.integers(16, 4096), st.booleans(), st.data())
def test_blocks_join_to_the_file_and_know_their_lines(
    tmp_path, monkeypatch, rows, chunk, header, data
):
    monkeypatch.setattr(stream, "CHUNK_SIZE", chunk)
    layout = StreamLayout(LAYOUT.names, LAYOUT.types, header, LAYOUT.aliases, "demo")
    lines = rows_text([(i, c, x / 8) for i, c, x in rows])
    src = write(tmp_path / "t.csv", (["id,code,x"] if header else []) + lines)
    blocks, cols = collect(src, layout)
    assert cols[0].tolist() == [r[0] for r in rows]
    assert cols[1].tolist() == [float(r[1]) for r in rows]
    assert cols[2].dtype == np.float32 and cols[2].tolist() == [r[2] / 8 for r in rows]
    line = 1 + header
    for b in blocks:  # each block starts on the line after the previous block's last row
        assert b.first_line == line
        line += len(b)
    # A bad value anywhere is reported at its line and column, whatever the chunking.
    bad = data.draw(st.integers(0, len(rows) - 1))
    broken = list(lines)
    broken[bad] = broken[bad].replace(",", ",zz", 1)
    src = write(tmp_path / "bad.csv", (["id,code,x"] if header else []) + broken)
    with pytest.raises(DataError) as e:
        collect(src, layout)
    assert str(e.value) == (
        f"{src.path}: line {bad + 1 + header:,}, column 2 (code = categorical_1): "
        f"expected a number, got 'zz{rows[bad][1]}'"
    )


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["1,2,3", "4,5"], "line 2: expected 3 comma-separated columns, got 2"),
        (["1,2,3", "", "4,5,6"], "line 2: empty line"),
        (["1,2,3", "x,5,6"], "line 2, column 1 (id): expected an integer, got 'x'"),
        (["1,2,3", "1,2,"], "line 2, column 3 (x): expected a number, got ''"),
        ([], "empty file (no data lines)"),
    ],
)
def test_bad_lines_are_one_line_naming_file_line_and_column(tmp_path, lines, message):
    src = write(tmp_path / "t.csv", lines)
    with pytest.raises(DataError) as e:
        collect(src)
    assert str(e.value) == f"{src.path}: {message}"


def test_header_is_checked_and_skipped(tmp_path):
    layout = StreamLayout(LAYOUT.names, LAYOUT.types, True, title="demo")
    src = write(tmp_path / "t.csv", ["\ufeffid,code,x", "7,1,0.5"])
    _, cols = collect(src, layout)
    assert cols[0].tolist() == [7]
    src = write(tmp_path / "h.csv", ["id,kode,x", "7,1,0.5"])
    with pytest.raises(DataError) as e:
        collect(src, layout)
    assert str(e.value) == (
        f"{src.path}: line 1: not the demo header (column 2 is 'kode', expected 'code'); "
        "expected id,code,x,...,code,x"
    )
    (tmp_path / "e.csv").write_bytes(b"")
    with pytest.raises(DataError, match="e.csv: empty file$"):
        collect(FileSource(tmp_path / "e.csv"), layout)


def test_block_check_names_the_first_bad_row_and_counts_the_others(tmp_path):
    src = write(tmp_path / "t.csv", rows_text([(1, 0, 0), (2, 3, 0), (3, 4, 0), (4, 1, 0)]))
    [block] = list(stream_csv(src, LAYOUT))
    v = block.column(1)
    with pytest.raises(DataError) as e:
        block.check(v <= 1, 1, lambda i: f"expected 0 or 1, got {v[i]:g}")
    assert str(e.value) == (
        f"{src.path}: line 2, column 2 (code = categorical_1): expected 0 or 1, got 3 "
        "(1 more such rows in this block)"
    )
    block.check(v >= 0, 1, lambda i: "never")


def test_progress_lines_and_long_lines(tmp_path, monkeypatch):
    src = write(tmp_path / "t.csv", rows_text([(i, 1, 0.5) for i in range(50)]))
    log: list[str] = []
    collect(src, log=log.append)
    assert log and log[-1].startswith(f"  {src.path}: 50 rows done (")
    monkeypatch.setattr(stream, "MAX_LINE", 10)
    monkeypatch.setattr(stream, "CHUNK_SIZE", 4)
    (tmp_path / "long.csv").write_text("1,2," + "3" * 40)
    with pytest.raises(DataError, match=r"long.csv: a line longer than 0 MiB: this is not a CSV"):
        collect(FileSource(tmp_path / "long.csv"))


@dataclass(frozen=True)
class GzipSource:
    """A gzip file read through a decompressor: any stream works, damage names the file."""

    path: Path

    @property
    def label(self) -> str:
        return f"{self.path} > data.csv"

    def open(self, stack: ExitStack) -> CountedStream:
        return CountedStream(stack.enter_context(gzip.open(self.path, "rb")), self.label)


def test_any_stream_and_read_errors(tmp_path):
    text = "".join(f"{i},1,0.25\n" for i in range(2000)).encode()
    (tmp_path / "t.gz").write_bytes(gzip.compress(text))
    _, cols = collect(GzipSource(tmp_path / "t.gz"))
    assert cols[0].tolist() == list(range(2000))
    (tmp_path / "cut.gz").write_bytes(gzip.compress(text)[:-200])
    with pytest.raises(DataError) as e:
        collect(GzipSource(tmp_path / "cut.gz"))
    assert str(e.value).startswith(f"{tmp_path / 'cut.gz'} > data.csv: cannot read (")
    with pytest.raises(DataError, match="nowhere.csv: cannot open"):
        collect(FileSource(tmp_path / "nowhere.csv"))


def test_counted_stream_reads_exact_sizes():
    class Trickle(io.RawIOBase):
        def __init__(self):
            self.data = b"abcdefghij"

        def read(self, n=-1):
            out, self.data = self.data[:1], self.data[1:]
            return out

    s = CountedStream(Trickle(), "t")
    assert s.read(4) == b"abcd" and s.tell() == 4 and s.read(100) == b"efghij"


def test_layout_needs_a_type_per_column():
    with pytest.raises(ValueError, match="needs a type"):
        StreamLayout(("a", "b"), {"a": "int", "b": "str"})


def zipped(members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


@dataclass(frozen=True)
class NestedSource:
    """The CSV inside ``inner.zip`` inside the archive ``path``, streamed without extracting."""

    path: Path

    @property
    def label(self) -> str:
        return f"{self.path} > inner.zip > t.csv"

    def open(self, stack: ExitStack) -> CountedStream:
        f = stack.enter_context(open(self.path, "rb"))
        archive = open_zip(f, self.path, stack, "build it again")
        raw = stack.enter_context(archive.open("inner.zip"))
        outer = f"{self.path} > inner.zip"
        return CountedStream(ZipMemberStream(CountedStream(raw, outer), outer), self.label)


def test_a_csv_inside_a_zip_inside_a_zip(tmp_path):
    text = "".join(f"{i},{i % 7},0.5\n" for i in range(3000))
    inner = zipped({"__MACOSX/._t.csv": b"junk", "t.csv": text.encode()})
    path = tmp_path / "outer.zip"
    path.write_bytes(zipped({"dir/": b"", "inner.zip": inner}, zipfile.ZIP_STORED))
    with ExitStack() as stack:
        archive = open_zip(stack.enter_context(open(path, "rb")), path, stack, "x")
        assert zip_members(archive) == ["inner.zip"]
    _, cols = collect(NestedSource(path))
    assert cols[0].tolist() == list(range(3000)) and cols[1][:8].tolist() == [
        0,
        1,
        2,
        3,
        4,
        5,
        6,
        0,
    ]
    bad = zipped({"t.csv": (text + "1,2\n").encode()})
    path.write_bytes(zipped({"inner.zip": bad}, zipfile.ZIP_STORED))
    with pytest.raises(DataError) as e:
        collect(NestedSource(path))
    assert str(e.value) == (
        f"{path} > inner.zip > t.csv: line 3,001: expected 3 comma-separated columns, got 2"
    )
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match="outer.zip: not a zip archive, or a truncated one.*again$"):
        collect(NestedSource(path))
