"""Bootstrap intervals of the test AUC: properties and a slow reference."""

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from mssbench.metrics import evaluate
from mssbench.metrics.intervals import (
    CI_HIGH,
    CI_LOW,
    auc_intervals,
    bootstrap_weights,
    weighted_auc,
)
from mssbench.testing import make_schema


@st.composite
def cells(draw, max_rows=30):
    n = draw(st.integers(2, max_rows))
    scores = draw(
        st.lists(st.sampled_from([-1.0, 0.0, 0.5, 0.5, 1.0, 2.0]), min_size=n, max_size=n)
    )
    labels = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    groups = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    return np.array(scores), np.array(labels), np.unique(groups, return_inverse=True)[1]


def _reference(scores, labels, units, weights):
    """One sklearn call per resample, rows weighted by their unit's draw count."""
    out = []
    for w in weights:
        row_w = w[units]
        y = labels[row_w > 0]
        if len(set(y)) < 2:
            out.append(math.nan)
        else:
            out.append(roc_auc_score(labels, scores, sample_weight=row_w))
    return np.array(out)


@settings(max_examples=100, deadline=None)
@given(cells(), st.integers(0, 2**32 - 1))
def test_weighted_auc_matches_one_sklearn_call_per_resample(cell, seed):
    scores, labels, units = cell
    weights = bootstrap_weights(int(units.max()) + 1, 20, np.random.default_rng(seed))
    fast = weighted_auc(scores, labels, units, weights)
    np.testing.assert_allclose(fast, _reference(scores, labels, units, weights), equal_nan=True)


def _toy(n, seed, n_scen=2):
    g = torch.Generator().manual_seed(seed)
    groups = torch.arange(n) // 4  # pages of 4 rows
    scenario = groups % n_scen
    ctr = (torch.rand(n, generator=g) < 0.4).long()
    labels = torch.stack([ctr, ctr * (torch.rand(n, generator=g) < 0.5).long()], 1)
    logits = torch.randn(n, 2, generator=g, dtype=torch.float64) + labels
    return logits, labels, scenario, groups


@settings(max_examples=25, deadline=None)
@given(st.integers(8, 200), st.integers(0, 1000))
def test_interval_contains_the_reported_auc(n, seed):
    logits, labels, scenario, groups = _toy(n, seed)
    schema = make_schema(n_scenarios=2)
    ci = auc_intervals(logits, labels, scenario, schema, groups, n_resamples=50, seed=seed)
    point = evaluate(logits, labels, scenario, schema)
    point = point[point["metric"] == "auc"].set_index(["scenario", "task"])["value"]
    wide = ci.pivot_table(index=["scenario", "task"], columns="metric", values="value")
    for key, value in point.items():
        if key not in wide.index:  # conditional tasks and macro have no interval
            continue
        low, high = wide.loc[key, CI_LOW], wide.loc[key, CI_HIGH]
        if math.isnan(value):
            assert math.isnan(low) and math.isnan(high)
        else:
            assert low <= value <= high


def test_interval_shrinks_with_more_rows():
    schema = make_schema(n_scenarios=2)
    widths = []
    for n in (400, 1600, 6400):
        logits, labels, scenario, groups = _toy(n, seed=1)
        ci = auc_intervals(logits, labels, scenario, schema, groups, n_resamples=300, seed=0)
        cell = ci[(ci["scenario"] == "pooled") & (ci["task"] == "ctr")].set_index("metric")
        widths.append(cell.loc[CI_HIGH, "value"] - cell.loc[CI_LOW, "value"])
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.4 * widths[0]  # about 1/sqrt(n): a quarter of the first


def test_resampling_pages_widens_the_interval_when_pages_share_their_labels():
    # Rows of a page share one label and one score: resampling rows treats them as
    # independent and understates the spread.
    rng = np.random.default_rng(0)
    pages = np.repeat(np.arange(200), 10)
    y_page = rng.random(200) < 0.4
    s_page = rng.normal(size=200) + y_page
    logits = torch.from_numpy(np.stack([s_page[pages]] * 2, 1))
    y = torch.from_numpy(np.stack([y_page[pages]] * 2, 1).astype(np.int64))
    scen = torch.zeros(len(pages), dtype=torch.long)
    schema = make_schema(n_scenarios=1)

    def width(groups):
        ci = auc_intervals(logits, y, scen, schema, groups, n_resamples=300, seed=0)
        cell = ci[(ci["scenario"] == "pooled") & (ci["task"] == "ctr")].set_index("metric")
        return cell.loc[CI_HIGH, "value"] - cell.loc[CI_LOW, "value"]

    assert width(torch.from_numpy(pages)) > 2 * width(None)


def test_reason_states_level_resamples_and_unit():
    logits, labels, scenario, groups = _toy(64, seed=0)
    ci = auc_intervals(
        logits, labels, scenario, make_schema(n_scenarios=2), groups, n_resamples=40, level=0.9
    )
    assert set(ci["metric"]) == {CI_LOW, CI_HIGH}
    assert "90% percentile bootstrap interval, 40 resamples of groups" in set(ci["reason"])


def test_the_terminal_table_states_the_interval_method_once():
    import pandas as pd

    from mssbench.metrics import metrics_table

    logits, labels, scenario, groups = _toy(64, seed=0)
    schema = make_schema(n_scenarios=2)
    df = evaluate(logits, labels, scenario, schema)
    ci = auc_intervals(logits, labels, scenario, schema, groups, n_resamples=40)
    text = metrics_table(pd.concat([df, ci], ignore_index=True))
    method = [line for line in text.splitlines() if "bootstrap interval" in line]
    assert method == [f"note: {CI_LOW}, {CI_HIGH} ({len(ci)} cells): {ci['reason'].iloc[0]}"]
