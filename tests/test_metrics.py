"""Tests of mssbench.metrics: grouped AUC / log loss, conditional logits, evaluate and reports."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mssbench.metrics import (
    conditional_logit,
    evaluate,
    grouped_auc,
    grouped_logloss,
    metrics_table,
    summary,
)
from mssbench.metrics import core as metrics_core
from mssbench.spec import DatasetSchema, Implies, Task

NAN = math.nan

# Score values with many ties. The float64 set is not representable in float32, which sends
# grouped_auc down its dense-rank path; the float32 set takes the packed-key path.
VALUES_F32 = (-2.0, -0.5, 0.0, 0.25, 1.0, 3.0)
VALUES_F64 = (-1 / 3, 0.1, 0.1 + 2**-40, 0.7, 1e-300, 5.0)


# --------------------------------------------------------------------------------------------
# References and helpers
# --------------------------------------------------------------------------------------------


def reference_auc(scores, labels, groups, n_groups):
    """Pairwise O(n^2) AUC per group, 1/2 per tie; NaN without both classes."""
    out = []
    for k in range(n_groups):
        pos = [s for s, y, g in zip(scores, labels, groups, strict=True) if g == k and y == 1]
        neg = [s for s, y, g in zip(scores, labels, groups, strict=True) if g == k and y == 0]
        if not pos or not neg:
            out.append(NAN)
            continue
        wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
        out.append(wins / (len(pos) * len(neg)))
    return out


def softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def bce(z: float, y: int) -> float:
    """Binary cross-entropy of one logit, computed independently of the library."""
    return softplus(-z) if y == 1 else softplus(z)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def assert_same(actual: torch.Tensor, expected, atol: float = 1e-12) -> None:
    expected = torch.as_tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(actual.double().cpu(), expected, rtol=0.0, atol=atol, equal_nan=True)


@st.composite
def grouped_data(draw, values=VALUES_F32, max_rows=40, max_groups=4):
    n_groups = draw(st.integers(1, max_groups))
    n = draw(st.integers(0, max_rows))
    scores = draw(st.lists(st.sampled_from(values), min_size=n, max_size=n))
    labels = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    groups = draw(st.lists(st.integers(0, n_groups - 1), min_size=n, max_size=n))
    return scores, labels, groups, n_groups


def tensors(scores, labels, groups, dtype=torch.float64):
    return (
        torch.tensor(scores, dtype=dtype),
        torch.tensor(labels, dtype=torch.float32),
        torch.tensor(groups, dtype=torch.int64),
    )


SCHEMA = DatasetSchema(
    categorical=(),
    numeric=(),
    scenario_field="domain",
    scenarios=("a", "b", "c"),
    tasks=(Task("ctr", "click"), Task("ctcvr", "buy")),
    relations=(Implies("ctcvr", "ctr", "cvr"),),
)


@st.composite
def eval_data(draw, max_rows=40):
    """Random evaluate() inputs for SCHEMA: tied logits, ctcvr labels implying ctr labels."""
    n = draw(st.integers(0, max_rows))
    logit_values = st.sampled_from((-3.0, -1.0, 0.0, 0.5, 2.0))
    logits = draw(st.lists(st.tuples(logit_values, logit_values), min_size=n, max_size=n))
    clicks = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    buys = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    scen = draw(st.lists(st.integers(0, SCHEMA.n_scenarios - 1), min_size=n, max_size=n))
    labels = [(c, c * b) for c, b in zip(clicks, buys, strict=True)]
    return (
        torch.tensor(logits, dtype=torch.float32).reshape(n, 2),
        torch.tensor(labels, dtype=torch.float32).reshape(n, 2),
        torch.tensor(scen, dtype=torch.int64),
    )


# --------------------------------------------------------------------------------------------
# grouped_auc
# --------------------------------------------------------------------------------------------


@settings(deadline=None)
@given(data=grouped_data(values=VALUES_F32), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_grouped_auc_matches_pairwise_reference(data, dtype):
    scores, labels, groups, n_groups = data
    auc, n, n_pos = grouped_auc(*tensors(scores, labels, groups, dtype), n_groups)
    assert auc.dtype == torch.float64 and n.dtype == torch.int64 and n_pos.dtype == torch.int64
    assert auc.shape == n.shape == n_pos.shape == (n_groups,)
    assert_same(auc, reference_auc(scores, labels, groups, n_groups))
    assert n.tolist() == [groups.count(k) for k in range(n_groups)]
    assert n_pos.tolist() == [
        sum(y for y, g in zip(labels, groups, strict=True) if g == k) for k in range(n_groups)
    ]


@pytest.mark.parametrize("fraction", [-1.0, math.inf], ids=["second-sort", "searches"])
@settings(deadline=None)
@given(
    data=grouped_data(values=VALUES_F32, max_rows=60),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_grouped_auc_pooled_matches_reference_on_both_paths(fraction, data, dtype):
    """The pooled group equals the reference whether counted by searches or by a second sort."""
    scores, labels, groups, n_groups = data
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics_core, "_SEARCH_FRACTION", fraction)
        auc, n, n_pos = grouped_auc(*tensors(scores, labels, groups, dtype), n_groups, pooled=True)
    assert auc.shape == n.shape == n_pos.shape == (n_groups + 1,)
    expected = reference_auc(scores, labels, groups, n_groups)
    expected.append(reference_auc(scores, labels, [0] * len(scores), 1)[0])
    assert_same(auc, expected)
    assert n.tolist() == [groups.count(k) for k in range(n_groups)] + [len(scores)]
    assert int(n_pos[-1]) == sum(labels)


def test_grouped_auc_pooled_search_counts_from_either_class():
    """Rare positives query the negatives' runs; rare negatives query the positives' runs."""
    gen = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 50, (3000,), generator=gen).float()  # many ties
    groups = torch.randint(0, 5, (3000,), generator=gen)
    for rate in (0.02, 0.98):
        labels = (torch.rand(3000, generator=gen) < rate).long()
        assert metrics_core._pooled_by_search(3000, int(labels.sum()), 5)
        auc, _, _ = grouped_auc(scores, labels, groups, 5, pooled=True)
        expected, _, _ = grouped_auc(scores, labels, torch.zeros_like(groups), 1)
        assert_same(auc[-1:], expected)


@settings(deadline=None)
@given(data=grouped_data(values=VALUES_F64))
def test_grouped_auc_matches_reference_for_float64_only_scores(data):
    scores, labels, groups, n_groups = data
    auc, _, _ = grouped_auc(*tensors(scores, labels, groups), n_groups)
    assert_same(auc, reference_auc(scores, labels, groups, n_groups))


@settings(deadline=None)
@given(
    data=grouped_data(values=tuple(float(v) for v in range(-6, 7))),
    transform=st.sampled_from(
        [lambda x: 3 * x + 1, torch.sigmoid, torch.exp, lambda x: x**3, lambda x: x.float()]
    ),
)
def test_grouped_auc_invariant_under_monotone_transforms(data, transform):
    # Integer scores in [-6, 6]: every transform keeps them distinct and ties exact in float64.
    scores, labels, groups, n_groups = data
    s, y, g = tensors(scores, labels, groups)
    base, _, _ = grouped_auc(s, y, g, n_groups)
    moved, _, _ = grouped_auc(transform(s), y, g, n_groups)
    assert_same(moved, base, atol=0.0)


@settings(deadline=None)
@given(data=grouped_data())
def test_grouped_auc_of_flipped_labels_is_one_minus_auc(data):
    scores, labels, groups, n_groups = data
    s, y, g = tensors(scores, labels, groups)
    auc, _, _ = grouped_auc(s, y, g, n_groups)
    flipped, _, _ = grouped_auc(s, 1 - y, g, n_groups)
    assert_same(flipped, 1 - auc)


@settings(deadline=None)
@given(data=grouped_data())
def test_grouped_auc_single_class_or_empty_groups_are_nan(data):
    scores, labels, groups, n_groups = data
    auc, n, n_pos = grouped_auc(*tensors(scores, labels, groups), n_groups)
    single = (n_pos == 0) | (n_pos == n)
    assert torch.isnan(auc[single]).all()
    assert not torch.isnan(auc[~single]).any()


def test_grouped_auc_against_pandas_rank_on_larger_data():
    gen = torch.Generator().manual_seed(0)
    n, n_groups = 5000, 37
    scores = torch.randint(0, 50, (n,), generator=gen).float() / 7
    labels = (torch.rand(n, generator=gen) < 0.3).long()
    groups = torch.randint(0, n_groups, (n,), generator=gen)
    auc, _, _ = grouped_auc(scores, labels, groups, n_groups)
    frame = pd.DataFrame({"s": scores.numpy(), "y": labels.numpy(), "g": groups.numpy()})
    frame["r"] = frame.groupby("g")["s"].rank(method="average")
    stats = frame.groupby("g").agg(n=("y", "size"), p=("y", "sum"))
    rank_pos = frame[frame.y == 1].groupby("g")["r"].sum()
    u = rank_pos - stats.p * (stats.p + 1) / 2
    expected = (u / (stats.p * (stats.n - stats.p))).reindex(range(n_groups))
    np.testing.assert_allclose(auc.numpy(), expected.to_numpy(), rtol=0, atol=1e-12)


def test_grouped_auc_edge_cases():
    # -0.0 and 0.0 are one tie; NaN poisons only its own group; float16 and int scores work.
    s = torch.tensor([0.0, -0.0, 1.0, float("nan"), 2.0, 3.0])
    y = torch.tensor([1, 0, 1, 0, 1, 0])
    g = torch.tensor([0, 0, 1, 1, 2, 2])
    auc, n, n_pos = grouped_auc(s, y, g, 4)
    assert_same(auc, [0.5, NAN, 0.0, NAN])
    assert n.tolist() == [2, 2, 2, 0] and n_pos.tolist() == [1, 1, 1, 0]
    assert_same(grouped_auc(s[4:].half(), y[4:], g[4:] - 2, 1)[0], [0.0])
    assert_same(grouped_auc(torch.tensor([3, 1, 2]), torch.tensor([1, 0, 1]), g[:3] * 0, 1)[0], [1])
    empty = grouped_auc(torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.long), 2)
    assert_same(empty[0], [NAN, NAN])
    assert empty[1].tolist() == [0, 0]
    # Gradients are not needed and must not get in the way.
    assert_same(grouped_auc(s[4:].clone().requires_grad_(), y[4:], g[4:] - 2, 1)[0], [0.0])


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.zeros(3), torch.zeros(2), torch.zeros(3, dtype=torch.long), 1), "labels"),
        ((torch.zeros(3), torch.zeros(3), torch.zeros(2, dtype=torch.long), 1), "groups"),
        ((torch.zeros(3, 1), torch.zeros(3), torch.zeros(3, dtype=torch.long), 1), "scores|logits"),
        ((torch.zeros(3), torch.full((3,), 2.0), torch.zeros(3, dtype=torch.long), 1), "0 or 1"),
        ((torch.zeros(3), torch.zeros(3), torch.tensor([0, 1, 2]), 2), r"\[0, 2\)"),
        ((torch.zeros(3), torch.zeros(3), torch.tensor([0, -1, 0]), 2), r"\[0, 2\)"),
        ((torch.zeros(3), torch.zeros(3), torch.zeros(3), 1), "integer"),
        ((torch.zeros(3), torch.zeros(3), torch.zeros(3, dtype=torch.long), -1), "n_groups"),
    ],
)
def test_grouped_metrics_validate_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        grouped_auc(*args)
    with pytest.raises(ValueError, match=match):
        grouped_logloss(*args)


# --------------------------------------------------------------------------------------------
# grouped_logloss
# --------------------------------------------------------------------------------------------


@settings(deadline=None)
@given(
    data=st.lists(st.tuples(st.floats(-15, 15), st.integers(0, 1), st.integers(0, 2)), max_size=30),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_grouped_logloss_matches_direct_formula(data, dtype):
    z = torch.tensor([d[0] for d in data], dtype=dtype)
    y = torch.tensor([d[1] for d in data])
    g = torch.tensor([d[2] for d in data], dtype=torch.long)
    loss = grouped_logloss(z, y, g, 3)
    assert loss.dtype == torch.float64
    expected = []
    for k in range(3):
        zs = [float(zi) for zi, gi in zip(z, g, strict=True) if gi == k]
        ys = [int(yi) for yi, gi in zip(y, g, strict=True) if gi == k]
        terms = [
            yi * math.log(sigmoid(zi)) + (1 - yi) * math.log(1 - sigmoid(zi))
            for zi, yi in zip(zs, ys, strict=True)
        ]
        expected.append(-sum(terms) / len(terms) if terms else NAN)
    torch.testing.assert_close(
        loss, torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-9, equal_nan=True
    )


@settings(deadline=None)
@given(
    data=st.lists(st.tuples(st.sampled_from([-1000.0, 1000.0]), st.integers(0, 1)), min_size=1),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_grouped_logloss_is_finite_and_exact_for_huge_logits(data, dtype):
    z = torch.tensor([d[0] for d in data], dtype=dtype)
    y = torch.tensor([d[1] for d in data])
    loss = grouped_logloss(z, y, torch.zeros(len(data), dtype=torch.long), 1)
    wrong = sum((zi > 0) != (yi == 1) for zi, yi in data)
    assert torch.isfinite(loss).all()
    assert loss.item() == pytest.approx(1000.0 * wrong / len(data), rel=1e-12, abs=1e-12)


def test_grouped_logloss_empty_group_and_infinite_logits():
    z = torch.tensor([float("inf"), float("-inf"), float("inf")])
    y = torch.tensor([1, 0, 0])
    loss = grouped_logloss(z, y, torch.tensor([0, 0, 2]), 3)
    assert loss[0].item() == 0.0
    assert math.isnan(loss[1].item())
    assert loss[2].item() == math.inf


# --------------------------------------------------------------------------------------------
# conditional_logit
# --------------------------------------------------------------------------------------------


def esmm_child_logit(a: float, b: float) -> float:
    """Logit of sigmoid(a) * sigmoid(b), as an ESMM head outputs for CTCVR (pure Python)."""
    log_p = -softplus(-a) - softplus(-b)  # logsigmoid(a) + logsigmoid(b)
    if log_p > -math.log(2):
        return log_p - math.log(-math.expm1(log_p))
    return log_p - math.log1p(-math.exp(log_p))


@settings(deadline=None)
@given(ab=st.lists(st.tuples(st.floats(-30, 30), st.floats(-30, 30)), min_size=1, max_size=20))
def test_conditional_logit_recovers_the_esmm_cvr_tower(ab):
    a = torch.tensor([x for x, _ in ab], dtype=torch.float64)
    b = torch.tensor([y for _, y in ab], dtype=torch.float64)
    child = torch.tensor([esmm_child_logit(x, y) for x, y in ab], dtype=torch.float64)
    cvr = conditional_logit(child, a)
    assert cvr.dtype == torch.float64
    # Equal up to the 1 - 1e-7 cap on conditional probabilities.
    torch.testing.assert_close(torch.sigmoid(cvr), torch.sigmoid(b), rtol=0, atol=1.01e-7)
    assert cvr.max() <= 16.2
    moderate = (a.abs() < 8) & (b.abs() < 8)
    torch.testing.assert_close(cvr[moderate], b[moderate], rtol=0, atol=1e-6)


@pytest.mark.parametrize("x", [-1e-300, -1e-12, -0.3, -math.log(2), -0.9, -5.0, -40.0, -700.0])
def test_log1mexp_is_accurate_on_both_branches(x):
    from mssbench.nn import log1mexp

    expected = math.log(-math.expm1(x)) if x > -0.5 else math.log1p(-math.exp(x))
    got = log1mexp(torch.tensor(x, dtype=torch.float64)).item()
    assert got == pytest.approx(expected, rel=1e-12, abs=0)


@settings(deadline=None)
@given(
    child=st.lists(st.floats(-100, 100), min_size=1, max_size=10),
    parent=st.floats(-100, 100),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_conditional_logit_is_finite(child, parent, dtype):
    out = conditional_logit(torch.tensor(child, dtype=dtype), torch.tensor(parent, dtype=dtype))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_conditional_logit_is_finite_at_the_extremes(dtype):
    pairs = list(itertools.product([-100.0, -1e-3, 0.0, 1e-3, 100.0], repeat=2))
    child = torch.tensor([c for c, _ in pairs], dtype=dtype)
    parent = torch.tensor([p for _, p in pairs], dtype=dtype)
    out = conditional_logit(child, parent)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.isfinite(out).all()
    # child == parent: P(child) / P(parent) = 1, clamped just below.
    assert (out[child == parent] > 10).all()


# --------------------------------------------------------------------------------------------
# evaluate(): a hand-computed example
# --------------------------------------------------------------------------------------------

# Two scenarios, rows given as (scenario, ctr logit, ctcvr logit, ctr label, ctcvr label).
HAND_ROWS = [
    (0, 2.0, 1.0, 1, 1),  # r0
    (1, 0.5, -1.0, 1, 0),  # r4
    (0, 1.0, 3.0, 0, 0),  # r1: parent negative with the highest child logit
    (1, -0.5, -1.0, 0, 0),  # r5
    (0, 0.0, -2.0, 1, 0),  # r2
    (1, 0.5, 0.0, 1, 0),  # r6
    (0, -1.0, -3.0, 1, 1),  # r3
]
HAND_SCHEMA = DatasetSchema(
    categorical=(),
    numeric=(),
    scenario_field="domain",
    scenarios=("a", "b"),
    tasks=(Task("ctr", "click"), Task("ctcvr", "buy")),
    relations=(Implies("ctcvr", "ctr", "cvr"),),
)


def hand_inputs():
    logits = torch.tensor([[r[1], r[2]] for r in HAND_ROWS])
    labels = torch.tensor([[r[3], r[4]] for r in HAND_ROWS], dtype=torch.float32)
    scenario = torch.tensor([r[0] for r in HAND_ROWS])
    return logits, labels, scenario


def q(child: float, parent: float) -> float:
    """P(child) / P(parent) from logits."""
    return sigmoid(child) / sigmoid(parent)


def mean(xs):
    return sum(xs) / len(xs)


def test_evaluate_hand_computed_example():
    df = evaluate(*hand_inputs(), HAND_SCHEMA)
    assert list(df.columns) == ["scenario", "task", "metric", "value", "n", "n_pos", "reason"]

    # Logloss by hand: bce(z, y) per row. cvr rows use q = P(ctcvr) / P(ctr) on parent
    # positives only: a -> r0 (label 1), r2 (0), r3 (1); b -> r4 (0), r6 (0).
    ll = {
        ("a", "ctr"): mean([bce(2, 1), bce(1, 0), bce(0, 1), bce(-1, 1)]),
        ("a", "ctcvr"): mean([bce(1, 1), bce(3, 0), bce(-2, 0), bce(-3, 1)]),
        ("a", "cvr"): -mean([math.log(q(1, 2)), math.log(1 - q(-2, 0)), math.log(q(-3, -1))]),
        ("b", "ctr"): bce(0.5, 1),  # all three rows lose softplus(-0.5)
        ("b", "ctcvr"): mean([bce(-1, 0), bce(-1, 0), bce(0, 0)]),
        ("b", "cvr"): -mean([math.log(1 - q(-1, 0.5)), math.log(1 - q(0, 0.5))]),
    }
    for task in ("ctr", "ctcvr"):
        ll[("pooled", task)] = (4 * ll[("a", task)] + 3 * ll[("b", task)]) / 7
    ll[("pooled", "cvr")] = (3 * ll[("a", "cvr")] + 2 * ll[("b", "cvr")]) / 5

    only_b = "mean over 1 of 2 scenarios (undefined: b)"
    # (scenario, task): (auc, n, n_pos, auc reason)
    expected = {
        # ctr in a: positives 2, 0, -1 vs negative 1 -> 1 win of 3.
        ("a", "ctr"): (1 / 3, 4, 3, ""),
        # ctcvr in a: positives 1, -3 vs negatives 3, -2 -> 1 win of 4.
        ("a", "ctcvr"): (1 / 4, 4, 2, ""),
        # cvr in a: q(r0) = .83 > q(r2) = .24 > q(r3) = .18; r1 is excluded (else 1/4).
        ("a", "cvr"): (1 / 2, 3, 2, ""),
        ("b", "ctr"): (1.0, 3, 2, ""),
        ("b", "ctcvr"): (NAN, 3, 0, "only negatives (n_pos=0 of 3)"),
        ("b", "cvr"): (NAN, 2, 0, "only negatives (n_pos=0 of 2)"),
        # ctr pooled: 5 wins of 10; ctcvr pooled: 4 of 10; cvr pooled: q(r0) = .830 beats
        # q(r6) = .803, q(r4) = .43, q(r2); q(r3) beats none -> 3 of 6.
        ("pooled", "ctr"): (0.5, 7, 5, ""),
        ("pooled", "ctcvr"): (0.4, 7, 2, ""),
        ("pooled", "cvr"): (0.5, 5, 2, ""),
        ("macro", "ctr"): ((1 / 3 + 1) / 2, 2, -1, ""),
        ("macro", "ctcvr"): (1 / 4, 1, -1, only_b),
        ("macro", "cvr"): (1 / 2, 1, -1, only_b),
    }
    for task in ("ctr", "ctcvr", "cvr"):
        ll[("macro", task)] = (ll[("a", task)] + ll[("b", task)]) / 2

    keys = [
        (s, t, m)
        for s in ("a", "b", "pooled", "macro")
        for t in ("ctr", "ctcvr", "cvr")
        for m in ("auc", "logloss")
    ]
    assert list(df[["scenario", "task", "metric"]].itertuples(index=False, name=None)) == keys
    for row in df.itertuples(index=False):
        auc, n, n_pos, reason = expected[(row.scenario, row.task)]
        if row.metric == "auc":
            want, want_reason = auc, reason
        else:
            want, want_reason = ll[(row.scenario, row.task)], ""
            n = 2 if row.scenario == "macro" else n
        assert (row.n, row.n_pos, row.reason) == (n, n_pos, want_reason), row
        if math.isnan(want):
            assert math.isnan(row.value), row
        else:
            assert row.value == pytest.approx(want, rel=1e-12, abs=1e-12), row

    assert df["value"].dtype == np.float64
    assert df["n"].dtype == np.int64 and df["n_pos"].dtype == np.int64

    s = summary(df)
    assert list(s) == [
        "auc/ctr", "auc/ctcvr", "auc/cvr",
        "logloss/ctr", "logloss/ctcvr", "logloss/cvr",
        "macro_auc/ctr", "macro_auc/ctcvr", "macro_auc/cvr",
    ]  # fmt: skip
    assert s["auc/ctcvr"] == pytest.approx(0.4)
    assert s["logloss/cvr"] == pytest.approx(ll[("pooled", "cvr")])
    assert s["macro_auc/ctr"] == pytest.approx(2 / 3)
    assert all(isinstance(v, float) for v in s.values())


def test_metrics_table_shows_na_and_reasons():
    text = metrics_table(evaluate(*hand_inputs(), HAND_SCHEMA))
    header = text.splitlines()[0]
    for col in ("scenario", "ctr AUC", "ctr logloss", "cvr AUC", "rows", "ctr pos", "cvr pos"):
        assert col in header
    line_b = next(ln for ln in text.splitlines() if ln.startswith("| b "))
    assert "n/a" in line_b and "1.0000" in line_b
    assert "0.3333" in text  # ctr AUC in a, 4 decimals
    assert "n/a: scenario 'b', task 'ctcvr' auc: only negatives (n_pos=0 of 3)" in text
    assert "n/a: scenario 'b', task 'cvr' auc: only negatives (n_pos=0 of 2)" in text
    assert "note: scenario 'macro', task 'cvr' auc: mean over 1 of 2 scenarios" in text
    assert "0/2" in line_b  # cvr: 0 positives among the 2 parent-positive rows of b
    assert metrics_table(evaluate(*hand_inputs(), HAND_SCHEMA), tablefmt="plain")


def test_evaluate_validates_inputs():
    logits, labels, scenario = hand_inputs()
    cases = [
        ((logits, labels[:, :1], scenario), "labels"),
        ((logits, labels[:-1], scenario), "labels"),
        ((logits[:, 0], labels, scenario), "logits"),
        ((logits[:, :1], labels[:, :1], scenario), "logits"),
        ((logits.long(), labels, scenario), "floating"),
        ((logits, labels, scenario[:-1]), "scenario"),
        ((logits, labels, scenario.float()), "integer"),
        ((logits, labels, scenario + 1), r"\[0, 2\)"),
        ((logits, labels * 2, scenario), "0 or 1"),
        ((logits, torch.full_like(labels, NAN), scenario), "0 or 1"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            evaluate(*args, HAND_SCHEMA)
    clash = DatasetSchema((), (), "d", ("a",), (Task("ctr", "c"),), (Implies("ctr", "ctr", "ctr"),))
    with pytest.raises(ValueError, match="clash"):
        evaluate(logits[:, :1], labels[:, :1], scenario * 0, clash)
    reserved = DatasetSchema((), (), "d", ("a", "pooled"), (Task("ctr", "c"),))
    with pytest.raises(ValueError, match="reserved"):
        evaluate(logits[:, :1], labels[:, :1], scenario, reserved)
    with pytest.raises(ValueError):
        metrics_table(pd.DataFrame({"scenario": ["a"]}))


def test_evaluate_without_rows_and_with_nan_logits():
    df = evaluate(torch.zeros(0, 2), torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), SCHEMA)
    assert len(df) == (3 + 2) * 3 * 2
    assert df["value"].isna().all()
    regular = df[df.scenario != "macro"]
    assert (regular.reason == "no rows").all()
    assert (df[df.scenario == "macro"].reason == "undefined in every scenario").all()

    logits, labels, scenario = hand_inputs()
    logits[0, 0] = NAN  # scenario a, ctr
    df = evaluate(logits, labels, scenario, HAND_SCHEMA).set_index(["scenario", "task", "metric"])
    assert df.loc[("a", "ctr", "auc"), "reason"] == "NaN scores in 1 of 4 rows"
    assert df.loc[("a", "ctr", "logloss"), "reason"] == "NaN logits in 1 of 4 rows"
    assert math.isnan(df.loc[("pooled", "ctr", "auc"), "value"])
    assert df.loc[("b", "ctr", "auc"), "value"] == 1.0
    assert math.isnan(df.loc[("a", "cvr", "auc"), "value"])  # r0 is a parent positive


# --------------------------------------------------------------------------------------------
# evaluate(): properties
# --------------------------------------------------------------------------------------------


@settings(deadline=None, max_examples=60)
@given(data=eval_data())
def test_evaluate_macro_undefined_cells_and_pooled(data):
    logits, labels, scenario = data
    df = evaluate(logits, labels, scenario, SCHEMA)
    assert len(df) == (3 + 2) * 3 * 2
    cells = {(r.scenario, r.task, r.metric): r for r in df.itertuples(index=False)}
    tasks = ("ctr", "ctcvr", "cvr")

    for (scen, _task, metric), row in cells.items():
        if scen == "macro":
            continue
        # Undefined cells are NaN with a reason, never 0.5; defined cells have no reason.
        if row.n == 0:
            reason = "no rows"
        elif metric == "auc" and row.n_pos == 0:
            reason = f"only negatives (n_pos=0 of {row.n})"
        elif metric == "auc" and row.n_pos == row.n:
            reason = f"only positives ({row.n} rows)"
        else:
            reason = ""
        assert row.reason == reason
        assert math.isnan(row.value) == bool(reason)

    # Macro: mean over the defined scenarios, so between their min and max.
    for task, metric in itertools.product(tasks, ("auc", "logloss")):
        macro = cells[("macro", task, metric)]
        values = [cells[(s, task, metric)].value for s in SCHEMA.scenarios]
        defined = [v for v in values if not math.isnan(v)]
        assert macro.n == len(defined)
        if not defined:
            assert math.isnan(macro.value) and macro.reason == "undefined in every scenario"
        else:
            assert min(defined) - 1e-12 <= macro.value <= max(defined) + 1e-12
            assert macro.value == pytest.approx(sum(defined) / len(defined), abs=1e-12)
            assert (macro.reason == "") == (len(defined) == 3)

    # Pooled equals a single-group computation over all (eligible) rows.
    zeros = torch.zeros(len(scenario), dtype=torch.long)
    rows = labels[:, 0] == 1
    pooled_inputs = {
        "ctr": (logits[:, 0], labels[:, 0], zeros),
        "ctcvr": (logits[:, 1], labels[:, 1], zeros),
        "cvr": (
            conditional_logit(logits[rows, 1].double(), logits[rows, 0].double()),
            labels[rows, 1],
            zeros[rows],
        ),
    }
    for task, args in pooled_inputs.items():
        auc, n, n_pos = grouped_auc(*args, 1)
        cell = cells[("pooled", task, "auc")]
        assert_same(torch.tensor([cell.value], dtype=torch.float64), auc)
        assert (cell.n, cell.n_pos) == (n.item(), n_pos.item())
        assert cells[("pooled", task, "logloss")].value == pytest.approx(
            grouped_logloss(*args, 1).item(), rel=1e-12, nan_ok=True
        )
    assert cells[("pooled", "cvr", "auc")].n == int(rows.sum())


@settings(deadline=None, max_examples=40)
@given(data=eval_data(), seed=st.integers(0, 2**31 - 1))
def test_evaluate_is_invariant_to_row_order(data, seed):
    logits, labels, scenario = data
    perm = torch.randperm(len(scenario), generator=torch.Generator().manual_seed(seed))
    df = evaluate(logits, labels, scenario, SCHEMA)
    shuffled = evaluate(logits[perm], labels[perm], scenario[perm], SCHEMA)
    # AUC and counts are exact; log loss sums may differ in the last bits.
    pd.testing.assert_frame_equal(df, shuffled, check_exact=False, rtol=1e-12, atol=1e-12)
    auc = df.metric == "auc"
    assert np.array_equal(df.value[auc], shuffled.value[auc], equal_nan=True)


# --------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(1)
    n = 20_000
    logits = torch.randint(-20, 20, (n, 2), generator=gen).float() / 4
    clicks = (torch.rand(n, generator=gen) < 0.4).float()
    buys = clicks * (torch.rand(n, generator=gen) < 0.3).float()
    labels = torch.stack([clicks, buys], 1)
    scenario = torch.randint(0, 3, (n,), generator=gen)
    auc, cnt, pos = grouped_auc(logits[:, 0].cuda(), clicks.cuda(), scenario.cuda(), 3)
    assert auc.device.type == "cuda" and cnt.device.type == "cuda"
    ref = grouped_auc(logits[:, 0], clicks, scenario, 3)
    torch.testing.assert_close(auc.cpu(), ref[0], rtol=0, atol=0)
    assert grouped_logloss(logits[:, 0].cuda(), clicks.cuda(), scenario.cuda(), 3).is_cuda
    cpu = evaluate(logits, labels, scenario, SCHEMA)
    gpu = evaluate(logits.cuda(), labels.cuda(), scenario.cuda(), SCHEMA)
    pd.testing.assert_frame_equal(cpu, gpu, check_exact=False, rtol=1e-10, atol=1e-12)
