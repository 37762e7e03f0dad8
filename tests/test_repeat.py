"""`mssbench repeat`: a record's configuration run again, its numbers compared with the record's."""

import json

import pytest
from click.testing import CliRunner
from conftest import tiny_run_args
from hypothesis import given
from hypothesis import strategies as st

from mssbench.cli import main
from mssbench.errors import MssbenchError
from mssbench.records import content_digest
from mssbench.repeat import check_versions, compare

PLUGIN = ["--plugin", "mssbench.testing.plugin"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One finished tiny run's record file."""
    out = tmp_path_factory.mktemp("runs")
    result = CliRunner().invoke(main, tiny_run_args(out, 2, "--no-progress"))
    assert result.exit_code == 0, result.output
    (path,) = out.rglob("*.json")
    return path


def _repeat(*args):
    return CliRunner().invoke(main, ["repeat", *PLUGIN, *map(str, args)])


def test_a_record_repeats_bit_for_bit(recorded, tmp_path):
    result = _repeat(recorded, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("repeats:"))
    n = json.loads(recorded.read_text())["test"]["metrics"]
    assert f"{len(n) + 3} of {len(n) + 3} numbers identical" in line  # cells + training facts
    (again,) = tmp_path.rglob("*.json")
    assert json.loads(again.read_text())["run_hash"] == json.loads(recorded.read_text())["run_hash"]


def test_a_forged_number_with_a_valid_digest_is_caught(recorded, tmp_path):
    # The digest is a checksum, not a signature: a record rewritten with its digest recomputed
    # passes every check on reading. Running it again is what catches the invented number.
    record = json.loads(recorded.read_text())
    cell = next(c for c in record["test"]["metrics"] if c["scenario"] not in ("pooled", "macro"))
    cell["value"] = 0.999 if cell["metric"] == "auc" else 0.001
    record["digest"] = content_digest(record)
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(record))
    result = _repeat(forged)
    assert result.exit_code == 1, result.output
    assert "DIFFERS:" in result.output
    assert f"{cell['scenario']}/{cell['task']}/{cell['metric']}" in result.output


def test_a_record_of_another_model_version_is_refused(recorded, registry):
    from mssbench.repeat import load_for_repeat

    record, config = load_for_repeat(recorded)
    record["model"]["version"] = record["model"]["version"] + 1
    with pytest.raises(MssbenchError, match="run.json: model .* cannot repeat"):
        check_versions(record, config, registry, "run.json")


