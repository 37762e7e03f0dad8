"""The dataset conformance suite (``mssbench/testing/dataset_checks.py``, ``mssbench check``)."""

from __future__ import annotations

import dataclasses
import itertools
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mssbench import DatasetSpec
from mssbench.cli import main
from mssbench.plugins import load_registry
from mssbench.testing import check_dataset, dataset_checks, make_dataset, run_dataset_checks
from mssbench.testing.synthetic import tiny_dataset_spec

FIXTURES = Path(__file__).parent / "fixtures" / "aliexpress"
REGISTRY = load_registry()


def statuses(results) -> dict[str, str]:
    return {r.check: r.status for r in results}


def messages(results) -> dict[str, str]:
    return {r.check: r.message for r in results}


def spec_of(load, name: str = "broken", **kw) -> DatasetSpec:
    return DatasetSpec(name=name, summary="deliberately broken", load=load, **kw)


def renamed(data, name: str, synthetic: bool = False):
    """``data`` under a protocol of dataset ``name`` (not synthetic, so every check applies)."""
    protocol = dataclasses.replace(data.protocol, dataset=name, synthetic=synthetic)
    return dataclasses.replace(data, protocol=protocol)


# ------------------------------------------------------------------------------------------
# Built-in datasets pass
# ------------------------------------------------------------------------------------------


@pytest.mark.slow  # three loads of the bundled file: about 10 s
def test_census_income_conforms_with_its_oov_probe():
    results = check_dataset("census-income")
    assert statuses(results)["check_dataset_unseen_value_is_oov"] == "passed"
    assert statuses(results)["check_dataset_vocab_fitted_on_train"] == "passed"


def test_aliexpress_on_the_fixtures_conforms(tmp_path):
    from mssbench_aliexpress import ingest

    source = tmp_path / "src"
    for country, (train, test) in {"NL": ("train", "test"), "ES": ("test", "train")}.items():
        folder = source / f"AliExpress_{country}"
        folder.mkdir(parents=True)
        shutil.copy(FIXTURES / f"{train}.csv", folder / "train.csv")
        shutil.copy(FIXTURES / f"{test}.csv", folder / "test.csv")
    ingest.prepare(source, tmp_path / "cache", lambda _line: None)
    for memory in ("resident", "mapped"):
        options = {"data_dir": str(tmp_path / "cache"), "memory": memory}
        results = check_dataset("aliexpress", options)
        assert statuses(results)["check_dataset_vocab_fitted_on_train"] == "passed"
        assert statuses(results)["check_dataset_unseen_value_is_oov"] == "passed"


def test_aliexpress_with_a_vocabulary_fitted_on_every_split_fails_the_probe(monkeypatch):
    from mssbench_aliexpress import ingest

    def every_split(code_counts, countries):
        vocab = {name: set() for name in ingest.CATEGORICAL}
        for cc in countries:
            for split in ingest.SPLITS:
                for name, counts in code_counts[cc][split].items():
                    vocab[name].update(int(c) for c, k in counts.items() if k)
        return {name: sorted(v) for name, v in vocab.items()}

    monkeypatch.setattr(ingest, "vocabularies", every_split)
    got = failed("aliexpress", checks=[dataset_checks.check_dataset_unseen_value_is_oov])
    assert got == {
        "check_dataset_unseen_value_is_oov": "a 'categorical_1' value seen only in split test "
        "(row 3) was encoded 1000, expected the OOV id 0"
    }


def test_aliexpress_synth_conforms_at_a_small_size():
    results = check_dataset("aliexpress-synth", {"n_rows": 3000})
    skipped = {k for k, v in statuses(results).items() if v == "skipped"}
    assert skipped == {"check_dataset_vocab_fitted_on_train", "check_dataset_unseen_value_is_oov"}
    assert "generated data" in messages(results)["check_dataset_vocab_fitted_on_train"]


def test_tiny_synth_conforms_and_unrunnable_checks_are_skipped_not_passed():
    results = check_dataset(tiny_dataset_spec(), {"n_train": 300})
    assert statuses(results)["check_dataset_unseen_value_is_oov"] == "skipped"
    assert "oov_probe" in messages(results)["check_dataset_unseen_value_is_oov"]


