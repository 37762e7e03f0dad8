"""Tests of the KuaiRand plugin (plugins/mssbench_kuairand): both layouts, protocols, bad input.

``tests/fixtures/kuairand/kuairand_sample.csv`` holds 200 real rows in Scenario-Wise-Rec's
merged layout (CC BY-SA 4.0, see SOURCE.md). The official layout is rebuilt from them: one row
per user in ``user_features_1k.csv``, one per video in ``video_features_basic_1k.csv``, and the
interactions in the two standard logs, with generated dates, ``is_like`` and tabs (the sample
has none of these).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from dataset_checks import check_conformance, check_loaded, cli_run, fit_every_model
from mssbench_kuairand import loader

from mssbench.data import read_cache
from mssbench.errors import DataError
from mssbench.plugins import load_registry

SAMPLE = Path(__file__).parent / "fixtures" / "kuairand" / "kuairand_sample.csv"
USER_COLS = ["user_id", "user_active_degree", "is_lowactive_period", "is_live_streamer",
             "is_video_author", "follow_user_num", "follow_user_num_range", "fans_user_num",
             "fans_user_num_range", "friend_user_num", "friend_user_num_range", "register_days",
             "register_days_range", *(f"onehot_feat{i}" for i in range(18))]  # fmt: skip
VIDEO_COLS = ["video_id", "author_id", "video_type", "upload_dt", "visible_status",
              "server_width", "server_height"]  # fmt: skip
LOG_COLS = ["user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like",
            "is_follow", "long_view", "play_time_ms", "duration_ms", "tab"]  # fmt: skip
DATES = [20220408 + d for d in range(23)] + [20220501 + d for d in range(8)]  # Apr 8 - May 8
TAB_CYCLE = [1, 0, 2, 4, 6, 3]  # tab 3 is not a kept tab


def sample_rows() -> list[dict[str, str]]:
    with open(SAMPLE, newline="") as f:
        return list(csv.DictReader(f))


def to_official(folder: Path, rows: list[dict[str, str]]) -> Path:
    """The official KuaiRand-1K files holding ``rows`` (generated: date, is_like, tab)."""
    folder.mkdir(parents=True, exist_ok=True)

    def write(name, cols, records):
        with open(folder / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols)
            w.writerows([[r.get(c, "0") for c in cols] for r in records])

    write("user_features_1k.csv", USER_COLS, list({r["user_id"]: r for r in rows}.values()))
    write(
        "video_features_basic_1k.csv", VIDEO_COLS, list({r["video_id"]: r for r in rows}.values())
    )
    logs = []
    for i, r in enumerate(rows):
        play, dur = int(r["play_time_ms"]), int(r["duration_ms"])
        like = int(r["is_click"] == "1" and i % 2 == 0)
        logs.append({**r, "date": str(DATES[i % len(DATES)]), "hourmin": "1200",
                     "time_ms": str(1649400000000 + i), "is_like": str(like),
                     "long_view": str(int(play >= min(dur, 18000))),
                     "tab": str(TAB_CYCLE[i % 6])})  # fmt: skip
    early = [r for r in logs if int(r["date"]) <= 20220421]
    late = [r for r in logs if int(r["date"]) > 20220421]
    write("log_standard_4_08_to_4_21_1k.csv", LOG_COLS, early)
    write("log_standard_4_22_to_5_08_1k.csv", LOG_COLS, late)
    return folder


def prepare_load(tmp_path, source, dataset="kuairand-1k"):
    cache = tmp_path / "cache"
    summary = loader.prepare(dataset, source, cache, log=lambda m: None)
    return summary, loader.load(dataset, {"data_dir": str(cache)})


@pytest.fixture
def official(tmp_path):
    return to_official(tmp_path / "official", sample_rows())


def test_registered():
    registry = load_registry()
    for name in ("kuairand-pure", "kuairand-1k"):
        assert registry.dataset(name).prepare is not None
        assert registry.plugin_of("dataset", name) == "kuairand"


def test_merged_layout(tmp_path):
    summary, data = prepare_load(tmp_path, SAMPLE.parent)
    check_loaded(data)
    rows = sample_rows()
    assert data.protocol.id == "kuairand-1k/swr/v1/tab0+tab1+tab2+tab4+tab6"
    assert summary[0]["rows"] == 200 and summary[0]["is_click positives"] == 32
    long_view = sum(int(r["play_time_ms"]) >= min(int(r["duration_ms"]), 18000) for r in rows)
    assert summary[0]["long_view positives"] == long_view
    assert data.schema.task_names == ("is_click", "long_view")
    assert sum(data.info["rows"].values()) == 200
    assert data.info["scenario_rows"]["train"]["tab1"] == data.info["rows"]["train"]


def test_official_layout_and_date_split(tmp_path, official):
    summary, data = prepare_load(tmp_path, official)
    check_loaded(data)
    assert data.protocol.id == "kuairand-1k/standard/v1/tab0+tab1+tab2+tab4+tab6"
    assert data.schema.task_names == ("is_click", "is_like", "long_view")
    kept = [i for i in range(200) if TAB_CYCLE[i % 6] != 3]
    assert summary[0]["dropped_other_tabs"] == 200 - len(kept)
    _, arrays = read_cache(tmp_path / "cache", cache_format=loader.CACHE_FORMAT,
                           version=loader.CACHE_VERSION, missing="")  # fmt: skip
    dates = np.asarray(arrays["all"]["date"])
    expected = {
        "train": int((dates < loader.VALID_START).sum()),
        "valid": int(((dates >= loader.VALID_START) & (dates < loader.TEST_START)).sum()),
        "test": int((dates >= loader.TEST_START).sum()),
    }
    assert data.info["rows"] == expected and min(expected.values()) > 0
    assert all(v > 0 for v in data.info["scenario_rows"]["train"].values())


def test_both_layouts_join_the_same_features(tmp_path, official):
    loader.prepare("kuairand-1k", SAMPLE.parent, tmp_path / "m", log=lambda m: None)
    loader.prepare("kuairand-1k", official, tmp_path / "o", log=lambda m: None)
    kw = {"cache_format": loader.CACHE_FORMAT, "version": loader.CACHE_VERSION, "missing": ""}
    _, merged = read_cache(tmp_path / "m", **kw)
    _, off = read_cache(tmp_path / "o", **kw)
    # Rows of the official logs: the kept tabs, early log first, then the late one.
    rows = sample_rows()
    kept = [i for i in range(200) if TAB_CYCLE[i % 6] != 3]
    order = sorted(kept, key=lambda i: DATES[i % len(DATES)] > 20220421)
    same = ("user_id", "video_id", "is_click", "long_view", "duration_ms",
            *loader.USER_NUMERIC, *loader.USER_CATEGORICAL, *loader.VIDEO_CATEGORICAL)  # fmt: skip
    for col in same:  # text codes do not depend on the layout
        got, want = np.asarray(off["all"][col]), np.asarray(merged["all"][col])[order]
        assert np.array_equal(got, want), col
    assert len(rows) == 200


def test_every_model_runs_on_kuairand(tmp_path, official):
    _, data = prepare_load(tmp_path, official)
    assert "mmoe" in fit_every_model(data)


def test_conformance_with_the_oov_probe(tmp_path, official):
    loader.prepare("kuairand-1k", official, tmp_path / "standard", log=lambda m: None)
    check_conformance("kuairand-1k", {"data_dir": str(tmp_path / "standard")})
    for name in ("kuairand-1k", "kuairand-pure"):
        # The sample holds tab 1 only: no training rows for the other tabs.
        loader.prepare(name, SAMPLE.parent, tmp_path / name, log=lambda m: None)
        failing = {"check_dataset_scenarios_in_train"}
        check_conformance(name, {"data_dir": str(tmp_path / name)}, failing)


def test_cli_prepare_and_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MSSBENCH_DATA_DIR", str(tmp_path / "data"))
    loader.prepare("kuairand-pure", SAMPLE.parent, tmp_path / "data" / "kuairand-pure",
                   log=lambda m: None)  # fmt: skip
    record = cli_run(tmp_path, "kuairand-pure")
    assert record["protocol"]["id"].startswith("kuairand-pure/swr/v1/")


def edit(path: Path, change) -> None:
    path.write_text(change(path.read_text()))


def test_bad_input(tmp_path, official):
    src = tmp_path / "bad"
    cases = [
        ("log_standard_4_22_to_5_08_1k.csv", lambda t: t.replace("user_id,", "uid,", 1),
         r"log_standard_4_22_to_5_08_1k.csv: line 1: missing column\(s\) user_id"),
        ("log_standard_4_22_to_5_08_1k.csv", lambda t: t[:-9],
         r"log_standard_4_22_to_5_08_1k.csv: line \d+: expected 12 columns, got \d+ \(truncated"),
        ("log_standard_4_08_to_4_21_1k.csv",
         lambda t: t.replace(",20220408,1200,", ",20230408,1200,", 1),
         r"line 2, column 'date': expected a value in \[20220408, 20220508\], got 20230408"),
        ("user_features_1k.csv", lambda t: t.split("\n", 1)[0] + "\n" + t.split("\n", 2)[2],
         r"4_21_1k.csv: line \d+, column 'user_id': expected a user_id of user_features_1k.csv"),
    ]  # fmt: skip
    for name, change, message in cases:
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(official, src)
        edit(src / name, change)
        with pytest.raises(DataError, match=message) as err:
            loader.prepare("kuairand-1k", src, tmp_path / "cache", log=lambda m: None)
        assert "\n" not in str(err.value)
        assert not (tmp_path / "cache").exists()


def test_labels_outside_0_1_and_missing_files(tmp_path, official):
    merged = tmp_path / "m" / "kuairand.csv"
    merged.parent.mkdir()
    lines = SAMPLE.read_text().split("\n")
    lines[3] = lines[3].replace(",0,", ",3,", 1)  # the is_click column
    merged.write_text("\n".join(lines))
    with pytest.raises(
        DataError, match=r"kuairand.csv: line 4, column 'is_click': expected 0 or 1, got 3"
    ):
        loader.prepare("kuairand-1k", merged.parent, tmp_path / "c", log=lambda m: None)
    (official / "video_features_basic_1k.csv").unlink()
    with pytest.raises(DataError, match=r"lacks video_features_basic_1k.csv: download KuaiRand-1K"):
        loader.prepare("kuairand-1k", official, tmp_path / "c", log=lambda m: None)
    with pytest.raises(DataError, match=r"no prepared data in .*kuairand.com"):
        loader.load("kuairand-pure", {"data_dir": str(tmp_path / "none")})
