"""The notebook API: load_runs, load_results' run columns, load_aggregated as the pages show it."""

import json
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mssbench.leaderboard import Defaults
from mssbench.plugins import load_registry
from mssbench.results import (
    RESULT_COLUMNS,
    RUN_COLUMNS,
    RUN_LABEL_COLUMNS,
    flatten,
    load_aggregated,
    load_results,
    load_runs,
)

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "leaderboards" / "runs"  # the committed records behind the published pages


@pytest.fixture(scope="module")
def defaults():
    return Defaults.from_registry(load_registry())


@pytest.fixture(scope="module")
def runs(defaults):
    return load_runs(RUNS, defaults)


def _page_variants():
    """``{record path relative to RUNS: variant}`` from every committed page's results.csv."""
    out = {}
    for csv in sorted((ROOT / "leaderboards").glob("*/*/results.csv")):
        frame = pd.read_csv(csv, usecols=["record", "variant"]).drop_duplicates()
        out.update(dict(zip(frame.record, frame.variant)))
    return out


def test_one_row_per_run_with_page_keys_and_flat_config(runs):
    files = sorted(RUNS.rglob("*.json"))
    assert len(runs) == len(files) and runs.path.is_unique
    assert list(runs.columns[: len(RUN_COLUMNS)]) == RUN_COLUMNS
    first = json.loads(files[0].read_text())
    row = runs.set_index("path").loc[str(files[0])]
    assert row["config.seed"] == first["config"]["seed"]
    for name, value in first["config"]["params"].items():
        expected = json.dumps(value, sort_keys=True) if isinstance(value, list) else value
        assert row[f"config.params.{name}"] == expected
    assert row["protocol_id"] == first["protocol"]["id"]
    for key, value in first["test"]["summary"].items():
        assert row[f"test.{key}"] == pytest.approx(value)


def test_variant_labels_match_the_published_pages(runs):
    published = _page_variants()
    current = runs[~runs.superseded]
    assert len(current) == len(published)
    for path, variant in zip(current.path, current.variant):
        assert published[Path(path).relative_to(RUNS).as_posix()] == variant


def test_superseded_versions_are_marked_and_left_out_of_the_aggregate(runs, defaults):
    old = runs[runs.superseded]
    assert len(old) and old.variant.isna().all()
    for _, run in old.iterrows():  # a newer version of the same model is on the same page
        page = runs[(runs.protocol_id == run.protocol_id) & (runs.model == run.model)]
        assert page.model_version.max() > run.model_version
    agg = load_aggregated(RUNS, defaults)
    assert set(agg.variant) == set(runs[~runs.superseded].variant)
    pooled = agg[(agg.metric == "auc") & (agg.scenario == "pooled")]
    assert not pooled.duplicated(["protocol_id", "dataset_version", "variant", "task"]).any()
    seeds = runs[~runs.superseded].groupby(["protocol_id", "variant"]).seed.nunique()
    got = pooled.groupby(["protocol_id", "variant"]).n_seeds.max()
    assert got.sort_index().tolist() == seeds.sort_index().tolist()


def test_load_results_has_the_run_columns(defaults):
    df = load_results(RUNS, defaults)
    assert list(df.columns) == RESULT_COLUMNS + RUN_LABEL_COLUMNS
    assert set(df["head"].unique()) == {"direct", "esmm"}
    # The docstring's example: one value per page, variant and task, averaged over seeds only.
    auc = df[(df.metric == "auc") & (df.scenario == "pooled") & ~df.superseded]
    table = auc.pivot_table(
        index=["dataset", "protocol_id", "dataset_version", "variant"],
        columns="task",
        values="value",
    )
    assert table.index.is_unique
    assert len(table) == len(load_aggregated(RUNS, defaults).groupby(["protocol_id", "variant"]))


def test_empty_directory(tmp_path, defaults):
    runs = load_runs(tmp_path, defaults)
    assert runs.empty and list(runs.columns) == RUN_COLUMNS
    assert load_aggregated(tmp_path, defaults).empty


leaves = st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.none())
trees = st.recursive(
    leaves | st.lists(leaves, max_size=3),
    lambda inner: st.dictionaries(st.text("abc_", min_size=1, max_size=4), inner, max_size=3),
    max_leaves=12,
)


@given(st.dictionaries(st.text("xyz", min_size=1, max_size=3), trees, max_size=4))
def test_flatten_keeps_every_leaf_once(tree):
    flat = flatten(tree)

    def expected(node, prefix):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict) and value:
                yield from expected(value, f"{name}.")
            elif isinstance(value, (list, dict)):
                yield name, json.dumps(value, sort_keys=True)
            else:
                yield name, value

    pairs = list(expected(tree, ""))
    assert flat == dict(pairs)
    assert all(not isinstance(v, (list, dict)) for v in flat.values())


def test_analysis_doc_runs_and_draws_its_plot(tmp_path, monkeypatch):
    """Every python block of docs/analysis.md runs, in order, on the committed records."""
    import re

    import numpy as np

    text = (ROOT / "docs" / "analysis.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 3
    monkeypatch.chdir(ROOT)
    namespace = {"np": np, "OUTPUT": str(tmp_path / "lift.png"), "print": lambda *a: None}
    for block in blocks:
        exec(block, namespace)
    assert (tmp_path / "lift.png").stat().st_size > 10_000
    assert "single_task" not in namespace["lift"].index and "pooled" in namespace["lift"].columns
    assert (ROOT / "docs" / "analysis-lift.png").exists()  # the committed figure the doc shows
