"""GAUC and NDCG@k against slow reference implementations, and their wiring into evaluate()."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mssbench_metrics.metrics import gauc, ndcg_at
from sklearn.metrics import roc_auc_score

from mssbench.metrics import conditional_logit, evaluate
from mssbench.plugins import load_registry
from mssbench.testing import check_metric, make_schema


@st.composite
def grouped_cells(draw, max_rows=40):
    n = draw(st.integers(1, max_rows))
    scores = draw(
        st.lists(st.sampled_from([-1.0, -0.5, 0.0, 0.3, 0.3, 1.0, 2.0]), min_size=n, max_size=n)
    )
    labels = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    groups = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    return (
        torch.tensor(scores, dtype=torch.float64),
        torch.tensor(labels, dtype=torch.int64),
        torch.tensor(groups, dtype=torch.int64) * 1000 - 7,  # any integer ids
    )


def gauc_reference(s, y, g):
    num = den = 0.0
    skipped = 0
    for gid in np.unique(g):
        m = g == gid
        if y[m].min() == y[m].max():
            skipped += 1
            continue
        num += m.sum() * roc_auc_score(y[m], s[m])
        den += m.sum()
    return (num / den if den else math.nan), skipped


def ndcg_reference(s, y, g, k):
    """Expected NDCG over random tie orders, by enumerating the rows in score order."""
    values = []
    for gid in np.unique(g):
        m = g == gid
        ss, yy = s[m], y[m].astype(float)
        if yy.sum() == 0:
            continue
        dcg = 0.0
        pos = 0
        for v in sorted(set(ss), reverse=True):
            tie = ss == v
            mean_gain = yy[tie].mean()
            for _ in range(tie.sum()):
                if pos < k:
                    dcg += mean_gain / math.log2(pos + 2)
                pos += 1
        ideal = sum(1 / math.log2(i + 2) for i in range(min(k, int(yy.sum()))))
        values.append(dcg / ideal)
    return float(np.mean(values)) if values else math.nan


def _same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(grouped_cells())
def test_gauc_matches_reference(cell):
    s, y, g = cell
    value, note = gauc(s, y, g)
    ref, skipped = gauc_reference(s.numpy(), y.numpy(), g.numpy())
    assert _same(value, ref)
    assert (f"{skipped} of {len(np.unique(g.numpy()))} groups left out" in note) == bool(skipped)


@settings(max_examples=150, deadline=None)
@given(grouped_cells(), st.integers(1, 6))
def test_ndcg_matches_reference(cell, k):
    s, y, g = cell
    assert _same(ndcg_at(k)(s, y, g), ndcg_reference(s.numpy(), y.numpy(), g.numpy(), k))


@settings(max_examples=50, deadline=None)
@given(grouped_cells(), st.randoms())
def test_grouped_metrics_do_not_depend_on_row_order(cell, rnd):
    s, y, g = cell
    perm = list(range(len(s)))
    rnd.shuffle(perm)
    assert _same(gauc(s, y, g)[0], gauc(s[perm], y[perm], g[perm])[0])
    assert _same(ndcg_at(3)(s, y, g), ndcg_at(3)(s[perm], y[perm], g[perm]))


def test_perfect_ranking_gives_one_and_gauc_counts_single_class_groups():
    y = torch.tensor([1, 0, 0, 1, 0, 0, 0])
    g = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    s = y.double() + 0.01 * torch.arange(7)
    value, note = gauc(s, y, g)
    assert value == 1.0 and note == "1 of 3 groups left out (one class only)"
    assert ndcg_at(1)(s, y, g) == 1.0


@pytest.mark.parametrize("name", ["gauc", "ndcg_10"])
def test_grouped_builtin_metrics_pass_the_checks(name):
    check_metric(load_registry().metric(name))


def test_evaluate_passes_each_cell_its_groups():
    spec = load_registry().metric("gauc")
    schema = make_schema(n_scenarios=2)  # tasks ctr, ctcvr
    rng = np.random.default_rng(0)
    n = 400
    groups = torch.from_numpy(rng.integers(0, 40, n))
    scen = (groups % 2).long()  # a page lies in one scenario
    ctr = torch.from_numpy(rng.integers(0, 2, n))
    labels = torch.stack([ctr, ctr * torch.from_numpy(rng.integers(0, 2, n))], 1)
    logits = torch.from_numpy(rng.normal(size=(n, 2))) + labels
    df = evaluate(logits, labels, scen, schema, [spec], groups=groups).set_index(
        ["scenario", "task", "metric"]
    )
    for s, name in enumerate(schema.scenarios):
        m = scen == s
        expected = gauc(logits[m, 0], labels[m, 0], groups[m])[0]
        assert df.loc[(name, "ctr", "gauc"), "value"] == pytest.approx(expected)
    clicked = labels[:, 0] == 1  # the conditional task sees the clicked rows' groups
    assert df.loc[("pooled", "cvr", "gauc"), "value"] == pytest.approx(
        gauc(
            conditional_logit(logits[clicked, 1], logits[clicked, 0]),
            labels[clicked, 1],
            groups[clicked],
        )[0]
    )
    no_groups = evaluate(logits, labels, scen, schema, [spec]).set_index(
        ["scenario", "task", "metric"]
    )
    cell = no_groups.loc[("pooled", "ctr", "gauc")]
    assert math.isnan(cell["value"]) and "declares none" in cell["reason"]
