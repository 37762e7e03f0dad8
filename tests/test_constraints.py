"""Declared hyper-parameter constraints (ModelSpec.constraints) and runner option checks."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mssbench import Constraint, ModelSpec, SpecError
from mssbench.api import build_model
from mssbench.config import RunConfig, resolve
from mssbench.errors import ConfigError, PluginError, brief
from mssbench.spec import DROPOUT, POSITIVE, WIDTHS
from mssbench.testing import make_schema

bounds = st.one_of(st.none(), st.floats(-100, 100, allow_nan=False))
numbers = st.one_of(
    st.integers(-1000, 1000), st.floats(allow_nan=True, allow_infinity=True, width=32)
)


def _expected(c: Constraint, x: float) -> bool:
    if c.low is None and c.high is None:
        return True  # no bound: any number
    if math.isnan(x):
        return False
    if c.low is not None and not (x > c.low if c.low_open else x >= c.low):
        return False
    return c.high is None or (x < c.high if c.high_open else x <= c.high)


@given(
    low=bounds, high=bounds, low_open=st.booleans(), high_open=st.booleans(), x=numbers
)
def test_a_number_is_allowed_exactly_within_its_bounds(low, high, low_open, high_open, x):
    c = Constraint(low=low, high=high, low_open=low_open, high_open=high_open)
    assert c.allows(x) == _expected(c, x)


@given(values=st.lists(numbers, max_size=5), non_empty=st.booleans())
def test_a_list_is_allowed_when_every_element_is(values, non_empty):
    c = Constraint(low=0, low_open=True, non_empty=non_empty)
    ok = all(_expected(c, v) for v in values) and (bool(values) or not non_empty)
    assert c.allows(values) == ok


def test_booleans_and_text_are_not_numbers():
    assert not POSITIVE.allows(True) and not POSITIVE.allows("3")
    assert Constraint(non_empty=True).allows(["dnn"])
    assert not Constraint(non_empty=True).allows([])


def test_descriptions():
    assert POSITIVE.describe() == "> 0"
    assert DROPOUT.describe() == "in [0, 1)"
    assert WIDTHS.describe() == "a non-empty list of values > 0"
    assert POSITIVE.describe([1]) == "a list of values > 0"
    assert Constraint(high=2.5).describe() == "<= 2.5"


def _spec(**kw):
    base = dict(name="m", summary="s", build=lambda schema, width: None, defaults={"width": 4})
    base.update(kw)
    return ModelSpec(**base)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"constraints": {"depth": POSITIVE}}, "constraints keys not in defaults: ['depth']"),
        ({"constraints": {"width": "> 0"}}, "must be a mssbench.Constraint, got str"),
        ({"defaults": {"width": 0}, "constraints": {"width": POSITIVE}}, "default of 'width'"),
        (
            {"check_params": {"width": -1}, "constraints": {"width": POSITIVE}},
            "check_params of 'width' is -1",
        ),
    ],
)
def test_a_malformed_declaration_is_a_spec_error(kw, message):
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _spec(**kw).validate()


def test_resolve_checks_given_values_and_names_the_key():
    defaults, rules = {"width": 4, "p": 0.1}, {"width": POSITIVE, "p": DROPOUT}
    assert resolve("param", "model 'm'", defaults, {"width": "8"}, rules) == {"width": 8, "p": 0.1}
    with pytest.raises(ConfigError, match=r"model 'm' param 'p' must be in \[0, 1\), got 1.5"):
        resolve("param", "model 'm'", defaults, {"p": "1.5"}, rules)


def test_build_is_not_called_with_a_value_breaking_a_constraint(registry):
    calls = []

    def build(schema, width):
        calls.append(width)
        return torch.nn.Linear(1, 1)

    spec = _spec(build=build, constraints={"width": POSITIVE})
    spec.validate()
    entry = registry.models["mmoe"]
    registry.models["m"] = type(entry)(spec=spec, plugin="test")
    with pytest.raises(ConfigError, match="param 'width' must be > 0, got -2"):
        build_model(registry, "m", make_schema(), {"width": "-2"})
    assert calls == []
    assert isinstance(build_model(registry, "m", make_schema(), {"width": "3"}), torch.nn.Module)
    assert calls == [3]


def test_a_model_failing_in_build_is_a_plugin_error_with_file_and_line(registry):
    def build(schema, width):
        return [][width]  # IndexError inside the plugin

    entry = registry.models["mmoe"]
    registry.models["m"] = type(entry)(spec=_spec(build=build), plugin="test")
    with pytest.raises(PluginError, match=r"failed to build: IndexError: .*constraints.py, line"):
        build_model(registry, "m", make_schema(), {})


def test_built_in_models_declare_their_ranges(registry):
    for name, entry in registry.models.items():
        spec = entry.spec
        if entry.plugin == "mssbench-testing":
            continue
        for key in ("embed_dim", "dropout"):
            if key in spec.defaults:
                assert key in spec.constraints, (name, key)
        for key, value in spec.defaults.items():
            if key.endswith("hidden") and isinstance(value, list):
                assert key in spec.constraints, (name, key)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lr", math.nan, "--lr must be a finite number > 0"),
        ("lr", -1.0, "--lr must be a finite number > 0"),
        ("weight_decay", math.inf, "--weight-decay must be a finite number >= 0"),
        ("max_steps_per_epoch", -1, "--max-steps-per-epoch must be >= 0"),
        ("batch_size", 1, "--batch-size must be >= 2"),
        ("eval_batch_size", 0, "--eval-batch-size must be >= 1"),
        ("epochs", 2.5, "--epochs must be an integer, got 2.5"),
        ("precision", "fp8", "--precision must be one of fp32, bf16"),
        ("head", "x" * 10_000, "more characters"),
    ],
)
def test_run_options_are_checked(field, value, message):
    cfg = RunConfig(model="m", dataset="d", **{field: value})
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


@given(text=st.text(max_size=300), limit=st.integers(1, 100))
def test_brief_keeps_short_values_and_cuts_long_ones(text, limit):
    out = brief(text, limit)
    if len(text) <= limit:
        assert out == text
    else:
        assert out.startswith(text[:limit]) and f"{len(text) - limit:,} more characters" in out
