"""Streaming ingestion of the AliExpress files a user downloaded into mssbench's columnar cache.

``prepare(source, dest, log)`` is the dataset's prepare step (``mssbench data prepare aliexpress
--source DIR``). It accepts three input layouts, detected from the file names under ``source``
(see the plugin's README.md):

* ``tianchi-zip``: the country archives as downloaded, ``aliexpress_{CC}_datasets.zip``, each
  holding ``{cc}_{user,item}_{train,test}.zip`` (possibly under a folder), each holding one
  headerless CSV. Both levels are streamed: the outer archive is read with :mod:`zipfile`, the
  inner one by :class:`mssbench.data.archive.ZipMemberStream`, a sequential local-header
  parser, so nothing is
  extracted to disk and nothing is decompressed twice.
* ``tianchi-files``: the same files extracted, ``{cc}_{user,item}_{train,test}.csv`` (or the
  inner ``.zip`` files themselves), anywhere up to three folders deep.
* ``processed``: ``AliExpress_{CC}/train.csv`` and ``test.csv`` (82 columns with a header), as
  written by MTReclib's preprocessing and used by torch-rechub and FuxiCTR.

Memory: CSVs are parsed chunk by chunk by :func:`mssbench.data.stream.stream_csv` (pyarrow,
explicit column types, errors naming file, line and column); each chunk becomes a handful of
NumPy arrays and is appended to the cache by :class:`mssbench.data.CacheWriter`, so no Python
object is made per row. The only state that grows with the input is the user (search page) table of
the country and split being read: its ids, 9 categorical codes and 23 numerics, about 130 bytes
per page, held so that every item can be joined to its page by a binary search. That is at most
the size of the user CSV (whose rows are longer than that as text) and a small fraction of the
item file. Everything else is bounded by the block size.

Output (``dest``, replaced atomically at the end): one folder per split (``train``, ``valid``,
``test``) holding ``categorical.npy`` (int16 ``[N, 16]``, raw code + 1), ``numeric.npy``
(float32 ``[N, 63]``), ``labels.npy`` (uint8 ``[N, 2]``: click, conversion) and
``search_id.npy`` (int64 ``[N]``), the countries one after another in canonical order, plus
``manifest.json``, written last. The work happens in a hidden folder next to ``dest`` that is
renamed into place only once complete (:class:`~mssbench.data.CacheWriter`), so a prepare that
fails or is interrupted leaves nothing that :func:`mssbench_aliexpress.loader.load` accepts.

What is AliExpress's own here: the input layouts and the streaming zip reader, the column
mapping of the raw files, the join of items to their search page, the checks of codes and
labels, and the manifest (per-country row ranges, counts, code counts for the train-only
vocabularies). The generic parts are the :mod:`mssbench.data` helpers.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import errno
import os
import re
import threading
import time
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Mapping, Sequence

import numpy as np

import mssbench
from mssbench.data.archive import ZipMemberStream, open_zip, zip_members
from mssbench.data.cache import MANIFEST, CacheWriter, remove_stale_partials
from mssbench.data.manifest import read_json, sha256_file
from mssbench.data.splits import holdout_mask
from mssbench.data.stream import CountedStream, StreamBlock, StreamLayout, stream_csv
from mssbench.data.vocab import CodeCounts, Vocabulary
from mssbench.errors import DataError
from mssbench.io import recover_dir
from mssbench_aliexpress.schema import (
    CATEGORICAL,
    COUNTRIES,
    NUMERIC,
    PROTOCOL_VERSION,
    SPLIT_SALT,
    TIANCHI_URL,
    VALID_FRACTION,
)

__all__ = [
    "CACHE_FORMAT",
    "CACHE_VERSION",
    "ITEM_CATEGORICAL",
    "ITEM_COLUMNS",
    "MANIFEST",
    "PROCESSED_COLUMNS",
    "SPLITS",
    "USER_COLUMNS",
    "Layout",
    "ZipMemberStream",
    "detect_layout",
    "prepare",
    "read_manifest",
]

DATASET = "aliexpress"
CACHE_FORMAT = "mssbench-aliexpress-cache"
#: Version of the cache layout; bump when files, dtypes or the encoding change.
CACHE_VERSION = 1
SPLITS = ("train", "valid", "test")

N_USER = 33
N_ITEM = 49
USER_COLUMNS = tuple(f"user_{i}" for i in range(1, N_USER + 1))
ITEM_COLUMNS = tuple(f"item_{i}" for i in range(1, N_ITEM + 1))
#: 1-based user columns feeding categorical_1..9 and numerical_1..23 (MTReclib's processed layout).
USER_CATEGORICAL = (2, 3, 4, 5, 6, 7, 8, 32, 33)
USER_NUMERIC = tuple(range(9, 32))
#: 1-based item columns feeding categorical_10..16; the other 40 of 2..48 are numerical_24..63.
ITEM_CATEGORICAL = (19, 34, 35, 36, 40, 41, 42)
ITEM_NUMERIC = tuple(i for i in range(2, 49) if i not in ITEM_CATEGORICAL)
ITEM_LABEL = 49
PROCESSED_COLUMNS = ("search_id", *CATEGORICAL, *NUMERIC, "click", "conversion")

#: Stored categorical value = raw code + 1 (0 is reserved for out-of-vocabulary), in int16.
MAX_CODE = int(np.iinfo(np.int16).max) - 1

# The arrays of each split: name -> (dtype, row shape).
ARRAYS: Mapping[str, tuple[str, tuple[int, ...]]] = {
    "categorical": ("int16", (len(CATEGORICAL),)),
    "numeric": ("float32", (len(NUMERIC),)),
    "labels": ("uint8", (2,)),
    "search_id": ("int64", ()),
}
BYTES_PER_ROW = sum(np.dtype(d).itemsize * int(np.prod(s)) for d, s in ARRAYS.values())

assert len(USER_CATEGORICAL) + len(ITEM_CATEGORICAL) == len(CATEGORICAL)
assert len(USER_NUMERIC) + len(ITEM_NUMERIC) == len(NUMERIC)

Log = Callable[[str], None]


# --------------------------------------------------------------------------------------------
# Table formats
# --------------------------------------------------------------------------------------------


def _types(names: Sequence[str], ints: Sequence[str], codes: Sequence[str]) -> dict:
    # Codes and labels parse as floats so that "1.0" is accepted; they are checked to be whole.
    return {n: "int" if n in ints else "float" if n in codes else "float32" for n in names}


def _user_table() -> StreamLayout:
    cats = [USER_COLUMNS[i - 1] for i in USER_CATEGORICAL]
    aliases = {"user_1": "search id"}
    aliases |= {c: CATEGORICAL[k] for k, c in enumerate(cats)}
    aliases |= {USER_COLUMNS[i - 1]: NUMERIC[k] for k, i in enumerate(USER_NUMERIC)}
    return StreamLayout(USER_COLUMNS, _types(USER_COLUMNS, ["user_1"], cats), False, aliases)


def _item_table() -> StreamLayout:
    cats = [ITEM_COLUMNS[i - 1] for i in ITEM_CATEGORICAL]
    label = ITEM_COLUMNS[ITEM_LABEL - 1]
    aliases = {"item_1": "search id", label: "label"}
    aliases |= {c: CATEGORICAL[len(USER_CATEGORICAL) + k] for k, c in enumerate(cats)}
    aliases |= {
        ITEM_COLUMNS[i - 1]: NUMERIC[len(USER_NUMERIC) + k] for k, i in enumerate(ITEM_NUMERIC)
    }
    types = _types(ITEM_COLUMNS, ["item_1"], [*cats, label])
    return StreamLayout(ITEM_COLUMNS, types, False, aliases)


def _processed_table() -> StreamLayout:
    types = _types(PROCESSED_COLUMNS, ["search_id"], [*CATEGORICAL, "click", "conversion"])
    return StreamLayout(PROCESSED_COLUMNS, types, True, title="processed AliExpress")


USER_TABLE = _user_table()
ITEM_TABLE = _item_table()
PROCESSED_TABLE = _processed_table()


# --------------------------------------------------------------------------------------------
# Input files and streams
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One input CSV: a plain file, a file inside a zip, or a file inside a zip inside a zip.

    Attributes:
        path: The file on disk (its size and sha256 go into the manifest).
        member: Member of ``path`` when it is a zip archive (the CSV, or the inner archive).
        inner: Name of the CSV inside the inner archive ``member``, if any.
        role: ``user_train``, ``item_test``, ``train`` (processed), ...
    """

    path: Path
    member: str = ""
    inner: str = ""
    role: str = ""

    @property
    def label(self) -> str:
        """How messages name the file: ``outer.zip > inner.zip > file.csv``."""
        return " > ".join(p for p in (str(self.path), self.member, self.inner) if p)

    def open(self, stack: ExitStack) -> CountedStream:
        """A sequential binary stream of the CSV text, closed with ``stack``."""
        try:
            f = stack.enter_context(open(self.path, "rb"))
        except OSError as exc:
            raise DataError(f"{self.path}: cannot open ({exc.strerror or exc})") from None
        if not self.member:
            return CountedStream(f, self.label)
        archive = _open_zip(f, self.path, stack)
        stream = stack.enter_context(archive.open(self.member))
        if not self.inner:
            return CountedStream(stream, self.label)
        outer_label = f"{self.path} > {self.member}"
        return CountedStream(
            ZipMemberStream(CountedStream(stream, outer_label), outer_label), self.label
        )


