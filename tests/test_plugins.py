import inspect
import re
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib

import mssbench
from mssbench import hookspecs
from mssbench.errors import ConfigError, PluginError
from mssbench.plugins import load_registry
from mssbench.spec import ModelSpec, SpecError

ROOT = Path(__file__).resolve().parents[1]
BUILTIN_MODELS = {"mmoe", "shared_bottom"}
BUILTIN_DATASETS = {"census-income"}


def write_plugin(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


GOOD = """
    import torch
    from mssbench import ModelOutput, ModelSpec, hookimpl

    class Zero(torch.nn.Module):
        def __init__(self, schema, scale):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(schema.n_tasks))

        def forward(self, batch):
            z = self.w.expand(batch.scenario.shape[0], -1)
            return ModelOutput(z, z.new_zeros(()))

    @hookimpl
    def mssbench_register_models():
        return [ModelSpec(name="{name}", summary="zero", build=Zero, defaults={{"scale": 1.0}})]
"""


def test_builtins_load_through_entry_points():
    reg = load_registry()
    assert BUILTIN_MODELS <= set(reg.models)
    assert BUILTIN_DATASETS <= set(reg.datasets)
    assert reg.plugin_of("model", "mmoe") == "mmoe"
    assert reg.plugin_of("dataset", "census-income") == "census_income"
    assert not reg.problems


def test_autoload_can_be_disabled(monkeypatch):
    monkeypatch.setenv("MSSBENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    reg = load_registry()
    assert not reg.models and not reg.datasets


def test_disable_plugin_blocks_it():
    reg = load_registry(disable=["mmoe"])
    assert "mmoe" not in reg.models and "shared_bottom" in reg.models


def test_plugin_from_file_and_module(tmp_path, monkeypatch):
    path = write_plugin(tmp_path / "zero_plugin.py", GOOD.format(name="zero"))
    reg = load_registry(plugins=[str(path)])
    assert "zero" in reg.models and reg.plugin_of("model", "zero") == str(path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("zero_plugin", None)
    reg = load_registry(plugins=["zero_plugin"])
    assert reg.plugin_of("model", "zero") == "zero_plugin"


def test_plugin_file_with_syntax_error_names_file_and_line(tmp_path):
    path = write_plugin(tmp_path / "broken.py", "def f(:\n    pass\n")
    with pytest.raises(
        PluginError, match=r'Error importing plugin ".*broken.py".*SyntaxError.*line 1'
    ):
        load_registry(plugins=[str(path)])


def test_missing_plugin_file_and_module():
    with pytest.raises(PluginError, match="no such file"):
        load_registry(plugins=["./does_not_exist.py"])
    with pytest.raises(PluginError, match="ModuleNotFoundError"):
        load_registry(plugins=["no_such_module_anywhere"])


def test_duplicate_name_reported_by_name_and_others_keep_working(monkeypatch, tmp_path):
    """An installed plugin offering a taken name is left out (a --plugin doing so is an error)."""
    site = tmp_path / "site"
    (site / "mssbench_dup").mkdir(parents=True)
    (site / "mssbench_dup" / "__init__.py").write_text(textwrap.dedent(GOOD.format(name="mmoe")))
    dist = site / "mssbench_dup-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mssbench-dup\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mssbench]\ndup = mssbench_dup\n")
    monkeypatch.setattr(sys, "path", [*sys.path, str(site)])  # installed after mssbench
    reg = load_registry()
    assert reg.plugin_of("model", "mmoe") == "mmoe"  # the first one found keeps its name
    assert "shared_bottom" in reg.models
    [problem] = reg.problems
    assert problem.plugin == "dup"
    assert "'mmoe' is already registered by installed plugin \"mmoe\" (mssbench " in problem.message
    with pytest.raises(PluginError, match="already registered"):
        load_registry(strict=True)


def test_invalid_spec_and_raising_hook_are_left_out(tmp_path):
    bad = write_plugin(
        tmp_path / "bad.py",
        """
        from mssbench import ModelSpec, hookimpl

        @hookimpl
        def mssbench_register_models():
            return [ModelSpec(name="Bad Name", summary="x", build=lambda schema: None)]
        """,
    )
    raising = write_plugin(
        tmp_path / "raising.py",
        """
        from mssbench import hookimpl

        @hookimpl
        def mssbench_register_datasets():
            raise RuntimeError("database offline")
        """,
    )
    not_a_list = write_plugin(
        tmp_path / "notalist.py",
        """
        from mssbench import hookimpl

        @hookimpl
        def mssbench_register_models():
            return "mmoe"
        """,
    )
    reg = load_registry(plugins=[str(bad), str(raising), str(not_a_list)])
    messages = {p.plugin: p.message for p in reg.problems}
    assert "model name 'Bad Name' is invalid" in messages[str(bad)]
    assert "RuntimeError: database offline" in messages[str(raising)]
    assert "must return a list of ModelSpec, got str" in messages[str(not_a_list)]
    assert BUILTIN_MODELS <= set(reg.models)


def test_broken_entry_point_is_reported(monkeypatch, tmp_path):
    """A distribution whose entry point fails to import is reported; built-ins keep working."""
    site = tmp_path / "site"
    (site / "mssbench_broken").mkdir(parents=True)
    (site / "mssbench_broken" / "__init__.py").write_text("import not_installed_dependency\n")
    dist = site / "mssbench_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mssbench-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mssbench]\nbroken = mssbench_broken\n")
    monkeypatch.syspath_prepend(str(site))
    reg = load_registry()
    [problem] = [p for p in reg.problems if p.plugin == "broken"]
    assert "import failed: ModuleNotFoundError" in problem.message
    assert BUILTIN_MODELS <= set(reg.models)


def test_installed_entry_point_plugin_works(monkeypatch, tmp_path):
    """The single-file plugin, packaged as a distribution with an entry point, is discovered."""
    site = tmp_path / "site"
    pkg = site / "mssbench_zero"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(GOOD.format(name="zero")))
    dist = site / "mssbench_zero-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mssbench-zero\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mssbench]\nzero = mssbench_zero\n")
    monkeypatch.syspath_prepend(str(site))
    reg = load_registry()
    assert reg.plugin_of("model", "zero") == "zero"


