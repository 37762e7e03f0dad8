import gzip
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import tiny_run_args

from mssbench.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cli():
    return CliRunner()


def invoke(cli, args):
    return cli.invoke(main, args, catch_exceptions=False)


def test_plugins_lists_models_and_datasets_with_their_plugin(cli):
    res = invoke(cli, ["plugins"])
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert any(line.split()[:3] == ["model", "mmoe", "mmoe"] for line in lines)
    assert any(line.split()[:3] == ["model", "shared_bottom", "shared_bottom"] for line in lines)
    assert any(line.split()[:3] == ["dataset", "census-income", "census_income"] for line in lines)


def test_plugins_shows_broken_plugin(cli, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from mssbench import ModelSpec, hookimpl\n"
        "@hookimpl\n"
        "def mssbench_register_models():\n"
        "    return [ModelSpec(name='Bad Name', summary='x', build=lambda schema: None)]\n"
    )
    res = invoke(cli, ["plugins", "--plugin", str(bad)])
    assert res.exit_code == 0
    assert "Broken plugins" in res.output and "model name 'Bad Name' is invalid" in res.output


def test_run_prints_table_and_record(cli, tmp_path):
    out = tmp_path / "runs"
    res = invoke(cli, tiny_run_args(out, 2))
    assert res.exit_code == 0, res.output
    for row in ("| s0", "| s1", "| s2", "| pooled", "| macro"):
        assert row in res.output
    assert "ctr AUC" in res.output and "ctcvr logloss" in res.output and "cvr AUC" in res.output
    assert "samples/s" in res.output
    [record] = list(out.glob("*.json"))
    assert f"Run record: {record}" in res.output
    rec = json.loads(record.read_text())
    assert rec["config"]["epochs"] == 2
    # The synthetic data knows its true probabilities: the oracle is shown and recorded.
    assert "Oracle" in res.output
    assert rec["test"]["oracle_summary"]["auc/ctr"] > rec["test"]["summary"]["auc/ctr"] - 0.05


def test_scenarios_flag_needs_a_dataset_that_has_subsets(cli, tmp_path):
    res = cli.invoke(main, ["run", "-m", "mmoe", "-d", "census-income", "--scenarios", "NL"])
    assert res.exit_code == 2
    assert "has no 'scenarios' option" in res.output


def test_run_local_plugin_file(cli, tmp_path):
    res = invoke(
        cli,
        [
            "run",
            "--plugin",
            str(ROOT / "examples" / "my_model.py"),
            "--plugin",
            "mssbench.testing.plugin",
            "-m",
            "my_model",
            "-d",
            "tiny-synth",
            "--epochs",
            "1",
            "--out",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "Run record:" in res.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "nope", "-d", "census-income"], "unknown model 'nope'. Known models: "),
        (["-m", "mmoe", "-d", "census"], "unknown dataset 'census'. Known datasets: "),
        (["-m", "mmoe", "-d", "census-income", "-p", "experts=3"], "takes no param 'experts'"),
        (["-m", "mmoe", "-d", "census-income", "-p", "dropout=high"], "'dropout' expects float"),
        (["-m", "mmoe", "-d", "census-income", "-p", "dropout"], "--param expects KEY=VALUE"),
        (["-m", "mmoe", "-d", "census-income", "-D", "protocol=x"], "protocol"),
        (["-m", "mmoe", "-d", "census-income", "--device", "cuda:7"], "--device cuda:7"),
        (["-m", "mmoe", "-d", "census-income", "--batch-size", "1"], "--batch-size must be >= 2"),
    ],
)
def test_bad_input_gives_one_clear_error(cli, tmp_path, args, message):
    res = cli.invoke(main, ["run", *args, "--out", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output


def test_plugin_with_syntax_error(cli, tmp_path):
    bad = tmp_path / "my_model.py"
    bad.write_text("def broken(:\n")
    res = cli.invoke(main, ["run", "--plugin", str(bad), "-m", "my_model", "-d", "census-income"])
    assert res.exit_code == 2
    assert "Error: Error importing plugin" in res.output and "SyntaxError" in res.output
    assert "line 1" in res.output and "Traceback" not in res.output


def test_unwritable_out(cli, tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("")
    res = cli.invoke(
        main, ["run", "-m", "mmoe", "-d", "census-income", "--out", str(blocker / "x")]
    )
    assert res.exit_code == 2 and "is not writable" in res.output


def test_out_defaults_to_the_runs_dir_environment_variable(tmp_path):
    """$MSSBENCH_RUNS_DIR is --out's default (checked where the run first writes)."""
    blocker = tmp_path / "f"
    blocker.write_text("")
    res = CliRunner().invoke(
        main,
        ["run", "-m", "mmoe", "-d", "census-income"],
        env={"MSSBENCH_RUNS_DIR": str(blocker / "from-env")},
    )
    assert res.exit_code == 2 and "from-env" in res.output and "is not writable" in res.output


def test_bad_data_file_is_named(cli, tmp_path):
    data = tmp_path / "census"
    data.mkdir()
    with gzip.open(data / "census-income.test.gz", "wt") as fh:
        fh.write("1, 2, 3\n")
    (data / "census-income.data").write_text("")
    res = cli.invoke(
        main,
        [
            "run",
            "-m",
            "mmoe",
            "-d",
            "census-income",
            "-D",
            "protocol=official",
            "-D",
            f"data_dir={data}",
            "--out",
            str(tmp_path / "runs"),
        ],
    )
    assert res.exit_code == 2, res.output
    assert "census-income" in res.output and "Traceback" not in res.output


def test_check_command_runs_the_conformance_suite(cli):
    res = invoke(cli, ["check", "--plugin", "mssbench.testing.plugin", "constant"])
    assert res.exit_code == 0, res.output
    assert re.search(r"check_batch_permutation\s+passed", res.output)
    assert re.search(r"check_learns\s+xfail\s+cannot rank", res.output)


def test_check_command_fails_on_a_broken_model(cli, tmp_path):
    bad = tmp_path / "sorting.py"
    bad.write_text(
        "import torch\n"
        "from mssbench import ModelOutput, ModelSpec, hookimpl\n"
        "class Sorting(torch.nn.Module):\n"
        "    def __init__(self, schema, width):\n"
        "        super().__init__()\n"
        "        self.lin = torch.nn.Linear(schema.n_numeric, schema.n_tasks)\n"
        "    def forward(self, batch):\n"
        "        z = self.lin(batch.numeric)\n"
        "        return ModelOutput(z[z[:, 0].argsort()], z.new_zeros(()))\n"
        "@hookimpl\n"
        "def mssbench_register_models():\n"
        "    return [ModelSpec(name='sorting', summary='x', build=Sorting,\n"
        "                      defaults={'width': 1})]\n"
    )
    res = cli.invoke(main, ["check", "--plugin", str(bad), "sorting"])
    assert res.exit_code == 1
    assert re.search(r"check_batch_permutation\s+failed", res.output)


@pytest.mark.parametrize(
    "command, target, says",
    [
        (["run", "-m", "mmoe", "-d", "census-income"], "mssbench.api.run", "--resume"),
        (
            ["suite", "--models", "mmoe", "--datasets", "census-income", "--seeds", "1"],
            "mssbench.suite.run_suite",
            "runs on Ray start again",
        ),
    ],
)
def test_interrupt_says_how_to_continue_for_that_command(
    command, target, says, monkeypatch, tmp_path
):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    res = CliRunner().invoke(main, [*command, "--out", str(tmp_path)])
    assert res.exit_code == 130
    assert "Interrupted." in res.output and says in res.output
    assert "--resume" not in res.output or command[0] == "run"