def test_a_file_that_is_not_a_record_is_one_error_line(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    result = _repeat(bad)
    assert result.exit_code == 2
    assert result.output.strip().startswith("Error:") and str(bad) in result.output
    assert _repeat(bad, "--tolerance", "-1").exit_code == 2


def _record(cells, training=None):
    return {
        "test": {"metrics": [{"scenario": s, "task": "t", "metric": "auc", "value": v}
                             for s, v in cells.items()]},
        "training": training or {"epochs_run": 2, "best_epoch": 1, "best_selection_score": 0.5},
    }


_VALUES = st.one_of(st.none(), st.floats(0, 1))


@given(
    st.dictionaries(st.sampled_from(list("abcdef")), st.tuples(_VALUES, _VALUES), min_size=1),
    st.floats(0, 0.5),
)
def test_every_number_is_identical_close_or_different(cells, tolerance):
    a = _record({k: v[0] for k, v in cells.items()})
    b = _record({k: v[1] for k, v in cells.items()})
    result = compare(a, b, tolerance, "r")
    assert result.compared == len(cells) + 3
    assert result.identical + len(result.close) + len(result.differ) == result.compared
    gaps = [abs(x - y) for x, y in cells.values() if x is not None and y is not None]
    one_sided = any((x is None) != (y is None) for x, y in cells.values())
    assert result.repeats == (not one_sided and all(g <= tolerance for g in gaps))
    assert compare(a, a, 0.0, "r").identical == result.compared


def test_a_directory_stands_for_its_records_and_a_sample_is_reproducible(tmp_path, registry):
    from mssbench.repeat import record_paths

    out = tmp_path / "runs"
    for seed in range(3):
        args = tiny_run_args(out, 1, "--no-progress", "--seed", str(seed))
        assert CliRunner().invoke(main, args).exit_code == 0
    (out / "notes.json").write_text("{}")  # not a record: left out
    every, left_out = record_paths([str(out)], registry)
    assert left_out == 0
    assert len(every) == 3 and all(p.endswith(".json") and "notes" not in p for p in every)
    drawn, _ = record_paths([str(out)], registry, sample=2, seed=7)
    assert len(drawn) == 2 and set(drawn) <= set(every)
    assert drawn == record_paths([str(out)], registry, sample=2, seed=7)[0]
    assert record_paths([str(out)], registry, sample=5)[0] == every
    result = _repeat(out, "--sample", "1")
    assert result.exit_code == 0, result.output
    assert "Repeating 1 record(s)" in result.output and result.output.count("repeats:") == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _repeat(empty)
    assert result.exit_code == 2 and "no repeatable run record" in result.output


def test_records_of_other_model_versions_are_left_out_of_a_directory(recorded, tmp_path):
    # A page's directory keeps the records of earlier model versions: they cannot repeat, so
    # a spot check draws among the others and says how many it left out; named alone, such a
    # record is reported and the command exits 2 after the others ran.
    record = json.loads(recorded.read_text())
    record["model"]["version"] += 1
    record["started_at"] = "2000-01-01T00:00:00+00:00"
    record["digest"] = content_digest(record)
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "old.json").write_text(json.dumps(record))
    (runs / "current.json").write_text(recorded.read_text())
    result = _repeat(runs)
    assert result.exit_code == 0, result.output
    assert "1 record(s) of model versions not installed here left out" in result.output
    result = _repeat(runs / "old.json", runs / "current.json")
    assert result.exit_code == 2
    assert "cannot repeat" in result.output and "old.json" in result.output
    assert result.output.count("repeats:") == 1
    assert "2 records: 1 repeat, 0 differ (0 of them on other hardware), 1 could not" in (
        result.output
    )
    # --same-hardware reads each record first: one that cannot repeat is still reported so.
    result = _repeat(runs / "old.json", runs / "current.json", "--same-hardware")
    assert result.exit_code == 2 and "cannot repeat" in result.output


def test_a_record_names_the_digest_of_the_code_that_ran_and_repeat_compares_it(recorded):
    from mssbench.repeat import code_differences

    record = json.loads(recorded.read_text())
    assert record["environment"]["code_sha256"].startswith("sha256:")
    assert record["model"]["source"]["code_sha256"].startswith("sha256:")
    assert code_differences(record, record) == []
    other = json.loads(recorded.read_text())
    other["model"]["source"]["code_sha256"] = "sha256:" + "0" * 64
    (note,) = code_differences(record, other)
    assert note.startswith("code of model plugin") and "differs" in note


def test_the_code_digest_follows_every_source_file(tmp_path):
    from mssbench.codehash import code_sha256

    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    (pkg / "sub" / "m.py").write_text("y = 2\n")
    (pkg / "data.csv").write_text("not code\n")
    first = code_sha256.__wrapped__(str(pkg))
    (pkg / "data.csv").write_text("changed, still not code\n")
    assert code_sha256.__wrapped__(str(pkg)) == first
    (pkg / "sub" / "m.py").write_text("y = 3\n")
    assert code_sha256.__wrapped__(str(pkg)) != first
    (pkg / "sub" / "m.py").write_text("y = 2\n")
    (pkg / "sub" / "m.py").rename(pkg / "sub" / "n.py")
    assert code_sha256.__wrapped__(str(pkg)) != first


def _elsewhere(recorded, path, cpu="Some Other CPU 9000", number=None):
    """The tiny record as if written on another CPU (digest recomputed), optionally forged."""
    record = json.loads(recorded.read_text())
    record["environment"]["hardware"]["cpu"] = cpu
    if number is not None:
        cell = next(c for c in record["test"]["metrics"] if c["metric"] == "auc")
        cell["value"] = number
    record["digest"] = content_digest(record)
    path.write_text(json.dumps(record))
    return path