def _open_zip(f: BinaryIO, path: Path, stack: ExitStack) -> zipfile.ZipFile:
    return open_zip(f, path, stack, f"download it again from {TIANCHI_URL}")


def _csv_member(archive: zipfile.ZipFile, path: Path) -> str:
    names = [m for m in zip_members(archive) if m.lower().endswith(".csv")]
    if len(names) == 1:
        return names[0]
    stem = [m for m in names if Path(m).stem.lower() == path.stem.lower()]
    if len(stem) == 1:
        return stem[0]
    found = ", ".join(zip_members(archive)) or "nothing"
    raise DataError(f"{path}: expected one CSV file inside, found {found}")


# --------------------------------------------------------------------------------------------
# Layout detection
# --------------------------------------------------------------------------------------------

_OUTER = re.compile(r"^aliexpress_([a-z]+)_datasets\.zip$")
_RAW = re.compile(r"^([a-z]+)_(user|item)_(train|test)\.(csv|zip)$")
_PROCESSED_DIR = re.compile(r"^aliexpress_([a-z]+)$")
_ROLES = ("user_train", "item_train", "user_test", "item_test")
_LAYOUT_NAMES = {
    "tianchi-zip": "Tianchi archives (aliexpress_{CC}_datasets.zip)",
    "tianchi-files": "extracted Tianchi files ({cc}_user_train.csv, ...)",
    "processed": "processed CSVs (AliExpress_{CC}/train.csv, test.csv)",
}


