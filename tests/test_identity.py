"""A run's identity: finished runs are found by the data they ran on, not the options as typed."""

import dataclasses
import json
import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mssbench.config import RunConfig
from mssbench.identity import record_identity, recorded_options, run_identity
from mssbench.leaderboard import Defaults, run_command
from mssbench.records import load_records
from mssbench.spec import DatasetSpec, SpecError
from mssbench.suite import plan, run_suite


def _quiet(_message):
    pass


@pytest.fixture
def finished(registry, tmp_path):
    """One finished run of ``constant`` on tiny-synth at its default options (n_train 2000)."""
    base = RunConfig(model="", dataset="", epochs=1, out=str(tmp_path), progress=False)
    jobs, _ = plan(registry, "constant", "tiny-synth", [0], base, {})
    run_suite(jobs, 1, plugins=("mssbench.testing.plugin",), log=_quiet)
    assert [j.status for j in jobs] == ["finished"]
    return base


def _with_dataset(registry, monkeypatch, **changes):
    """Replace tiny-synth's spec by one with ``changes`` (a later version of the plugin)."""
    entry = registry.datasets["tiny-synth"]
    spec = dataclasses.replace(entry.spec, **changes)
    spec.validate()
    monkeypatch.setitem(registry.datasets, "tiny-synth", dataclasses.replace(entry, spec=spec))
    return spec


def _statuses(registry, base, data=None):
    jobs, _ = plan(registry, "constant", "tiny-synth", [0], dataclasses.replace(
        base, data_options=dict(data or {})), {})
    return [j.status for j in jobs]


def test_a_changed_dataset_default_makes_the_run_new(registry, monkeypatch, finished):
    assert _statuses(registry, finished) == ["skipped"]
    # Typing the default the record resolved to is the same run.
    assert _statuses(registry, finished, {"n_train": "2000"}) == ["skipped"]
    _with_dataset(registry, monkeypatch, options={"n_train": 3000, "seed": 0})
    # Same options as typed, other data: not finished.
    assert _statuses(registry, finished) == ["pending"]
    # The old data, named: the record is found although its run_hash was of no -D at all.
    assert _statuses(registry, finished, {"n_train": "2000"}) == ["skipped"]


def test_an_option_added_later_reads_at_its_earlier_value(registry, monkeypatch, finished):
    options = {"n_train": 2000, "seed": 0, "noise": 0.0}
    _with_dataset(registry, monkeypatch, options=options)
    assert _statuses(registry, finished) == ["skipped"]  # the default is the old behaviour
    _with_dataset(registry, monkeypatch, options={**options, "noise": 0.3},
                  earlier_options={"noise": 0.0})
    assert _statuses(registry, finished) == ["pending"]
    assert _statuses(registry, finished, {"noise": "0.0"}) == ["skipped"]
    # No value gives the data the record ran on: never finished.
    _with_dataset(registry, monkeypatch, options=options, earlier_options={"noise": None})
    assert _statuses(registry, finished) == ["pending"]
    assert _statuses(registry, finished, {"noise": "0.0"}) == ["pending"]


def test_a_page_command_names_the_data_after_a_default_changed(registry, monkeypatch, finished):
    [record], _ = load_records(finished.out)
    before = run_command(record, Defaults.from_registry(registry))
    assert "-D" not in shlex.split(before)
    _with_dataset(registry, monkeypatch, options={"n_train": 3000, "seed": 0})
    after = run_command(record, Defaults.from_registry(registry))
    assert "n_train=2000" in shlex.split(after)
    # The command's run has the record's identity: a suite from it finds the run finished.
    config = RunConfig(model="constant", dataset="tiny-synth", data_options={"n_train": "2000"},
                       epochs=1, out=finished.out)
    assert run_identity(config, registry) == record_identity(record, registry)


def test_the_checkpoint_name_follows_the_data(registry, monkeypatch, tmp_path):
    from mssbench.api import checkpoint_path

    config = RunConfig(model="constant", dataset="tiny-synth", out=str(tmp_path))
    before = checkpoint_path(tmp_path, config, registry)
    _with_dataset(registry, monkeypatch, options={"n_train": 3000, "seed": 0})
    assert checkpoint_path(tmp_path, config, registry) != before
    named = dataclasses.replace(config, data_options={"n_train": "2000"})
    assert checkpoint_path(tmp_path, named, registry) == before


def test_records_of_unknown_datasets_have_no_identity(registry, finished):
    [record], _ = load_records(finished.out)
    other = json.loads(json.dumps(record))
    other["dataset"]["name"] = "not-installed"
    assert record_identity(other, registry) is None
    assert record_identity(record, registry) is not None


def test_earlier_options_must_name_declared_options():
    spec = DatasetSpec(name="d", summary="s", load=lambda o: None, options={"a": 1},
                       earlier_options={"b": 2})
    with pytest.raises(SpecError, match="earlier_options names undeclared options"):
        spec.validate()


_VALUES = st.one_of(st.integers(-5, 5), st.floats(-2, 2, allow_nan=False), st.text(max_size=3))


@given(
    st.dictionaries(st.sampled_from("abcde"), _VALUES, min_size=1),
    st.data(),
)
def test_recorded_options_fill_what_a_record_lacks(options, data):
    recorded_keys = data.draw(st.sets(st.sampled_from(sorted(options))))
    recorded = {k: data.draw(_VALUES) for k in recorded_keys}
    earlier = {k: data.draw(_VALUES) for k in data.draw(st.sets(st.sampled_from(sorted(options))))}
    out = recorded_options(options, earlier, recorded)
    assert set(out) == set(options)
    for key in options:
        want = recorded.get(key, earlier.get(key, options[key]))
        assert out[key] == want
    # An option the dataset no longer declares: no options give that data.
    assert recorded_options(options, earlier, {**recorded, "zz": 1}) is None
