"""Metric plugins: the spec, the hook, evaluation per cell, the run record, the checks."""

import json
import math
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import tiny_run_args
from hypothesis import given, settings
from hypothesis import strategies as st
from mssbench_metrics.metrics import average_precision, normalized_entropy

import mssbench
from mssbench import MetricSpec, SpecError
from mssbench.api import run
from mssbench.cli import main
from mssbench.config import RunConfig
from mssbench.errors import ConfigError, PluginError
from mssbench.leaderboard import Defaults, run_command
from mssbench.metrics import conditional_logit, evaluate, summary
from mssbench.plugins import load_registry
from mssbench.testing import check_metric, make_schema, run_metric_checks

ROOT = Path(__file__).resolve().parents[1]


def _spec(compute, **kw):
    return MetricSpec(name=kw.pop("name", "m"), summary="a metric", compute=compute, **kw)


def _positive_rate(logits, labels):
    return float(labels.double().mean())


# ---------------------------------------------------------------------------------------------
# Spec and registry
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"name": "auc"}, "reserved"),
        ({"name": "logloss"}, "reserved"),
        ({"name": "macro_gauc"}, "reserved"),
        ({"name": "Bad Name"}, "invalid"),
        ({"compute": 3}, "compute is not callable"),
        ({"summary": " "}, "summary"),
        ({"higher_is_better": "yes"}, "higher_is_better must be True or False"),
        ({"version": 0}, "version must be an integer >= 1"),
    ],
)
def test_malformed_metric_spec_is_rejected_with_the_field(kw, message):
    fields = {"name": "m", "summary": "a metric", "compute": _positive_rate, **kw}
    with pytest.raises(SpecError, match=message):
        MetricSpec(**fields).validate()


class _Plugin:
    def __init__(self, specs):
        self.specs = specs

    @mssbench.hookimpl
    def mssbench_register_metrics(self):
        return self.specs


def test_registry_collects_metrics_and_reports_broken_ones():
    good = _spec(_positive_rate, name="rate")
    registry = load_registry(
        autoload=False,
        extra=[
            ("first", _Plugin([good])),
            ("second", _Plugin([_spec(_positive_rate, name="rate"), "not a spec"])),
        ],
    )
    assert registry.metric("rate") is good
    assert registry.plugin_of("metric", "rate") == "first"
    problems = " | ".join(str(p) for p in registry.problems)
    assert "metric name 'rate' is already registered by plugin \"first\"" in problems
    assert "expected MetricSpec, got str" in problems
    with pytest.raises(ConfigError, match="unknown metric 'rat'.*Did you mean 'rate'"):
        registry.metric("rat")


def test_builtin_metric_plugin_registers_through_the_entry_point():
    registry = load_registry()
    assert registry.plugin_of("metric", "pr_auc") == "metrics"
    assert registry.metric("ne").higher_is_better is False


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def _eval_inputs(n=400, seed=0):
    schema = make_schema(n_scenarios=3)  # tasks ctr, ctcvr; conditional task cvr
    g = torch.Generator().manual_seed(seed)
    scenario = torch.randint(0, 3, (n,), generator=g)
    ctr = (torch.rand(n, generator=g) < 0.4).long()
    ctcvr = ctr * (torch.rand(n, generator=g) < 0.5).long()
    labels = torch.stack([ctr, ctcvr], 1)
    logits = torch.randn(n, 2, generator=g) + labels
    return logits, labels, scenario, schema


def test_plugin_metric_is_computed_per_cell_pooled_and_macro():
    logits, labels, scenario, schema = _eval_inputs()
    df = evaluate(logits, labels, scenario, schema, [_spec(_positive_rate, name="rate")])
    got = {(r.scenario, r.task): r.value for r in df[df.metric == "rate"].itertuples()}
    for s, name in enumerate(schema.scenarios):
        rows = scenario == s
        assert got[(name, "ctr")] == pytest.approx(float(labels[rows, 0].double().mean()))
        clicked = rows & (labels[:, 0] == 1)  # the conditional task: clicked rows only
        assert got[(name, "cvr")] == pytest.approx(float(labels[clicked, 1].double().mean()))
    assert got[("pooled", "ctcvr")] == pytest.approx(float(labels[:, 1].double().mean()))
    per = [got[(name, "ctr")] for name in schema.scenarios]
    assert got[("macro", "ctr")] == pytest.approx(sum(per) / 3)
    # Built-in metrics first, plugin metrics after them, in every (scenario, task).
    assert list(df[(df.scenario == "pooled") & (df.task == "ctr")].metric) == [
        "auc",
        "logloss",
        "rate",
    ]
    flat = summary(df)
    assert flat["rate/ctr"] == got[("pooled", "ctr")]
    assert flat["macro_rate/ctr"] == got[("macro", "ctr")]