@dataclass
class Layout:
    """What :func:`detect_layout` found.

    Attributes:
        kind: ``tianchi-zip``, ``tianchi-files`` or ``processed``.
        countries: Country code -> role -> :class:`Source` (roles ``user_train``,
            ``item_train``, ``user_test``, ``item_test`` for the Tianchi layouts, ``train`` and
            ``test`` for the processed one), in canonical country order.
    """

    kind: str
    countries: dict[str, dict[str, Source]]

    @property
    def files(self) -> list[Path]:
        """Distinct files on disk, in order of use."""
        seen: dict[Path, None] = {}
        for roles in self.countries.values():
            for src in roles.values():
                seen.setdefault(src.path)
        return list(seen)


def _country(code: str, path: Path) -> str:
    cc = code.upper()
    if cc not in COUNTRIES:
        raise DataError(
            f"{path}: country code {cc!r} is not one of the AliExpress countries "
            f"{', '.join(COUNTRIES)}"
        )
    return cc


def _walk(source: Path, depth: int = 3) -> Iterator[Path]:
    for root, dirs, files in os.walk(source):
        rel = Path(root).relative_to(source)
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and d != "__MACOSX" and len(rel.parts) < depth
        )
        for name in sorted(files):
            yield Path(root) / name


def detect_layout(source: Path) -> Layout:
    """Find the AliExpress files under ``source`` (up to three folders deep).

    Args:
        source: The directory holding what the user downloaded.

    Returns:
        The single layout found, with every country's files.

    Raises:
        DataError: Nothing recognisable, more than one layout, a country code that is not one
            of the five, the same file twice, a country with files missing, or (for the Tianchi
            archives) an archive that is not a readable zip or lacks an inner archive.
    """
    found: dict[str, dict[str, dict[str, Source]]] = {k: {} for k in _LAYOUT_NAMES}
    examples: dict[str, Path] = {}

    def add(kind: str, cc: str, role: str, src: Source) -> None:
        roles = found[kind].setdefault(cc, {})
        if role in roles:
            raise DataError(
                f"{source}: two files for {cc} {role}: {roles[role].path} and {src.path}; keep one"
            )
        roles[role] = src
        examples.setdefault(kind, src.path)

    for path in _walk(source):
        name = path.name.lower()
        if m := _OUTER.match(name):
            add("tianchi-zip", _country(m[1], path), "archive", Source(path))
        elif m := _RAW.match(name):
            src = _zip_on_disk(path) if m[4] == "zip" else Source(path)
            add("tianchi-files", _country(m[1], path), f"{m[2]}_{m[3]}", src)
        elif name in ("train.csv", "test.csv") and (
            m := _PROCESSED_DIR.match(path.parent.name.lower())
        ):
            add("processed", _country(m[1], path.parent), name[:-4], Source(path))
    kinds = [k for k in _LAYOUT_NAMES if found[k]]
    if not kinds:
        raise DataError(
            f"{source}: no AliExpress files found. Expected one of: the Tianchi archives "
            "aliexpress_{NL,ES,FR,US,RU}_datasets.zip as downloaded from "
            f"{TIANCHI_URL}; the files inside them ({{cc}}_user_train.zip or .csv, "
            "{cc}_user_test, {cc}_item_train, {cc}_item_test); or the processed "
            "AliExpress_{CC}/train.csv and test.csv"
        )
    if len(kinds) > 1:
        what = "; ".join(f"{_LAYOUT_NAMES[k]}, e.g. {examples[k]}" for k in kinds)
        raise DataError(
            f"{source}: mixed layouts in one directory: {what}. Keep one layout per --source "
            "directory (prepare keeps countries already in the cache, so prepare them in turn)"
        )
    kind = kinds[0]
    countries: dict[str, dict[str, Source]] = {}
    for cc in COUNTRIES:
        if cc not in found[kind]:
            continue
        roles = found[kind][cc]
        if kind == "tianchi-zip":
            roles = _inner_archives(cc, roles["archive"].path)
        need = ("train", "test") if kind == "processed" else _ROLES
        missing = [r for r in need if r not in roles]
        if missing:
            where = roles[next(iter(roles))].path.parent
            names = (
                [f"AliExpress_{cc}/{r}.csv" for r in missing]
                if kind == "processed"
                else [f"{cc.lower()}_{r}.csv (or .zip)" for r in missing]
            )
            raise DataError(f"{where}: {cc} is incomplete, missing {', '.join(names)}")
        countries[cc] = {r: dataclasses.replace(s, role=r) for r, s in roles.items()}
    return Layout(kind, countries)


