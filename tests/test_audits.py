"""leaderboards/audits/consistency.py: a systematic shift between records and repeats is found."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import tiny_run_args

from mssbench.cli import main
from mssbench.records import content_digest

SCRIPT = Path(__file__).resolve().parents[1] / "leaderboards" / "audits" / "consistency.py"


@pytest.fixture(scope="module")
def consistency():
    spec = importlib.util.spec_from_file_location("consistency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = tmp_path_factory.mktemp("records")
    for seed in range(3):
        args = tiny_run_args(out, 1, "--no-progress", "--seed", str(seed))
        assert CliRunner().invoke(main, args).exit_code == 0
    return out


def _shifted(records: Path, out: Path, by: float) -> Path:
    """The records with every pooled AUC moved by ``by`` (digests recomputed)."""
    out.mkdir()
    for path in records.glob("*.json"):
        record = json.loads(path.read_text())
        for cell in record["test"]["metrics"]:
            if cell["scenario"] == "pooled" and cell["metric"] == "auc":
                cell["value"] += by
        record["test"]["summary"] = {
            k: v + by if k.startswith("auc/") else v for k, v in record["test"]["summary"].items()
        }
        record["digest"] = content_digest(record)
        (out / path.name).write_text(json.dumps(record))
    return out


def test_identical_repeats_are_consistent_and_a_shift_is_found(consistency, records, tmp_path):
    tasks = sorted(json.loads(next(records.glob("*.json")).read_text())["test"]["summary"])
    tasks = [k.split("/", 1)[1] for k in tasks if k.startswith("auc/")]
    same = tmp_path / "same"
    shutil.copytree(records, same)
    row = consistency.table([str(records)], [str(same)], tasks).iloc[0]
    assert row["seeds"] == 3 and row["mean difference"] == 0 and not row["shifted"]
    moved = _shifted(records, tmp_path / "moved", -0.01)
    row = consistency.table([str(records)], [str(moved)], tasks).iloc[0]
    assert row["seeds"] == 3 and row["mean difference"] == pytest.approx(-0.01)
    assert row["shifted"]
