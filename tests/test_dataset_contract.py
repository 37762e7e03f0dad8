"""The dataset contract that ``load_dataset`` checks (``mssbench/data/contract.py``)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from mssbench import DatasetSpec, hookimpl
from mssbench.api import load_checked_dataset, load_dataset, run
from mssbench.cli import main
from mssbench.config import RunConfig
from mssbench.data.contract import DataContractError, split_counts, validate, violations
from mssbench.plugins import load_registry
from mssbench.spec import Split
from mssbench.testing import make_dataset, make_schema


def tiny(n_scenarios: int = 3, **schema_kw):
    return make_dataset(make_schema(n_scenarios=n_scenarios, **schema_kw), 200, 50, 50, seed=3)


def with_split(data, name: str, **columns):
    """``data`` with columns of split ``name`` replaced (a deliberately broken dataset)."""
    split = getattr(data, name)
    return dataclasses.replace(data, **{name: dataclasses.replace(split, **columns)})


def only_error(data) -> str:
    with pytest.raises(DataContractError) as info:
        validate(data, "tiny", warn=lambda _line: None)
    assert len(info.value.violations) == 1, info.value.violations
    [line] = info.value.violations
    assert "\n" not in line and str(info.value) == line
    return line


def test_a_conforming_dataset_passes_and_counts():
    data = tiny()
    counts = validate(data, "tiny")
    assert counts["warnings"] == []
    for name in ("train", "valid", "test"):
        split = getattr(data, name)
        got = counts["splits"][name]
        assert got["rows"] == len(split)
        assert got["positives"]["ctr"] == int(split.labels[:, 0].sum())
        for s, scenario in enumerate(data.schema.scenarios):
            rows = split.scenario == s
            cell = got["scenarios"][scenario]
            assert cell["rows"] == int(rows.sum())
            assert cell["positives"]["ctcvr"] == int(split.labels[rows, 1].sum())
    json.dumps(counts)  # goes into the record as it is


def test_id_equal_to_vocab_size():
    data = tiny()
    cat = data.test.categorical.clone()
    vocab = data.schema.categorical[2].vocab_size
    cat[17, 2] = vocab
    line = only_error(with_split(data, "test", categorical=cat))
    assert line == (
        f"dataset 'tiny', split test, column 'c2': id {vocab} at row 17 is outside "
        f"[0, {vocab}) (vocab_size {vocab}, OOV id 0 included)"
    )


def test_negative_id_names_the_first_bad_row():
    data = tiny()
    cat = data.train.categorical.clone()
    cat[[40, 9, 120], 0] = -1
    line = only_error(with_split(data, "train", categorical=cat))
    assert line.startswith("dataset 'tiny', split train, column 'c0': id -1 at row 9 ")


@pytest.mark.parametrize(("bad", "row"), [(3, 5), (-1, 5), (99, 0)])
def test_scenario_id_outside_the_declared_scenarios(bad, row):
    data = tiny(n_scenarios=3)
    # LoadedDataset checks the ids when built; a plugin that edits them afterwards in place
    # (as this does) is caught by the contract check before any model indexes with them.
    data.valid.scenario[[row, 30]] = bad
    line = only_error(data)
    assert line == (
        f"dataset 'tiny', split valid, column 'scenario': id {bad} at row {row} is outside "
        "[0, 3) (scenarios s0, s1, s2)"
    )


def test_floating_point_ids():
    data = tiny()
    line = only_error(with_split(data, "valid", categorical=data.valid.categorical.float()))
    assert line == (
        "dataset 'tiny', split valid, column 'categorical': ids must be integers, "
        "got dtype torch.float32"
    )


@pytest.mark.parametrize("bad", [2.0, 0.5, -1.0, float("nan")])
def test_label_outside_0_1(bad):
    data = tiny(implies=False)
    labels = data.valid.labels.clone()
    labels[11, 1] = bad
    line = only_error(with_split(data, "valid", labels=labels))
    assert line == (
        f"dataset 'tiny', split valid, column 'ctcvr' (task ctcvr): label {bad!r} at row 11, "
        "expected 0 or 1"
    )


def test_relation_broken_row_by_row():
    data = tiny()
    labels = data.train.labels.clone()
    row = int(torch.nonzero(labels[:, 0] == 0)[5, 0])
    labels[row, 1] = 1.0  # ctcvr without ctr
    line = only_error(with_split(data, "train", labels=labels))
    assert line == (
        f"dataset 'tiny', split train, column 'ctcvr' (task ctcvr): row {row} has ctcvr = 1 "
        "but ctr = 0, and the schema declares that ctcvr implies ctr"
    )


def test_relation_is_not_checked_without_declaration():
    data = tiny(implies=False)
    labels = data.train.labels.clone()
    labels[:, 0], labels[:, 1] = 0.0, 1.0
    validate(with_split(data, "train", labels=labels), "tiny")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numeric(bad):
    data = tiny()
    num = data.test.numeric.clone()
    num[3, 4] = bad
    line = only_error(with_split(data, "test", numeric=num))
    assert line == (
        f"dataset 'tiny', split test, column 'n4': value {bad} at row 3, expected a finite number"
    )


def test_large_finite_numerics_pass():
    data = tiny()
    num = data.train.numeric.clone()
    num[:, 0] = torch.finfo(torch.float32).max
    validate(with_split(data, "train", numeric=num), "tiny")


def test_every_violation_is_one_line():
    data = tiny()
    cat, num = data.test.categorical.clone(), data.train.numeric.clone()
    cat[0, 1] = 99
    num[5, 0] = float("nan")
    data = with_split(with_split(data, "test", categorical=cat), "train", numeric=num)
    found = violations(data, "tiny")
    assert [line.split(",")[1] for line in found] == [" split train", " split test"]
    with pytest.raises(DataContractError) as info:
        validate(data, "tiny")
    assert str(info.value).split("\nError: ") == found


def test_missing_scenario_is_a_warning_naming_scenario_and_split():
    data = tiny()
    keep = torch.nonzero(data.train.scenario != 1)[:, 0]
    data = dataclasses.replace(data, train=data.train.subset(keep))
    lines: list[str] = []
    counts = validate(data, "tiny", warn=lines.append)
    assert lines == ["dataset 'tiny': scenario 's1' has no rows in split train"]
    assert counts["warnings"] == lines
    assert counts["splits"]["train"]["scenarios"]["s1"] == {
        "rows": 0,
        "positives": {"ctr": 0, "ctcvr": 0},
    }


def test_an_empty_split_passes_with_a_warning_per_scenario():
    data = tiny(n_scenarios=2)
    data = dataclasses.replace(data, valid=data.valid.subset(torch.arange(0)))
    lines: list[str] = []
    counts = validate(data, "tiny", warn=lines.append)
    assert lines == [
        "dataset 'tiny': scenario 's0' has no rows in split valid",
        "dataset 'tiny': scenario 's1' has no rows in split valid",
    ]
    assert counts["splits"]["valid"]["rows"] == 0


# ------------------------------------------------------------------------------------------
# Property tests: the id-range and label checks find exactly the first bad row
# ------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    vocab=st.integers(1, 50),
    ids=st.lists(st.integers(-3, 60), min_size=1, max_size=80),
    dtype=st.sampled_from([torch.int16, torch.int32, torch.int64]),
)
def test_id_range_property(vocab, ids, dtype):
    schema = make_schema(n_scenarios=1, vocab_sizes=(vocab,), n_numeric=0, tasks=("ctr",))
    n = len(ids)
    split = Split(
        torch.tensor(ids, dtype=dtype)[:, None],
        torch.zeros(n, 0),
        torch.zeros(n, dtype=torch.long),
        torch.zeros(n, 1),
    )
    data = dataclasses.replace(make_dataset(schema, 5, 5, 5), test=split)
    found = [line for line in violations(data, "p") if "split test" in line]
    bad = [i for i, v in enumerate(ids) if not 0 <= v < vocab]
    if not bad:
        assert found == []
    else:
        assert found == [
            f"dataset 'p', split test, column 'c0': id {ids[bad[0]]} at row {bad[0]} is outside "
            f"[0, {vocab}) (vocab_size {vocab}, OOV id 0 included)"
        ]


@settings(max_examples=60, deadline=None)
@given(labels=st.lists(st.sampled_from([0.0, 1.0, 0.5, 2.0, -1.0, float("nan")]), min_size=1))
def test_label_property(labels):
    schema = make_schema(n_scenarios=1, vocab_sizes=(), n_numeric=0, tasks=("ctr",))
    n = len(labels)
    split = Split(
        torch.zeros(n, 0, dtype=torch.long),
        torch.zeros(n, 0),
        torch.zeros(n, dtype=torch.long),
        torch.tensor(labels)[:, None],
    )
    data = dataclasses.replace(make_dataset(schema, 5, 5, 5), valid=split)
    found = [line for line in violations(data, "p") if "split valid" in line]
    bad = [i for i, v in enumerate(labels) if v not in (0.0, 1.0)]
    assert len(found) == (1 if bad else 0)
    if bad:
        assert f" at row {bad[0]}, expected 0 or 1" in found[0]
    counts = split_counts(dataclasses.replace(data, valid=split))["valid"]
    assert counts["positives"]["ctr"] == labels.count(1.0)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.floats(-1e3, 1e3, width=32),
            st.sampled_from([3e38, -3e38, float("nan"), float("inf"), float("-inf")]),
        ),
        min_size=1,
        max_size=60,
    ),
    columns=st.integers(1, 3),
)
def test_numeric_property(values, columns):
    """Non-finite values are found at their first row, whatever overflows on the way."""
    schema = make_schema(n_scenarios=1, vocab_sizes=(), n_numeric=columns, tasks=("ctr",))
    n = len(values)
    num = torch.tensor(values, dtype=torch.float32)[:, None].repeat(1, columns)
    num[:, 0] = 1.0  # a clean column beside the others
    split = Split(torch.zeros(n, 0, dtype=torch.long), num, torch.zeros(n, dtype=torch.long),
                  torch.zeros(n, 1))  # fmt: skip
    data = dataclasses.replace(make_dataset(schema, 5, 5, 5), train=split)
    found = [line for line in violations(data, "p") if "split train" in line]
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if not bad or columns == 1:
        assert found == []
    else:
        assert len(found) == columns - 1
        assert all(f"at row {bad[0]}, expected a finite number" in line for line in found)


# ------------------------------------------------------------------------------------------
# load_dataset and the run record
# ------------------------------------------------------------------------------------------


def broken_spec(name: str = "broken") -> DatasetSpec:
    """A dataset plugin whose test split holds an id equal to the vocabulary size."""

    def load(options):
        data = tiny()
        cat = data.test.categorical.clone()
        cat[4, 3] = data.schema.categorical[3].vocab_size
        return with_split(data, "test", categorical=cat)

    return DatasetSpec(name=name, summary="Breaks the id range", load=load)


class BrokenPlugin:
    @staticmethod
    @hookimpl
    def mssbench_register_datasets():
        return [broken_spec()]


def test_load_dataset_refuses_a_broken_plugin():
    registry = load_registry(extra=[("broken-plugin", BrokenPlugin)])
    with pytest.raises(DataContractError, match=r"^dataset 'broken', split test, column 'c3': id"):
        load_dataset(registry, "broken", {})


def test_cli_run_reports_each_violation_as_an_error_line(tmp_path):
    plugin = tmp_path / "broken_data.py"
    plugin.write_text(
        "import torch\n"
        "from mssbench import DatasetSpec, hookimpl\n"
        "from mssbench.testing import make_dataset\n"
        "import dataclasses\n\n"
        "def load(options):\n"
        "    data = make_dataset(n_train=100, n_valid=20, n_test=20)\n"
        "    lab = data.train.labels.clone(); lab[7, 0] = 3.0\n"
        "    num = data.test.numeric.clone(); num[2, 1] = float('nan')\n"
        "    return dataclasses.replace(data,\n"
        "        train=dataclasses.replace(data.train, labels=lab),\n"
        "        test=dataclasses.replace(data.test, numeric=num))\n\n"
        "@hookimpl\n"
        "def mssbench_register_datasets():\n"
        "    return [DatasetSpec(name='broken-file', summary='bad labels', load=load)]\n"
    )
    result = CliRunner().invoke(
        main,
        ["run", "--plugin", str(plugin), "-m", "mmoe", "-d", "broken-file", "--out", str(tmp_path)],
    )
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: dataset 'broken-file', split train, column 'ctr' (task ctr): label 3.0 at row 7, "
        "expected 0 or 1",
        "Error: dataset 'broken-file', split test, column 'n1': value nan at row 2, "
        "expected a finite number",
    ]
    assert not list(tmp_path.glob("*.json"))


def test_record_holds_the_counts(tmp_path, registry):
    config = RunConfig(
        model="constant",
        dataset="tiny-synth",
        data_options={"n_train": 300},
        epochs=1,
        batch_size=128,
        out=str(tmp_path),
        progress=False,
    )
    result = run(config, registry, log=lambda _line: None)
    _, counts = load_checked_dataset(registry, "tiny-synth", {"n_train": 300})
    assert result.record["dataset"]["counts"] == counts
    on_disk = json.loads(result.path.read_text())
    assert on_disk["dataset"]["counts"]["splits"]["train"]["rows"] == 300
    assert set(on_disk["dataset"]["counts"]["splits"]["test"]["scenarios"]) == {"s0", "s1", "s2"}