def _inner_archives(cc: str, path: Path) -> dict[str, Source]:
    roles: dict[str, Source] = {}
    with ExitStack() as stack:
        f = stack.enter_context(open(path, "rb"))
        archive = _open_zip(f, path, stack)
        members = zip_members(archive)
        for member in members:
            m = _RAW.match(Path(member).name.lower())
            if not m or m[1].upper() != cc or f"{m[2]}_{m[3]}" in roles:
                continue
            inner = ""
            if m[4] == "zip":  # peek at the inner archive's first header for its CSV's name
                with archive.open(member) as raw:
                    label = f"{path} > {member}"
                    inner = ZipMemberStream(CountedStream(raw, label), label).member
            roles[f"{m[2]}_{m[3]}"] = Source(path, member, inner)
    missing = [r for r in _ROLES if r not in roles]
    if missing:
        want = ", ".join(f"{cc.lower()}_{r}.zip" for r in missing)
        have = ", ".join(members[:12]) or "nothing"
        raise DataError(f"{path}: inner archive(s) {want} missing (the archive holds {have})")
    return roles


def _zip_on_disk(path: Path) -> Source:
    """An inner archive the user extracted: the CSV inside it."""
    with ExitStack() as stack:
        archive = _open_zip(stack.enter_context(open(path, "rb")), path, stack)
        return Source(path, _csv_member(archive, path))


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    """A parsed value as the file most likely wrote it (``3``, ``1.5``, ``nan``)."""
    x = float(value)
    return str(int(x)) if x.is_integer() else repr(x)


def _codes(block: StreamBlock, cols: Sequence[int]) -> np.ndarray:
    """``[n, len(cols)]`` int16 of stored ids (raw code + 1), validating whole codes in range."""
    out = np.empty((len(block), len(cols)), dtype=np.int16)
    for k, j in enumerate(cols):
        v = block.column(j)
        ok = (v >= 0) & (v <= MAX_CODE) & (v == np.floor(v))
        if not ok.all():
            block.check(
                ok,
                j,
                lambda i, v=v: (
                    f"expected a whole categorical code in [0, {MAX_CODE}], got {_show(v[i])}"
                ),
            )
        out[:, k] = v
    out += 1
    return out


def _floats(block: StreamBlock, cols: Sequence[int], out: np.ndarray, offset: int) -> None:
    """Fill ``out[:, offset:offset+len(cols)]`` with the float32 columns, rejecting NaN/inf."""
    for k, j in enumerate(cols):
        out[:, offset + k] = block.column(j)
    part = out[:, offset : offset + len(cols)]
    if not np.isfinite(part).all():
        bad = ~np.isfinite(part)
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        k = int(np.flatnonzero(bad[row])[0])
        block.check(
            ~bad[:, k], cols[k], lambda i: f"expected a finite number, got {_show(part[i, k])}"
        )


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


