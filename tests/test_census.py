"""Tests of the Census-Income (KDD) dataset plugin (plugins/mssbench_census).

Everything here runs from a fresh clone: the bundled ``plugins/mssbench_census/data`` copy of the
UCI test file is the only data read, and small fixture files are written to ``tmp_path`` from it.
"""

from __future__ import annotations

import gzip
import json
import random
import tempfile
from pathlib import Path

import mssbench_census
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mssbench_census import loader as L

from mssbench.errors import DataError

BUNDLED = L.default_data_dir() / "census-income.test.gz"
N_BUNDLED = 99_762
SCENARIOS = ("private", "government", "self_employed", "not_working")


@pytest.fixture(scope="module")
def bundled():
    return L.load({"protocol": "bundled", "data_dir": ""})


@pytest.fixture(scope="module")
def raw_bundled():
    return L.read_census_file(BUNDLED)


_LINES: list[str] = []


def lines(n: int | None = None) -> list[str]:
    """The first ``n`` lines of the bundled file, without newlines."""
    if not _LINES:
        _LINES.extend(gzip.decompress(BUNDLED.read_bytes()).decode().splitlines())
    return list(_LINES[:n] if n is not None else _LINES)


def set_field(line: str, column: str, value: str) -> str:
    parts = line.split(",")
    parts[L.COLUMNS.index(column)] = " " + value
    return ",".join(parts)


