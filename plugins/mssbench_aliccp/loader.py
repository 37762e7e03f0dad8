r"""Ali-CCP (Tianchi 408): prepare any of three layouts into the cache, load by layout protocol.

Layouts (README.md has the columns):

* ``rechub``: the 33-column CSVs of torch-rechub / Scenario-Wise-Rec ``preprocess_ali_ccp.py``
  (``ali_ccp_{train,val,test}.csv``): 22 sparse fields, field 301, 8 dense values, labels;
* ``aitm``: the 20-column CSVs of AITM's ``process_public_dataset.py`` (``train.csv``,
  ``test.csv``, PaddleRec's sample has no header in ``test.csv``): 17 sparse fields and 301;
* ``raw``: the Tianchi files ``sample_skeleton_{train,test}.csv`` and
  ``common_features_{train,test}.csv`` (feature strings ``field\x02id\x03value`` joined by
  ``\x01``), from which the 17 single-valued fields of ``aitm`` and 301 are taken.

Scenario = field 301 (values 1, 2, 3); tasks ``ctr`` (click) and ``ctcvr`` (purchase), which
implies click (CVR is evaluated on clicked rows). The official train/test split is kept; the
processed torch-rechub files already split the official test 50/50 into val and test, the other
layouts take validation from train by a stable hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from mssbench.data import (
    SPLITS,
    CacheWriter,
    TabularLayout,
    dataset_dir,
    file_facts,
    find_file,
    hash_split,
    read_cache,
    read_csv,
    tabular_dataset,
    write_cache,
)
from mssbench.errors import DataError
from mssbench.spec import Implies, LoadedDataset, Protocol, Task
from mssbench_aliccp.meta import TIANCHI_URL

DATASET = "ali-ccp"
CACHE_FORMAT = "mssbench-ali-ccp"
CACHE_VERSION = 1
PROTOCOL_VERSION = 1

#: The 17 single-valued sparse fields AITM keeps (user 101-129, item 205-216, cross 508-853).
AITM_FIELDS = ("101", "121", "122", "124", "125", "126", "127", "128", "129", "205", "206",
               "207", "216", "508", "509", "702", "853")  # fmt: skip
#: The 22 sparse fields of the torch-rechub layout besides 301.
RECHUB_FIELDS = (*AITM_FIELDS[:13], "210", *AITM_FIELDS[13:], "109_14", "110_14", "127_14",
                 "150_14")  # fmt: skip
RECHUB_DENSE = ("D109_14", "D110_14", "D127_14", "D150_14", "D508", "D509", "D702", "D853")
SCENARIO_FIELD = "301"
SCENARIOS = {1: "301_1", 2: "301_2", 3: "301_3"}
TASKS = (Task("ctr", "click"), Task("ctcvr", "purchase"))
RELATIONS = (Implies(child="ctcvr", parent="ctr", conditional="cvr"),)
VALID_FRACTION = 0.1
SALT = 408
MAX_ID = 2**62
#: Bytes of text per block of a raw file (the skeleton is streamed block by block).
_BLOCK = 1 << 24

LAYOUT_FILES: Mapping[str, tuple[tuple[str, ...], ...]] = {
    "raw": (("sample_skeleton_train.csv",), ("common_features_train.csv",),
            ("sample_skeleton_test.csv",), ("common_features_test.csv",)),
    "rechub": (("ali_ccp_train.csv", "ali_ccp_train_sample.csv"),
               ("ali_ccp_val.csv", "ali_ccp_val_sample.csv"),
               ("ali_ccp_test.csv", "ali_ccp_test_sample.csv")),
    "aitm": (("train.csv",), ("test.csv",)),
}  # fmt: skip
SPLIT_RULES = {
    "rechub": "torch-rechub files as given: train = official train, val/test = official test "
    "split 50/50 (random_state 2022) by its preprocessing; rows with purchase but no click "
    "dropped; vocabularies from train, unseen -> 0",
    "aitm": "train = official train minus valid; valid = 10% of the train rows by a stable hash of "
    f"the row's 20 values (salt {SALT}); test = official test; rows with purchase but no click "
    "dropped; vocabularies from train, unseen -> 0",
    "raw": "train = official train minus valid; valid = 10% of the train samples by a stable "
    f"hash of the sample id (salt {SALT}); test = official test; rows with purchase but no "
    "click dropped; vocabularies from train, unseen -> 0",
}


def protocol(layout: str) -> Protocol:
    """The protocol of a layout: the features differ, so each layout is its own protocol."""
    return Protocol(DATASET, layout, PROTOCOL_VERSION, tuple(SCENARIOS.values()),
                    SPLIT_RULES[layout])  # fmt: skip


def missing_message() -> str:
    """What to download and run when nothing is prepared."""
    return (
        f"download Ali-CCP from {TIANCHI_URL} (Tianchi terms, research use; a free Tianchi "
        "login is needed) or a processed copy (torch-rechub's ali_ccp_{train,val,test}.csv, "
        "AITM's train.csv and test.csv), put the files in a directory DIR and run: "
        "mssbench data prepare ali-ccp --source DIR"
    )


# ------------------------------------------------------------------------------------------
# Processed layouts
# ------------------------------------------------------------------------------------------


def _check_rows(t: Any, sparse: tuple[str, ...]) -> None:
    t.check_binary("click", "purchase")
    t.check_in(SCENARIO_FIELD, list(SCENARIOS))
    for c in sparse:
        t.check_range(c, 0, MAX_ID)


def _part(t: Any, sparse: tuple[str, ...], dense: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The cached arrays of a table's rows, all of them (see :func:`_drop_orphans`)."""
    out = {
        "ids": np.stack([t[c] for c in sparse], axis=1).astype(np.int64),
        "scenario": t[SCENARIO_FIELD].astype(np.int8),
        "labels": np.stack([t["click"], t["purchase"]], axis=1).astype(np.uint8),
    }
    if dense:
        out["dense"] = np.stack([t[c] for c in dense], axis=1).astype(np.float32)
    return out