def test_plugin_metric_sees_the_conditional_logit_of_cvr():
    seen = []

    def record(logits, labels):
        seen.append((logits, labels))
        return 0.0

    logits, labels, scenario, schema = _eval_inputs()
    evaluate(logits, labels, scenario, schema, [_spec(record, needs_both_classes=False)])
    assert {(x.dtype, y.dtype) for x, y in seen} == {(torch.float64, torch.int64)}
    clicked = labels[:, 0] == 1
    # two schema tasks (3 scenarios, then pooled: every row twice), cvr on clicked rows
    assert sum(len(y) for _, y in seen) == 2 * 2 * len(labels) + 2 * int(clicked.sum())
    pooled_cvr_logits, pooled_cvr_labels = seen[-1]
    expected = conditional_logit(logits[clicked, 1].double(), logits[clicked, 0].double())
    assert torch.equal(pooled_cvr_logits, expected)
    assert torch.equal(pooled_cvr_labels, labels[clicked, 1])


def test_undefined_and_failing_cells_are_nan_with_the_reason():
    logits, labels, scenario, schema = _eval_inputs()
    labels[scenario == 0, 1] = 0  # scenario s0 has no purchases

    def boom(logits, labels):
        raise RuntimeError("no luck")

    metrics = [
        _spec(_positive_rate, name="rate"),
        _spec(boom, name="boom"),
        _spec(lambda x, y: "high", name="text"),
        _spec(lambda x, y: math.nan, name="nan"),
    ]
    df = evaluate(logits, labels, scenario, schema, metrics)
    cell = df.set_index(["scenario", "task", "metric"])
    assert math.isnan(cell.loc[("s0", "ctcvr", "rate"), "value"])
    assert cell.loc[("s0", "ctcvr", "rate"), "reason"].startswith("only negatives (n_pos=0")
    assert "mean over 2 of 3 scenarios" in cell.loc[("macro", "ctcvr", "rate"), "reason"]
    assert cell.loc[("s1", "ctr", "boom"), "reason"] == "metric 'boom' raised RuntimeError: no luck"
    assert "returned 'high', expected a number" in cell.loc[("s1", "ctr", "text"), "reason"]
    assert cell.loc[("s1", "ctr", "nan"), "reason"] == "undefined (the metric returned NaN)"
    # the built-in metrics are untouched by the plugin metrics' failures
    assert not math.isnan(cell.loc[("s1", "ctr", "auc"), "value"])


def test_evaluate_rejects_a_metric_named_twice():
    logits, labels, scenario, schema = _eval_inputs()
    spec = _spec(_positive_rate, name="rate")
    with pytest.raises(ValueError, match="named twice"):
        evaluate(logits, labels, scenario, schema, [spec, spec])


# ---------------------------------------------------------------------------------------------
# The built-in metrics against scikit-learn
# ---------------------------------------------------------------------------------------------

cells = st.integers(2, 60).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(-4, 4).map(lambda v: v / 2), min_size=n, max_size=n),  # ties
        st.lists(st.integers(0, 1), min_size=n, max_size=n),
    )
)


@settings(max_examples=200, deadline=None)
@given(cells)
def test_average_precision_equals_sklearn(cell):
    sklearn = pytest.importorskip("sklearn.metrics")
    scores, y = cell
    logits, labels = torch.tensor(scores, dtype=torch.float64), torch.tensor(y)
    if 0 < sum(y):
        assert average_precision(logits, labels) == pytest.approx(
            sklearn.average_precision_score(y, scores), abs=1e-12
        )
    else:
        assert math.isnan(average_precision(logits, labels))


