import pytest
from hypothesis import given
from hypothesis import strategies as st

from mssbench.config import RunConfig, parse_assignments, resolve
from mssbench.errors import ConfigError

DEFAULTS = {"n": 8, "lr": 0.1, "flag": False, "hidden": [512, 256], "mode": "st", "names": []}


def test_strings_are_coerced_to_the_default_type():
    got = resolve(
        "param",
        "m",
        DEFAULTS,
        {"n": "4", "lr": "1e-3", "flag": "yes", "hidden": "64,32", "mode": "t", "names": "a,b"},
    )
    assert got == {
        "n": 4,
        "lr": 1e-3,
        "flag": True,
        "hidden": [64, 32],
        "mode": "t",
        "names": ["a", "b"],
    }
    assert resolve("param", "m", DEFAULTS, {"hidden": "[8]"})["hidden"] == [8]
    assert resolve("param", "m", DEFAULTS, {"lr": 1})["lr"] == 1.0
    # An empty default list has no element type: numbers are read as numbers.
    assert resolve("param", "m", DEFAULTS, {"names": "1,0.5,x"})["names"] == [1, 0.5, "x"]


@pytest.mark.parametrize(
    "key, value",
    [
        ("n", "4.5"),
        ("n", True),
        ("lr", "fast"),
        ("flag", "maybe"),
        ("hidden", "a,b"),
        ("hidden", "[1"),
    ],
)
def test_wrong_types_are_rejected(key, value):
    with pytest.raises(ConfigError, match=f"'{key}' expects"):
        resolve("param", "model 'm'", DEFAULTS, {key: value})


@given(st.integers(-(10**9), 10**9))
def test_int_roundtrip(n):
    assert resolve("param", "m", DEFAULTS, {"n": str(n)})["n"] == n


_SCALARS = st.one_of(
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
)


@given(st.one_of(_SCALARS, st.lists(st.integers(-(10**6), 10**6), max_size=4)))
def test_a_value_and_its_command_line_text_resolve_alike(value):
    # A config file gives typed values, the command line gives text: both must end up the same.
    import json

    key = {bool: "flag", int: "n", float: "lr", list: "hidden"}[type(value)]
    text = json.dumps(value) if isinstance(value, (list, float)) else str(value)
    typed = resolve("param", "m", DEFAULTS, {key: value})[key]
    from_text = resolve("param", "m", DEFAULTS, {key: text})[key]
    assert typed == from_text == value
    assert type(typed) is type(from_text) is type(DEFAULTS[key])


def test_assignments():
    assert parse_assignments(["a=1", "b=x=y"], "--param") == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_assignments(["a"], "--param")


def test_result_hash_ignores_output_location():
    a = RunConfig(model="m", dataset="d", out="x")
    b = RunConfig(model="m", dataset="d", out="y", progress=False)
    c = RunConfig(model="m", dataset="d", seed=1)
    assert a.result_hash() == b.result_hash() != c.result_hash()


def test_every_precision_name_has_an_autocast_dtype():
    from mssbench.config import PRECISIONS
    from mssbench.runners.trainer import AUTOCAST_DTYPES

    assert tuple(AUTOCAST_DTYPES) == PRECISIONS
