"""CI regression check: a small fixed suite compared with the stored baseline."""

import json

from mssbench.regression import BASELINE, compare, run_regression


def test_compare_flags_drift_and_missing_models():
    base = {"m": {"auc/a": 0.80}}
    assert compare({"m": {"auc/a": 0.805}}, base) == []
    assert "baseline 0.8" in compare({"m": {"auc/a": 0.70}}, base)[0]
    assert "no baseline" in compare({"x": {"auc/a": 0.7}}, base)[0]


def test_models_still_learn_as_in_the_baseline():
    baseline = json.loads(BASELINE.read_text())["aucs"]
    current = run_regression()
    assert set(current) == set(baseline), (
        "built-in models changed: run python -m mssbench.regression --update"
    )
    problems = compare(current, baseline)
    assert not problems, "\n".join(problems)
    for aucs in current.values():
        assert all(v > 0.6 for v in aucs.values())  # every model learns something


def test_the_baseline_is_package_data_outside_the_test_tree():
    from importlib.resources import files
    from pathlib import Path

    import mssbench

    package = Path(mssbench.__file__).resolve().parent
    assert BASELINE.is_relative_to(package)
    assert files("mssbench").joinpath("baselines/regression.json").read_text() == (
        BASELINE.read_text()
    )
    assert set(json.loads(BASELINE.read_text())) >= {"dataset", "settings", "aucs"}


def test_the_check_runs_with_its_own_thread_count_and_restores_the_callers(tmp_path):
    # The thread count changes the AUCs (STAR's income AUC by 0.01 between 1 and 2 threads), so
    # the check must not inherit it from whoever calls it: the test suite runs with 1 thread,
    # ``--update`` with every core.
    import torch

    from mssbench.regression import THREADS

    before = torch.get_num_threads()
    torch.set_num_threads(THREADS + 1)
    try:
        run_regression(["single_task"], out=str(tmp_path))
        assert torch.get_num_threads() == THREADS + 1
    finally:
        torch.set_num_threads(before)
    (record,) = [json.loads(p.read_text()) for p in tmp_path.rglob("*.json")]
    assert record["environment"]["hardware"]["torch_threads"] == THREADS
    assert json.loads(BASELINE.read_text())["settings"]["threads"] == THREADS