def _drop_orphans(part: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """Rows with purchase = 1 and click = 0 removed (as torch-rechub does); their count."""
    keep = ~((part["labels"][:, 1] == 1) & (part["labels"][:, 0] == 0))
    return {k: v[keep] for k, v in part.items()}, int((~keep).sum())


def _read_rechub(files: list[Path], log: Callable[[str], None]) -> dict[str, dict]:
    cols = {"click": "int", "purchase": "int", SCENARIO_FIELD: "int",
            **{c: "int" for c in RECHUB_FIELDS}, **{c: "float" for c in RECHUB_DENSE}}  # fmt: skip
    parts: dict[str, Any] = {}
    dropped = {}
    for split, path in zip(SPLITS, files):
        t = read_csv(path, cols, header=True)
        _check_rows(t, RECHUB_FIELDS)
        for c in RECHUB_DENSE:
            t.check_range(c, 0.0, 1.0)
        parts[split], dropped[split] = _drop_orphans(_part(t, RECHUB_FIELDS, RECHUB_DENSE))
    return {**parts, "_dropped": dropped}


def _row_keys(t: Any, names: tuple[str, ...]) -> np.ndarray:
    """An int64 key of each row's values (a polynomial hash; equal rows, equal keys)."""
    key = np.zeros(len(t), np.uint64)
    with np.errstate(over="ignore"):
        for c in names:
            key = key * np.uint64(1_000_003) + t[c].astype(np.uint64)
    return key.view(np.int64)


def _read_aitm(files: list[Path], log: Callable[[str], None]) -> dict[str, dict]:
    names = ("click", "purchase", *AITM_FIELDS, SCENARIO_FIELD)
    cols = {c: "int" for c in names}
    train = read_csv(files[0], cols, header=None, names=names)
    test = read_csv(files[1], cols, header=None, names=names)
    for t in (train, test):
        _check_rows(t, AITM_FIELDS)
    whole = {**_part(train, AITM_FIELDS), "key": _row_keys(train, names)}
    whole, dropped_train = _drop_orphans(whole)
    test_part, dropped_test = _drop_orphans(_part(test, AITM_FIELDS))
    codes = hash_split(whole.pop("key"), VALID_FRACTION, 0.0, SALT)
    return {
        "train": {k: v[codes == 0] for k, v in whole.items()},
        "valid": {k: v[codes == 1] for k, v in whole.items()},
        "test": test_part,
        "_dropped": {"train": dropped_train, "test": dropped_test},
    }


# ------------------------------------------------------------------------------------------
# Raw Tianchi layout
# ------------------------------------------------------------------------------------------

_WANTED = (*AITM_FIELDS, SCENARIO_FIELD)


def _features(strings: pa.ChunkedArray | pa.Array, path: Path, first_line: int) -> np.ndarray:
    """``[N, 18]`` feature ids of the wanted fields (0 when absent) from feature strings."""
    pairs = pc.split_pattern(strings, "\x01")
    row = pc.list_parent_indices(pairs).to_numpy()
    flat = pc.list_flatten(pairs)
    field_and_rest = pc.split_pattern(flat, "\x02", max_splits=1)
    lengths = pc.list_value_length(field_and_rest).to_numpy()
    if (lengths != 2).any():
        i = int(row[np.flatnonzero(lengths != 2)[0]])
        raise DataError(
            f"{path}: line {first_line + i}: a feature without field\\x02id\\x03value form"
        )
    field = pc.list_element(field_and_rest, 0)
    ident = pc.list_element(pc.split_pattern(pc.list_element(field_and_rest, 1), "\x03"), 0)
    out = np.zeros((len(strings), len(_WANTED)), np.int64)
    for j, name in enumerate(_WANTED):
        hit = pc.equal(field, name).to_numpy(zero_copy_only=False)
        if not hit.any():
            continue
        try:
            ids = pc.cast(pc.filter(ident, hit), pa.int64()).to_numpy()
        except pa.ArrowInvalid:
            raise DataError(f"{path}: field {name}: a feature id that is not an integer") from None
        out[row[hit][::-1], j] = ids[::-1]  # the first occurrence of a field wins
    return out


def _batches(
    path: Path, names: list[str], types: dict[str, pa.DataType]
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """``(first line, block)`` of a headerless file, streamed; bad input is a DataError."""
    try:
        reader = pacsv.open_csv(
            path,
            pacsv.ReadOptions(column_names=names, block_size=_BLOCK),
            pacsv.ParseOptions(quote_char=False),
            pacsv.ConvertOptions(column_types=types),
        )
        first = 1
        for batch in reader:
            yield first, batch
            first += batch.num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        # The typed reader finds the line, column and reason.
        read_csv(path, {n: "int" if t == pa.int64() else "str" for n, t in types.items()},
                 header=False, names=names, quote=False)  # fmt: skip
        raise DataError(f"{path}: cannot parse ({str(exc).splitlines()[0]})") from None


_SKELETON = {"sample_id": pa.int64(), "click": pa.int64(), "purchase": pa.int64(),
             "md5": pa.string(), "n": pa.int64(), "features": pa.string()}  # fmt: skip
_COMMON = {"md5": pa.string(), "n": pa.int64(), "features": pa.string()}


def _check_label(path: Path, first: int, name: str, v: np.ndarray) -> None:
    bad = np.flatnonzero((v != 0) & (v != 1))
    if bad.size:
        raise DataError(
            f"{path}: line {first + int(bad[0])}, column {name!r}: expected 0 or 1, got "
            f"{int(v[bad[0]])}"
        )


def _skeleton_block(
    batch: pa.RecordBatch, first: int, path: Path, md5s: pa.Array, shared: np.ndarray,
    common: Path,
) -> tuple[dict[str, np.ndarray], int]:  # fmt: skip
    """The cached arrays of one block of skeleton rows, and how many were dropped."""
    own = _features(batch.column("features"), path, first)
    index = pc.index_in(batch.column("md5"), value_set=md5s)
    missing = index.is_null().to_numpy(zero_copy_only=False)
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise DataError(
            f"{path}: line {first + i}, column 4 (common feature md5): "
            f"{batch.column('md5')[i].as_py()!r} is not in {common.name}"
        )
    feats = np.where(own > 0, own, shared[index.fill_null(0).to_numpy().astype(np.int64)])
    click, purchase = batch.column("click").to_numpy(), batch.column("purchase").to_numpy()
    _check_label(path, first, "click", click)
    _check_label(path, first, "purchase", purchase)
    keep = ~((purchase == 1) & (click == 0))
    scen = feats[:, -1]
    bad = np.flatnonzero(keep & ~np.isin(scen, list(SCENARIOS)))
    if bad.size:
        raise DataError(
            f"{path}: line {first + int(bad[0])}: field 301 is {int(scen[bad[0]])}, expected "
            f"one of {', '.join(map(str, SCENARIOS))}"
        )
    part = {
        "ids": feats[keep, :-1],
        "scenario": scen[keep].astype(np.int8),
        "labels": np.stack([click, purchase], axis=1)[keep].astype(np.uint8),
        "sample_id": batch.column("sample_id").to_numpy()[keep],
    }
    return part, int((~keep).sum())


def _common(common: Path) -> tuple[pa.Array, np.ndarray]:
    """The md5 keys and the ``[M, 18]`` feature ids of a common-feature file (held whole)."""
    blocks = [b for _, b in _batches(common, list(_COMMON), _COMMON)]
    table = pa.Table.from_batches(blocks) if blocks else None
    if table is None or table.num_rows == 0:
        raise DataError(f"{common}: no data rows")
    return table.column("md5").combine_chunks(), _features(table.column("features"), common, 1)


def _raw_layout() -> dict[str, dict[str, tuple[Any, tuple[int, ...]]]]:
    row = {"ids": (np.int64, (len(AITM_FIELDS),)), "scenario": (np.int8, ()),
           "labels": (np.uint8, (2,))}  # fmt: skip
    return {s: row for s in SPLITS}


def _stream_raw(files: list[Path], cache: CacheWriter, log: Callable[[str], None]) -> dict:
    """Stream both skeleton files into ``cache`` block by block; the dropped-row counts."""
    dropped = {}
    for name, (skeleton, common) in (("train", files[:2]), ("test", files[2:])):
        md5s, shared = _common(common)
        dropped[name], rows = 0, 0
        for first, batch in _batches(skeleton, list(_SKELETON), _SKELETON):
            part, d = _skeleton_block(batch, first, skeleton, md5s, shared, common)
            dropped[name] += d
            rows += len(part["labels"]) + d
            sample_id = part.pop("sample_id")
            if name == "test":
                cache.append("test", part)
                continue
            codes = hash_split(sample_id, VALID_FRACTION, 0.0, SALT)
            for split, code in (("train", 0), ("valid", 1)):
                cache.append(split, {k: v[codes == code] for k, v in part.items()})
        if rows == 0:
            raise DataError(f"{skeleton}: no data rows")
        log(f"ali-ccp: {skeleton.name}: {rows:,} rows ({dropped[name]:,} dropped)")
    return dropped


_READERS = {"rechub": _read_rechub, "aitm": _read_aitm}
FIELDS = {"raw": AITM_FIELDS, "rechub": RECHUB_FIELDS, "aitm": AITM_FIELDS}


def detect_layout(source: Path) -> tuple[str, list[Path]]:
    """The first complete layout under ``source`` and its files (DataError if none)."""
    for layout, roles in LAYOUT_FILES.items():
        files = [find_file(source, names) for names in roles]
        if all(files):
            return layout, files  # type: ignore[return-value]
        if any(files) and layout != "aitm":
            lacking = ", ".join(names[0] for names, f in zip(roles, files) if f is None)
            raise DataError(f"ali-ccp: {source} lacks {lacking} ({layout} layout)")
    raise DataError(f"ali-ccp: no Ali-CCP files in {source}: {missing_message()}")


def prepare(source: Path, dest: Path, log: Callable[[str], None] = print) -> list[dict]:
    """Read the Ali-CCP files under ``source`` (any layout) into the cache at ``dest``.

    Returns:
        One summary row per split: rows, clicks, purchases and rows per scenario.

    Raises:
        DataError: No or incomplete files, wrong columns, ids out of range, labels outside
            {0, 1}, purchase without click (processed layouts), a truncated file.
    """
    layout, files = detect_layout(Path(source))
    log(f"ali-ccp: reading the {layout} layout: {', '.join(str(f) for f in files)}")
    meta = {
        "dataset": DATASET,
        "layout": layout,
        "fields": list(FIELDS[layout]),
        "dense": list(RECHUB_DENSE) if layout == "rechub" else [],
        "inputs": [{**file_facts(f), "path": str(f.resolve())} for f in files],
    }
    if layout == "raw":
        kw = {"cache_format": CACHE_FORMAT, "version": CACHE_VERSION}
        with CacheWriter(dest, _raw_layout(), **kw) as cache:
            dropped = _stream_raw(files, cache, log)
            cache.finish({**meta, "dropped_purchase_without_click": dropped})
    else:
        parts = _READERS[layout](files, log)
        dropped = parts.pop("_dropped", {})
        meta["dropped_purchase_without_click"] = dropped
        write_cache(dest, parts, meta, cache_format=CACHE_FORMAT, version=CACHE_VERSION)
    return [
        {"layout": layout, "split": s, **_counts(dest, s), "dropped": dropped.get(s, 0)}
        for s in SPLITS
    ]


def _counts(dest: Path, split: str) -> dict[str, int]:
    """Rows, clicks, purchases and rows per scenario of a written split (read back)."""
    _, arrays = read_cache(dest, cache_format=CACHE_FORMAT, version=CACHE_VERSION, missing="")
    labels, scenario = arrays[split]["labels"], arrays[split]["scenario"]
    return {
        "rows": len(labels),
        "clicks": int(labels[:, 0].sum()),
        "purchases": int(labels[:, 1].sum()),
        **{SCENARIOS[k]: int((scenario == k).sum()) for k in SCENARIOS},
    }


def load(options: Mapping[str, Any]) -> LoadedDataset:
    """Load the prepared Ali-CCP cache under its layout's protocol.

    Raises:
        DataError: Nothing prepared (the message says what to download and run).
    """
    data_dir = dataset_dir(DATASET, str(options.get("data_dir", "") or "") or None)
    manifest, arrays = read_cache(data_dir, cache_format=CACHE_FORMAT, version=CACHE_VERSION,
                                  missing=missing_message())  # fmt: skip
    fields, dense = tuple(manifest["fields"]), tuple(manifest["dense"])
    parts = {}
    for s in SPLITS:
        a = arrays[s]
        cols = {f: np.asarray(a["ids"][:, j]) for j, f in enumerate(fields)}
        cols.update({d: np.asarray(a["dense"][:, j]) for j, d in enumerate(dense)})
        cols[SCENARIO_FIELD] = np.asarray(a["scenario"])
        cols["click"], cols["purchase"] = np.asarray(a["labels"][:, 0]), a["labels"][:, 1]
        parts[s] = cols
    layout = TabularLayout(
        categorical=fields, numeric=dense, scenario=SCENARIO_FIELD, scenarios=SCENARIOS,
        tasks=TASKS, relations=RELATIONS, scale_numeric=False,
    )  # fmt: skip
    info = {"cache": str(data_dir), "prepared": manifest["created"],
            "layout": manifest["layout"], "inputs": manifest["inputs"]}  # fmt: skip
    return tabular_dataset(parts, layout, protocol(manifest["layout"]), info)
