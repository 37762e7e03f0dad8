"""Tests of the AliExpress dataset plugin (plugins/mssbench_aliexpress): prepare and load.

Everything runs from a fresh clone: ``tests/fixtures/aliexpress`` holds 200 + 200 real processed
rows (see its SOURCE.md). The raw Tianchi layouts are rebuilt from them in ``tmp_path`` by
inverting the processing (one user row per search id with the 33 user columns, one item row
per processed row with the 49 item columns and the 0/1/2 label), then prepare must give back
exactly those rows, labels and counts through every layout.
"""

from __future__ import annotations

import errno
import io
import json
import os
import zipfile
from pathlib import Path

import mssbench_aliexpress
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from mssbench_aliexpress import ingest, loader
from mssbench_aliexpress.schema import SPLIT_SALT, VALID_FRACTION

import mssbench.data.cache as cache_module
from mssbench.cli import main
from mssbench.data.splits import holdout_mask
from mssbench.errors import ConfigError, DataError
from mssbench.plugins import load_registry

FIXTURES = Path(__file__).parent / "fixtures" / "aliexpress"
LAYOUTS = ("tianchi-zip", "inner-zips", "tianchi-csv", "processed")


# ------------------------------------------------------------------------------------------
# Fixture builders
# ------------------------------------------------------------------------------------------


def fixture_rows(name: str) -> list[list[str]]:
    """The processed rows of a fixture file as lists of the original strings."""
    lines = (FIXTURES / name).read_text().splitlines()
    assert lines[0].split(",") == list(ingest.PROCESSED_COLUMNS)
    return [line.split(",") for line in lines[1:]]


HEADER = ",".join(ingest.PROCESSED_COLUMNS)
TRAIN = fixture_rows("train.csv")
TEST = fixture_rows("test.csv")
#: Per country, the processed (train, test) rows; ES and FR reuse the sample rows.
DATA = {"NL": (TRAIN, TEST), "ES": (TEST, TRAIN), "FR": (TRAIN[:120], TEST[:80])}


def to_tianchi(rows: list[list[str]]) -> tuple[list[str], list[str]]:
    """Invert the processing: (user lines, item lines) of the raw Tianchi files."""
    pages: dict[str, list[str]] = {}
    items = []
    for r in rows:
        sid, cats, nums, click, conv = r[0], r[1:17], r[17:80], r[80], r[81]
        user = [sid, *cats[:7], *nums[:23], *cats[7:9]]
        assert pages.setdefault(sid, user) == user, "a page's user columns differ"
        item_cats, item_nums = iter(cats[9:]), iter(nums[23:])
        item = [sid]
        for col in range(2, 49):
            item.append(next(item_cats) if col in ingest.ITEM_CATEGORICAL else next(item_nums))
        item.append("2" if conv == "1" else "1" if click == "1" else "0")
        assert len(user) == 33 and len(item) == 49
        items.append(",".join(item))
    # Pages in reverse order of first appearance: the join must not depend on file order.
    return [",".join(u) for u in reversed(pages.values())], items