@dataclass
class _Counts:
    """Counts of one (country, split) as rows are written."""

    rows: int = 0
    clicks: int = 0
    purchases: int = 0
    items_without_page: int = 0
    #: Numeric cells outside the documented range [0, 1] (kept as they are, counted).
    numeric_out_of_range: int = 0
    codes: list[CodeCounts] = field(default_factory=lambda: [CodeCounts() for _ in CATEGORICAL])
    page_heads: list[np.ndarray] = field(default_factory=list)

    def add(self, cat: np.ndarray, num: np.ndarray, labels: np.ndarray, sid: np.ndarray) -> None:
        self.rows += len(labels)
        self.numeric_out_of_range += int(np.count_nonzero((num < 0) | (num > 1)))
        self.clicks += int(labels[:, 0].sum(dtype=np.int64))
        self.purchases += int(labels[:, 1].sum(dtype=np.int64))
        for f in range(cat.shape[1]):
            self.codes[f].update(cat[:, f] - 1)
        if len(sid):
            # Items of a page are (nearly always) adjacent: keep run heads, dedupe at the end.
            heads = sid[np.concatenate([[True], sid[1:] != sid[:-1]])]
            self.page_heads.append(heads)
            if sum(len(h) for h in self.page_heads) > 4_000_000:
                self.page_heads = [np.unique(np.concatenate(self.page_heads))]

    def summary(self, offset: int) -> dict[str, Any]:
        pages = len(np.unique(np.concatenate(self.page_heads))) if self.page_heads else 0
        return {
            "offset": offset,
            "rows": self.rows,
            "clicks": self.clicks,
            "purchases": self.purchases,
            "pages": pages,
            "items_without_page": self.items_without_page,
            "numeric_out_of_range": self.numeric_out_of_range,
        }

    def code_counts(self) -> dict[str, dict[str, int]]:
        return {name: counter.as_dict() for name, counter in zip(CATEGORICAL, self.codes)}


class _Output:
    """The cache being written (the arrays of the three splits) and per-country counts."""

    def __init__(self, dest: Path) -> None:
        layout = {split: ARRAYS for split in SPLITS}
        self.cache = CacheWriter(dest, layout, cache_format=CACHE_FORMAT, version=CACHE_VERSION)
        self.cache.open()
        self.countries: dict[str, dict[str, Any]] = {}
        self.code_counts: dict[str, dict[str, Any]] = {}

    def start(self, cc: str) -> dict[str, _Counts]:
        return {s: _Counts() for s in SPLITS}

    def write(
        self,
        counts: _Counts,
        split: str,
        cat: np.ndarray,
        num: np.ndarray,
        lab: np.ndarray,
        sid: np.ndarray,
    ) -> None:
        arrays = {"categorical": cat, "numeric": num, "labels": lab, "search_id": sid}
        self.cache.append(split, arrays)
        counts.add(cat, num, lab, sid)

    def finish(self, cc: str, counts: dict[str, _Counts]) -> None:
        self.countries[cc] = {
            s: counts[s].summary(self.cache.rows(s) - counts[s].rows) for s in SPLITS
        }
        self.code_counts[cc] = {s: counts[s].code_counts() for s in SPLITS}

    def close(self) -> dict[str, Any]:
        """The manifest's ``arrays``; cache v1 names dtypes as NumPy does (``int16``)."""
        return {
            split: {name: {**e, "dtype": np.dtype(e["dtype"]).name} for name, e in named.items()}
            for split, named in self.cache.close_arrays().items()
        }

    def commit(self, manifest: Mapping[str, Any]) -> None:
        self.cache.commit(manifest)

    def abort(self) -> None:
        self.cache.abort()


# --------------------------------------------------------------------------------------------
# Country ingestion
# --------------------------------------------------------------------------------------------


@dataclass
class _Pages:
    """The user table of one file, sorted by search id for the join."""

    ids: np.ndarray  # [P] int64, sorted
    cat: np.ndarray  # [P, 9] int16
    num: np.ndarray  # [P, 23] float32

    def __len__(self) -> int:
        return len(self.ids)


def _read_pages(src: Source, log: Log, label: str) -> _Pages:
    """The user file as sorted arrays; duplicate search ids are an error."""
    ids, cats, nums = [], [], []
    cat_cols = [i - 1 for i in USER_CATEGORICAL]
    num_cols = [i - 1 for i in USER_NUMERIC]
    for block in stream_csv(src, USER_TABLE, log, label):
        ids.append(block.column(0))
        cats.append(_codes(block, cat_cols))
        num = np.empty((len(block), len(num_cols)), np.float32)
        _floats(block, num_cols, num, 0)
        nums.append(num)
    sid = np.concatenate(ids)
    order = np.argsort(sid, kind="stable")
    sorted_ids = sid[order]
    dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if dup.size:
        a, b = int(order[dup[0]]), int(order[dup[0] + 1])
        raise DataError(
            f"{src.label}: line {b + 1:,}: duplicate search id {int(sorted_ids[dup[0]])} "
            f"(first on line {a + 1:,}); a user file has one row per search page "
            f"({dup.size:,} duplicate ids in all)"
        )
    del sid, ids
    cat = _take_concat(cats, order)
    num = _take_concat(nums, order)
    return _Pages(sorted_ids, cat, num)


def _take_concat(blocks: list[np.ndarray], order: np.ndarray) -> np.ndarray:
    """``np.concatenate(blocks)[order]``, freeing blocks as it goes (one extra copy at most)."""
    full = np.concatenate(blocks)
    blocks.clear()
    return full[order]