@settings(max_examples=200, deadline=None)
@given(cells)
def test_normalized_entropy_is_log_loss_over_base_rate_entropy(cell):
    sklearn = pytest.importorskip("sklearn.metrics")
    scores, y = cell
    logits, labels = torch.tensor(scores, dtype=torch.float64), torch.tensor(y)
    value = normalized_entropy(logits, labels)
    p = sum(y) / len(y)
    if p in (0.0, 1.0):
        assert math.isnan(value)
        return
    probs = torch.sigmoid(logits).tolist()
    entropy = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert value == pytest.approx(sklearn.log_loss(y, probs, labels=[0, 1]) / entropy, rel=1e-9)
    # predicting the base rate everywhere gives exactly 1
    base = torch.full_like(logits, math.log(p / (1 - p)))
    assert normalized_entropy(base, labels) == pytest.approx(1.0, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Conformance checks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pr_auc", "ne"])
def test_builtin_metrics_pass_the_checks(name):
    check_metric(load_registry().metric(name))


def _mutating(logits, labels):
    logits.zero_()
    return 0.5


@pytest.mark.parametrize(
    "spec, failing",
    [
        (_spec(lambda x, y: float(x[0])), "check_metric_row_order_invariant"),
        (_spec(_mutating), "check_metric_inputs_unchanged"),
        (_spec(average_precision, higher_is_better=False), "check_metric_direction"),
        (_spec(lambda x, y: float(torch.rand(1))), "check_metric_deterministic"),
        (_spec(lambda x, y: 1 / float(y.sum()), needs_both_classes=False), "edge_cells"),
    ],
)
def test_checks_catch_a_broken_metric(spec, failing):
    results = {r.check: r for r in run_metric_checks(spec)}
    assert any(failing in name and r.status == "failed" for name, r in results.items())
    with pytest.raises(AssertionError, match="metric 'm' fails"):
        check_metric(spec)


# ---------------------------------------------------------------------------------------------
# Runs, records, CLI
# ---------------------------------------------------------------------------------------------


def test_run_reports_and_records_plugin_metrics(registry, tmp_path):
    config = RunConfig(
        model="mmoe",
        dataset="tiny-synth",
        params={"embed_dim": 8, "n_experts": 3, "expert_hidden": [16], "tower_hidden": [8]},
        epochs=1,
        batch_size=256,
        metrics=["pr_auc", "ne"],
        out=str(tmp_path),
        progress=False,
    )
    result = run(config, registry=registry, log=lambda m: None)
    rec = json.loads(result.path.read_text())
    assert [m["name"] for m in rec["metrics"]] == ["pr_auc", "ne"]
    assert rec["metrics"][0]["plugin"] == "metrics" and rec["metrics"][0]["version"] == 1
    assert rec["config"]["metrics"] == ["pr_auc", "ne"]
    rows = [m for m in rec["test"]["metrics"] if m["metric"] == "pr_auc"]
    assert {(m["scenario"], m["task"]) for m in rows} >= {("pooled", "ctr"), ("macro", "cvr")}
    assert 0.0 < rec["test"]["summary"]["pr_auc/ctr"] <= 1.0
    assert "ne/ctcvr" in rec["test"]["oracle_summary"]
    # the record's own command line reproduces the metrics
    assert "--metric pr_auc --metric ne" in run_command(rec, Defaults.from_registry(registry))


#: Options added after these records, at the values the records ran with.
EARLIER_VALUES = {"bias_init": "none", "select": "mean_auc"}


def test_metrics_enter_the_run_hash_only_when_asked_for():
    # The hash of this configuration before --metric existed: earlier records keep theirs.
    given = dict(model="mmoe", dataset="census-income", params={"embed_dim": "16"}, seed=3)
    # (with the values every earlier record had for options added since)
    config = RunConfig(**given, epochs=4, lr=2e-3, **EARLIER_VALUES)
    assert config.result_hash() == "1a4adafa3ee1"
    with_metric = RunConfig(**{**config.to_dict(), "metrics": ("pr_auc",)})
    assert with_metric.result_hash() != config.result_hash()
    with pytest.raises(ConfigError, match="--metric ne given more than once"):
        RunConfig(model="m", dataset="d", metrics=["ne", "ne"]).validate()


def test_unknown_or_broken_metric_fails_before_training(registry, tmp_path):
    config = RunConfig(model="mmoe", dataset="tiny-synth", metrics=["pr_aux"], out=str(tmp_path))
    with pytest.raises(ConfigError, match="unknown metric 'pr_aux'.*Did you mean 'pr_auc'"):
        run(config, registry=registry, log=lambda m: None)
    broken = load_registry(extra=[("broken", _Plugin([_spec(lambda x, y: {}[0], name="bad")]))])
    config = RunConfig(model="mmoe", dataset="census-income", metrics=["bad"], out=str(tmp_path))
    with pytest.raises(PluginError, match="metric 'bad' \\(plugin \"broken\"\\) fails on a 6-row"):
        run(config, registry=broken, log=lambda m: None)
    assert not list(tmp_path.glob("*.json"))


def test_cli_run_with_metric_and_check_command(tmp_path):
    cli = CliRunner()
    res = cli.invoke(main, tiny_run_args(tmp_path, 1, "--metric", "pr_auc"), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "ctr pr_auc" in res.output and "cvr pr_auc" in res.output
    res = cli.invoke(main, ["check", "pr_auc", "ne"], catch_exceptions=False)
    assert res.exit_code == 0 and "pr_auc (metric, plugin metrics)" in res.output
    bad = tmp_path / "bad_metric.py"
    bad.write_text(
        "from mssbench import MetricSpec, hookimpl\n"
        "def first(x, y):\n"
        "    return float(x[0])\n"
        "@hookimpl\n"
        "def mssbench_register_metrics():\n"
        "    return [MetricSpec(name='first_score', summary='x', compute=first)]\n"
    )
    res = cli.invoke(main, ["check", "--plugin", str(bad), "first_score"])
    assert res.exit_code == 1
    assert re.search(r"check_metric_row_order_invariant\s+failed", res.output)
    res = cli.invoke(main, ["plugins"])
    assert any(
        line.split()[:3] == ["metric", "pr_auc", "metrics"] for line in res.output.splitlines()
    )
