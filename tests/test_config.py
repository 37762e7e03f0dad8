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