def _split_mask(sid: np.ndarray, split: str) -> dict[str, np.ndarray | None]:
    """Rows of an official file per output split (None = all rows)."""
    if split == "test":
        return {"test": None}
    valid = holdout_mask(sid, VALID_FRACTION, SPLIT_SALT)
    return {"train": ~valid, "valid": valid}


def _emit(
    out: _Output,
    counts: dict[str, _Counts],
    split: str,
    cat: np.ndarray,
    num: np.ndarray,
    lab: np.ndarray,
    sid: np.ndarray,
) -> None:
    for name, mask in _split_mask(sid, split).items():
        if mask is None:
            out.write(counts[name], name, cat, num, lab, sid)
        elif mask.any():
            out.write(counts[name], name, cat[mask], num[mask], lab[mask], sid[mask])


def _ingest_tianchi(cc: str, roles: Mapping[str, Source], out: _Output, log: Log) -> None:
    counts = out.start(cc)
    item_cat = [i - 1 for i in ITEM_CATEGORICAL]
    item_num = [i - 1 for i in ITEM_NUMERIC]
    n_ucat, n_unum = len(USER_CATEGORICAL), len(USER_NUMERIC)
    for split in ("train", "test"):
        pages = _read_pages(roles[f"user_{split}"], log, f"{cc} user_{split}")
        log(f"  {cc} user_{split}: {len(pages):,} search pages in memory")
        src = roles[f"item_{split}"]
        items = 0
        for block in stream_csv(src, ITEM_TABLE, log, f"{cc} item_{split}"):
            n = len(block)
            items += n
            sid = block.column(0)
            raw = block.column(ITEM_LABEL - 1)
            ok = (raw == 0) | (raw == 1) | (raw == 2)
            if not ok.all():
                block.check(
                    ok,
                    ITEM_LABEL - 1,
                    lambda i, raw=raw: f"label must be 0, 1 or 2, got {_show(raw[i])}",
                )
            cat = np.empty((n, len(CATEGORICAL)), np.int16)
            cat[:, n_ucat:] = _codes(block, item_cat)
            num = np.empty((n, len(NUMERIC)), np.float32)
            _floats(block, item_num, num, n_unum)
            pos = np.searchsorted(pages.ids, sid)
            np.minimum(pos, max(len(pages) - 1, 0), out=pos)
            found = pages.ids[pos] == sid
            cat[:, :n_ucat] = pages.cat[pos]
            num[:, :n_unum] = pages.num[pos]
            lab = np.empty((n, 2), np.uint8)
            lab[:, 0] = raw >= 1
            lab[:, 1] = raw == 2
            if not found.all():
                lost = sid[~found]
                for name, mask in _split_mask(lost, split).items():
                    counts[name].items_without_page += int(
                        len(lost) if mask is None else mask.sum()
                    )
                cat, num, lab, sid = cat[found], num[found], lab[found], sid[found]
            _emit(out, counts, split, cat, num, lab, sid)
        joined = sum(counts[s].rows for s in (("test",) if split == "test" else ("train", "valid")))
        lost = items - joined
        if joined == 0:
            raise DataError(
                f"{src.label}: none of its {items:,} items has a search page in "
                f"{roles[f'user_{split}'].label}; are the user and item files from the same "
                "country and split?"
            )
        if lost:
            log(
                f"  {cc} item_{split}: {lost:,} of {items:,} items have no search page in the "
                "user file and were left out (counted in the manifest as items_without_page)"
            )
        del pages
    out.finish(cc, counts)


def _ingest_processed(cc: str, roles: Mapping[str, Source], out: _Output, log: Log) -> None:
    counts = out.start(cc)
    cat_cols = list(range(1, 1 + len(CATEGORICAL)))
    num_cols = list(range(1 + len(CATEGORICAL), 1 + len(CATEGORICAL) + len(NUMERIC)))
    j_click, j_conv = len(PROCESSED_COLUMNS) - 2, len(PROCESSED_COLUMNS) - 1
    for split in ("train", "test"):
        src = roles[split]
        for block in stream_csv(src, PROCESSED_TABLE, log, f"{cc} {split}.csv"):
            n = len(block)
            sid = block.column(0)
            cat = _codes(block, cat_cols)
            num = np.empty((n, len(NUMERIC)), np.float32)
            _floats(block, num_cols, num, 0)
            lab = np.empty((n, 2), np.uint8)
            for k, j in enumerate((j_click, j_conv)):
                v = block.column(j)
                ok = (v == 0) | (v == 1)
                if not ok.all():
                    block.check(ok, j, lambda i, v=v: f"expected 0 or 1, got {_show(v[i])}")
                lab[:, k] = v
            bad = lab[:, 1] > lab[:, 0]
            if bad.any():
                block.check(~bad, j_conv, lambda i: "conversion = 1 on a row without a click")
            _emit(out, counts, split, cat, num, lab, sid)
    out.finish(cc, counts)


