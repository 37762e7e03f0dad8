"""benchmarks/gpu.sh and benchmarks/gpu_speed.py work end to end (their CPU ``--tiny`` mode)."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load():
    spec = importlib.util.spec_from_file_location("bench_gpu_speed", BENCHMARKS / "gpu_speed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_tiny_sections_write_figures_and_the_report(tmp_path):
    gpu_speed = _load()
    assert gpu_speed.main(["--tiny", "--sections", "step,stream", "--out", str(tmp_path)]) == 0
    step = json.loads((tmp_path / "step.json").read_text())
    assert step["tiny"] is True
    for mode in ("eager", "graph"):
        m = step["results"][mode]
        assert m["samples_per_s"] > 0 and m["samples"] > 0
    stream = json.loads((tmp_path / "stream.json").read_text())
    assert stream["graph"]["samples"] == stream["eager"]["samples"]  # whole epochs, same rows
    assert set(stream["graph"]["extrapolated_minutes_per_epoch"]) == {
        "twin_50M_rows",
        "real_170M_train_rows",
    }
    assert not list(tmp_path.glob("*.partial.json"))  # finished sections keep no partial file
    assert gpu_speed.main(["--report", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "results.md").read_text()
    assert "## step" in text and "## stream" in text and "EXTRAPOLATED" in text
    assert "## models\n\nnot run" in text


def test_a_spent_budget_skips_measurements_and_says_so(tmp_path):
    gpu_speed = _load()
    args = ["--tiny", "--sections", "step", "--budget", "0", "--out", str(tmp_path)]
    assert gpu_speed.main(args) == 0
    step = json.loads((tmp_path / "step.json").read_text())
    assert step["results"]["eager"] == {"error": "skipped: time budget spent"}


def test_unknown_section_is_refused(tmp_path):
    gpu_speed = _load()
    with pytest.raises(SystemExit, match="unknown section"):
        gpu_speed.main(["--tiny", "--sections", "stpe", "--out", str(tmp_path)])


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_sh_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(BENCHMARKS / "gpu.sh")]).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_sh_tiny_runs_every_section(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    res = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu.sh"), "--tiny"], env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr
    for name in ("step", "ceiling", "models", "grouping", "stream"):
        data = json.loads((tmp_path / f"{name}.json").read_text())
        assert "error" not in data, (name, data)
    assert "gpu.sh done" in res.stdout