# ------------------------------------------------------------------------------------------
# Broken dataset plugins fail the right check
# ------------------------------------------------------------------------------------------


def failed(spec, options=None, **kw) -> dict[str, str]:
    results = run_dataset_checks(spec, options, **kw)
    return {r.check: r.message for r in results if r.status == "failed"}


def test_vocabulary_fitted_beyond_train_fails():
    def load(_options):
        data = renamed(make_dataset(n_train=300, n_valid=50, n_test=50), "leaky")
        cat = data.test.categorical.clone()
        train_ids = set(data.train.categorical[:, 1].tolist())
        unseen = max(train_ids) + 1  # a test-only category given an id of its own
        schema = data.schema
        fields = list(schema.categorical)
        fields[1] = dataclasses.replace(fields[1], vocab_size=unseen + 1)
        cat[6, 1] = unseen
        data = dataclasses.replace(
            data, schema=dataclasses.replace(schema, categorical=tuple(fields))
        )
        return dataclasses.replace(data, test=dataclasses.replace(data.test, categorical=cat))

    got = failed(spec_of(load, "leaky"))
    assert set(got) == {"check_dataset_vocab_fitted_on_train"}
    assert "split test, field 'c1'" in got["check_dataset_vocab_fitted_on_train"]
    assert "at row 6 never occurs in train" in got["check_dataset_vocab_fitted_on_train"]


def test_nondeterministic_split_fails():
    draws = itertools.count()

    def load(_options):
        return renamed(make_dataset(n_train=200, seed=next(draws)), "shuffled")

    got = failed(spec_of(load, "shuffled"))
    assert set(got) == {"check_dataset_split_deterministic"}
    assert got["check_dataset_split_deterministic"].startswith("split train: ")


def test_unstable_protocol_id_fails():
    versions = itertools.count(1)

    def load(_options):
        data = renamed(make_dataset(n_train=200), "drifting")
        protocol = dataclasses.replace(data.protocol, version=next(versions))
        return dataclasses.replace(data, protocol=protocol)

    got = failed(spec_of(load, "drifting"))
    assert set(got) == {"check_dataset_protocol_stable"}
    assert "protocol id changed between loads" in got["check_dataset_protocol_stable"]


def test_contract_violation_and_protocol_of_another_dataset_fail():
    def load(_options):
        data = make_dataset(n_train=200)  # protocol.dataset is "tiny-synth"
        labels = data.valid.labels.clone()
        labels[2, 0] = 7.0
        return dataclasses.replace(data, valid=dataclasses.replace(data.valid, labels=labels))

    got = failed(spec_of(load, tags={"synthetic": True}))
    assert set(got) == {"check_dataset_loads", "check_dataset_contract"}
    assert got["check_dataset_contract"] == (
        "dataset 'broken', split valid, column 'ctr' (task ctr): label 7.0 at row 2, "
        "expected 0 or 1"
    )
    assert "protocol.dataset is 'tiny-synth'" in got["check_dataset_loads"]


def test_scenario_without_training_rows_fails():
    def load(_options):
        data = renamed(make_dataset(n_train=300), "gappy")
        keep = torch.nonzero(data.train.scenario != 2)[:, 0]
        return dataclasses.replace(data, train=data.train.subset(keep))

    got = failed(spec_of(load, "gappy"))
    assert got == {"check_dataset_scenarios_in_train": "scenarios without training rows: s2"}


def test_synthetic_tag_must_match_the_protocol():
    def load(_options):
        return renamed(make_dataset(n_train=200), "untagged", synthetic=True)  # spec: no tag

    got = failed(spec_of(load, "untagged"))
    assert set(got) == {"check_dataset_protocol_stable"}


def test_a_plugin_whose_load_raises_is_reported_not_crashed():
    def load(_options):
        raise RuntimeError("disk on fire")

    got = failed(spec_of(load))
    assert "check_dataset_spec_well_formed" not in got
    line = load.__code__.co_firstlineno + 1
    assert got["check_dataset_contract"] == (
        f"load failed: RuntimeError: disk on fire ({__file__}, line {line})"
    )


