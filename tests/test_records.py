import json

import pytest

from mssbench.errors import DataError
from mssbench.records import write_json_atomic, write_record
from mssbench.results import RESULT_COLUMNS, RUN_LABEL_COLUMNS, load_records, load_results


def test_atomic_write_never_overwrites(tmp_path):
    p = write_json_atomic(tmp_path / "a.json", {"x": 1})
    with pytest.raises(FileExistsError):
        write_json_atomic(p, {"x": 2})
    assert json.loads(p.read_text()) == {"x": 1}
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temp left behind


def test_write_record_picks_a_free_name(tmp_path):
    a = write_record(tmp_path, "run", {"n": 1})
    b = write_record(tmp_path, "run", {"n": 2})
    assert a.name == "run.json" and b.name == "run-2.json"
    assert json.loads(a.read_text()) == {"n": 1}


def test_load_results_frame_and_rejections(registry, tmp_path):
    from mssbench.api import run
    from mssbench.config import RunConfig

    out = tmp_path / "runs"
    for seed in (0, 1):
        run(
            RunConfig(
                model="constant",
                dataset="tiny-synth",
                epochs=1,
                seed=seed,
                out=str(out),
                progress=False,
            ),
            registry=registry,
            log=lambda m: None,
        )
    (out / "garbage.json").write_text("{not json")
    (out / "other.json").write_text(json.dumps({"hello": 1}))
    records, rejected = load_records(out)
    assert len(records) == 2
    reasons = {p.name: r for p, r in rejected}
    assert "not valid JSON" in reasons["garbage.json"]
    assert "missing key(s)" in reasons["other.json"]
    df = load_results(out)
    assert list(df.columns) == RESULT_COLUMNS + RUN_LABEL_COLUMNS
    assert set(df.seed) == {0, 1}
    pooled = df[(df.scenario == "pooled") & (df.metric == "auc") & (df.task == "ctr")]
    assert len(pooled) == 2
    # The constant model cannot rank: AUC exactly 0.5 on every pooled cell.
    assert pooled.value.tolist() == [0.5, 0.5]
    with pytest.raises(DataError, match="does not exist"):
        load_results(tmp_path / "nope")


def test_a_record_names_the_changed_files_of_its_checkout_and_whether_they_are_code(tmp_path):
    import subprocess

    from mssbench.leaderboard.commands import commit_label
    from mssbench.records import dirty_code, git_commit

    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )

    (tmp_path / "leaderboards").mkdir()
    for name in ("model.py", "README.md", "leaderboards/page.md"):
        (tmp_path / name).write_text("x\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "init")
    (tmp_path / "untracked.py").write_text("new\n")  # untracked files do not count
    clean = git_commit(tmp_path)
    assert clean["dirty"] is False and clean["dirty_paths"] == [] and dirty_code(clean) is False
    assert commit_label(clean) == clean["commit"][:12]

    (tmp_path / "README.md").write_text("y\n")
    (tmp_path / "leaderboards" / "page.md").write_text("y\n")
    pages = git_commit(tmp_path)
    assert pages["dirty"] and sorted(pages["dirty_paths"]) == ["README.md", "leaderboards/page.md"]
    assert dirty_code(pages) is False
    assert commit_label(pages).endswith("(records/pages changed, code clean)")

    (tmp_path / "model.py").write_text("y\n")
    code = git_commit(tmp_path)
    assert "model.py" in code["dirty_paths"] and dirty_code(code) is True
    assert commit_label(code).endswith("(dirty)")
    # A record written before the list existed is dirty for all anyone can tell.
    assert dirty_code({"commit": "abc", "dirty": True}) is None
    assert commit_label({"commit": "abc", "dirty": True}) == "abc (dirty)"


def test_records_name_the_code_state_their_process_started_with(monkeypatch, tmp_path):
    # A long suite's workers run the code they imported: a commit made meanwhile must not be
    # recorded as the code that ran, so the git state is read once per process.
    from click.testing import CliRunner
    from conftest import tiny_run_args

    from mssbench import records
    from mssbench.cli import main

    def state(commit):
        return lambda path=None: {"commit": commit, "dirty": False, "dirty_paths": []}

    records._loaded_code_state.cache_clear()
    monkeypatch.setattr(records, "git_commit", state("a" * 40))
    try:
        first = records.loaded_code_state()
        first["git"]["commit"] = "mutated"  # a caller's copy, not the process's state
        monkeypatch.setattr(records, "git_commit", state("b" * 40))  # committed meanwhile
        result = CliRunner().invoke(main, tiny_run_args(tmp_path, 1, "--no-progress"))
        assert result.exit_code == 0, result.output
        (path,) = tmp_path.rglob("*.json")
        record = json.loads(path.read_text())
        assert record["environment"]["git"]["commit"] == "a" * 40
        assert record["environment"]["code_sha256"] == records.loaded_code_state()["code_sha256"]
    finally:
        records._loaded_code_state.cache_clear()


def test_a_plugins_code_digest_is_the_code_imported_not_the_files_edited_later(
    tmp_path, monkeypatch
):
    from mssbench.plugins import load_registry
    from mssbench.records import plugin_source

    package = tmp_path / "pinned_plugin_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_registry(plugins=["pinned_plugin_pkg"], autoload=False)
    (package / "__init__.py").write_text("VALUE = 2\n")  # edited while the process runs
    recorded = plugin_source(registry, "pinned_plugin_pkg")["code_sha256"]
    from mssbench.codehash import code_sha256

    code_sha256.cache_clear()
    assert recorded != code_sha256(str(package.resolve()))  # the files as they are now
    (package / "__init__.py").write_text("VALUE = 1\n")
    code_sha256.cache_clear()
    assert recorded == code_sha256(str(package.resolve()))  # ... and of the code that was imported


def test_a_plugin_files_digest_is_the_file_imported_not_the_file_edited_later(tmp_path):
    import hashlib

    from mssbench.plugins import load_registry
    from mssbench.records import plugin_source

    plugin = tmp_path / "pinned_file_plugin.py"
    imported = b"VALUE = 1\n"
    plugin.write_bytes(imported)
    registry = load_registry(plugins=[str(plugin)], autoload=False)
    plugin.write_bytes(b"VALUE = 2\n")  # edited while the process runs
    source = plugin_source(registry, str(plugin))
    assert source["kind"] == "file"
    assert source["sha256"] == hashlib.sha256(imported).hexdigest()
