"""Tests of the Ali-CCP plugin (plugins/mssbench_aliccp): three layouts, protocols, bad input.

``tests/fixtures/ali-ccp`` holds real processed rows (torch-rechub's 33-column sample and
PaddleRec's AITM 20-column sample, see its SOURCE.md). The raw Tianchi layout is rebuilt from
the AITM rows: user fields go to ``common_features_*.csv`` under the md5 of their feature
string, the other fields to ``sample_skeleton_*.csv``, plus multi-valued fields the loader
must ignore; preparing it must give back exactly the AITM rows.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_checks import check_conformance, check_loaded, cli_run, fit_every_model
from mssbench_aliccp import loader

from mssbench.data import read_cache
from mssbench.errors import DataError
from mssbench.plugins import load_registry

FIX = Path(__file__).parent / "fixtures" / "ali-ccp"
AITM_COLUMNS = ["click", "purchase", *loader.AITM_FIELDS, "301"]
USER = {"101", "121", "122", "124", "125", "126", "127", "128", "129"}


def aitm_rows(split: str) -> list[list[str]]:
    lines = (FIX / "aitm" / split / f"{split}.csv").read_text().splitlines()
    return [r.split(",") for r in lines if r.split(",") != AITM_COLUMNS]


def to_raw(rows: list[list[str]], folder: Path, split: str, first_id: int = 1) -> None:
    """Write the raw Tianchi skeleton and common-feature files holding ``rows``."""
    skeleton, common = [], {}
    for k, row in enumerate(rows):
        values = dict(zip(AITM_COLUMNS, row))
        user = [
            f"{f}\x02{values[f]}\x031.0" for f in AITM_COLUMNS[2:] if f in USER and values[f] != "0"
        ]
        user.append(f"109_14\x02{k + 7}\x030.5")  # a multi-valued field the loader ignores
        user.append(f"109_14\x02{k + 8}\x030.25")
        text = "\x01".join(user)
        md5 = hashlib.md5(text.encode()).hexdigest()[:16]
        common[md5] = f"{md5},{len(user)},{text}"
        own = [
            f"{f}\x02{values[f]}\x031.0"
            for f in AITM_COLUMNS[2:]
            if f not in USER and values[f] != "0"
        ]
        own.append("210\x029001\x031.0\x01210\x029002\x031.0")
        labels = f"{values['click']},{values['purchase']}"
        skeleton.append(f"{first_id + k},{labels},{md5},{len(own)},{chr(1).join(own)}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"sample_skeleton_{split}.csv").write_text("\n".join(skeleton) + "\n")
    (folder / f"common_features_{split}.csv").write_text("\n".join(common.values()) + "\n")


@pytest.fixture
def raw_dir(tmp_path):
    to_raw(aitm_rows("train"), tmp_path / "raw", "train")
    to_raw(aitm_rows("test"), tmp_path / "raw", "test", first_id=1000)
    return tmp_path / "raw"


def prepare_load(tmp_path, source):
    cache = tmp_path / "cache"
    summary = loader.prepare(source, cache, log=lambda m: None)
    return summary, loader.load({"data_dir": str(cache)})


def test_registered():
    registry = load_registry()
    assert registry.dataset("ali-ccp").prepare is not None
    assert registry.plugin_of("dataset", "ali-ccp") == "aliccp"


def test_rechub_layout(tmp_path):
    summary, data = prepare_load(tmp_path, FIX / "rechub")
    check_loaded(data)
    assert data.protocol.id == "ali-ccp/rechub/v1/301_1+301_2+301_3"
    got = {r["split"]: (r["rows"], r["clicks"], r["purchases"], r["dropped"]) for r in summary}
    assert got == {"train": (100, 7, 1, 0), "valid": (50, 3, 1, 0), "test": (50, 2, 1, 0)}
    assert data.schema.n_numeric == 8 and len(data.schema.categorical) == 22
    first = (FIX / "rechub" / "ali_ccp_train_sample.csv").read_text().splitlines()[1].split(",")
    assert data.train.numeric[0].tolist() == pytest.approx([float(v) for v in first[25:]])
    assert data.info["scenario_rows"]["train"] == {"301_1": 100, "301_2": 0, "301_3": 0}


def test_aitm_layout_drops_purchase_without_click(tmp_path):
    summary, data = prepare_load(tmp_path, FIX / "aitm")
    check_loaded(data)
    assert data.protocol.id == "ali-ccp/aitm/v1/301_1+301_2+301_3"
    by = {r["split"]: r for r in summary}
    train_rows, test_rows = aitm_rows("train"), aitm_rows("test")
    orphan = lambda rows: sum(r[0] == "0" and r[1] == "1" for r in rows)  # noqa: E731
    assert by["train"]["dropped"] == orphan(train_rows) == 2
    assert by["test"]["dropped"] == orphan(test_rows) == 3
    assert by["train"]["rows"] + by["valid"]["rows"] == len(train_rows) - 2
    assert by["test"]["rows"] == len(test_rows) - 3
    assert set(data.info["scenario_rows"]["test"]) == {"301_1", "301_2", "301_3"}
    assert all(v > 0 for v in data.info["scenario_rows"]["test"].values())


def test_raw_layout_gives_back_the_aitm_rows(tmp_path, raw_dir):
    loader.prepare(FIX / "aitm", tmp_path / "a", log=lambda m: None)
    summary, _ = prepare_load(tmp_path, raw_dir)
    assert summary[0]["layout"] == "raw"
    kw = {"cache_format": loader.CACHE_FORMAT, "version": loader.CACHE_VERSION, "missing": ""}
    _, aitm = read_cache(tmp_path / "a", **kw)
    _, raw = read_cache(tmp_path / "cache", **kw)

    def rows(arrays, splits):
        return sorted(
            tuple(ids) + (int(s),) + tuple(lab)
            for sp in splits
            for ids, s, lab in zip(
                arrays[sp]["ids"].tolist(), arrays[sp]["scenario"], arrays[sp]["labels"].tolist()
            )
        )

    assert rows(raw, ["test"]) == rows(aitm, ["test"])
    assert rows(raw, ["train", "valid"]) == rows(aitm, ["train", "valid"])


def test_every_model_runs_on_ali_ccp(tmp_path):
    _, data = prepare_load(tmp_path, FIX / "aitm")
    assert "mmoe" in fit_every_model(data)


def test_conformance_with_the_oov_probe(tmp_path, raw_dir):
    # No sample has training rows of every 301 value: rechub's are all 301=1, AITM's train
    # (and so the raw files rebuilt from it) has none.
    missing = {"rechub": "301_2, 301_3", "aitm": "301_1", "raw": "301_1"}
    for layout, source in (("rechub", FIX / "rechub"), ("aitm", FIX / "aitm"), ("raw", raw_dir)):
        loader.prepare(source, tmp_path / layout, log=lambda m: None)
        options = {"data_dir": str(tmp_path / layout)}
        messages = check_conformance("ali-ccp", options, {"check_dataset_scenarios_in_train"})
        got = messages["check_dataset_scenarios_in_train"]
        assert got == f"scenarios without training rows: {missing[layout]}"


def test_cli_prepare_and_run(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mssbench.cli import main

    monkeypatch.setenv("MSSBENCH_DATA_DIR", str(tmp_path / "data"))
    res = CliRunner().invoke(main, ["data", "prepare", "ali-ccp", "--source", str(FIX / "rechub")])
    assert res.exit_code == 0, res.output
    assert "| rechub" in res.output
    record = cli_run(tmp_path, "ali-ccp")
    assert record["protocol"]["id"].startswith("ali-ccp/rechub/v1/")


def set_field(text: str, line: int, column: int, value: str) -> str:
    lines = text.split("\n")
    fields = lines[line - 1].split(",")
    fields[column] = value
    lines[line - 1] = ",".join(fields)
    return "\n".join(lines)


def edit(folder: Path, name: str, change) -> None:
    path = next(folder.rglob(name))
    path.write_text(change(path.read_text()))


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("ali_ccp_train_sample.csv", lambda t: t.replace(",301,", ",30x,", 1),
         r"ali_ccp_train_sample.csv: line 1: missing column\(s\) 301"),
        ("ali_ccp_val_sample.csv", lambda t: t.replace("\n0,0,1,", "\n0,0,-5,", 1),
         r"ali_ccp_val_sample.csv: line 2, column '101': expected a value in \[0, "),
        ("ali_ccp_test_sample.csv", lambda t: t.replace("\n0,0,", "\n2,0,", 1),
         r"ali_ccp_test_sample.csv: line 2, column 'click': expected 0 or 1, got 2"),
        ("ali_ccp_test_sample.csv", lambda t: t[: t.rindex(",")],
         r"ali_ccp_test_sample.csv: line 51: expected 33 columns, got 32 \(truncated"),
        ("ali_ccp_train_sample.csv", lambda t: set_field(t, 4, 20, "7"),
         r"train_sample.csv: line 4, column '301': expected one of 1, 2, 3, got 7"),
    ],
)  # fmt: skip
def test_bad_processed_input(tmp_path, name, change, message):
    src = tmp_path / "src"
    shutil.copytree(FIX / "rechub", src)
    edit(src, name, change)
    with pytest.raises(DataError, match=message) as err:
        loader.prepare(src, tmp_path / "cache", log=lambda m: None)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "cache").exists()


def test_bad_aitm_and_raw_input(tmp_path, raw_dir):
    src = tmp_path / "aitm"
    shutil.copytree(FIX / "aitm", src)
    edit(src, "test.csv", lambda t: t[:-12])
    with pytest.raises(DataError, match=r"test.csv: line 50: expected 20 columns, got 1[0-9]"):
        loader.prepare(src, tmp_path / "c", log=lambda m: None)
    edit(raw_dir, "common_features_test.csv", lambda t: t.split("\n", 1)[1])
    with pytest.raises(
        DataError, match=r"sample_skeleton_test.csv: line \d+, column 4 .*is not in"
    ):
        loader.prepare(raw_dir, tmp_path / "c", log=lambda m: None)
    edit(raw_dir, "sample_skeleton_train.csv", lambda t: t.replace("\x02", "", 1))
    with pytest.raises(DataError, match=r"sample_skeleton_train.csv: line 1: a feature without"):
        loader.prepare(raw_dir, tmp_path / "c", log=lambda m: None)
    assert not (tmp_path / "c").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".c.")]  # no partial


def test_missing_files(tmp_path, raw_dir):
    (raw_dir / "common_features_test.csv").unlink()
    with pytest.raises(DataError, match=r"lacks common_features_test.csv \(raw layout\)"):
        loader.prepare(raw_dir, tmp_path / "c", log=lambda m: None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no Ali-CCP files in .*mssbench data prepare ali-ccp"):
        loader.prepare(tmp_path / "empty", tmp_path / "d", log=lambda m: None)
    with pytest.raises(DataError, match=r"no prepared data in .*tianchi.aliyun.com/dataset/408"):
        loader.load({"data_dir": str(tmp_path / "none")})


def test_deterministic(tmp_path):
    _, a = prepare_load(tmp_path / "a", FIX / "aitm")
    _, b = prepare_load(tmp_path / "b", FIX / "aitm")
    for s in ("train", "valid", "test"):
        assert torch.equal(getattr(a, s).categorical, getattr(b, s).categorical)
        assert np.array_equal(getattr(a, s).labels.numpy(), getattr(b, s).labels.numpy())


def test_raw_skeleton_is_streamed_in_blocks(tmp_path, raw_dir, monkeypatch):
    loader.prepare(raw_dir, tmp_path / "whole", log=lambda m: None)
    monkeypatch.setattr(loader, "_BLOCK", 300)  # a few rows per block
    loader.prepare(raw_dir, tmp_path / "blocks", log=lambda m: None)
    kw = {"cache_format": loader.CACHE_FORMAT, "version": loader.CACHE_VERSION, "missing": ""}
    _, whole = read_cache(tmp_path / "whole", **kw)
    _, blocks = read_cache(tmp_path / "blocks", **kw)
    for split in ("train", "valid", "test"):
        for name in ("ids", "scenario", "labels"):
            assert np.array_equal(whole[split][name], blocks[split][name]), (split, name)
    # Line numbers count across blocks.
    path = raw_dir / "sample_skeleton_test.csv"
    lines = path.read_text().split("\n")
    lines[44] = "9,0,7," + lines[44].split(",", 3)[3]
    path.write_text("\n".join(lines))
    with pytest.raises(
        DataError,
        match=r"sample_skeleton_test.csv: line 45, column 'purchase': expected 0 or 1, got 7",
    ):
        loader.prepare(raw_dir, tmp_path / "c", log=lambda m: None)
