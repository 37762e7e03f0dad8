"""No plugin can hurt a run or the CLI: read-only hook arguments, raising hooks, misspelt hooks,
``sys.exit`` at import, name clashes of an explicit ``--plugin``, hook-only plugins listed."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import re
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

import mssbench
from mssbench.api import run
from mssbench.cli import main
from mssbench.config import RunConfig
from mssbench.errors import PluginError
from mssbench.plugins import ReadOnlyDict, RunHooks, freeze, load_registry

MODEL = """
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


def write(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


def install(site: Path, name: str, body: str) -> None:
    """Install distribution ``mssbench-<name>`` with entry point ``<name>`` into ``site``."""
    pkg = site / f"mssbench_{name}"
    pkg.mkdir(parents=True)
    write(pkg / "__init__.py", body)
    dist = site / f"mssbench_{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: mssbench-{name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[mssbench]\n{name} = mssbench_{name}\n")


def tiny_config(out: Path, epochs: int = 2, model: str = "constant") -> RunConfig:
    return RunConfig(
        model=model, dataset="tiny-synth", epochs=epochs, patience=5, out=str(out), progress=False
    )


def warnings_in(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("Warning:")]


# --- read-only hook arguments ---------------------------------------------------------------


def test_hook_cannot_change_what_the_record_claims(registry, runs_dir, capsys):
    seen = {}

    class Meddler:
        @mssbench.hookimpl
        def mssbench_run_start(self, run):
            # Bypassing the read-only view changes the hook's copy only.
            dict.__setitem__(run["config"], "seed", 99)
            run["config"]["lr"] = 123

        @mssbench.hookimpl
        def mssbench_epoch_end(self, run, epoch, metrics):
            seen["json"] = json.loads(json.dumps(run))["config"]["lr"]
            seen["metrics"] = dict(metrics)
            metrics["train_loss"] = -1.0

        @mssbench.hookimpl
        def mssbench_run_end(self, run, path):
            run["test"]["summary"].clear()

    registry.pm.register(Meddler(), name="meddler")
    result = run(tiny_config(runs_dir), registry=registry, log=lambda m: None)
    on_disk = json.loads(result.path.read_text())
    for record in (result.record, on_disk):
        assert record["config"]["lr"] == 1e-3 and record["config"]["seed"] == 0
        assert record["test"]["summary"]
        assert all(e["train_loss"] >= 0 for e in record["training"]["history"])
    assert seen["json"] == 1e-3 and "auc/ctr" in seen["metrics"]
    lines = warnings_in(capsys.readouterr().err)
    assert len(lines) == 3
    assert lines[0].startswith(
        'Warning: plugin "meddler" failed in mssbench_run_start: TypeError: the run record is '
        "read-only in hooks"
    )
    assert lines[0].endswith("; the run goes on")


def test_raising_hook_is_reported_once_by_plugin_and_the_run_goes_on(registry, runs_dir, capsys):
    calls = []

    class Broken:
        @mssbench.hookimpl
        def mssbench_run_start(self, run):
            sys.exit(3)

        @mssbench.hookimpl
        def mssbench_epoch_end(self, run, epoch, metrics):
            raise RuntimeError("tracker server down")

    class Good:
        @mssbench.hookimpl
        def mssbench_epoch_end(self, run, epoch, metrics):
            calls.append(epoch)

        @mssbench.hookimpl
        def mssbench_run_end(self, run, path):
            calls.append("end")

    registry.pm.register(Broken(), name="broken-tracker")
    registry.pm.register(Good(), name="good-tracker")
    result = run(tiny_config(runs_dir, epochs=3), registry=registry, log=lambda m: None)
    assert result.record["status"] == "finished" and result.path.exists()
    assert calls == [1, 2, 3, "end"]
    lines = warnings_in(capsys.readouterr().err)
    assert len(lines) == 2  # three failing epochs, one line
    assert re.fullmatch(
        r'Warning: plugin "broken-tracker" failed in mssbench_run_start: SystemExit: exit status '
        r"3 \(sys\.exit\) \(.*test_plugin_isolation\.py, line \d+\); the run goes on",
        lines[0],
    )
    assert re.fullmatch(
        r'Warning: plugin "broken-tracker" failed in mssbench_epoch_end: RuntimeError: tracker '
        r"server down \(.*, line \d+\); the run goes on",
        lines[1],
    )