# --------------------------------------------------------------------------------------------
# Checksums, manifest, prepare
# --------------------------------------------------------------------------------------------


def read_manifest(dest: Path) -> dict[str, Any] | None:
    """The manifest of a complete cache at ``dest``, or None when there is none."""
    manifest = read_json(Path(dest) / MANIFEST)
    if manifest is None or manifest.get("format") != CACHE_FORMAT:
        return None
    return manifest


def _train_vocabulary(code_counts: Mapping[str, Any], countries: Sequence[str], name: str):
    merged: dict[int, int] = {}
    for cc in countries:
        for code, k in code_counts[cc]["train"].get(name, {}).items():
            merged[int(code)] = merged.get(int(code), 0) + int(k)
    return Vocabulary.from_counts(merged)


def vocabularies(code_counts: Mapping[str, Any], countries: Sequence[str]) -> dict[str, list[int]]:
    """Per field, the sorted raw codes seen in the train split of ``countries``."""
    return {
        name: _train_vocabulary(code_counts, countries, name).values.tolist()
        for name in CATEGORICAL
    }


def oov_counts(
    code_counts: Mapping[str, Any], countries: Sequence[str], vocab: Mapping[str, Sequence[int]]
) -> dict[str, dict[str, dict[str, int]]]:
    """Per country and split, the number of cells per field whose code is not in ``vocab``."""
    known = {name: Vocabulary(np.asarray(v, np.int64)) for name, v in vocab.items()}
    out: dict[str, dict[str, dict[str, int]]] = {}
    for cc in countries:
        out[cc] = {}
        for split in SPLITS:
            fields = {}
            for name, counts in code_counts[cc][split].items():
                k = known[name].unseen({int(c): int(v) for c, v in counts.items()})
                if k:
                    fields[name] = k
            out[cc][split] = {"cells": sum(fields.values()), "fields": fields}
    return out


def _check_dest(dest: Path) -> dict[str, Any] | None:
    """The manifest of the cache at ``dest`` (None if absent); refuse to replace anything else."""
    if not dest.exists():
        return None
    if not dest.is_dir():
        raise DataError(f"{dest} exists and is not a directory; choose another --dest")
    manifest = read_manifest(dest)
    if manifest is None and any(dest.iterdir()):
        raise DataError(
            f"{dest} exists, is not empty and holds no AliExpress cache (no {MANIFEST}); "
            "refusing to replace it: empty it or choose another --dest"
        )
    return manifest


def _copy_country(old_dir: Path, old: Mapping[str, Any], cc: str, out: _Output) -> None:
    """Append country ``cc`` of an existing cache to ``out`` (chunked, memory-bounded)."""
    counts = out.start(cc)
    for split in SPLITS:
        entry = old["countries"][cc][split]
        lo, hi = entry["offset"], entry["offset"] + entry["rows"]
        arrays = {
            name: np.load(old_dir / old["arrays"][split][name]["file"], mmap_mode="r")
            for name in ARRAYS
        }
        for start in range(lo, hi, 1 << 18):
            stop = min(hi, start + (1 << 18))
            out.write(
                counts[split],
                split,
                *(np.asarray(arrays[n][start:stop]) for n in ARRAYS),
            )
        counts[split].items_without_page = entry.get("items_without_page", 0)
    out.finish(cc, counts)
    for split in SPLITS:  # page counts are not recomputed from run heads across a copy
        out.countries[cc][split]["pages"] = old["countries"][cc][split]["pages"]