def write(path: Path, rows: list[str], gz: bool = False) -> Path:
    data = ("\n".join(rows) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def split_rows(split) -> np.ndarray:
    """All of a split's values as one float64 matrix, rows sorted (a canonical multiset)."""
    m = torch.cat(
        [
            split.categorical.double(),
            split.numeric.double(),
            split.scenario.double()[:, None],
            split.labels.double(),
        ],
        dim=1,
    ).numpy()
    return m[np.lexsort(m.T[::-1])] if len(m) else m


# --------------------------------------------------------------------------- registration


def test_registration():
    (spec,) = mssbench_census.mssbench_register_datasets()
    spec.validate()
    assert spec.name == "census-income"
    assert dict(spec.options) == {"protocol": "bundled", "data_dir": ""}
    assert "CC BY 4.0" in spec.source
    assert spec.load.resolve() is L.load  # imported when first called (mssbench.lazy)


def test_bundled_file_is_the_expected_copy():
    import hashlib

    assert hashlib.md5(BUNDLED.read_bytes()).hexdigest() == "a8c39dce642efb4d17f28ebe74a3c271"


# --------------------------------------------------------------------------- schema


def test_schema(bundled, raw_bundled):
    s = bundled.schema
    assert s.scenario_field == "class of worker"
    assert s.scenarios == SCENARIOS
    assert [(t.name, t.label) for t in s.tasks] == [
        ("income", "income"),
        ("never_married", "marital status"),
    ]
    assert s.relations == ()
    assert s.numeric == (
        "age",
        "wage per hour",
        "capital gains",
        "capital losses",
        "divdends from stocks",
        "num persons worked for employer",
        "weeks worked in year",
    )
    names = [f.name for f in s.categorical]
    assert len(names) == 31
    for excluded in ("class of worker", "marital status", "income", "instance weight"):
        assert excluded not in names
    assert set(names) | set(s.numeric) | {
        "class of worker",
        "marital status",
        "income",
        "instance weight",
    } == set(L.COLUMNS)
    assert names == [c for c in L.COLUMNS if c in set(names)]  # file column order
    for code in ("industry code", "occupation code", "year"):
        assert code in names

    train = raw_bundled.frame[L.row_buckets(raw_bundled.frame) < 60]
    assert len(train) == len(bundled.train)
    for f in s.categorical:
        assert f.vocab_size == train[f.name].nunique() + 1, f.name
    assert bundled.protocol.id == (
        "census-income/bundled/v1/private+government+self_employed+not_working"
    )


def test_dtypes_and_ranges(bundled):
    for split in (bundled.train, bundled.valid, bundled.test):
        assert split.categorical.dtype == torch.int32
        assert split.numeric.dtype == torch.float32
        assert split.scenario.dtype == torch.int64
        assert split.labels.dtype == torch.float32
        assert split.labels.shape[1] == 2
        assert set(split.labels.unique().tolist()) <= {0.0, 1.0}
        assert int(split.scenario.min()) >= 0 and int(split.scenario.max()) < 4
        sizes = torch.tensor(bundled.schema.vocab_sizes)
        assert bool((split.categorical >= 0).all())
        assert bool((split.categorical < sizes).all())
        b = split.batch(slice(0, 4))
        assert b.categorical.dtype == torch.int64


def test_info_is_json_and_consistent(bundled):
    info = json.loads(json.dumps(bundled.info))
    assert info["rows"] == {k: len(getattr(bundled, k)) for k in ("train", "valid", "test")}
    (f,) = info["files"]
    assert f["name"] == "census-income.test.gz"
    assert f["bytes"] == 3_261_416 and len(f["sha256"]) == 64 and f["rows"] == N_BUNDLED
    for k in ("train", "valid", "test"):
        assert sum(info["scenario_rows"][k].values()) == info["rows"][k]
        assert list(info["scenario_rows"][k]) == list(SCENARIOS)
        assert info["oov"][k]["cells"] == sum(info["oov"][k]["fields"].values())
    assert info["oov"]["train"] == {"cells": 0, "rows": 0, "fields": {}}


# --------------------------------------------------------------------------- splits


def test_bundled_counts(bundled):
    sizes = {k: len(getattr(bundled, k)) for k in ("train", "valid", "test")}
    assert sum(sizes.values()) == N_BUNDLED
    # Pinned: a change here means the split rule changed and the protocol version must be bumped.
    assert sizes == {"train": 58_784, "valid": 19_617, "test": 21_361}
    pos = bundled.info["positives"]
    assert sum(p["income"] for p in pos.values()) == 6_186
    assert sum(p["never_married"] for p in pos.values()) == 43_143
    assert pos["train"] == {"income": 3_672, "never_married": 25_129}
    for k in ("train", "valid", "test"):
        split = getattr(bundled, k)
        assert pos[k]["income"] == int(split.labels[:, 0].sum())
        assert pos[k]["never_married"] == int(split.labels[:, 1].sum())


def test_splits_disjoint_cover_and_keep_identical_rows_together(bundled, raw_bundled):
    frame = raw_bundled.frame
    buckets = L.row_buckets(frame)
    assert buckets.min() >= 0 and buckets.max() <= 99
    split = np.select([buckets < 60, buckets < 80], ["train", "valid"], "test")
    assert {k: int((split == k).sum()) for k in ("train", "valid", "test")} == {
        k: len(getattr(bundled, k)) for k in ("train", "valid", "test")
    }
    key = frame[list(L.HASHED)].agg(",".join, axis=1)
    per_key = pd.Series(split).groupby(key.to_numpy()).nunique()
    assert int(per_key.max()) == 1
    assert int((key.duplicated()).sum()) > 0  # the file does contain duplicates


def test_deterministic(bundled):
    again = L.load({"protocol": "bundled", "data_dir": ""})
    assert again.protocol == bundled.protocol
    assert again.schema == bundled.schema
    for k in ("train", "valid", "test"):
        a, b = getattr(again, k), getattr(bundled, k)
        for t in ("categorical", "numeric", "scenario", "labels"):
            assert torch.equal(getattr(a, t), getattr(b, t)), (k, t)
    assert again.info == bundled.info


def test_encoder_fitted_on_train_only(bundled):
    # Values first seen outside train map to the OOV id 0; train never has OOV.
    assert not bool((bundled.train.categorical == 0).any())
    oov = bundled.info["oov"]
    for k in ("valid", "test"):
        assert oov[k]["cells"] == int((getattr(bundled, k).categorical == 0).sum())


def test_numeric_train_in_unit_interval(bundled):
    num = bundled.train.numeric
    assert float(num.min()) == 0.0 and float(num.max()) == 1.0
    assert torch.equal(num.min(0).values, torch.zeros(7))
    assert torch.equal(num.max(0).values, torch.ones(7))


def _fixture_rows(n: int = 300) -> list[str]:
    return lines(n)


@settings(max_examples=12, deadline=None)
@given(st.randoms(use_true_random=False))
def test_stable_under_row_shuffling(rnd: random.Random):
    rows = _fixture_rows()
    rows = rows + rows[:20]  # exact duplicates must stay together too
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    with tempfile.TemporaryDirectory() as tmp:
        a = L.load_files("bundled", write(Path(tmp) / "a.test", rows))
        b = L.load_files("bundled", write(Path(tmp) / "b.test", shuffled))
    assert a.schema == b.schema
    for k in ("train", "valid", "test"):
        assert np.array_equal(split_rows(getattr(a, k)), split_rows(getattr(b, k))), k
    assert a.info["rows"] == b.info["rows"]
    assert a.info["positives"] == b.info["positives"]


# --------------------------------------------------------------------------- official protocol


def _official_files(tmp: Path, gz: bool) -> tuple[Path, Path]:
    rows = lines(400)
    suffix = ".gz" if gz else ""
    train = write(tmp / f"census-income.data{suffix}", rows[:250], gz)
    test_rows = [set_field(r, "education", "Unseen-education") for r in rows[250:]]
    test_rows[0] = set_field(test_rows[0], "age", "200")
    test = write(tmp / f"census-income.test{suffix}", test_rows, gz)
    return train, test


@pytest.mark.parametrize("gz", [False, True])
def test_official_protocol(tmp_path, gz, bundled):
    train, test = _official_files(tmp_path, gz)
    ds = L.load({"protocol": "official", "data_dir": str(tmp_path)})
    assert ds.protocol.name == "official" and ds.protocol.version == 1
    assert ds.protocol.id == (
        "census-income/official/v1/private+government+self_employed+not_working"
    )
    assert ds.protocol.id != bundled.protocol.id
    assert len(ds.train) == 250
    assert len(ds.valid) + len(ds.test) == 150
    test_raw = L.read_census_file(test)
    buckets = L.row_buckets(test_raw.frame)
    assert len(ds.valid) == int((buckets < 50).sum())
    assert [f["role"] for f in ds.info["files"]] == ["train", "valid+test"]
    assert [f["name"] for f in ds.info["files"]] == [train.name, test.name]

    # Encoder fitted on train only: every test education value is unseen.
    j = [f.name for f in ds.schema.categorical].index("education")
    train_raw = L.read_census_file(train)
    assert ds.schema.categorical[j].vocab_size == train_raw.frame["education"].nunique() + 1
    assert bool((ds.train.categorical[:, j] > 0).all())
    for k in ("valid", "test"):
        split = getattr(ds, k)
        assert bool((split.categorical[:, j] == 0).all())
        assert ds.info["oov"][k]["fields"]["education"] == len(split)
    # Scaling fitted on train only: age 200 lies above 1 outside train.
    assert float(ds.train.numeric[:, 0].max()) == 1.0
    lo, hi = ds.info["numeric_min_max"]["age"]
    outside = torch.cat([ds.valid.numeric[:, 0], ds.test.numeric[:, 0]])
    assert float(outside.max()) == pytest.approx((200 - lo) / (hi - lo))
    assert float(outside.max()) > 1.0


def test_official_same_result_plain_and_gz(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    _official_files(tmp_path / "p", False)
    _official_files(tmp_path / "g", True)
    a = L.load({"protocol": "official", "data_dir": str(tmp_path / "p")})
    b = L.load({"protocol": "official", "data_dir": str(tmp_path / "g")})
    for k in ("train", "valid", "test"):
        assert np.array_equal(split_rows(getattr(a, k)), split_rows(getattr(b, k)))


def test_crlf_and_blank_lines_read_like_plain(tmp_path):
    rows = lines(50)
    plain = L.read_census_file(write(tmp_path / "a.test", rows))
    crlf_path = tmp_path / "b.test"
    crlf_path.write_bytes(("\r\n".join(rows[:10] + [""] + rows[10:]) + "\r\n").encode())
    crlf = L.read_census_file(crlf_path)
    assert plain.frame.equals(crlf.frame)
    assert crlf.lines.tolist() == list(range(1, 11)) + list(range(12, 52))


def test_missing_value_is_its_own_category(bundled, raw_bundled):
    names = [f.name for f in bundled.schema.categorical]
    j = names.index("migration code-change in msa")
    frame = raw_bundled.frame[L.row_buckets(raw_bundled.frame) < 60]
    vocab = sorted(frame["migration code-change in msa"].unique())
    assert "?" in vocab
    q = vocab.index("?") + 1
    n_missing = int((frame["migration code-change in msa"] == "?").sum())
    assert int((bundled.train.categorical[:, j] == q).sum()) == n_missing > 0


# --------------------------------------------------------------------------- bad input


def test_unknown_protocol(tmp_path):
    with pytest.raises(DataError, match="bundled, official"):
        L.load({"protocol": "nope", "data_dir": ""})
    with pytest.raises(DataError, match="bundled, official"):
        L.load_files("nope", BUNDLED)


def test_data_dir_not_a_directory(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        L.load({"protocol": "bundled", "data_dir": str(tmp_path / "nowhere")})


def test_default_dir_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(L, "default_data_dir", lambda: tmp_path / "gone")
    with pytest.raises(DataError, match="package data of mssbench_census") as exc:
        L.load({"protocol": "bundled", "data_dir": ""})
    assert str(tmp_path / "gone") in str(exc.value)
    assert "census-income.test.gz" in str(exc.value)


def test_official_missing_train_file(tmp_path):
    write(tmp_path / "census-income.test", lines(20))
    with pytest.raises(DataError) as exc:
        L.load({"protocol": "official", "data_dir": str(tmp_path)})
    msg = str(exc.value)
    assert "census-income.data or census-income.data.gz" in msg
    assert L.UCI_URL in msg and str(tmp_path) in msg


def test_missing_test_file(tmp_path):
    with pytest.raises(DataError, match="census-income.test or census-income.test.gz"):
        L.load({"protocol": "bundled", "data_dir": str(tmp_path)})
    with pytest.raises(DataError, match="file not found"):
        L.read_census_file(tmp_path / "absent.test")


@pytest.mark.parametrize("gz", [False, True])
def test_empty_file(tmp_path, gz):
    p = tmp_path / ("census-income.test.gz" if gz else "census-income.test")
    p.write_bytes(gzip.compress(b"") if gz else b"")
    with pytest.raises(DataError, match="empty file") as exc:
        L.load({"protocol": "bundled", "data_dir": str(tmp_path)})
    assert str(p) in str(exc.value)


def test_truncated_gzip(tmp_path):
    data = gzip.compress(("\n".join(lines(200)) + "\n").encode())
    p = tmp_path / "census-income.test.gz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated gzip") as exc:
        L.read_census_file(p)
    assert str(p) in str(exc.value)


def test_corrupt_gzip(tmp_path):
    data = bytearray(gzip.compress(("\n".join(lines(200)) + "\n").encode()))
    data[20:60] = b"\xff" * 40
    p = tmp_path / "census-income.test.gz"
    p.write_bytes(bytes(data))
    with pytest.raises(DataError, match="gzip") as exc:
        L.read_census_file(p)
    assert str(p) in str(exc.value)
    q = tmp_path / "not-gzip.test.gz"
    q.write_bytes(b"this is not gzip data\n")
    with pytest.raises(DataError, match="corrupt gzip"):
        L.read_census_file(q)


@pytest.mark.parametrize("delta", [-1, +1, -30])
def test_wrong_number_of_columns(tmp_path, delta):
    rows = lines(10)
    parts = rows[6].split(",")
    rows[6] = ",".join(parts[:delta] if delta < 0 else parts + [" extra"])
    p = write(tmp_path / "census-income.test", rows)
    with pytest.raises(DataError) as exc:
        L.read_census_file(p)
    msg = str(exc.value)
    assert str(p) in msg
    assert f"line 7: expected 42 comma-separated columns, got {42 + delta}" in msg


def test_line_numbers_count_blank_lines(tmp_path):
    rows = lines(10)
    rows[5] = ",".join(rows[5].split(",")[:-1])
    p = write(tmp_path / "x.test", rows[:2] + ["", ""] + rows[2:])
    with pytest.raises(DataError, match="line 8: expected 42"):
        L.read_census_file(p)


def test_whitespace_only_line_is_an_error(tmp_path):
    rows = lines(5)
    p = write(tmp_path / "x.test", rows[:2] + ["   "] + rows[2:])
    with pytest.raises(DataError, match="line 3: expected 42 comma-separated columns, got 1"):
        L.read_census_file(p)


@pytest.mark.parametrize("column,value", [("age", "abc"), ("capital gains", "?"), ("age", "")])
def test_non_numeric_value(tmp_path, column, value):
    rows = lines(10)
    rows[2] = set_field(rows[2], column, value)
    p = write(tmp_path / "census-income.test", rows)
    with pytest.raises(DataError) as exc:
        L.load({"protocol": "bundled", "data_dir": str(tmp_path)})
    msg = str(exc.value)
    assert str(p) in msg and "line 3" in msg
    assert repr(column) in msg and f"non-numeric value {value!r}" in msg


@pytest.mark.parametrize("value", ["50000+", "- 50000", "yes", ""])
def test_bad_income_label(tmp_path, value):
    rows = lines(10)
    rows[4] = set_field(rows[4], "income", value)
    p = write(tmp_path / "census-income.test", rows)
    with pytest.raises(DataError) as exc:
        L.read_census_file(p)
    msg = str(exc.value)
    assert str(p) in msg and "line 5" in msg and "'income'" in msg and repr(value) in msg


def test_unknown_class_of_worker(tmp_path):
    rows = lines(10)
    rows[8] = set_field(rows[8], "class of worker", "Astronaut")
    p = write(tmp_path / "census-income.test", rows)
    with pytest.raises(DataError) as exc:
        L.read_census_file(p)
    msg = str(exc.value)
    assert str(p) in msg and "line 9" in msg and "'Astronaut'" in msg


def test_not_utf8(tmp_path):
    rows = lines(5)
    p = tmp_path / "x.test"
    p.write_bytes(("\n".join(rows[:3]) + "\n").encode() + b"\xff\xfe,\n")
    with pytest.raises(DataError, match="line 4: not UTF-8"):
        L.read_census_file(p)


def test_official_needs_train_file_in_load_files():
    with pytest.raises(DataError, match="training file"):
        L.load_files("official", BUNDLED)
    with pytest.raises(DataError, match="test file only"):
        L.load_files("bundled", BUNDLED, BUNDLED)