def test_run_failed_gets_the_error_and_the_record_as_it_stood(tmp_path, runs_dir):
    calls = []

    class Tracker:
        @mssbench.hookimpl
        def mssbench_run_start(self, run):
            calls.append("start")

        @mssbench.hookimpl
        def mssbench_run_end(self, run, path):
            calls.append("end")

        @mssbench.hookimpl
        def mssbench_run_failed(self, run, error):
            calls.append(("failed", run["status"], run["model"]["name"], str(error)))

    plugin = write(
        tmp_path / "boom.py",
        MODEL.format(name="boom").replace(
            "z = self.w", "raise ValueError('boom in forward')\n        z = self.w"
        ),
    )
    from mssbench.testing import plugin as testing_plugin

    registry = load_registry(
        plugins=[str(plugin)], extra=[("mssbench-testing", testing_plugin), ("t", Tracker())]
    )
    # No output-bias calibration: the model's first forward pass is then a training step.
    config = dataclasses.replace(tiny_config(runs_dir, model="boom"), bias_init="none")
    with pytest.raises(ValueError, match="boom in forward"):
        run(config, registry=registry, log=lambda m: None)
    assert calls[0] == "start" and calls[1][0] == "failed" and len(calls) == 2
    assert calls[1][1:] == ("running", "boom", "boom in forward")


def test_run_failed_is_not_called_before_the_run_started(registry, runs_dir):
    calls = []

    class Tracker:
        @mssbench.hookimpl
        def mssbench_run_failed(self, run, error):
            calls.append(error)

    registry.pm.register(Tracker(), name="tracker")
    config = tiny_config(runs_dir, model="no-such-model")
    with pytest.raises(Exception, match="unknown model"):
        run(config, registry=registry, log=lambda m: None)
    assert calls == []


def test_hooks_fire_nowhere_when_disabled():
    registry = load_registry(autoload=False)
    calls = []

    class Tracker:
        @mssbench.hookimpl
        def mssbench_run_start(self, run):
            calls.append(run)

    registry.pm.register(Tracker(), name="tracker")
    RunHooks(registry.pm, enabled=False).run_start({"a": 1})
    RunHooks(registry.pm).run_start({"a": 1})
    assert calls == [{"a": 1}]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_freeze_is_an_equal_json_copy_that_refuses_changes(value):
    frozen = freeze(value)
    assert json.dumps(frozen, sort_keys=True) == json.dumps(value, sort_keys=True)
    thawed = copy.deepcopy(frozen)
    assert json.dumps(thawed, sort_keys=True) == json.dumps(value, sort_keys=True)
    assert pickle.loads(pickle.dumps(frozen)) == thawed
    if isinstance(value, dict):
        before = json.dumps(value, sort_keys=True)
        with pytest.raises(TypeError, match="read-only"):
            frozen["new"] = 1
        for change in (frozen.clear, frozen.popitem, lambda: frozen.update(x=1)):
            with pytest.raises(TypeError, match="read-only"):
                change()
        value["new"] = 1  # the original changes; the copy does not
        assert json.dumps(frozen, sort_keys=True) == before


def test_read_only_dict_is_a_dict_and_deep_copies_are_plain():
    frozen = freeze({"config": {"lr": 0.1, "scenarios": ["a", "b"]}})
    assert isinstance(frozen, dict) and isinstance(frozen["config"], ReadOnlyDict)
    assert frozen["config"]["scenarios"] == ("a", "b")
    thawed = copy.deepcopy(frozen)
    thawed["config"]["lr"] = 1.0
    assert type(thawed) is dict and frozen["config"]["lr"] == 0.1


# --- broken plugins ---------------------------------------------------------------------------

MISSPELT = """
from mssbench import hookimpl
{model}
@hookimpl
def mssbench_epochs_end(run, epoch, metrics):
    pass
"""