def prepare(source: Path, dest: Path, log: Log = print) -> list[dict[str, Any]]:
    """Convert the AliExpress files under ``source`` into the cache at ``dest``.

    Countries found under ``source`` are (re)built; countries already in a cache at ``dest``
    and absent from ``source`` are kept. Work happens in ``.{dest.name}.partial-{pid}`` next
    to ``dest``; the manifest is written last and the folder renamed over ``dest`` only when
    complete, so a failed or interrupted prepare leaves ``dest`` as it was.

    Args:
        source: Directory with the downloaded files (see :func:`detect_layout`).
        dest: Cache directory (``mssbench.data.dataset_dir("aliexpress")`` by default).
        log: Receives progress lines.

    Returns:
        One row per country and split (and a total per split): rows, clicks, purchases, search
        pages and items left out for want of a search page.

    Raises:
        DataError: Bad or missing input (naming the file, line and column), or a write error
            such as a full disk (nothing is kept then).
    """
    source, dest = Path(source), Path(dest)
    layout = detect_layout(source)
    # A prepare killed between the two renames of its swap left the previous cache aside.
    recover_dir(dest, log)
    old = _check_dest(dest)
    if old is not None and old.get("cache_version") != CACHE_VERSION:
        log(f"{dest}: cache format v{old.get('cache_version')} is replaced by v{CACHE_VERSION}")
        old = None
    keep = [c for c in (old or {}).get("countries", {}) if c not in layout.countries]
    log(
        f"AliExpress: {_LAYOUT_NAMES[layout.kind]} for {', '.join(layout.countries)} in {source}"
        + (f"; keeping {', '.join(keep)} from the existing cache" if keep else "")
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(dest, log)

    stop = threading.Event()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
    hashes = {p: pool.submit(sha256_file, p, stop) for p in layout.files}
    out: _Output | None = None
    start = time.perf_counter()
    try:
        out = _Output(dest)
        for cc in COUNTRIES:
            if cc in layout.countries:
                log(f"{cc}:")
                if layout.kind == "processed":
                    _ingest_processed(cc, layout.countries[cc], out, log)
                else:
                    _ingest_tianchi(cc, layout.countries[cc], out, log)
            elif cc in keep:
                assert old is not None
                log(f"{cc}: kept from the existing cache")
                _copy_country(dest, old, cc, out)
        arrays = out.close()
        inputs = _inputs(layout, hashes)
        if old is not None:
            inputs.update({cc: old["inputs"][cc] for cc in keep})
        code_counts = dict(out.code_counts)
        countries = [c for c in COUNTRIES if c in out.countries]
        vocab = vocabularies(code_counts, countries)
        manifest = {
            "format": CACHE_FORMAT,
            "cache_version": CACHE_VERSION,
            "protocol_version": PROTOCOL_VERSION,
            "created": datetime.now(timezone.utc).isoformat(),
            "mssbench_version": mssbench.__version__,
            "source": str(source.resolve()),
            "layouts": {
                cc: layout.kind if cc in layout.countries else old["layouts"][cc]  # type: ignore[index]
                for cc in countries
            },
            "countries": {cc: out.countries[cc] for cc in countries},
            "arrays": arrays,
            "inputs": inputs,
            "encoding": (
                "categorical.npy holds raw code + 1; load maps codes unseen in the train split "
                "of the selected countries to 0 (out of vocabulary)"
            ),
            "vocabularies": vocab,
            "oov": oov_counts(code_counts, countries, vocab),
            "code_counts": code_counts,
            "seconds": round(time.perf_counter() - start, 3),
        }
        out.commit(manifest)
    except OSError as exc:
        if out is not None:
            out.abort()
        if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
            raise DataError(
                f"aliexpress prepare: the disk is full ({exc.strerror or exc}) while writing "
                f"the cache next to {dest}; nothing was kept and {dest} is unchanged. The cache "
                f"takes about {BYTES_PER_ROW} bytes per item row (NL alone about 5 GB): free "
                "space or pass --dest on a larger disk, and run prepare again"
            ) from None
        raise DataError(
            f"aliexpress prepare: cannot write the cache next to {dest} "
            f"({exc.strerror or exc}); nothing was kept and {dest} is unchanged"
        ) from None
    except BaseException:
        if out is not None:
            out.abort()
        raise
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
    seconds = time.perf_counter() - start
    total = sum(v["rows"] for c in manifest["countries"].values() for v in c.values())
    log(f"prepared {total:,} rows in {seconds:,.1f} s ({total / max(seconds, 1e-9):,.0f} rows/s)")
    return summary_rows(manifest)


def _inputs(layout: Layout, hashes: Mapping[Path, concurrent.futures.Future]) -> dict[str, Any]:
    facts = {}
    for p, fut in hashes.items():
        facts[p] = {
            "file": p.name,
            "path": str(p.resolve()),
            "bytes": p.stat().st_size,
            "sha256": fut.result(),
        }
    inputs: dict[str, Any] = {}
    for cc, roles in layout.countries.items():
        inputs[cc] = [
            {"role": role, **facts[src.path], **({"member": src.member} if src.member else {})}
            for role, src in roles.items()
        ]
    return inputs


def summary_rows(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The table ``prepare`` returns: one row per country and split, then totals."""
    rows = []
    totals = {
        s: {"rows": 0, "clicks": 0, "purchases": 0, "pages": 0, "items_without_page": 0}
        for s in SPLITS
    }
    for cc, splits in manifest["countries"].items():
        for split in SPLITS:
            c = splits[split]
            row = {"country": cc, "split": split}
            for k in totals[split]:
                row[k] = c[k]
                totals[split][k] += c[k]
            rows.append(row)
    if len(manifest["countries"]) > 1:
        rows.extend({"country": "all", "split": s, **totals[s]} for s in SPLITS)
    return rows
