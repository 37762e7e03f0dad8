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