def test_misspelt_hook_is_a_broken_plugin_and_the_others_work(tmp_path):
    path = write(tmp_path / "typo.py", MISSPELT.format(model=MODEL.format(name="typo_model")))
    reg = load_registry(plugins=[str(path)])
    [problem] = reg.problems
    assert str(problem) == (
        f'Error in plugin "{path}": implements mssbench_epochs_end, which is not a mssbench hook '
        "(did you mean mssbench_epoch_end?)"
    )
    assert "typo_model" not in reg.models  # the whole plugin is left out
    assert "mmoe" in reg.models
    with pytest.raises(PluginError, match="mssbench_epochs_end"):
        load_registry(plugins=[str(path)], strict=True)


def test_hook_with_wrong_arguments_leaves_nothing_half_registered(tmp_path):
    body = MODEL.format(name="half") + (
        "\n@hookimpl\ndef mssbench_epoch_end(run, epochs):\n    pass\n"
    )
    path = write(tmp_path / "half.py", body)
    reg = load_registry(plugins=[str(path)])
    [problem] = reg.problems
    assert problem.plugin == str(path) and "cannot register" in problem.message
    assert "epochs" in problem.message
    assert "half" not in reg.models
    assert not reg.pm.has_plugin(str(path))


def test_installed_broken_plugins_are_listed_and_the_cli_goes_on(monkeypatch, tmp_path):
    site = tmp_path / "site"
    install(site, "typo", MISSPELT.format(model=""))
    install(site, "quitter", "import sys\nsys.exit(3)\n")
    install(site, "base", "raise BaseException('odd')\n")
    install(site, "exitreg", "import sys\nfrom mssbench import hookimpl\n\n@hookimpl\n"
            "def mssbench_register_models():\n    sys.exit('no models today')\n")  # fmt: skip
    monkeypatch.syspath_prepend(str(site))
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0, result.output
    broken = result.output.split("Broken plugins (left out):")[1].splitlines()
    broken = {line.split('"')[1]: line.strip() for line in broken if line.strip()}
    assert broken["typo"] == (
        'Error in plugin "typo": implements mssbench_epochs_end, which is not a mssbench hook '
        "(did you mean mssbench_epoch_end?)"
    )
    assert re.fullmatch(
        r'Error in plugin "quitter": import failed: SystemExit: exit status 3 \(sys\.exit\) '
        r"\(.*mssbench_quitter.__init__\.py, line 2\)",
        broken["quitter"],
    )
    assert broken["base"].startswith('Error in plugin "base": import failed: BaseException: odd (')
    assert broken["exitreg"].startswith(
        'Error in plugin "exitreg": mssbench_register_models raised SystemExit: exit status '
        "'no models today' (sys.exit)"
    )
    assert re.search(r"^model +mmoe +mmoe", result.output, re.M)


