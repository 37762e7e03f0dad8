"""Search spaces: the typed dimensions, their validation in ModelSpec, the conformance check."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mssbench import Choice, FloatRange, IntRange, ModelSpec, SpecError, Widths
from mssbench.space import (
    COMMON_SPACE,
    SpaceError,
    full_space,
    probe_points,
    split_point,
)
from mssbench.testing.checks import check_search_space_builds, default_schema


def _spec(**kwargs):
    from mssbench_mmoe import DEFAULTS

    from mssbench.lazy import lazy

    return ModelSpec(
        name="tiny", summary="x", build=lazy("mssbench_mmoe.model:MMoE"), defaults=DEFAULTS,
        check_params={"embed_dim": 8, "expert_hidden": [32, 16], "tower_hidden": [16]}, **kwargs,
    )


@given(st.integers(1, 4), st.integers(0, 3), st.integers(0, 10_000))
def test_widths_halve_and_stay_positive(low, extra, seed):
    high = low + extra
    dim = Widths(layers=(low, high), widths=(2 ** (high - 1), 2**high * 3))
    value = dim.sample(random.Random(seed))
    assert low <= len(value) <= high
    assert all(w > 0 for w in value)
    assert all(a == 2 * b or a == 2 * b + 1 for a, b in zip(value, value[1:]))


@given(st.floats(1e-8, 1.0), st.floats(1.5, 100.0), st.integers(0, 1000))
def test_log_range_samples_inside(low, factor, seed):
    dim = FloatRange(low, low * factor, log=True)
    assert low * (1 - 1e-12) <= dim.sample(random.Random(seed)) <= low * factor * (1 + 1e-12)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: FloatRange(1.0, 1.0), "below high"),
        (lambda: FloatRange(0.0, 1.0, log=True), "low > 0"),
        (lambda: IntRange(3, 2), "below high"),
        (lambda: Choice((1,)), "two or more"),
        (lambda: Widths(layers=(1, 3), widths=(2,)), "halvings"),
    ],
)
def test_bad_dimension_is_a_clear_error(make, message):
    with pytest.raises(SpaceError, match=message):
        make()


def test_space_names_must_be_hyperparameters_or_training_options():
    with pytest.raises(SpecError, match="'n_expertz' is neither a key of defaults"):
        _spec(search_space={"n_expertz": IntRange(2, 4)}).validate()
    with pytest.raises(SpecError, match="default is 8"):
        _spec(search_space={"n_experts": Widths(layers=(1, 2), widths=(8,))}).validate()
    _spec(search_space={"lr": FloatRange(1e-3, 1e-2, log=True)}).validate()


def test_common_space_is_always_searched_and_declared_wins():
    assert set(full_space({})) == set(COMMON_SPACE) == {"lr", "weight_decay"}
    mine = FloatRange(1e-3, 2e-3)
    assert full_space({"lr": mine})["lr"] is mine


def test_probe_points_hold_both_corners():
    space = {"a": IntRange(1, 5), "b": Widths(layers=(1, 2), widths=(8, 16)), "c": Choice("xyz")}
    points = probe_points(space, n_samples=2)
    assert points[0] == {"a": 1, "b": [8], "c": "x"}
    assert points[1] == {"a": 5, "b": [16, 8], "c": "y"}
    assert points[2]["c"] == "z" and len(points) == 5
    assert split_point({"lr": 0.1, "a": 1}) == ({"lr": 0.1}, {"a": 1})


def test_conformance_check_catches_a_point_that_does_not_build():
    spec = _spec(search_space={"n_experts": IntRange(0, 2)})
    with pytest.raises(AssertionError, match="n_experts"):
        check_search_space_builds(spec, default_schema())
    check_search_space_builds(_spec(search_space={"n_experts": IntRange(1, 3)}), default_schema())
