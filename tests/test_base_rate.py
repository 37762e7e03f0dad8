"""The base-rate predictor and the flag of runs that predict no better than it."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import log_loss
from test_leaderboard import make_record

from mssbench.base_rate import base_rate_logloss, stalled
from mssbench.config import STALL_MARGIN
from mssbench.leaderboard import plan_pages, record_stalled, render_page


def counts(train=(1000, {"ctr": 50, "ctcvr": 5}), valid=(200, {"ctr": 12, "ctcvr": 1})):
    return {
        "splits": {
            "train": {"rows": train[0], "positives": dict(train[1])},
            "valid": {"rows": valid[0], "positives": dict(valid[1])},
        }
    }


@given(
    st.integers(2, 500).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n - 1))),
    st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))),
)
def test_base_rate_logloss_is_the_logloss_of_the_constant_train_rate(train, valid):
    c = counts((train[0], {"ctr": train[1]}), (valid[0], {"ctr": valid[1]}))
    labels = np.r_[np.ones(valid[1]), np.zeros(valid[0] - valid[1])]
    p = np.full(valid[0], train[1] / train[0])
    expected = log_loss(labels, p, labels=[0, 1])
    assert base_rate_logloss(c, "ctr") == pytest.approx(expected, rel=1e-9)


def test_no_base_rate_without_positives_or_the_task():
    assert base_rate_logloss(counts(train=(10, {"ctr": 0})), "ctr") is None
    assert base_rate_logloss(counts(train=(10, {"ctr": 10})), "ctr") is None
    assert base_rate_logloss(counts(), "cvr") is None
    assert base_rate_logloss({}, "ctr") is None


def curve_at(ratios, c):
    """A one-epoch history whose validation logloss is ``ratio`` times the base rate's."""
    valid = {f"logloss/{t}": r * base_rate_logloss(c, t) for t, r in ratios.items()}
    return [{"epoch": 1, "selection_score": 0.0, "valid": valid}]


def test_a_run_no_task_of_which_beats_the_base_rate_has_stalled():
    c = counts()
    assert stalled(curve_at({"ctr": 1.0, "ctcvr": 1.02}, c), 1, c) is True
    assert stalled(curve_at({"ctr": 1 - STALL_MARGIN / 2, "ctcvr": 1.0}, c), 1, c) is True
    # One task clearly below the base rate is learning.
    assert stalled(curve_at({"ctr": 1 - 2 * STALL_MARGIN, "ctcvr": 1.0}, c), 1, c) is False
    # Unknown: no such epoch, no curve, no counts.
    assert stalled(curve_at({"ctr": 1.0}, c), 2, c) is None
    assert stalled([], 1, c) is None
    assert stalled(curve_at({"ctr": 1.0}, c), 1, {}) is None


def test_nan_logloss_is_not_evidence_either_way():
    c = counts()
    history = [{"epoch": 1, "valid": {"logloss/ctr": math.nan, "logloss/ctcvr": math.nan}}]
    assert stalled(history, 1, c) is None


def _trained(seed, ratio):
    rec = make_record("a", seed=seed)
    rec["dataset"]["counts"] = counts()
    rec["dataset"]["rows"] = {"train": 1000, "valid": 200, "test": 200}
    rec["training"] = {
        "epochs_run": 3,
        "best_epoch": 1,
        "converged": True,
        "stopped_early": True,  # two epochs worse than the first: patience 2 ended the run
        "train_samples": 3000,
        "history": curve_at({"ctr": ratio, "ctcvr": ratio}, counts())
        + [{"epoch": e, "selection_score": -1.0} for e in (2, 3)],
    }
    return rec


def test_the_page_says_which_converged_runs_predict_no_better_than_the_base_rate():
    recs = [_trained(0, 0.9), _trained(1, 1.0), _trained(2, 0.999)]
    assert [record_stalled(r) for r in recs] == [False, True, True]
    text = render_page(plan_pages(recs)[0])
    header = text.split("## Ranking")[0]
    assert "3 of the 3 runs converged" in header and "not converged" not in header
    assert "2 of them predict no better than the base rate (a seed 1, a seed 2)" in header
    assert "3/3, 2 at the base rate" in text
    assert "no better than the base rate" not in render_page(plan_pages(recs[:1])[0])
    assert "1 of them predicts no better than the base rate (a seed 1)" in render_page(
        plan_pages(recs[:2])[0]
    )
