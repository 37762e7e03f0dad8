"""Packaging: a built wheel (not an editable install) runs the README's main job, and the
``pytest11`` plugin neither needs hypothesis nor changes another project's hypothesis settings.

The wheel test builds from a copy of the sources (so nothing is written into the checkout),
installs the wheel with ``--no-deps --no-index`` into a fresh venv that sees this interpreter's
third-party packages (torch, pandas, ...) but no other copy of mssbench, and runs a tiny
Census-Income run from a directory outside the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What a wheel is built from: everything else in the checkout must not be needed.
SOURCES = ("pyproject.toml", "README.md", "mssbench", "plugins", "pytest_mssbench.py")
#: Site-packages entries of mssbench itself (an editable install included), hidden from the venv.
OWN = ("mssbench", "pytest_mssbench", "__editable__", "_mssbench")


def _env(**extra: str) -> dict[str, str]:
    """The environment without anything that points Python or mssbench at this checkout."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "MSSBENCH_", "PYTEST_", "HYPOTHESIS_"))
    }
    env.update(extra)
    return env


def _run(args: list[str], cwd: Path, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=timeout
    )


def _site_dirs() -> list[Path]:
    """This interpreter's site-packages directories."""
    dirs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    dirs |= {p for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    return [Path(d) for d in sorted(dirs) if Path(d).is_dir()]


def _dependencies_dir(dest: Path) -> Path:
    """A directory of links to this interpreter's installed packages, mssbench's own left out."""
    dest.mkdir()
    for site in _site_dirs():
        for entry in site.iterdir():
            if entry.name.lower().startswith(OWN) or entry.suffix == ".pth":
                continue
            if not (dest / entry.name).exists():
                (dest / entry.name).symlink_to(entry)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip(
        "setuptools", minversion="70.1", reason="building the wheel needs setuptools >= 70.1"
    )
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    build = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", str(tmp / "dist"), str(src)],
        cwd=tmp,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    [whl] = (tmp / "dist").glob("mssbench-*.whl")
    return whl


def test_wheel_ships_the_bundled_data_and_every_plugin_card(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "mssbench_census/data/census-income.test.gz" in names
    assert "mssbench_census/data/SOURCE.md" in names
    assert "pytest_mssbench.py" in names  # the pytest11 entry point
    assert "mssbench/baselines/regression.json" in names  # python -m mssbench.regression
    for plugin in sorted((ROOT / "plugins").iterdir()):
        if (plugin / "__init__.py").exists():
            assert f"{plugin.name}/README.md" in names, f"{plugin.name}/README.md not in the wheel"


def test_installed_wheel_runs_census_from_outside_the_repository(wheel, tmp_path):
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        cwd=tmp_path,
    ).stdout.strip()
    deps = _dependencies_dir(tmp_path / "deps")
    Path(purelib, "deps.pth").write_text(f"{deps}\n")
    install = _run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--no-compile", "-q",
         "--disable-pip-version-check", str(wheel)],
        cwd=tmp_path,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    mssbench = venv / ("Scripts/mssbench.exe" if os.name == "nt" else "bin/mssbench")
    params = {"embed_dim": 4, "n_experts": 2, "expert_hidden": 8, "tower_hidden": 4}
    result = _run(
        [str(mssbench), "run", "-m", "mmoe", "-d", "census-income", "--epochs", "1",
         "--max-steps-per-epoch", "2", "--batch-size", "64", "--device", "cpu", "--no-progress",
         "--out", "runs", *[a for k, v in params.items() for a in ("-p", f"{k}={v}")]],
        cwd=elsewhere,
        HOME=str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Run record:" in result.stdout
    [path] = (elsewhere / "runs").glob("*_census-income_mmoe_s0.json")
    record = json.loads(path.read_text())
    assert record["status"] == "finished"
    assert record["protocol"]["id"].startswith("census-income/bundled/v1/")
    # The code and the data came from the venv, not from this checkout.
    where = _run(
        [str(python), "-c", "import mssbench, mssbench_census.loader as L; "
         "print(mssbench.__file__); print(L.default_data_dir())"],
        cwd=elsewhere,
    ).stdout.split()  # fmt: skip
    assert len(where) == 2
    for found in where:
        assert Path(found).resolve().is_relative_to(Path(purelib).resolve()), found


PLUGIN_CHECK = """
import sys

def test_mssbench_plugin_loaded(request):
    assert request.config.pluginmanager.has_plugin("mssbench")
    assert "torch" not in sys.modules and "mssbench" not in sys.modules
"""

PROFILE_CHECK = """
import os
from pathlib import Path

from hypothesis import settings

def test_settings_seen(request):
    loaded = request.config.pluginmanager.has_plugin("mssbench")
    if loaded:
        assert settings.get_profile("mssbench").deadline is None  # registered
    Path(os.environ["SETTINGS_OUT"]).write_text(f"{loaded}\\n{settings()!r}")
"""


def _pytest(tmp_path: Path, test: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    if not any(ep.name == "mssbench" for ep in entry_points(group="pytest11")):
        pytest.skip("mssbench is not installed (no pytest11 entry point to test)")
    (tmp_path / "test_other_project.py").write_text(textwrap.dedent(test))
    return _run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(tmp_path), *args, str(tmp_path / "test_other_project.py")],
        cwd=tmp_path,
        timeout=120,
        **env,
    )  # fmt: skip


def test_pytest_plugin_works_without_hypothesis(tmp_path):
    blocker = tmp_path / "blocked"
    (blocker / "hypothesis").mkdir(parents=True)
    (blocker / "hypothesis" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'hypothesis'\", name='hypothesis')\n"
    )
    # hypothesis' own pytest plugin is off too: where hypothesis is missing, it is not installed.
    result = _pytest(tmp_path, PLUGIN_CHECK, "-p", "no:hypothesispytest", PYTHONPATH=str(blocker))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 passed" in output and "Error while loading plugin" not in output


def test_pytest_plugin_loads_no_hypothesis_profile(tmp_path):
    # Whatever profile hypothesis picks itself (its "ci" profile on a CI machine, "default"
    # elsewhere) is the one in force with mssbench's plugin loaded as without it.
    seen = {}
    for name, args in (("with", ()), ("without", ("-p", "no:mssbench"))):
        out = tmp_path / f"settings-{name}.txt"
        result = _pytest(tmp_path, PROFILE_CHECK, *args, SETTINGS_OUT=str(out))
        assert result.returncode == 0, result.stdout + result.stderr
        seen[name] = out.read_text().split("\n", 1)
    assert seen["with"][0] == "True" and seen["without"][0] == "False"
    assert seen["with"][1] == seen["without"][1]
