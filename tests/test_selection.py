"""Epoch selection (--select), the convergence flag and their place in the record."""

import json
import math
from pathlib import Path

import pytest
from conftest import SMALL_MMOE
from hypothesis import given
from hypothesis import strategies as st

from mssbench.api import run
from mssbench.base_rate import STALLED_WARNING, stalled
from mssbench.config import CONVERGENCE_TOLERANCE, SELECTIONS, RunConfig
from mssbench.errors import ConfigError
from mssbench.leaderboard.statistics import record_converged
from mssbench.records import record_json_schema, verify_record
from mssbench.runners.trainer import converged, selection_score

TASKS = ("ctr", "ctcvr")


def curve(*scores):
    return [{"epoch": i + 1, "selection_score": s} for i, s in enumerate(scores)]


def test_mean_logloss_ignores_a_noisy_auc():
    flat = {"auc/ctr": 0.7, "auc/ctcvr": 0.9, "logloss/ctr": 0.4, "logloss/ctcvr": 0.2}
    assert selection_score(flat, TASKS, "mean_logloss") == pytest.approx(-0.3)
    assert selection_score(flat, TASKS, "mean_auc") == pytest.approx(0.8)
    no_auc = {"auc/ctr": math.nan, "logloss/ctr": 0.4, "logloss/ctcvr": 0.2}
    assert selection_score(no_auc, TASKS, "mean_auc") == pytest.approx(-0.6)
    with pytest.raises(ConfigError, match="--select must be one of"):
        selection_score(flat, TASKS, "best")


@given(st.lists(st.floats(-1, 1), min_size=1, max_size=10))
def test_a_run_whose_best_epoch_is_the_last_has_not_converged(scores):
    best = max(range(len(scores)), key=lambda i: (scores[i], -i)) + 1
    flag = converged(curve(*scores), best, stopped_early=False)
    if best == len(scores):
        assert flag is False
    elif scores[-1] - scores[-2] <= CONVERGENCE_TOLERANCE:
        assert flag is True


def test_a_last_epoch_that_still_improves_has_not_converged():
    assert converged(curve(0.5, 0.9, 0.8, 0.85), best_epoch=2, stopped_early=False) is False
    assert converged(curve(0.5, 0.9, 0.8, 0.8005), best_epoch=2, stopped_early=False) is True
    assert converged([], best_epoch=0, stopped_early=False) is False


@given(st.lists(st.floats(-1, 1), min_size=2, max_size=10), st.integers(1, 3))
def test_a_run_ended_by_early_stopping_has_converged(scores, patience):
    """Patience epochs without a better score end the run, however the last epoch went."""
    best = max(range(len(scores)), key=lambda i: (scores[i], -i)) + 1
    history = curve(*scores)[: best + patience]
    if len(history) == best + patience:  # the trainer stopped it after `patience` bad epochs
        assert converged(history, best, stopped_early=True) is True
    # e.g. 0.62, 0.64 (best), 0.45, 0.63 stopped by patience 2: the last epoch's gain is no
    # reason to call it unconverged; under a budget that ended it there, it is one.
    recovering = curve(0.62, 0.64, 0.45, 0.63)
    assert converged(recovering, 2, stopped_early=True) is True
    assert converged(recovering, 2, stopped_early=False) is False


def test_a_page_judges_every_record_by_the_rule_of_today():
    """A record written under the earlier wording (stopped early, flag false) reads converged."""
    training = {"history": curve(0.62, 0.64, 0.45, 0.63), "best_epoch": 2, "stopped_early": True}
    assert record_converged({"training": {**training, "converged": False}}) is True
    assert record_converged({"training": {**training, "stopped_early": False}}) is False
    assert record_converged({"training": {"converged": False}}) is False  # no curve: its flag
    assert record_converged({"training": {}}) is None


def test_the_record_holds_the_selection_curve_and_flag(registry, tmp_path):
    config = RunConfig(
        model="mmoe", dataset="tiny-synth", params=dict(SMALL_MMOE), epochs=2, batch_size=256,
        max_steps_per_epoch=2, out=str(tmp_path), progress=False,
    )
    rec = run(config, registry=registry, log=lambda m: None).record
    assert rec["config"]["select"] == "mean_logloss"
    training = rec["training"]
    assert training["selection_metric"] == SELECTIONS["mean_logloss"]
    assert [h["epoch"] for h in training["history"]] == [1, 2]
    assert all("logloss/ctr" in h["valid"] for h in training["history"])
    expected = converged(training["history"], training["best_epoch"], training["stopped_early"])
    assert training["converged"] is expected
    fields = record_json_schema()["$defs"]["TrainingBlock"]["properties"]
    assert {"converged", "stalled", "selection_metric", "history"} <= set(fields)
    counts = rec["dataset"]["counts"]
    assert training["stalled"] is stalled(training["history"], training["best_epoch"], counts)


def test_a_run_that_cannot_move_from_the_base_rate_is_flagged_and_warned_about(registry, tmp_path):
    lines = []
    config = RunConfig(
        model="mmoe", dataset="tiny-synth", params=dict(SMALL_MMOE), epochs=1, batch_size=256,
        max_steps_per_epoch=2, lr=1e-12, out=str(tmp_path), progress=False,
    )
    rec = run(config, registry=registry, log=lines.append).record
    assert rec["training"]["stalled"] is True
    assert STALLED_WARNING in lines


def test_a_record_without_the_new_fields_still_loads():
    legacy = Path(__file__).parent / "fixtures" / "records" / "legacy-v1.json"
    rec = json.loads(legacy.read_text())
    assert "converged" not in json.dumps(rec)
    verify_record(rec, str(legacy))


def test_the_run_options_reach_the_record(tmp_path):
    from click.testing import CliRunner
    from conftest import tiny_run_args

    from mssbench.cli import main

    args = tiny_run_args(
        tmp_path, 1, "--max-steps-per-epoch", "1", "--select", "mean_auc",
        "--bias-init", "none", "--weight-decay-mode", "decoupled",
    )
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rec = json.loads(next(tmp_path.glob("*.json")).read_text())
    config = rec["config"]
    assert (config["select"], config["bias_init"], config["weight_decay_mode"]) == (
        "mean_auc", "none", "decoupled"
    )
    assert config["optimizer"] == "AdamW"
    assert [g["weight_decay"] for g in config["weight_decay_groups"]] == [1e-6, 0.0]
    bad = CliRunner().invoke(main, [*args[:-2], "--select", "auc", "--out", str(tmp_path)])
    assert bad.exit_code != 0 and "--select" in bad.output