def test_a_record_of_other_hardware_is_named_and_can_be_left_out(recorded, tmp_path):
    # Bit for bit needs the recorded hardware: a difference found on another CPU says so, and
    # --same-hardware leaves such records out instead of spending a run on them.
    elsewhere = _elsewhere(recorded, tmp_path / "elsewhere.json", number=0.999)
    result = _repeat(elsewhere)
    assert result.exit_code == 1, result.output
    assert "note: written on Some Other CPU 9000; this machine has " in result.output
    assert "DIFFERS on other hardware:" in result.output
    result = _repeat(elsewhere, recorded)
    assert result.exit_code == 1, result.output
    assert "2 records: 1 repeat, 1 differ (1 of them on other hardware), 0 could not" in (
        result.output
    )
    result = _repeat(elsewhere, recorded, "--same-hardware")
    assert result.exit_code == 0, result.output
    assert f"left out: {elsewhere}: written on Some Other CPU 9000" in result.output
    assert result.output.count("repeats:") == 1 and "DIFFERS" not in result.output
    result = _repeat(elsewhere, "--same-hardware")
    assert result.exit_code == 2
    assert "none of the 1 record(s) was written on this hardware" in result.output


def test_other_hardware_compares_device_type_and_model(recorded):
    import torch

    from mssbench.repeat import other_hardware

    record = json.loads(recorded.read_text())
    cpu = torch.device("cpu")
    assert other_hardware(record, cpu) is None
    # One generic CPU name (a virtual machine's) over two instruction sets: named too.
    assert record["environment"]["hardware"]["cpu_capability"]
    record["environment"]["hardware"]["cpu_capability"] = "VSX"
    assert other_hardware(record, cpu).endswith("with VSX kernels; this machine has " + (
        torch.backends.cpu.get_cpu_capability()
    ))
    record["environment"]["hardware"]["cpu"] = "Another CPU"
    assert other_hardware(record, cpu).startswith("written on Another CPU; this machine has ")
    record["environment"]["hardware"]["device"] = "cuda:0"
    assert other_hardware(record, cpu) == "written on cuda; this repeat runs on cpu"


def test_two_cpus_of_one_name_are_told_apart_by_their_identity(recorded, monkeypatch):
    # Two virtual machines both named "AMD EPYC" ran different CPU generations, and 9 of 21
    # models gave other numbers on each: the record's cpu_id tells them apart.
    import torch

    from mssbench import repeat
    from mssbench.repeat import other_hardware

    record = json.loads(recorded.read_text())
    cpu = torch.device("cpu")
    here = {"vendor": "AuthenticAMD", "family": "25", "model": "1", "stepping": "1",
            "caches": "L1d 32K, L2 512K, L3 32768K", "flags_sha256": "e5b590441e01fc46"}
    monkeypatch.setattr(repeat, "cpu_identity", lambda: dict(here))
    record["environment"]["hardware"]["cpu_id"] = dict(here)
    assert other_hardware(record, cpu) is None
    record["environment"]["hardware"]["cpu_id"]["model"] = "17"
    assert other_hardware(record, cpu).endswith("(model 17); this machine has model 1")
    record["environment"]["hardware"]["cpu_id"] = {"caches": "L1d 32K, L2 512K, L3 16384K"}
    assert "(caches L1d 32K, L2 512K, L3 16384K)" in other_hardware(record, cpu)
    del record["environment"]["hardware"]["cpu_id"]  # records before cpu_id: the name only
    assert other_hardware(record, cpu) is None


def test_a_record_names_its_cpus_identity(recorded):
    from mssbench.records import cpu_identity

    hardware = json.loads(recorded.read_text())["environment"]["hardware"]
    assert hardware["cpu_id"] == cpu_identity()
    if hardware["cpu_id"] is not None:  # Linux: what the CPU itself says
        assert {"vendor", "family", "model", "stepping", "flags_sha256"} <= set(hardware["cpu_id"])


def test_a_cpu_record_is_repeated_on_the_cpu_of_a_machine_with_a_gpu(recorded, monkeypatch):
    import torch

    from mssbench.repeat import load_for_repeat, repeat_device

    record, config = load_for_repeat(recorded)
    assert config.device == "auto" and repeat_device(record, config) == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert repeat_device(record, config) == "cpu"
    record["environment"]["hardware"]["device"] = "cuda:0"
    assert repeat_device(record, config) == "auto"