def text(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode() if lines else b""


def raw_files(cc: str, edit=None) -> dict[str, bytes]:
    """``{cc}_{user,item}_{train,test}.csv`` name -> content; ``edit(role, lines)`` may alter."""
    files = {}
    for split, rows in zip(("train", "test"), DATA[cc]):
        user, item = to_tianchi(rows)
        for kind, lines in (("user", user), ("item", item)):
            role = f"{kind}_{split}"
            if edit is not None:
                lines = edit(role, list(lines))
            files[f"{cc.lower()}_{role}.csv"] = text(lines)
    return files


def zip_bytes(members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def inner_zips(files: dict[str, bytes]) -> dict[str, bytes]:
    return {n[:-4] + ".zip": zip_bytes({n: data}) for n, data in files.items()}


def make_source(root: Path, layout: str, countries=("NL", "ES"), edit=None) -> Path:
    """A --source directory holding ``countries`` in ``layout``."""
    root.mkdir(parents=True, exist_ok=True)
    for cc in countries:
        if layout == "processed":
            d = root / f"AliExpress_{cc}"
            d.mkdir()
            for split, rows in zip(("train", "test"), DATA[cc]):
                lines = [HEADER, *(",".join(r) for r in rows)]
                if edit is not None:
                    lines = edit(split, lines)
                (d / f"{split}.csv").write_bytes(text(lines))
            continue
        files = raw_files(cc, edit)
        folder = f"aliexpress_{cc}_datasets"
        if layout == "tianchi-zip":
            members = {f"{folder}/{n}": data for n, data in inner_zips(files).items()}
            (root / f"{folder}.zip").write_bytes(zip_bytes(members, zipfile.ZIP_STORED))
        else:
            (root / folder).mkdir()
            out = inner_zips(files) if layout == "inner-zips" else files
            for n, data in out.items():
                (root / folder / n).write_bytes(data)
    return root


def expected(rows: list[list[str]], split: str) -> dict[str, np.ndarray]:
    """The arrays prepare must write for the processed ``rows`` of one official file."""
    a = np.array(rows)
    sid = a[:, 0].astype(np.int64)
    out = {
        "categorical": a[:, 1:17].astype(np.int64).astype(np.int16) + 1,
        "numeric": a[:, 17:80].astype(np.float32),
        "labels": a[:, 80:82].astype(np.uint8),
        "search_id": sid,
    }
    if split == "test":
        return out
    valid = holdout_mask(sid, VALID_FRACTION, SPLIT_SALT)
    keep = valid if split == "valid" else ~valid
    return {k: v[keep] for k, v in out.items()}


def expected_split(countries, split) -> dict[str, np.ndarray]:
    parts = [expected(DATA[cc][split == "test"], split) for cc in countries]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def cache_arrays(dest: Path, split: str) -> dict[str, np.ndarray]:
    return {name: np.load(dest / split / f"{name}.npy") for name in ingest.ARRAYS}


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, Path]:
    """A cache per layout, NL and ES (built once for the module)."""
    base = tmp_path_factory.mktemp("aliexpress")
    out = {}
    for layout in LAYOUTS:
        src = make_source(base / layout / "src", layout)
        dest = base / layout / "cache"
        ingest.prepare(src, dest, quiet)
        out[layout] = dest
    return out


# ------------------------------------------------------------------------------------------
# Round trip through every layout
# ------------------------------------------------------------------------------------------


def test_fixture_facts():
    assert len(TRAIN) == len(TEST) == 200
    assert sum(r[80] == "1" for r in TRAIN) == 8 and sum(r[81] == "1" for r in TRAIN) == 5
    assert sum(r[80] == "1" for r in TEST) == 10 and sum(r[81] == "1" for r in TEST) == 2
    assert len({tuple(r) for r in TRAIN}) == 196  # exact duplicate rows are kept as rows


@pytest.mark.parametrize("layout", LAYOUTS)
def test_prepare_gives_back_the_rows(prepared, layout):
    dest = prepared[layout]
    manifest = json.loads((dest / ingest.MANIFEST).read_text())
    for split in ingest.SPLITS:
        got = cache_arrays(dest, split)
        want = expected_split(("NL", "ES"), split)
        for name in ingest.ARRAYS:
            assert got[name].dtype == want[name].dtype, name
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{layout} {name}")
        for cc in ("NL", "ES"):
            entry = manifest["countries"][cc][split]
            part = expected(DATA[cc][split == "test"], split)
            assert entry["rows"] == len(part["labels"])
            assert entry["clicks"] == int(part["labels"][:, 0].sum())
            assert entry["purchases"] == int(part["labels"][:, 1].sum())
            assert entry["pages"] == len(np.unique(part["search_id"]))
            assert entry["items_without_page"] == 0
    assert manifest["layouts"] == {"NL": _kind(layout), "ES": _kind(layout)}


def _kind(layout: str) -> str:
    return "tianchi-files" if layout in ("inner-zips", "tianchi-csv") else layout


def test_every_layout_writes_the_same_cache(prepared):
    first = prepared[LAYOUTS[0]]
    for layout in LAYOUTS[1:]:
        for split in ingest.SPLITS:
            for name in ingest.ARRAYS:
                a = (first / split / f"{name}.npy").read_bytes()
                assert a == (prepared[layout] / split / f"{name}.npy").read_bytes()


def test_manifest(prepared):
    dest = prepared["tianchi-zip"]
    m = json.loads((dest / ingest.MANIFEST).read_text())
    assert m["format"] == ingest.CACHE_FORMAT and m["cache_version"] == ingest.CACHE_VERSION
    assert m["protocol_version"] == 1
    assert list(m["countries"]) == ["NL", "ES"]
    (entry,) = m["inputs"]["NL"][:1]
    zip_path = Path(entry["path"])
    assert entry["file"] == "aliexpress_NL_datasets.zip"
    assert entry["bytes"] == zip_path.stat().st_size
    import hashlib

    assert entry["sha256"] == hashlib.sha256(zip_path.read_bytes()).hexdigest()
    assert {e["role"] for e in m["inputs"]["NL"]} == set(ingest._ROLES)
    assert m["inputs"]["NL"][0]["member"].startswith("aliexpress_NL_datasets/nl_")
    # Vocabularies (raw codes) from the train split; categorical_1 is 7 in every sample row.
    assert m["vocabularies"]["categorical_1"] == [7]
    assert m["oov"]["NL"]["test"]["cells"] >= 0
    assert m["arrays"]["train"]["numeric"]["shape"][1] == 63
    # Every array file is a valid .npy of the recorded size.
    for arrays in m["arrays"].values():
        for facts in arrays.values():
            p = dest / facts["file"]
            assert p.stat().st_size == facts["bytes"]
            assert list(np.load(p, mmap_mode="r").shape) == facts["shape"]


def test_summary_rows(tmp_path):
    src = make_source(tmp_path / "src", "tianchi-csv", countries=("NL",))
    lines: list[str] = []
    rows = ingest.prepare(src, tmp_path / "cache", lines.append)
    assert [(r["country"], r["split"]) for r in rows] == [
        ("NL", "train"),
        ("NL", "valid"),
        ("NL", "test"),
    ]
    assert sum(r["rows"] for r in rows[:2]) == 200
    assert sum(r["clicks"] for r in rows[:2]) == 8 and sum(r["purchases"] for r in rows[:2]) == 5
    assert (rows[2]["rows"], rows[2]["clicks"], rows[2]["purchases"]) == (200, 10, 2)
    assert any("rows/s" in line for line in lines)


# ------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------


def test_load_resident(prepared):
    data = loader.load({"data_dir": str(prepared["processed"]), "memory": "resident"})
    assert not data.memory_mapped
    assert data.protocol.id == "aliexpress/standard/v1/NL+ES"
    assert data.schema.scenarios == ("NL", "ES")
    assert data.schema.task_names == ("ctr", "ctcvr")
    assert data.schema.relations[0].conditional == "cvr"
    for split in ingest.SPLITS:
        s = getattr(data, split)
        want = expected_split(("NL", "ES"), split)
        np.testing.assert_array_equal(s.numeric.numpy(), want["numeric"])
        np.testing.assert_array_equal(s.labels.numpy(), want["labels"].astype(np.float32))
        np.testing.assert_array_equal(s.categorical.numpy(), want["categorical"])
        n_nl = len(expected(DATA["NL"][split == "test"], split)["labels"])
        assert s.scenario.tolist() == [0] * n_nl + [1] * (len(s) - n_nl)
        b = s.batch(slice(0, 4))
        assert b.categorical.dtype == torch.int64 and b.numeric.dtype == torch.float32
    assert data.info["rows"]["test"] == 400
    assert data.info["memory"]["mode"] == "resident"
    assert data.info["positives"]["test"] == {"ctr": 18, "ctcvr": 7}
    assert max(data.schema.vocab_sizes) == 50 + 1  # categorical_7 codes up to 49


def test_load_one_country_and_mapped(prepared):
    opts = {"data_dir": str(prepared["processed"]), "scenarios": "es"}
    res = loader.load({**opts, "memory": "resident"})
    mapped = loader.load({**opts, "memory": "mapped"})
    assert mapped.memory_mapped and mapped.protocol.id == "aliexpress/standard/v1/ES"
    assert mapped.schema == res.schema
    for split in ingest.SPLITS:
        a, b = getattr(res, split), getattr(mapped, split)
        assert torch.equal(a.numeric, b.numeric)
        assert torch.equal(a.categorical, b.categorical)
        assert torch.equal(a.labels, b.labels.float())
        assert torch.equal(a.scenario, b.scenario.long())
        assert torch.equal(
            a.batch(torch.tensor([3, 1])).numeric, b.batch(torch.tensor([3, 1])).numeric
        )


def test_mapped_non_adjacent_countries_and_oov(tmp_path):
    def unseen_code(split, lines):  # categorical_1 is 7 in every train row: 9 is unseen
        if split == "test":
            first = lines[1].split(",")
            first[1] = "9"
            lines[1] = ",".join(first)
        return lines

    src = make_source(tmp_path / "src", "processed", ("NL", "ES", "FR"), edit=unseen_code)
    dest = tmp_path / "cache"
    ingest.prepare(src, dest, quiet)
    opts = {"data_dir": str(dest), "scenarios": "FR,NL"}
    res = loader.load({**opts, "memory": "resident"})
    mapped = loader.load({**opts, "memory": "mapped"})
    assert res.schema.scenarios == mapped.schema.scenarios == ("NL", "FR")
    assert (dest / "subsets" / "NL+FR" / ingest.MANIFEST).is_file()
    for split in ingest.SPLITS:
        a, b = getattr(res, split), getattr(mapped, split)
        assert torch.equal(a.numeric, b.numeric) and torch.equal(a.categorical, b.categorical)
        assert torch.equal(a.scenario, b.scenario.long())
    # The unseen code maps to 0 and is counted, in both countries' test splits.
    assert res.test.categorical[0, 0] == 0
    assert res.info["oov"]["NL"]["test"]["fields"]["categorical_1"] == 1
    oov = res.info["oov"]["NL"]["test"]
    assert oov["cells"] == sum(oov["fields"].values()) > 1  # other codes unseen in NL+FR train
    assert res.info["oov"]["FR"]["test"]["fields"]["categorical_1"] == 1
    assert res.schema.vocab_sizes[0] == 9  # max train code 7, + OOV, + 1
    # Loading the subset again reuses it.
    again = loader.load({**opts, "memory": "mapped"})
    assert torch.equal(again.train.numeric, mapped.train.numeric)


def test_load_without_data_says_what_to_do(tmp_path):
    with pytest.raises(DataError) as e:
        loader.load({"data_dir": str(tmp_path / "nothing")})
    msg = str(e.value)
    assert "https://tianchi.aliyun.com/dataset/74690" in msg
    assert "aliexpress_NL_datasets.zip" in msg and "aliexpress_RU_datasets.zip" in msg
    assert "mssbench data prepare aliexpress --source DIR" in msg
    assert "aliexpress-synth" in msg


def test_load_options_are_checked(prepared):
    d = str(prepared["processed"])
    with pytest.raises(ConfigError, match="XX"):
        loader.load({"data_dir": d, "scenarios": "NL,XX"})
    with pytest.raises(DataError, match="US not prepared"):
        loader.load({"data_dir": d, "scenarios": "US"})
    with pytest.raises(ConfigError, match="memory"):
        loader.load({"data_dir": d, "memory": "swap"})


def test_registered_spec():
    reg = load_registry()
    spec = reg.dataset("aliexpress")
    assert spec.prepare is mssbench_aliexpress.prepare
    assert dict(spec.options) == {"data_dir": "", "scenarios": "", "memory": "auto"}
    spec.validate()


def test_cli_prepare(tmp_path):
    src = make_source(tmp_path / "src", "tianchi-zip", countries=("NL",))
    res = CliRunner().invoke(
        main,
        ["data", "prepare", "aliexpress", "--source", str(src), "--dest", str(tmp_path / "c")],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert "purchases" in res.output and "rows/s" in res.output
    assert (tmp_path / "c" / ingest.MANIFEST).is_file()


# ------------------------------------------------------------------------------------------
# Re-running, interruption, full disk
# ------------------------------------------------------------------------------------------


def test_prepare_keeps_other_countries(tmp_path, prepared):
    dest = tmp_path / "cache"
    ingest.prepare(make_source(tmp_path / "a", "processed", ("ES",)), dest, quiet)
    ingest.prepare(make_source(tmp_path / "b", "tianchi-csv", ("NL",)), dest, quiet)
    m = json.loads((dest / ingest.MANIFEST).read_text())
    assert list(m["countries"]) == ["NL", "ES"]
    assert m["layouts"] == {"NL": "tianchi-files", "ES": "processed"}
    for split in ingest.SPLITS:
        for name in ingest.ARRAYS:
            a = (prepared["processed"] / split / f"{name}.npy").read_bytes()
            assert (dest / split / f"{name}.npy").read_bytes() == a
    assert (
        m["countries"]
        == json.loads((prepared["processed"] / ingest.MANIFEST).read_text())["countries"]
    )


def _fail_after(monkeypatch, calls: int, exc: BaseException) -> None:
    real = cache_module._write_all
    count = {"n": 0}

    def write(f, data):
        count["n"] += 1
        if count["n"] > calls:
            raise exc
        real(f, data)

    monkeypatch.setattr(cache_module, "_write_all", write)


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}"))


@pytest.mark.parametrize("existing", [False, True])
def test_disk_full_keeps_nothing(tmp_path, monkeypatch, existing):
    src = make_source(tmp_path / "src", "tianchi-zip", countries=("NL",))
    dest = tmp_path / "cache"
    if existing:
        ingest.prepare(src, dest, quiet)
        before = (dest / ingest.MANIFEST).read_bytes()
    _fail_after(monkeypatch, 30, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    with pytest.raises(DataError, match="disk is full") as e:
        ingest.prepare(src, dest, quiet)
    assert "nothing was kept" in str(e.value) and str(dest) in str(e.value)
    assert _leftovers(dest) == []
    if existing:  # the previous cache is untouched and still loads
        assert (dest / ingest.MANIFEST).read_bytes() == before
        assert len(loader.load({"data_dir": str(dest)}).test) == 200
    else:
        assert not dest.exists()
        with pytest.raises(DataError, match="no prepared data"):
            loader.load({"data_dir": str(dest)})


def test_interrupted_prepare_keeps_nothing_and_reruns(tmp_path, monkeypatch):
    src = make_source(tmp_path / "src", "tianchi-csv", countries=("NL",))
    dest = tmp_path / "cache"
    _fail_after(monkeypatch, 20, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        ingest.prepare(src, dest, quiet)
    assert not dest.exists() and _leftovers(dest) == []
    monkeypatch.undo()
    # A folder left by a killed prepare (its process is gone) is cleaned up, never loaded.
    stale = tmp_path / ".cache.partial-999999999"
    (stale / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="unfinished prepare"):
        loader.load({"data_dir": str(dest)})
    ingest.prepare(src, dest, quiet)
    assert not stale.exists()
    assert len(loader.load({"data_dir": str(dest)}).test) == 200


def test_refuses_to_replace_a_foreign_directory(tmp_path):
    src = make_source(tmp_path / "src", "processed", countries=("NL",))
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="refusing"):
        ingest.prepare(src, dest, quiet)
    assert (dest / "notes.txt").read_text() == "keep me"


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------


def _edit_line(role: str, line_no: int, change):
    """An ``edit`` that applies ``change(fields)`` to line ``line_no`` (1-based) of ``role``."""

    def edit(r, lines):
        if r == role:
            fields = lines[line_no - 1].split(",")
            lines[line_no - 1] = ",".join(change(fields))
        return lines

    return edit


def _set(col: int, value: str):
    def change(fields):
        fields[col - 1] = value
        return fields

    return change


def prepare_error(tmp_path, layout="tianchi-csv", edit=None, countries=("NL",)) -> str:
    src = make_source(tmp_path / "src", layout, countries, edit=edit)
    dest = tmp_path / "cache"
    with pytest.raises(DataError) as e:
        ingest.prepare(src, dest, quiet)
    assert not dest.exists() and _leftovers(dest) == []
    return str(e.value)


@pytest.mark.parametrize(
    ("layout", "role", "line", "change", "expect"),
    [
        ("tianchi-csv", "item_train", 5, lambda f: f[:-1], "line 5: expected 49 comma-separated"),
        ("tianchi-csv", "user_test", 3, lambda f: [*f, "0"], "line 3: expected 33 comma-sep"),
        ("tianchi-csv", "item_train", 7, _set(49, "3"), "line 7, column 49 (item_49 = label)"),
        ("tianchi-csv", "item_test", 9, _set(2, "abc"), "column 2 (item_2 = numerical_24)"),
        ("tianchi-csv", "item_train", 4, _set(3, "nan"), "line 4, column 3 (item_3"),
        ("tianchi-csv", "user_train", 2, _set(9, "inf"), "column 9 (user_9 = numerical_1)"),
        ("tianchi-csv", "item_train", 6, _set(19, "1.5"), "column 19 (item_19 = categorical_10)"),
        ("tianchi-csv", "user_train", 3, _set(2, "-1"), "line 3, column 2 (user_2"),
        ("tianchi-csv", "item_train", 8, _set(1, "x"), "line 8, column 1 (item_1 = search id)"),
        ("tianchi-zip", "item_train", 5, lambda f: f[:-1], "nl_item_train.csv: line 5"),
        ("processed", "train", 4, _set(81, "2"), "line 4, column 81 (click)"),
        ("processed", "test", 6, _set(82, "1"), "line 6, column 82 (conversion)"),
        ("processed", "train", 3, _set(30, ""), "line 3, column 30 (numerical_13)"),
    ],
)
def test_bad_values_name_file_line_and_column(tmp_path, layout, role, line, change, expect):
    msg = prepare_error(tmp_path, layout, _edit_line(role, line, change))
    assert expect in msg
    name = f"nl_{role}.csv" if layout != "processed" else f"AliExpress_NL/{role}.csv"
    assert name in msg


def test_label_and_nan_messages(tmp_path):
    msg = prepare_error(tmp_path / "a", edit=_edit_line("item_train", 7, _set(49, "3")))
    assert "label must be 0, 1 or 2, got 3" in msg
    msg = prepare_error(tmp_path / "b", edit=_edit_line("item_train", 4, _set(3, "nan")))
    assert "expected a finite number, got nan" in msg
    msg = prepare_error(tmp_path / "c", edit=_edit_line("item_test", 9, _set(2, "abc")))
    assert "expected a number, got 'abc'" in msg


def test_duplicate_page_id(tmp_path):
    def dup(role, lines):
        if role == "user_train":
            fields = lines[4].split(",")
            fields[0] = lines[1].split(",")[0]
            lines[4] = ",".join(fields)
        return lines

    msg = prepare_error(tmp_path, edit=dup)
    assert "nl_user_train.csv: line 5" in msg and "duplicate search id" in msg
    assert "first on line 2" in msg


def test_items_without_page_are_counted(tmp_path):
    user, _ = to_tianchi(TRAIN)
    gone = user[0].split(",")[0]
    n_gone = sum(r[0] == gone for r in TRAIN)

    def drop(role, lines):
        return lines[1:] if role == "user_train" else lines

    src = make_source(tmp_path / "src", "tianchi-zip", ("NL",), edit=drop)
    log: list[str] = []
    rows = ingest.prepare(src, tmp_path / "cache", log.append)
    by = {r["split"]: r for r in rows}
    assert by["train"]["items_without_page"] + by["valid"]["items_without_page"] == n_gone
    assert by["train"]["rows"] + by["valid"]["rows"] == 200 - n_gone
    assert any("have no search page" in line for line in log)
    m = json.loads((tmp_path / "cache" / ingest.MANIFEST).read_text())
    assert sum(m["countries"]["NL"][s]["items_without_page"] for s in ingest.SPLITS) == n_gone


def test_no_item_matches_a_page(tmp_path):
    def shift(role, lines):
        if role == "user_test":
            return [",".join([str(10**9 + i), *ln.split(",")[1:]]) for i, ln in enumerate(lines)]
        return lines

    msg = prepare_error(tmp_path, edit=shift)
    assert "none of its 200 items has a search page" in msg


@pytest.mark.parametrize("layout", ["tianchi-csv", "processed"])
def test_empty_file(tmp_path, layout):
    role = "item_test" if layout != "processed" else "test"
    msg = prepare_error(tmp_path, layout, lambda r, lines: [] if r == role else lines)
    assert "empty file" in msg


def test_processed_header_is_checked(tmp_path):
    def bad_header(split, lines):
        if split == "train":
            lines[0] = lines[0].replace("categorical_3", "cat_3")
        return lines

    msg = prepare_error(tmp_path, "processed", bad_header)
    assert "line 1" in msg and "column 4 is 'cat_3'" in msg


def test_truncated_and_non_zip_archives(tmp_path):
    src = make_source(tmp_path / "src", "tianchi-zip", ("NL",))
    z = src / "aliexpress_NL_datasets.zip"
    data = z.read_bytes()
    z.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="not a zip archive, or a truncated one") as e:
        ingest.prepare(src, tmp_path / "cache", quiet)
    assert str(z) in str(e.value)
    z.write_bytes(b"<html>login required</html>")
    with pytest.raises(DataError, match="not a zip archive"):
        ingest.prepare(src, tmp_path / "cache", quiet)


def _outer(tmp_path, members: dict[str, bytes]) -> Path:
    src = tmp_path / "src"
    src.mkdir(parents=True)
    (src / "aliexpress_NL_datasets.zip").write_bytes(zip_bytes(members, zipfile.ZIP_STORED))
    return src


def test_missing_inner_archive(tmp_path):
    members = inner_zips(raw_files("NL"))
    del members["nl_item_test.zip"]
    src = _outer(tmp_path, members)
    with pytest.raises(DataError, match="nl_item_test.zip missing"):
        ingest.prepare(src, tmp_path / "cache", quiet)


def test_truncated_or_corrupt_inner_archive(tmp_path):
    members = inner_zips(raw_files("NL"))
    good = members["nl_item_train.zip"]
    members["nl_item_train.zip"] = good[: len(good) // 2]
    src = _outer(tmp_path / "a", members)
    with pytest.raises(DataError, match="truncated zip archive") as e:
        ingest.prepare(src, tmp_path / "a" / "cache", quiet)
    assert "nl_item_train.zip" in str(e.value)
    assert not (tmp_path / "a" / "cache").exists()
    # A stored CSV with one byte changed: the CRC check catches it.
    stored = zip_bytes({"nl_item_train.csv": raw_files("NL")["nl_item_train.csv"]}, 0)
    pos = stored.index(b"\n", 200) - 1
    flipped = stored[:pos] + (b"1" if stored[pos : pos + 1] != b"1" else b"2") + stored[pos + 1 :]
    members["nl_item_train.zip"] = flipped
    src = _outer(tmp_path / "b", members)
    with pytest.raises(DataError, match="corrupt"):
        ingest.prepare(src, tmp_path / "b" / "cache", quiet)


def test_mixed_layouts(tmp_path):
    src = make_source(tmp_path / "src", "processed", ("NL",))
    make_source(src, "tianchi-zip", ("ES",))
    with pytest.raises(DataError, match="mixed layouts") as e:
        ingest.prepare(src, tmp_path / "cache", quiet)
    assert "aliexpress_ES_datasets.zip" in str(e.value) and "AliExpress_NL" in str(e.value)


@pytest.mark.parametrize("name", ["aliexpress_XX_datasets.zip", "xx_user_train.csv"])
def test_unknown_country_code(tmp_path, name):
    src = tmp_path / "src"
    src.mkdir()
    (src / name).write_bytes(b"1,2\n")
    with pytest.raises(DataError, match="country code 'XX' is not one of") as e:
        ingest.prepare(src, tmp_path / "cache", quiet)
    assert name in str(e.value)


def test_nothing_recognisable_and_incomplete_country(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="no AliExpress files found"):
        ingest.prepare(tmp_path / "src", tmp_path / "cache", quiet)
    src = make_source(tmp_path / "src2", "tianchi-csv", ("NL",))
    (src / "aliexpress_NL_datasets" / "nl_item_test.csv").unlink()
    with pytest.raises(DataError, match="NL is incomplete, missing nl_item_test.csv"):
        ingest.prepare(src, tmp_path / "cache", quiet)


# ------------------------------------------------------------------------------------------
# The streaming zip reader
# ------------------------------------------------------------------------------------------


class _Unseekable(io.RawIOBase):
    def __init__(self):
        self.buf = bytearray()

    def writable(self):
        return True

    def write(self, b):
        self.buf += b
        return len(b)


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("descriptor", [False, True])
def test_zip_member_stream(method, descriptor):
    payload = (b"1,0.5,0.25\n" * 5000) + b"2,1,0\n"
    if descriptor:  # zipfile writes data descriptors when the output cannot seek
        sink = _Unseekable()
        with zipfile.ZipFile(sink, "w", method) as z:
            z.writestr("dir/", b"")
            with z.open("dir/x.csv", "w") as f:
                f.write(payload)
        data = bytes(sink.buf)
        if method == zipfile.ZIP_STORED:  # stored + descriptor without sizes cannot stream
            return
    else:
        data = zip_bytes({"__MACOSX/._x": b"junk" * 10, "x.csv": payload}, method)
    stream = ingest.ZipMemberStream(io.BytesIO(data), "t.zip")
    assert stream.member.endswith("x.csv")
    out = b""
    while chunk := stream.read(777):
        out += chunk
    assert out == payload


def test_zip_member_stream_rejects_non_zip():
    with pytest.raises(DataError, match="not a zip archive"):
        ingest.ZipMemberStream(io.BytesIO(b"hello, world\n"), "t.zip")


def test_npy_header_roundtrip(tmp_path):
    p = tmp_path / "a.npy"
    arr = np.arange(12, dtype=np.float32).reshape(4, 3)
    p.write_bytes(cache_module.npy_header("float32", (4, 3)) + arr.tobytes())
    np.testing.assert_array_equal(np.load(p), arr)
