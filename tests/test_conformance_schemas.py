"""The model conformance suite over several schemas, skipped checks and errors in ``__init__``."""

from __future__ import annotations

import pytest
import torch

from mssbench import ModelOutput, ModelSpec, hookimpl
from mssbench.api import build_model
from mssbench.errors import ConfigError, PluginError
from mssbench.plugins import load_registry
from mssbench.testing import check_model, parametrize_with_checks, run_checks
from mssbench.testing.checks import SCHEMA_CHECKS, model_checks, schema_variants

VARIANTS = ("no_relations", "one_task", "no_numeric", "one_scenario", "many_scenarios")


class Linear(torch.nn.Module):
    def __init__(self, schema, width):
        super().__init__()
        self.emb = torch.nn.Embedding(sum(schema.vocab_sizes) + 1, width)
        self.scen = torch.nn.Embedding(schema.n_scenarios, width)
        self.num = torch.nn.Linear(schema.n_numeric, width)
        self.out = torch.nn.Linear(width, schema.n_tasks)

    def forward(self, batch):
        h = self.emb(batch.categorical).sum(1) + self.scen(batch.scenario) + self.num(batch.numeric)
        return ModelOutput(self.out(torch.relu(h)), h.new_zeros(()))


def linear_spec(**kw) -> ModelSpec:
    return ModelSpec(name="linear", summary="test model", build=Linear, defaults={"width": 8}, **kw)


def registry_with(spec: ModelSpec):
    class Plugin:
        @staticmethod
        @hookimpl
        def mssbench_register_models():
            return [spec]

    return load_registry(extra=[("test-plugin", Plugin)])


def test_variants_are_the_schemas_the_issue_names():
    variants = schema_variants()
    assert tuple(variants) == VARIANTS
    assert variants["no_relations"].relations == ()
    assert variants["one_task"].n_tasks == 1
    assert variants["no_numeric"].n_numeric == 0
    assert variants["one_scenario"].n_scenarios == 1
    assert variants["many_scenarios"].n_scenarios > 10


def test_every_schema_check_runs_on_every_variant():
    names = [c.__name__ for c in model_checks()]
    for check in SCHEMA_CHECKS:
        for variant in VARIANTS:
            assert f"{check.__name__}[{variant}]" in names


def test_a_model_that_needs_two_tasks_fails_one_task_unless_declared():
    class TwoTasks(Linear):
        def __init__(self, schema, width):
            if schema.n_tasks != 2:
                raise ValueError("needs exactly two tasks")
            super().__init__(schema, width)

    spec = ModelSpec(name="two", summary="x", build=TwoTasks, defaults={"width": 8})
    results = {r.check: r for r in run_checks(spec)}
    failed = {name for name, r in results.items() if r.status == "failed"}
    assert failed == {f"{c.__name__}[one_task]" for c in SCHEMA_CHECKS}
    assert all("ValueError: needs exactly two tasks" in results[n].message for n in failed)

    declared = {f"{c.__name__}[one_task]": "needs two tasks" for c in SCHEMA_CHECKS}
    spec = ModelSpec(
        name="two", summary="x", build=TwoTasks, defaults={"width": 8},
        expected_failed_checks=declared,
    )  # fmt: skip
    results = check_model(spec)
    assert {r.check for r in results if r.status == "xfail"} == set(declared)


def test_cuda_check_is_skipped_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    [result] = [r for r in run_checks(linear_spec()) if r.check == "check_moves_to_device"]
    assert (result.status, result.message) == ("skipped", "CUDA is not available")


def test_parametrized_checks_skip_under_pytest(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    mark = parametrize_with_checks([linear_spec()])
    [param] = [p for p in mark.args[1] if p.id == "linear-check_moves_to_device"]
    spec, check = param.values
    with pytest.raises(pytest.skip.Exception, match="CUDA is not available"):
        check(spec, None)


def test_a_model_raising_in_init_is_a_model_error_with_file_and_line():
    class Broken(Linear):
        def __init__(self, schema, width):
            super().__init__(schema, width)
            self.out = self.missing_attribute  # a bug in the model

    spec = ModelSpec(name="broken", summary="x", build=Broken, defaults={"width": 8})
    [result] = [r for r in run_checks(spec) if r.check == "check_output_shape_and_dtype"]
    assert result.status == "failed"
    assert result.message.startswith("AttributeError: ")
    assert result.message.endswith(
        f"({__file__}, line {Broken.__init__.__code__.co_firstlineno + 2})"
    )

    registry = registry_with(spec)
    with pytest.raises(PluginError) as info:
        build_model(registry, "broken", schema_variants()["no_relations"], {})
    message = str(info.value)
    assert message.startswith("model 'broken' (plugin \"test-plugin\") failed to build: ")
    assert "AttributeError" in message and f"({__file__}, line " in message
    assert "rejected its hyper-parameters" not in message


def test_hyper_parameter_rejections_stay_config_errors():
    class Picky(Linear):
        def __init__(self, schema, width):
            if width < 1:
                raise ValueError(f"width must be >= 1, got {width}")
            super().__init__(schema, width)

    schema = schema_variants()["no_relations"]
    spec = ModelSpec(name="picky", summary="x", build=Picky, defaults={"width": 8})
    with pytest.raises(ConfigError, match="rejected its hyper-parameters: width must be >= 1"):
        build_model(registry_with(spec), "picky", schema, {"width": 0})
    # A declared hyper-parameter that build does not take: the call itself fails.
    spec = ModelSpec(name="picky", summary="x", build=Picky, defaults={"width": 8, "depth": 2})
    with pytest.raises(ConfigError, match="rejected its hyper-parameters: .*'depth'"):
        build_model(registry_with(spec), "picky", schema, {})


def test_cli_run_names_the_file_and_line_of_a_model_bug(tmp_path):
    from click.testing import CliRunner

    from mssbench.cli import main

    plugin = tmp_path / "buggy_model.py"
    plugin.write_text(
        "import torch\n"
        "from mssbench import ModelSpec, hookimpl\n\n"
        "class Buggy(torch.nn.Module):\n"
        "    def __init__(self, schema, width):\n"
        "        super().__init__()\n"
        "        self.layer = torch.nn.Linear(schema.n_numeric, width)\n"
        "        self.out = self.layer.weight[width + 100]\n\n"
        "@hookimpl\n"
        "def mssbench_register_models():\n"
        "    return [ModelSpec(name='buggy', summary='x', build=Buggy, defaults={'width': 4})]\n"
    )
    args = ["run", "--plugin", str(plugin), "--plugin", "mssbench.testing.plugin"]
    args += ["-m", "buggy", "-d", "tiny-synth", "--out", str(tmp_path / "runs")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    prefix = f"Error: model 'buggy' (plugin \"{plugin}\") failed to build: IndexError"
    assert line.startswith(prefix)
    assert line.endswith(f"({plugin}, line 8)")
