"""A CLI that answers at once: lazy imports, every option explained, presets, plugin pages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import tiny_run_args
from hypothesis import given
from hypothesis import strategies as st

from mssbench.cli import main
from mssbench.errors import ConfigError
from mssbench.lazy import lazy
from mssbench.presets import PRESETS, Preset, get_preset

HEAVY = ("torch", "pandas", "matplotlib", "pyarrow")


def test_cli_and_plugin_registration_import_no_torch():
    # What `mssbench --help` and `mssbench plugins` do: import the CLI, register every plugin.
    code = (
        "import sys, mssbench.cli\n"
        "from mssbench.plugins import load_registry\n"
        "r = load_registry()\n"
        "assert r.models and r.datasets and r.metrics, r.problems\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "", f"imported at start: {out.strip()}"


def _walk(command: click.Command, path: str):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _walk(sub, f"{path} {name}")


def test_every_command_and_option_has_help_text():
    missing = []
    for path, command in _walk(main, "mssbench"):
        if not (command.help or "").strip():
            missing.append(path)
        for param in command.params:
            if isinstance(param, click.Option) and not (param.help or "").strip():
                missing.append(f"{path} {param.opts[0]}")
    assert missing == []


def test_plugins_name_shows_every_hyper_parameter_with_default_and_type():
    result = CliRunner().invoke(main, ["plugins", "mmoe"])
    assert result.exit_code == 0, result.output
    assert "Ma et al." in result.output and "version 2" in result.output
    lines = result.output.splitlines()
    for key, default in {"embed_dim": "128", "expert_hidden": "[512, 256]"}.items():
        row = next(line.split() for line in lines if line.split()[:1] == [key])
        assert row[1:] == [*default.split(), "list[int]" if "[" in default else "int"]
    assert "scenario_as_feature" in result.output


def test_plugins_name_describes_a_dataset_and_a_metric():
    result = CliRunner().invoke(main, ["plugins", "census-income"])
    assert result.exit_code == 0, result.output
    assert "-D KEY=VALUE" in result.output and "protocol" in result.output
    result = CliRunner().invoke(main, ["plugins", "ne"])
    assert "lower is better" in result.output


def test_plugins_unknown_name_is_one_line_with_a_suggestion():
    result = CliRunner().invoke(main, ["plugins", "shared_botom"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: no model, dataset, metric or balancer is registered as 'shared_botom' "
        "(`mssbench plugins` lists them). Did you mean 'shared_bottom'?"
    ]


def test_preset_fills_what_the_command_line_left_and_is_recorded(tmp_path: Path):
    args = tiny_run_args(tmp_path, 1, "--preset", "quick", "--max-steps-per-epoch", "2")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (path,) = tmp_path.glob("*.json")
    config = json.loads(path.read_text())["config"]
    assert config["preset"] == "quick"
    # given on the command line: kept
    assert config["batch_size"] == 256 and config["max_steps_per_epoch"] == 2
    assert config["params"]["embed_dim"] == 8 and config["params"]["n_experts"] == 3
    # left at default: the preset's
    assert config["params"]["tower_hidden"] == [8]  # given by tiny_run_args
    assert config["progress"] is False  # stderr of the test runner is not a terminal


def test_preset_params_differ_from_explicit_ones(tmp_path: Path):
    args = ["run", "--plugin", "mssbench.testing.plugin", "-m", "mmoe", "-d", "tiny-synth"]
    args += ["--preset", "quick", "--max-steps-per-epoch", "2", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (path,) = tmp_path.glob("*.json")
    config = json.loads(path.read_text())["config"]
    quick = PRESETS["quick"]
    assert config["params"]["expert_hidden"] == quick.params["expert_hidden"]
    assert config["batch_size"] == quick.training["batch_size"]
    assert config["epochs"] == quick.training["epochs"]


def test_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError, match="Did you mean 'quick'"):
        get_preset("quik")


@given(
    defaults=st.dictionaries(
        st.sampled_from(["embed_dim", "expert_hidden", "tower_hidden", "other"]),
        st.one_of(st.integers(1, 9), st.lists(st.integers(1, 9), max_size=3)),
    )
)
def test_preset_params_apply_only_to_declared_keys_of_the_same_shape(defaults):
    chosen = PRESETS["quick"].params_for(defaults)
    assert set(chosen) <= set(defaults)
    for key, value in chosen.items():
        assert isinstance(value, list) == isinstance(defaults[key], list)
    for key in set(defaults) & set(PRESETS["quick"].params):
        if isinstance(defaults[key], list) == isinstance(PRESETS["quick"].params[key], list):
            assert key in chosen


def test_given_training_options_win_over_the_preset():
    preset = Preset("p", "s", training={"epochs": 1, "batch_size": 512})
    assert preset.training_for({"epochs": 3}) == {"epochs": 3, "batch_size": 512}


def test_lazy_callable_imports_on_call_and_keeps_names():
    ref = lazy("json:dumps")
    assert ref.__module__ == "json" and ref.__name__ == "dumps"
    assert ref([1]) == "[1]"
    assert ref.resolve() is json.dumps
    with pytest.raises(ValueError, match="module:attribute"):
        lazy("json.dumps")


def test_presets_set_only_run_config_fields():
    import dataclasses

    from mssbench.config import RunConfig

    fields = {f.name for f in dataclasses.fields(RunConfig)}
    for preset in PRESETS.values():
        assert set(preset.training) <= fields - {"model", "dataset", "params", "preset"}
        RunConfig(model="m", dataset="d", **preset.training).validate()