def test_unknown_names_list_known_ones_and_suggest(registry):
    with pytest.raises(
        ConfigError, match=r"unknown model 'mmeo'.*Known models: .*mmoe.*Did you mean 'mmoe'"
    ):
        registry.model("mmeo")
    with pytest.raises(ConfigError, match=r"unknown dataset 'census'.*census-income"):
        registry.dataset("census")


def test_lifecycle_hooks_are_called(registry, runs_dir):
    from mssbench.api import run
    from mssbench.config import RunConfig

    calls = []

    class Tracker:
        @mssbench.hookimpl
        def mssbench_run_start(self, run):
            calls.append(("start", run["model"]["name"]))

        @mssbench.hookimpl
        def mssbench_epoch_end(self, run, epoch, metrics):
            calls.append(("epoch", epoch, "auc/ctr" in metrics))

        @mssbench.hookimpl
        def mssbench_run_end(self, run, path):
            calls.append(("end", Path(path).exists()))

    registry.pm.register(Tracker(), name="tracker")
    run(
        RunConfig(
            model="constant",
            dataset="tiny-synth",
            epochs=2,
            patience=5,
            out=str(runs_dir),
            progress=False,
        ),
        registry=registry,
        log=lambda m: None,
    )
    assert calls == [("start", "constant"), ("epoch", 1, True), ("epoch", 2, True), ("end", True)]


# Hooks are tested in this module and in test_api; each needs a test named after it.
def test_hook_mssbench_register_models():
    assert "mmoe" in load_registry().models


def test_hook_mssbench_register_datasets():
    assert "census-income" in load_registry().datasets


def test_hook_mssbench_register_metrics():
    registry = load_registry()
    assert {"pr_auc", "ne"} <= set(registry.metrics)
    assert registry.plugin_of("metric", "pr_auc") == "metrics"


def test_hook_mssbench_register_balancers():
    registry = load_registry()
    assert {"fixed", "uncertainty", "gradnorm", "pcgrad"} <= set(registry.balancers)
    assert registry.plugin_of("balancer", "pcgrad") == "balancers"