def test_explicit_plugin_exiting_at_import_is_one_error_line(tmp_path):
    path = write(tmp_path / "quit.py", "import sys\nsys.exit(0)\n")
    result = CliRunner().invoke(main, ["plugins", "--plugin", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f'Error: Error importing plugin "{path}": SystemExit: exit status 0 (sys.exit) '
        f"({path}, line 2)"
    ]


# --- name clashes of an explicit --plugin -----------------------------------------------------


def test_explicit_plugin_clashing_with_an_installed_name_is_an_error_naming_both(tmp_path):
    path = write(tmp_path / "dup.py", MODEL.format(name="mmoe"))
    expected = (
        f"--plugin {path} registers model 'mmoe', which installed plugin \"mmoe\" "
        f"(mssbench {mssbench.__version__}) already registers; rename the model, or leave the "
        "other plugin out with --disable-plugin mmoe"
    )
    with pytest.raises(PluginError) as exc:
        load_registry(plugins=[str(path)])
    assert str(exc.value) == expected
    result = CliRunner().invoke(main, ["plugins", "--plugin", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"Error: {expected}"]
    # Leaving the installed one out, as the message says, works.
    reg = load_registry(plugins=[str(path)], disable=["mmoe"])
    assert reg.plugin_of("model", "mmoe") == str(path)


def test_two_explicit_plugins_with_one_name_is_an_error(tmp_path):
    a = write(tmp_path / "a.py", MODEL.format(name="zero"))
    b = write(tmp_path / "b.py", MODEL.format(name="zero"))
    with pytest.raises(PluginError, match=rf"--plugin {re.escape(str(b))} registers model 'zero', "
                       rf'which plugin "{re.escape(str(a))}" already registers'):  # fmt: skip
        load_registry(plugins=[str(a), str(b)])


def test_explicit_plugin_module_named_like_an_installed_plugin_is_an_error(tmp_path, monkeypatch):
    write(tmp_path / "mmoe.py", MODEL.format(name="other"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mmoe", raising=False)
    with pytest.raises(PluginError) as exc:
        load_registry(plugins=["mmoe"])
    assert str(exc.value) == (
        'plugin name "mmoe" given by --plugin mmoe is already taken by installed plugin "mmoe" '
        f"(mssbench {mssbench.__version__}); rename the module or file"
    )
    # Naming an installed plugin's own module again is no clash.
    reg = load_registry(plugins=["mssbench_mmoe"])
    assert reg.plugin_of("model", "mmoe") == "mmoe" and not reg.problems


# --- hook-only plugins ------------------------------------------------------------------------


def test_hook_only_plugin_is_listed(tmp_path):
    path = write(
        tmp_path / "tracker.py",
        """
        from mssbench import hookimpl

        @hookimpl
        def mssbench_run_start(run):
            pass

        @hookimpl
        def mssbench_run_failed(run, error):
            pass
        """,
    )
    reg = load_registry(plugins=[str(path)])
    assert reg.hook_only_plugins() == {str(path): ["mssbench_run_failed", "mssbench_run_start"]}
    result = CliRunner().invoke(main, ["plugins", "--plugin", str(path)])
    assert result.exit_code == 0
    [row] = [line for line in result.output.splitlines() if line.startswith("hooks")]
    assert row.split() == [
        "hooks",
        str(path),
        str(path),
        "mssbench_run_failed,",
        "mssbench_run_start",
    ]


def test_hook_wrappers_on_lifecycle_hooks_are_skipped_with_a_warning():
    registry = load_registry(autoload=False)
    calls, warned = [], []

    class Wrapper:
        @mssbench.hookimpl(wrapper=True)
        def mssbench_run_start(self, run):
            calls.append("wrapper")
            yield

    class Plain:
        @mssbench.hookimpl
        def mssbench_run_start(self, run):
            calls.append(run["a"])

    registry.pm.register(Wrapper(), name="wrapper")
    registry.pm.register(Plain(), name="plain")
    hooks = RunHooks(registry.pm, warn=warned.append)
    hooks.run_start({"a": 1})
    hooks.run_start({"a": 2})
    assert calls == [1, 2]
    assert warned == [
        'Warning: plugin "wrapper" failed in mssbench_run_start: hook wrappers are not supported '
        "here; the run goes on"
    ]


def test_the_same_plugin_given_twice_is_loaded_once(tmp_path):
    path = write(tmp_path / "zero.py", MODEL.format(name="zero"))
    reg = load_registry(plugins=[str(path), str(path)])
    assert reg.plugin_of("model", "zero") == str(path) and not reg.problems


def test_epoch_metrics_have_the_keys_the_hookspec_documents(registry, runs_dir):
    from mssbench import hookspecs

    seen = []

    class Tracker:
        @mssbench.hookimpl
        def mssbench_epoch_end(self, run, epoch, metrics):
            schema = run["dataset"]["schema"]
            conditional = [r["conditional"] for r in schema["relations"] if r["conditional"]]
            seen.append((set(metrics), [*schema["tasks"], *conditional]))

    registry.pm.register(Tracker(), name="tracker")
    run(tiny_config(runs_dir, epochs=1), registry=registry, log=lambda m: None)
    [(keys, tasks)] = seen
    per_task = {f"{m}/{t}" for m in ("auc", "logloss", "macro_auc") for t in tasks}
    assert keys == {"train_loss", "selection_score"} | per_task
    doc = hookspecs.mssbench_epoch_end.__doc__
    for key in ("train_loss", "selection_score", "auc/<task>", "logloss/<task>", "macro_auc"):
        assert f"``{key}" in doc
