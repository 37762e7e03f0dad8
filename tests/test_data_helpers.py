"""The public dataset helpers of mssbench.data: CSV reading, splits, vocabularies, cache."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mssbench.data import (
    OOV,
    SPLITS,
    CacheWriter,
    CodeCounts,
    TabularLayout,
    Vocabulary,
    hash_split,
    iter_csv,
    ordered_split,
    read_cache,
    read_csv,
    split_columns,
    split_indices,
    tabular_dataset,
    time_boundaries,
    time_split,
    write_cache,
    write_json_atomic,
)
from mssbench.data.cache import remove_stale_partials
from mssbench.data.manifest import sha256_file
from mssbench.errors import DataError
from mssbench.spec import Protocol, Task

ids_st = st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=200)
frac_st = st.tuples(st.floats(0, 0.5), st.floats(0, 0.5))


# ------------------------------------------------------------------------------------------
# Splits
# ------------------------------------------------------------------------------------------


@given(ids_st, frac_st, st.integers(0, 2**31), st.randoms(use_true_random=False))
def test_hash_split_is_a_function_of_the_group_id(ids, fracs, salt, rnd):
    ids = np.array(ids * 2, dtype=np.int64)
    shuffled = ids.copy()
    rnd.shuffle(shuffled)
    a = dict(zip(ids.tolist(), hash_split(ids, *fracs, salt).tolist()))
    b = dict(zip(shuffled.tolist(), hash_split(shuffled, *fracs, salt).tolist()))
    assert a == b  # order-independent, and each group in one split only
    assert set(a.values()) <= {0, 1, 2}


@given(ids_st, frac_st)
def test_split_indices_partition_the_rows(ids, fracs):
    codes = hash_split(np.array(ids, dtype=np.int64), *fracs)
    parts = split_indices(codes)
    joined = np.sort(np.concatenate([parts[s] for s in SPLITS]))
    assert joined.tolist() == list(range(len(ids)))


def test_hash_split_shares_are_close_to_the_fractions():
    codes = hash_split(np.arange(200_000), 0.1, 0.2, salt=7)
    shares = np.bincount(codes, minlength=3) / len(codes)
    assert shares == pytest.approx([0.7, 0.1, 0.2], abs=0.01)


@given(
    st.lists(st.integers(0, 50), min_size=1, max_size=300),
    frac_st,
    st.randoms(use_true_random=False),
)
def test_time_split_orders_the_periods_and_keeps_ties_together(times, fracs, rnd):
    times = np.array(times)
    valid_start, test_start = time_boundaries(times, *fracs)
    codes = time_split(times, valid_start, test_start)
    for earlier, later in ((0, 1), (1, 2), (0, 2)):
        if (codes == earlier).any() and (codes == later).any():
            assert times[codes == earlier].max() < times[codes == later].min()
    for t in np.unique(times):
        assert len(set(codes[times == t].tolist())) == 1
    perm = np.array(rnd.sample(range(len(times)), len(times)))
    assert time_boundaries(times[perm], *fracs) == (valid_start, test_start)


def test_time_boundaries_give_the_shares_on_distinct_times():
    times = np.arange(1000)
    codes = time_split(times, *time_boundaries(times, 0.1, 0.2))
    assert np.bincount(codes).tolist() == [700, 100, 200]


@given(st.integers(0, 5000))
def test_ordered_split_matches_slicing(n):
    codes = ordered_split(n, 0.8, 0.9)
    a, b = int(n * 0.8), int(n * 0.9)
    assert (codes[:a] == 0).all() and (codes[a:b] == 1).all() and (codes[b:] == 2).all()


def test_split_arguments_are_checked():
    with pytest.raises(ValueError, match="sum to at most 1"):
        hash_split(np.arange(3), 0.6, 0.6)
    with pytest.raises(ValueError, match="before valid_start"):
        time_split(np.arange(3), 5, 1)
    with pytest.raises(ValueError, match="train_end <= valid_end"):
        ordered_split(3, 0.9, 0.8)


# ------------------------------------------------------------------------------------------
# Vocabularies
# ------------------------------------------------------------------------------------------


@given(
    st.lists(st.integers(-5, 30), min_size=1, max_size=100),
    st.lists(st.integers(-5, 30), max_size=100),
    st.integers(1, 3),
)
def test_vocabulary_is_fitted_on_train_only(train, other, min_count):
    train, other = np.array(train), np.array(other, dtype=np.int64)
    vocab = Vocabulary.fit(train, min_count)
    kept = {v for v in set(train.tolist()) if (train == v).sum() >= min_count}
    ids = vocab.encode(other)
    for v, i in zip(other.tolist(), ids.tolist()):
        assert (i == OOV) == (v not in kept)  # unseen or rare in train -> 0
        assert 0 <= i < vocab.size
    assert vocab.size == len(kept) + 1
    known = vocab.encode(np.array(sorted(kept), dtype=np.int64))
    assert known.tolist() == list(range(1, len(kept) + 1))  # dense, sorted, stable ids


@given(st.lists(st.text(max_size=3), min_size=1, max_size=50), st.randoms(use_true_random=False))
def test_vocabulary_ids_do_not_depend_on_row_order(values, rnd):
    values = np.array(values, dtype=object)
    shuffled = values.copy()
    rnd.shuffle(shuffled)
    a, b = Vocabulary.fit(values), Vocabulary.fit(shuffled)
    assert a.encode(values).tolist() == b.encode(values).tolist()
    assert (a.encode(values) > 0).all()
    assert a.encode(np.array(["never seen in train"], dtype=object)).tolist() == [OOV]


@given(
    st.lists(st.lists(st.integers(0, 40), max_size=30), min_size=1, max_size=6),
    st.lists(st.integers(0, 60), max_size=50),
    st.integers(1, 3),
)
def test_counted_vocabulary_equals_the_one_fitted_at_once(blocks, other, min_count):
    counter = CodeCounts()
    for block in blocks:
        counter.update(np.array(block, dtype=np.int16))
    train = np.array([v for b in blocks for v in b], dtype=np.int64)
    other = np.array(other, dtype=np.int64)
    if len(train):
        at_once = Vocabulary.fit(train, min_count)
    else:
        at_once = Vocabulary(np.zeros(0, np.int64))
    streamed = counter.vocabulary(min_count)
    from_dict = Vocabulary.from_counts({int(c): k for c, k in counter.as_dict().items()}, min_count)
    for vocab in (streamed, from_dict):
        assert vocab.values.tolist() == at_once.values.tolist()
        assert vocab.encode(other).tolist() == at_once.encode(other).tolist()
    assert sum(counter.as_dict().values()) == len(train)
    # unseen: the cells of a split whose value the vocabulary does not know
    counts = CodeCounts()
    counts.update(other)
    unseen = at_once.unseen({int(c): k for c, k in counts.as_dict().items()})
    assert unseen == int((at_once.encode(other) == OOV).sum())


def test_code_counts_rejects_negative_codes_and_from_counts_takes_strings():
    with pytest.raises(ValueError, match="non-negative integer"):
        CodeCounts().update(np.array([1, -1]))
    vocab = Vocabulary.from_counts({"b": 2, "a": 1, "z": 0})
    assert vocab.values.tolist() == ["a", "b"] and vocab.unseen({"a": 3, "q": 2, "z": 1}) == 3
    assert Vocabulary.from_counts({}).size == 1 and Vocabulary.from_counts({"a": 1}, 2).size == 1


# ------------------------------------------------------------------------------------------
# CSV reading
# ------------------------------------------------------------------------------------------

COLS = {"user": "int", "score": "float", "name": "str", "click": "int"}


def write(tmp_path, text, name="t.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_read_csv_types_header_and_lines(tmp_path):
    p = write(tmp_path, "user,extra,score,name,click\n1,x,0.5,a,0\n2,y,1.5,b,1\n")
    t = read_csv(p, COLS)
    assert t["user"].dtype == np.int64 and t["score"].dtype == np.float64
    assert t["name"].tolist() == ["a", "b"] and len(t) == 2
    assert t.line(1) == 3 and t.facts["bytes"] == p.stat().st_size
    assert len(t.facts["sha256"]) == 64


def test_read_csv_without_header_and_autodetect(tmp_path):
    p = write(tmp_path, "1,0.5,a,0\n2,1.5,b,1\n")
    for header in (False, None):
        t = read_csv(p, COLS, header=header)
        assert t["user"].tolist() == [1, 2] and t.line(0) == 1


def test_read_csv_multichar_delimiter_and_gzip(tmp_path):
    p = tmp_path / "r.dat.gz"
    p.write_bytes(gzip.compress(b"1::10::5\n2::11::3\n"))
    t = read_csv(p, {"u": "int", "i": "int", "r": "int"}, header=False, delimiter="::")
    assert t["i"].tolist() == [10, 11]


@pytest.mark.parametrize(
    "text, message",
    [
        ("user,score,name\n1,0.5,a\n", r"t.csv: line 1: missing column\(s\) click"),
        (
            "user,score,name,click\n1,0.5,a,0\n2,0.7,b\n",
            r"t.csv: line 3: expected 4 columns, got 3 \(truncated",
        ),
        (
            "user,score,name,click\n1,0.5,a,0\nx,0.7,b,1\n",
            r"t.csv: line 3, column 'user': expected an integer, got 'x'",
        ),
        (
            "user,score,name,click\n1,0.5,a,0\n2,,b,1\n",
            r"t.csv: line 3, column 'score': expected a number, got an empty value",
        ),
        (
            "user,score,name,click\n1,0.5,a,0\n\n2,0.1,b,1\n",
            r"t.csv: line 3, column .user.: expected an integer, got an empty value",
        ),
        ("user,score,name,click\n", r"t.csv: no data rows"),
        ("", r"t.csv: empty file"),
    ],
)
def test_read_csv_bad_input_is_one_line_naming_file_line_column(tmp_path, text, message):
    with pytest.raises(DataError, match=message) as err:
        read_csv(write(tmp_path, text), COLS)
    assert "\n" not in str(err.value)


def test_read_csv_missing_and_truncated_gzip(tmp_path):
    with pytest.raises(DataError, match=r"nope.csv: file not found"):
        read_csv(tmp_path / "nope.csv", COLS)
    data = gzip.compress(b"user,score,name,click\n" + b"1,0.5,a,0\n" * 2000)
    p = tmp_path / "t.csv.gz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t.csv.gz"):
        read_csv(p, COLS)


def test_table_checks_name_line_and_column(tmp_path):
    t = read_csv(write(tmp_path, "user,score,name,click\n1,0.5,a,0\n2,0.5,b,2\n3,9,c,7\n"), COLS)
    with pytest.raises(DataError, match=r"line 3, column 'click': expected 0 or 1, got 2 \(1 more"):
        t.check_binary("click")
    with pytest.raises(DataError, match=r"line 4, column 'score': expected a value in \[0, 1\]"):
        t.check_range("score", 0, 1)
    with pytest.raises(DataError, match=r"line 3, column 'name': expected one of a, c, got 'b'"):
        t.check_in("name", ["a", "c"])


# ------------------------------------------------------------------------------------------
# Cache and manifests
# ------------------------------------------------------------------------------------------


def test_cache_round_trip_and_damage(tmp_path):
    dest = tmp_path / "cache"
    arrays = {"train": {"x": np.arange(6).reshape(3, 2)}, "test": {"x": np.ones((1, 2))}}
    manifest = write_cache(dest, arrays, {"rows": 4}, cache_format="demo", version=1)
    assert manifest["rows"] == 4 and [p.name for p in tmp_path.iterdir()] == ["cache"]
    back, got = read_cache(dest, cache_format="demo", version=1, missing="prepare it")
    assert back == json.loads((dest / "manifest.json").read_text())
    assert np.array_equal(got["train"]["x"], arrays["train"]["x"])
    with pytest.raises(DataError, match="format v1, this mssbench reads v2: prepare it"):
        read_cache(dest, cache_format="demo", version=2, missing="prepare it")
    (dest / "train" / "x.npy").write_bytes(b"short")
    with pytest.raises(DataError, match=r"x.npy is missing or damaged \(5 bytes"):
        read_cache(dest, cache_format="demo", version=1, missing="prepare it")
    with pytest.raises(DataError, match="no prepared data in .*: prepare it"):
        read_cache(tmp_path / "none", cache_format="demo", version=1, missing="prepare it")


def test_failed_cache_write_leaves_nothing(tmp_path):
    dest = tmp_path / "cache"
    bad = {"train": {"x": np.arange(3)}, "test": {"y": np.array(["a"], dtype=object)}}
    with pytest.raises(ValueError, match="object arrays"):
        write_cache(dest, bad, {}, cache_format="demo", version=1)
    assert list(tmp_path.iterdir()) == []


def test_cache_writer_steps_for_a_manifest_of_its_own(tmp_path):
    dest = tmp_path / "cache"
    layout = {"train": {"x": ("int16", (2,)), "y": ("uint8", ())}, "test": {"x": ("int16", (2,)),
              "y": ("uint8", ())}}  # fmt: skip
    cache = CacheWriter(dest, layout, cache_format="demo", version=3).open()
    for _ in range(3):
        cache.append("train", {"x": np.ones((4, 2)), "y": np.arange(4)})
    cache.append("train", {"x": np.ones((0, 2)), "y": np.arange(0)})
    assert (cache.rows("train"), cache.rows("test")) == (12, 0)
    arrays = cache.close_arrays()
    assert arrays["train"]["x"] == {"file": "train/x.npy", "dtype": "<i2", "shape": [12, 2],
                                    "bytes": (dest.parent / cache.work.name / "train/x.npy")
                                    .stat().st_size}  # fmt: skip
    assert not dest.exists()
    cache.commit({"format": "demo", "cache_version": 3, "arrays": arrays, "mine": True})
    manifest, got = read_cache(dest, cache_format="demo", version=3, missing="prepare it")
    assert manifest["mine"] and got["train"]["x"].shape == (12, 2) and len(got["test"]["y"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]
    # abort: the work folder goes, the committed cache stays
    again = CacheWriter(dest, layout, cache_format="demo", version=3).open()
    again.append("train", {"x": np.zeros((1, 2)), "y": np.zeros(1)})
    again.abort()
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]
    assert read_cache(dest, cache_format="demo", version=3, missing="x")[0]["mine"]


def test_remove_stale_partials_keeps_live_work_folders(tmp_path):
    dest = tmp_path / "cache"
    dead = tmp_path / ".cache.partial-999999999"
    mine = tmp_path / f".cache.partial-{os.getpid()}"
    live = tmp_path / ".cache.partial-1"  # pid 1 is always running
    other = tmp_path / ".other.partial-999999999"
    for p in (dead, mine, live, other):
        p.mkdir()
    lines: list[str] = []
    remove_stale_partials(dest, lines.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".cache.partial-1",
        ".other.partial-999999999",
    ]
    assert len(lines) == 2 and all("interrupted prepare" in line for line in lines)


def test_sha256_file_and_stop(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc" * 1000)
    assert sha256_file(p) == hashlib.sha256(b"abc" * 1000).hexdigest()
    stop = threading.Event()
    stop.set()
    assert sha256_file(p, stop) == ""


def test_write_json_atomic_replaces_whole_file(tmp_path):
    p = tmp_path / "m.json"
    write_json_atomic(p, {"a": 1})
    write_json_atomic(p, {"b": 2})
    assert json.loads(p.read_text()) == {"b": 2} and [q.name for q in tmp_path.iterdir()] == [
        "m.json"
    ]


# ------------------------------------------------------------------------------------------
# Tabular datasets
# ------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(20, 200))
def test_tabular_dataset_encodes_with_train_statistics_only(seed, n):
    rng = np.random.default_rng(seed)
    cols = {
        "item": rng.integers(0, 40, n),
        "price": rng.random(n) * 10,
        "site": rng.integers(1, 4, n),
        "click": rng.integers(0, 2, n),
    }
    codes = hash_split(np.arange(n), 0.2, 0.2, salt=seed)
    codes[:1] = 0  # at least one train row
    parts = split_columns(cols, codes)
    layout = TabularLayout(
        categorical=("item",), numeric=("price",), scenario="site",
        scenarios={1: "a", 2: "b", 3: "a"}, tasks=(Task("ctr", "click"),),
    )  # fmt: skip
    protocol = Protocol("demo", "p", 1, ("a", "b"), "hash")
    data = tabular_dataset(parts, layout, protocol)
    train_items = set(parts["train"]["item"].tolist())
    assert data.schema.categorical[0].vocab_size == len(train_items) + 1
    assert data.schema.scenarios == ("a", "b")
    for s in SPLITS:
        split = getattr(data, s)
        unseen = ~np.isin(parts[s]["item"], list(train_items))
        assert ((split.categorical[:, 0].numpy() == 0) == unseen).all()
        assert split.scenario.tolist() == [0 if v in (1, 3) else 1 for v in parts[s]["site"]]
        assert data.info["positives"][s]["ctr"] == int(parts[s]["click"].sum())
    assert float(data.train.numeric.min()) == 0.0 and float(data.train.numeric.max()) == 1.0


def test_tabular_dataset_rejects_unknown_scenario_values():
    cols = {"site": np.array([1, 9]), "click": np.array([0, 1])}
    parts = {s: cols for s in SPLITS}
    layout = TabularLayout((), (), "site", {1: "a"}, (Task("ctr", "click"),))
    with pytest.raises(
        DataError, match=r"train split: scenario column 'site' holds 9, expected one of 1"
    ):
        tabular_dataset(parts, layout, Protocol("demo", "p", 1, ("a",), "x"))


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-(2**40), 2**40), st.floats(-1e6, 1e6, allow_nan=False)),
        min_size=1,
        max_size=40,
    ),
    st.booleans(),
    st.data(),
)
def test_read_csv_round_trip_and_the_line_of_a_bad_value(tmp_path_factory, rows, header, data):
    folder = tmp_path_factory.mktemp("csv")
    text = ("a,b\n" if header else "") + "".join(f"{a},{b!r}\n" for a, b in rows)
    path = folder / "t.csv"
    path.write_text(text)
    t = read_csv(path, {"a": "int", "b": "float"}, header=header)
    assert t["a"].tolist() == [a for a, _ in rows]
    assert t["b"].tolist() == [b for _, b in rows]
    bad = data.draw(st.integers(0, len(rows) - 1))
    lines = text.splitlines()
    lines[bad + header] = "1,oops"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"t.csv: line {bad + 1 + header}, column 'b'"):
        read_csv(path, {"a": "int", "b": "float"}, header=header)


def test_iter_csv_blocks_join_to_read_csv_and_count_lines(tmp_path):
    rows = "".join(f"{i},{i / 7!r},n{i % 5},{i % 2}\n" for i in range(500))
    p = write(tmp_path, "user,score,name,click\n" + rows)
    blocks = list(iter_csv(p, COLS, block_size=256))
    assert len(blocks) > 5
    whole = read_csv(p, COLS)
    for c in COLS:
        assert np.concatenate([b[c] for b in blocks]).tolist() == whole[c].tolist()
    assert [b.line(0) for b in blocks][:2] == [2, 2 + len(blocks[0])]
    lines = p.read_text().splitlines()
    lines[400] = "400,0.5,x,9"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"t.csv: line 401, column 'click': expected 0 or 1"):
        for block in iter_csv(p, COLS, block_size=256):
            block.check_binary("click")
    lines[400] = "400,0.5"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"t.csv: line 401: expected 4 columns, got 2"):
        list(iter_csv(p, COLS, block_size=256))