def test_hook_mssbench_run_start(registry, runs_dir):
    test_lifecycle_hooks_are_called(registry, runs_dir)


test_hook_mssbench_epoch_end = test_hook_mssbench_run_start
test_hook_mssbench_run_end = test_hook_mssbench_run_start


def test_hook_mssbench_run_failed(registry, runs_dir):
    """A started run that raises calls mssbench_run_failed (not run_end); the error goes on."""
    from mssbench.api import run
    from mssbench.config import RunConfig

    calls = []

    class Tracker:
        @mssbench.hookimpl
        def mssbench_epoch_end(self, run, epoch, metrics):
            raise KeyboardInterrupt  # stands in for Ctrl-C during training

        @mssbench.hookimpl
        def mssbench_run_end(self, run, path):
            calls.append("end")

        @mssbench.hookimpl
        def mssbench_run_failed(self, run, error):
            calls.append(("failed", run["status"], run["model"]["name"], type(error).__name__))

    registry.pm.register(Tracker(), name="tracker")
    config = RunConfig(
        model="constant", dataset="tiny-synth", epochs=2, out=str(runs_dir), progress=False
    )
    with pytest.raises(KeyboardInterrupt):
        run(config, registry=registry, log=lambda m: None)
    assert calls == [("failed", "running", "constant", "KeyboardInterrupt")]
    assert not list(runs_dir.glob("*.json"))


def test_every_hookspec_is_documented_and_tested():
    specs = [
        n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("mssbench_")
    ]
    assert specs
    tests = set(globals())
    for name in specs:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert len(doc) > 40, f"hookspec {name} lacks a docstring"
        assert f"test_hook_{name}" in tests, f"hookspec {name} has no test_hook_{name}"
        assert name in (ROOT / "CONTRIBUTING.md").read_text(), f"{name} not in CONTRIBUTING.md"


def test_every_plugin_dir_is_packaged_and_registered():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dir = project["tool"]["setuptools"]["package-dir"]
    packages = set(project["tool"]["setuptools"]["packages"])
    entry_points = set(project["project"]["entry-points"]["mssbench"].values())
    for d in sorted((ROOT / "plugins").iterdir()):
        if not (d / "__init__.py").exists():
            continue
        assert package_dir.get(d.name) == f"plugins/{d.name}", f"{d.name} not in package-dir"
        assert d.name in packages, f"{d.name} not in packages"
        assert d.name in entry_points, f"{d.name} has no entry point in group mssbench"
        assert (d / "README.md").exists(), f"{d.name} has no README.md"
    for name in packages:
        if name.startswith("mssbench."):
            path = ROOT / Path(*name.split("."))
            assert (path / "__init__.py").exists(), f"package {name} does not exist"


def test_core_never_imports_a_plugin():
    pattern = re.compile(r"^\s*(from|import)\s+mssbench_", re.M)
    for path in (ROOT / "mssbench").rglob("*.py"):
        assert not pattern.search(path.read_text()), f"{path} imports a plugin"


@pytest.mark.parametrize("version", [0, -1, 1.5, True, "2"])
def test_model_version_must_be_a_positive_integer(version):
    spec = ModelSpec(name="versioned", summary="x", build=lambda schema: None, version=version)
    with pytest.raises(SpecError, match="version must be an integer >= 1"):
        spec.validate()
    ModelSpec(name="versioned", summary="x", build=lambda schema: None, version=3).validate()


def test_hook_mssbench_register_trackers(registry):
    from mssbench.trackers import registered

    known = registered(registry.pm)
    assert {"mlflow", "tensorboard"} <= set(known)
    assert all(spec.name == name for name, (spec, _) in known.items())


def test_hook_mssbench_run_failed_is_declared(registry):
    from mssbench import hookimpl

    seen = []

    class Listener:
        @hookimpl
        def mssbench_run_failed(self, run, error):
            seen.append((run["run_hash"], str(error)))

    registry.pm.register(Listener(), name="listener")
    run = {"run_hash": "abc", "config": {"trackers": []}}
    registry.pm.hook.mssbench_run_failed(run=run, error=RuntimeError("boom"))
    assert seen == [("abc", "boom")]
