"""KuaiRand-Pure and KuaiRand-1K: prepare the logs with user and video features, load by date.

Layouts (README.md has the columns):

* ``kuairand``: the official files, ``log_standard_4_08_to_4_21_{pure,1k}.csv`` and
  ``log_standard_4_22_to_5_08_{pure,1k}.csv`` (the standard logs), ``user_features_*.csv`` and
  ``video_features_basic_*.csv``; protocol ``standard``: tasks ``is_click``, ``is_like``,
  ``long_view``; split by date (test = the last 7 days, valid = the 3 days before);
* ``scenario-wise-rec``: the merged CSV of Scenario-Wise-Rec's ``load_data_1k.py`` (42
  columns; no date, no ``is_like``); protocol ``swr``: tasks ``is_click`` and ``long_view``;
  split by a stable hash of (user, video).

In both, scenario = ``tab`` (the tabs 0, 1, 2, 4, 6 that Scenario-Wise-Rec keeps; rows of other
tabs are dropped and counted) and ``long_view`` = play time >= min(duration, 18 s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import pandas as pd

from mssbench.data import (
    CacheWriter,
    TabularLayout,
    dataset_dir,
    file_facts,
    find_file,
    hash_split,
    iter_csv,
    read_cache,
    read_csv,
    split_columns,
    tabular_dataset,
    time_split,
)
from mssbench.errors import DataError
from mssbench.spec import LoadedDataset, Protocol, Task
from mssbench_kuairand.meta import KUAIRAND_URL, TITLES

CACHE_FORMAT = "mssbench-kuairand"
CACHE_VERSION = 1
PROTOCOL_VERSION = 1
TABS = {0: "tab0", 1: "tab1", 2: "tab2", 4: "tab4", 6: "tab6"}
#: long_view = 1 when play_time_ms >= min(duration_ms, LONG_VIEW_MS) (KuaiRand's definition).
LONG_VIEW_MS = 18_000
#: Dates (YYYYMMDD) of the standard protocol: valid from VALID_START, test from TEST_START.
VALID_START, TEST_START = 20220429, 20220502
SALT = 2022

USER_CATEGORICAL = (
    "user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author",
    "follow_user_num_range", "fans_user_num_range", "friend_user_num_range",
    "register_days_range", *(f"onehot_feat{i}" for i in range(18)),
)  # fmt: skip
VIDEO_CATEGORICAL = ("video_type", "visible_status", "server_width", "server_height")
CATEGORICAL = ("user_id", "video_id", *USER_CATEGORICAL, *VIDEO_CATEGORICAL)
USER_NUMERIC = ("follow_user_num", "fans_user_num", "friend_user_num", "register_days")
#: Numerics are log1p(count), then min-max scaled with the train range.
NUMERIC = (*USER_NUMERIC, "duration_ms")
TASKS = {
    "standard": (Task("is_click", "is_click"), Task("is_like", "is_like"),
                 Task("long_view", "long_view")),
    "swr": (Task("is_click", "is_click"), Task("long_view", "long_view")),
}  # fmt: skip
SPLIT_RULES = {
    "standard": f"standard logs 2022-04-08..05-08 by date: test = dates >= {TEST_START} (7 days), "
    f"valid = {VALID_START}..{TEST_START - 1} (3 days), train = the earlier days; tabs "
    "0,1,2,4,6; long_view = play_time_ms >= min(duration_ms, 18000); vocabularies and scalers "
    "from train, unseen ids -> 0",
    "swr": "Scenario-Wise-Rec merged file (no dates): valid/test = 10%/10% of the (user, video) "
    f"pairs by a stable hash (salt {SALT}); tabs 0,1,2,4,6; long_view = play_time_ms >= "
    "min(duration_ms, 18000); vocabularies and scalers from train, unseen ids -> 0",
}
LAYOUTS = {"kuairand": "standard", "scenario-wise-rec": "swr"}
MERGED_NAMES = ("kuairand.csv", "kuairand_sample.csv", "kuairand_1k.csv", "kuairand_pure.csv")


def protocol(dataset: str, name: str) -> Protocol:
    """The protocol ``name`` (``standard`` or ``swr``) of ``dataset``."""
    return Protocol(dataset, name, PROTOCOL_VERSION, tuple(TABS.values()), SPLIT_RULES[name])


def missing_message(dataset: str) -> str:
    """What to download and run when nothing is prepared."""
    return (
        f"download {TITLES[dataset]} from "
        f"{KUAIRAND_URL} (CC BY-SA 4.0), extract it into a directory DIR and run: "
        f"mssbench data prepare {dataset} --source DIR"
    )


def _codes(values: np.ndarray) -> np.ndarray:
    """A stable int64 code of each value read as text (pandas' fixed-key SipHash).

    Codes depend on the text alone, so blocks of a file and both layouts code a value alike;
    the vocabularies fitted at load time turn them into dense ids.
    """
    return pd.util.hash_array(np.asarray(values).astype(str).astype(object)).view(np.int64)


def _labels(t: Any, has_like: bool) -> dict[str, np.ndarray]:
    t.check_binary("is_click", *(("is_like",) if has_like else ()))
    t.check_range("play_time_ms", 0, 2**62)
    t.check_range("duration_ms", 0, 2**62)
    out = {
        "is_click": t["is_click"].astype(np.int8),
        "long_view": (t["play_time_ms"] >= np.minimum(t["duration_ms"], LONG_VIEW_MS)).astype(
            np.int8
        ),
    }
    if has_like:
        out["is_like"] = t["is_like"].astype(np.int8)
    return out


_LOG = {"user_id": "int", "video_id": "int", "date": "int", "is_click": "int", "is_like": "int",
        "long_view": "int", "play_time_ms": "int", "duration_ms": "int", "tab": "int"}  # fmt: skip


def _join(log: Any, key: str, table: Any, what: str) -> np.ndarray:
    ids = table[key]
    order = np.argsort(ids, kind="stable")
    pos = np.clip(np.searchsorted(ids[order], log[key]), 0, len(ids) - 1)
    log.check(key, ids[order][pos] == log[key], f"a {key} of {what}")
    return order[pos]


def _official_blocks(files: Mapping[str, Path]) -> Iterator[dict[str, np.ndarray]]:
    """Blocks of the two standard logs, each row joined to its user's and video's features."""
    users = read_csv(files["users"], {"user_id": "int", **{c: "str" for c in USER_CATEGORICAL},
                                      **{c: "float" for c in USER_NUMERIC}})  # fmt: skip
    videos = read_csv(files["videos"], {"video_id": "int", **{c: "str" for c in VIDEO_CATEGORICAL}})
    user_codes = {c: _codes(users[c]) for c in USER_CATEGORICAL}
    video_codes = {c: _codes(videos[c]) for c in VIDEO_CATEGORICAL}
    for key in ("log_early", "log_late"):
        for log in iter_csv(files[key], _LOG):
            log.check_range("date", 20220408, 20220508)
            log.check_binary("long_view")
            u = _join(log, "user_id", users, files["users"].name)
            v = _join(log, "video_id", videos, files["videos"].name)
            yield {
                "user_id": log["user_id"], "video_id": log["video_id"], "tab": log["tab"],
                "date": log["date"], **_labels(log, has_like=True),
                "long_view_in_log": log["long_view"],
                **{c: user_codes[c][u] for c in USER_CATEGORICAL},
                **{c: video_codes[c][v] for c in VIDEO_CATEGORICAL},
                **{c: users[c][u] for c in USER_NUMERIC}, "duration_ms": log["duration_ms"],
            }  # fmt: skip


def _merged_blocks(files: Mapping[str, Path]) -> Iterator[dict[str, np.ndarray]]:
    """Blocks of Scenario-Wise-Rec's merged file."""
    cols = {"user_id": "int", "video_id": "int", "is_click": "int", "play_time_ms": "int",
            "duration_ms": "int", "tab": "int", **{c: "str" for c in USER_CATEGORICAL},
            **{c: "str" for c in VIDEO_CATEGORICAL},
            **{c: "float" for c in USER_NUMERIC}}  # fmt: skip
    for t in iter_csv(files["merged"], cols):
        yield {
            "user_id": t["user_id"], "video_id": t["video_id"], "tab": t["tab"],
            **_labels(t, has_like=False),
            **{c: _codes(t[c]) for c in (*USER_CATEGORICAL, *VIDEO_CATEGORICAL)},
            **{c: t[c] for c in USER_NUMERIC}, "duration_ms": t["duration_ms"],
        }  # fmt: skip


def _cache_columns(layout: str) -> dict[str, tuple[Any, tuple[int, ...]]]:
    """The cached columns of a layout with their dtypes (one value per row)."""
    labels = [t.label for t in TASKS[LAYOUTS[layout]]]
    ints = ["user_id", "video_id", "tab", *(["date"] if layout == "kuairand" else []),
            *USER_CATEGORICAL, *VIDEO_CATEGORICAL, "duration_ms"]  # fmt: skip
    return {
        **{c: (np.int64, ()) for c in ints},
        **{c: (np.int8, ()) for c in labels},
        **{c: (np.float64, ()) for c in USER_NUMERIC},
    }


def detect_layout(dataset: str, source: Path) -> tuple[str, dict[str, Path]]:
    """The layout under ``source`` and its files (DataError naming what is missing)."""
    suffix = "pure" if dataset == "kuairand-pure" else "1k"
    roles = {
        "log_early": f"log_standard_4_08_to_4_21_{suffix}.csv",
        "log_late": f"log_standard_4_22_to_5_08_{suffix}.csv",
        "users": f"user_features_{suffix}.csv",
        "videos": f"video_features_basic_{suffix}.csv",
    }
    found = {role: find_file(source, [name]) for role, name in roles.items()}
    if all(found.values()):
        return "kuairand", found  # type: ignore[return-value]
    merged = find_file(source, MERGED_NAMES)
    if merged is not None:
        return "scenario-wise-rec", {"merged": merged}
    if any(found.values()):
        lacking = ", ".join(roles[r] for r, p in found.items() if p is None)
        raise DataError(f"{dataset}: {source} lacks {lacking}: {missing_message(dataset)}")
    raise DataError(f"{dataset}: no KuaiRand files in {source}: {missing_message(dataset)}")


def prepare(
    dataset: str, source: Path, dest: Path, log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Read the KuaiRand files under ``source`` into the cache at ``dest``.

    Returns:
        One summary row: rows kept, rows of other tabs dropped, positives per label.

    Raises:
        DataError: No or incomplete files, wrong columns, labels outside {0, 1}, dates outside
            the logs' period, a log row whose user or video has no features, a truncated file.
    """
    layout, files = detect_layout(dataset, Path(source))
    log(f"{dataset}: reading the {layout} layout: {', '.join(str(p) for p in files.values())}")
    columns = _cache_columns(layout)
    labels = [t.label for t in TASKS[LAYOUTS[layout]]]
    counts = {"rows": 0, "dropped_other_tabs": 0, **{f"{n} positives": 0 for n in labels},
              **{name: 0 for name in TABS.values()}}  # fmt: skip
    disagree = 0
    blocks = _official_blocks(files) if layout == "kuairand" else _merged_blocks(files)
    with CacheWriter(dest, {"all": columns}, cache_format=CACHE_FORMAT,
                     version=CACHE_VERSION) as cache:  # fmt: skip
        for block in blocks:
            keep = np.isin(block["tab"], list(TABS))
            if "long_view_in_log" in block:
                disagree += int((block.pop("long_view_in_log") != block["long_view"]).sum())
            cache.append("all", {c: block[c][keep] for c in columns})
            counts["rows"] += int(keep.sum())
            counts["dropped_other_tabs"] += int((~keep).sum())
            for n in labels:
                counts[f"{n} positives"] += int(block[n][keep].sum())
            for k, name in TABS.items():
                counts[name] += int((block["tab"] == k).sum())
        inputs = [{**file_facts(p), "path": str(p.resolve())} for p in files.values()]
        meta = {"dataset": dataset, "layout": layout, "counts": counts, "inputs": inputs}
        if layout == "kuairand":
            meta["long_view_disagreements"] = disagree
        cache.finish(meta)
    return [{"dataset": dataset, "layout": layout, **counts}]


def split_codes(name: str, cols: Mapping[str, np.ndarray]) -> np.ndarray:
    """The split code (0 train, 1 valid, 2 test) of each cached row under protocol ``name``."""
    if name == "standard":
        return time_split(cols["date"], VALID_START, TEST_START)
    return hash_split(cols["user_id"] * 1_000_003 + cols["video_id"], 0.1, 0.1, SALT)


def load(dataset: str, options: Mapping[str, Any]) -> LoadedDataset:
    """Load the prepared ``dataset`` under its layout's protocol.

    Raises:
        DataError: Nothing prepared (the message says what to download and run).
    """
    data_dir = dataset_dir(dataset, str(options.get("data_dir", "") or "") or None)
    manifest, arrays = read_cache(data_dir, cache_format=CACHE_FORMAT, version=CACHE_VERSION,
                                  missing=missing_message(dataset))  # fmt: skip
    if manifest.get("dataset") != dataset:
        raise DataError(f"{dataset}: {data_dir} holds {manifest.get('dataset')}, not {dataset}")
    name = LAYOUTS[manifest["layout"]]
    cols = {k: np.asarray(v) for k, v in arrays["all"].items()}
    for c in NUMERIC:
        cols[c] = np.log1p(np.maximum(cols[c].astype(np.float64), 0.0))
    codes = split_codes(name, cols)
    layout = TabularLayout(
        categorical=CATEGORICAL, numeric=NUMERIC, scenario="tab", scenarios=TABS,
        tasks=TASKS[name], group="user_id",
    )  # fmt: skip
    info = {"cache": str(data_dir), "prepared": manifest["created"],
            "layout": manifest["layout"], "inputs": manifest["inputs"]}  # fmt: skip
    return tabular_dataset(split_columns(cols, codes), layout, protocol(dataset, name), info)