@pytest.mark.slow  # two loads of the bundled file
def test_census_with_a_vocabulary_fitted_on_every_split_fails(monkeypatch):
    """The generic check and the census probe catch an encoder fitted on valid and test too."""
    import numpy as np

    from mssbench.data import tabular

    real_encode, real_vocab = tabular.encode_splits, tabular.Vocabulary
    union: dict[int, np.ndarray] = {}

    class EverySplit(real_vocab):  # fitted on train + valid + test instead of train
        @classmethod
        def fit(cls, values, min_count=1):
            return real_vocab.fit(union.get(id(values), values), min_count)

    def encode(parts, layout):
        for c in layout.categorical:
            union[id(parts["train"][c])] = np.concatenate([parts[s][c] for s in parts])
        return real_encode(parts, layout)

    monkeypatch.setattr(tabular, "encode_splits", encode)
    monkeypatch.setattr(tabular, "Vocabulary", EverySplit)
    checks = [
        dataset_checks.check_dataset_vocab_fitted_on_train,
        dataset_checks.check_dataset_unseen_value_is_oov,
    ]
    got = failed("census-income", checks=checks)
    assert "expected the OOV id 0" in got["check_dataset_unseen_value_is_oov"]
    assert "never occurs in train" in got["check_dataset_vocab_fitted_on_train"]


def test_a_probe_passed_by_the_caller_overrides_the_declared_one(tmp_path):
    from mssbench.testing import OovProbe

    def probe(_workdir, _options):
        return OovProbe(options={}, split="test", row=0, field="no such field")

    got = failed(tiny_dataset_spec(), {"n_train": 200}, oov_probe=probe)
    assert got == {"check_dataset_unseen_value_is_oov": "probe names unknown field 'no such field'"}


# ------------------------------------------------------------------------------------------
# mssbench check <dataset>
# ------------------------------------------------------------------------------------------


def test_cli_check_dataset(tmp_path):
    args = ["check", "tiny-synth", "--plugin", "mssbench.testing.plugin", "-D", "n_train=300"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "tiny-synth (dataset, plugin mssbench.testing.plugin)" in result.output
    lines = {line.split()[0]: line.split()[1] for line in result.output.splitlines()[3:] if line}
    assert lines["check_dataset_contract"] == "passed"
    assert lines["check_dataset_unseen_value_is_oov"] == "skipped"


def test_cli_check_rejects_an_option_no_dataset_takes():
    result = CliRunner().invoke(
        main, ["check", "tiny-synth", "--plugin", "mssbench.testing.plugin", "-D", "n_rowz=3"]
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "Error: no dataset checked takes the data option 'n_rowz'; valid: n_train, seed"
    )


def test_cli_check_fails_on_a_broken_dataset(tmp_path):
    plugin = tmp_path / "gappy.py"
    plugin.write_text(
        "import dataclasses\n"
        "from mssbench import DatasetSpec, hookimpl\n"
        "from mssbench.testing import make_dataset\n\n"
        "def load(options):\n"
        "    data = make_dataset(n_train=200)\n"
        "    train = data.train.subset((data.train.scenario != 2).nonzero()[:, 0])\n"
        "    protocol = dataclasses.replace(data.protocol, dataset='gappy')\n"
        "    return dataclasses.replace(data, train=train, protocol=protocol)\n\n"
        "@hookimpl\n"
        "def mssbench_register_datasets():\n"
        "    return [DatasetSpec(name='gappy', summary='no s2 in train', load=load,\n"
        "                        tags={'synthetic': True})]\n"
    )
    result = CliRunner().invoke(main, ["check", "gappy", "--plugin", str(plugin)])
    assert result.exit_code == 1
    [line] = [x for x in result.output.splitlines() if x.startswith("check_dataset_scenarios")]
    assert line.split()[1:] == ["failed", "scenarios", "without", "training", "rows:", "s2"]


def test_cli_check_unknown_name():
    result = CliRunner().invoke(main, ["check", "nosuch"])
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "Error: no model, dataset, metric or balancer named 'nosuch' (models: "
    )
    datasets = result.stderr.split("datasets: ")[1].split(";")[0].split(", ")
    assert {"aliexpress", "aliexpress-synth", "census-income"} <= set(datasets)
