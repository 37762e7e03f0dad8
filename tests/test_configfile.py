"""Config files: ``mssbench run --config`` and ``mssbench suite --config``."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mssbench.cli import main
from mssbench.config import RunConfig
from mssbench.configfile import allowed_keys, read
from mssbench.leaderboard.frame import TUNED_SUFFIX
from mssbench.suite import parse_seeds

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

TINY = """\
plugins: [mssbench.testing.plugin]
model: mmoe
dataset: tiny-synth
params:
  embed_dim: 8
  n_experts: 3
  expert_hidden: [16]
  tower_hidden: [8]
epochs: 1
batch_size: 256
progress: false
"""


def _write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _records(out):
    return [json.loads(p.read_text()) for p in sorted(Path(out).glob("*.json"))]


def test_run_from_file_and_command_line_overrides(tmp_path):
    config = _write(tmp_path, TINY + "seed: 3\nlr: 0.002\n")
    out = tmp_path / "runs"
    result = CliRunner().invoke(
        main,
        ["run", "--config", config, "-p", "embed_dim=4", "--seed", "5", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    [rec] = _records(out)
    cfg = rec["config"]
    assert cfg["params"]["embed_dim"] == 4  # -p wins over the file, key by key
    assert cfg["params"]["n_experts"] == 3  # the file's other params stay
    assert cfg["params"]["expert_hidden"] == [16]
    assert cfg["seed"] == 5  # an option given wins over the file
    assert cfg["lr"] == 0.002  # the file wins over the default
    assert cfg["epochs"] == 1 and cfg["batch_size"] == 256
    assert cfg["progress"] is False


def test_unknown_key_suggests_the_close_one(tmp_path):
    config = _write(tmp_path, "model: mmoe\ndataset: census-income\nepoch: 3\n")
    result = CliRunner().invoke(main, ["run", "--config", config])
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line
    assert config in line and "'epoch'" in line and "Did you mean 'epochs'?" in line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model: mmoe\nepochs: 1\n  lr: 2\n", "line 3"),
        ("model: mmoe\nepochs: many\n", "'epochs' expects int"),
        ("- model\n- mmoe\n", "expected a mapping"),
        ("model: mmoe\nparams: [1, 2]\n", "'params' expects a mapping"),
        ("model: mmoe\nlr: ${nowhere}\n", "nowhere"),
    ],
)
def test_bad_file_is_one_line_naming_the_file(tmp_path, text, expected):
    config = _write(tmp_path, text)
    result = CliRunner().invoke(main, ["run", "--config", config, "-d", "tiny-synth"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert config in result.output and expected in result.output


def test_missing_file_and_missing_model(tmp_path):
    result = CliRunner().invoke(main, ["run", "--config", str(tmp_path / "no.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.output
    config = _write(tmp_path, "dataset: tiny-synth\n")
    result = CliRunner().invoke(main, ["run", "--config", config])
    assert result.exit_code == 2 and "missing --model" in result.output


def test_keys_follow_run_config():
    """One rule, one place: a run file takes exactly RunConfig's fields (+ scenarios, plugins)."""
    from mssbench.cli import run, suite

    keys = allowed_keys("run", run)
    assert keys["epochs"] == RunConfig("m", "d").epochs
    assert set(keys) == set(RunConfig("m", "d").to_dict()) | {"scenarios", "plugins"}
    suite_keys = allowed_keys("suite", suite)
    assert {"models", "datasets", "seeds", "executor"} <= set(suite_keys)
    assert "seed" not in suite_keys and "model" not in suite_keys


def test_suite_from_file(tmp_path):
    out = tmp_path / "runs"
    config = _write(
        tmp_path,
        "plugins: [mssbench.testing.plugin]\n"
        "models: [mmoe]\ndatasets: [tiny-synth]\nseeds: [0, 1]\njobs: 1\n"
        "params: {mmoe.embed_dim: 4, n_experts: 2, expert_hidden: [8], tower_hidden: [4]}\n"
        f"epochs: 1\nbatch_size: 256\nout: {out}\n",
        "suite.yaml",
    )
    result = CliRunner().invoke(main, ["suite", "--config", config, "--seeds", "1"])
    assert result.exit_code == 0, result.output
    [rec] = _records(out)  # --seeds 1 on the command line: one seed, not the file's two
    assert rec["config"]["params"]["embed_dim"] == 4 and rec["config"]["params"]["n_experts"] == 2


@pytest.mark.parametrize("name", ["run.yaml", "suite.yaml", "suite-published.yaml"])
def test_examples_are_valid(name):
    from mssbench.cli import run, suite

    command = run if name == "run.yaml" else suite
    values = read(EXAMPLES / name, "run" if name == "run.yaml" else "suite", command)
    assert values


def test_interpolation_and_lists(tmp_path):
    from mssbench.cli import suite

    config = _write(
        tmp_path,
        "models: [mmoe, ple]\ndatasets: census-income\nseeds: [0, 3]\nbatch_size: 512\n"
        "eval_batch_size: ${batch_size}\nmetrics: [pr_auc]\nscenarios: [NL, ES]\n",
        "suite.yaml",
    )
    values = read(config, "suite", suite)
    assert values["models"] == "mmoe,ple" and parse_seeds(values["seeds"]) == [0, 3]
    assert values["eval_batch_size"] == 512 and values["metrics"] == ["pr_auc"]
    assert values["scenarios"] == "NL,ES"


def test_ray_options_need_the_ray_executor(tmp_path):
    config = _write(tmp_path, "datasets: [tiny-synth]\ncpus_per_run: 2\n", "suite.yaml")
    result = CliRunner().invoke(main, ["suite", "--config", config])
    assert result.exit_code == 2
    assert "'cpus_per_run' is for executor: ray (this suite uses local)" in result.output


@pytest.mark.parametrize(
    ("page_glob", "suite_file", "out", "runs"),
    [
        ("census-income/*/README.md", "suite-published.yaml", "leaderboards/runs", 105),
        (
            "aliexpress-synth/*-g2-n150000-*-small1-train0.1-*/README.md",
            "suite-published-twin.yaml",
            "leaderboards/runs/aliexpress-synth",
            110,
        ),
    ],
)
def test_published_suite_file_plans_the_published_runs(
    monkeypatch, page_glob, suite_file, out, runs
):
    """A published suite file and its page's command line plan the same, finished runs."""
    import shlex

    import mssbench.suite

    root = EXAMPLES.parent
    [page] = [
        p.read_text()
        for p in (root / "leaderboards").glob(page_glob)
        if not p.parent.name.endswith(TUNED_SUFFIX)
    ]  # the defaults' page
    [command] = [
        line
        for line in page.splitlines()
        if line.startswith("mssbench suite ") and " --config " not in line
    ]
    planned = []

    def capture(jobs, *args, **kwargs):
        planned.append(sorted((j.key, j.config.result_hash(), j.status) for j in jobs))

    monkeypatch.setattr(mssbench.suite, "run_suite", capture)
    monkeypatch.chdir(root)
    page_args = [*shlex.split(command)[1:], "--out", out]  # the page's runs
    for args in (page_args, ["suite", "--config", f"examples/{suite_file}"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
    from_command, from_file = planned
    assert from_file == from_command
    assert len(from_file) == runs
    # The page's records are at the models' current versions: nothing is due again.
    assert {status for _, _, status in from_file} == {"skipped"}


def test_every_page_suite_file_plans_what_its_command_line_plans(tmp_path, monkeypatch):
    """A page's suite.yaml (written by the build beside the page) and the page's ``mssbench
    suite`` line plan the same runs under the same hashes."""
    import shlex

    import mssbench.suite
    from mssbench.leaderboard import Defaults, build
    from mssbench.plugins import load_registry
    from mssbench.reproduce import suite_file_name

    root = EXAMPLES.parent
    out = tmp_path / "lb"
    defaults = Defaults.from_registry(load_registry())
    build(root / "leaderboards" / "runs", out, defaults=defaults, plots=False)
    pages = sorted(p.parent for p in out.glob("*/*/suite.yaml"))
    assert pages, "no page has a suite config file"
    planned = []

    def capture(jobs, *args, **kwargs):
        planned.append(sorted((j.key, j.config.result_hash()) for j in jobs))

    monkeypatch.setattr(mssbench.suite, "run_suite", capture)
    monkeypatch.chdir(tmp_path)
    runs = ["--out", str(root / "leaderboards" / "runs")]  # plan against the page's runs
    checked = 0
    for page in pages:
        text = (page / "README.md").read_text()
        lines = [line for line in text.splitlines() if line.startswith("mssbench suite ")]
        commands = [line for line in lines if " --config " not in line]
        files = [page / suite_file_name(i) for i in range(len(commands))]
        assert sorted(page.glob("suite*.yaml")) == sorted(files)
        for command, suite_yaml in zip(commands, files):
            assert f"mssbench suite --config {suite_yaml.as_posix()}" in lines
            for args in (
                [*shlex.split(command)[1:], *runs],
                ["suite", "--config", str(suite_yaml), *runs],
            ):
                result = CliRunner().invoke(main, args)
                assert result.exit_code == 0, result.output
            from_command, from_file = planned[-2:]
            assert from_file == from_command and from_file
            checked += 1
    assert checked >= 4  # census-income, and three suites on the twin's pages


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("suite*.yaml")))
def test_every_example_suite_file_plans_its_runs(monkeypatch, tmp_path, name):
    """Each example suite file is valid: it plans its runs (into an empty directory)."""
    import mssbench.suite

    planned = []
    monkeypatch.setattr(mssbench.suite, "run_suite", lambda jobs, *a, **k: planned.append(jobs))
    monkeypatch.chdir(EXAMPLES.parent)
    args = ["suite", "--config", f"examples/{name}", "--out", str(tmp_path / "runs")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    [jobs] = planned
    assert jobs and {j.status for j in jobs} == {"pending"}


@pytest.mark.parametrize(("text", "seeds"), [("[2]", [2]), ("[0, 3, 7]", [0, 3, 7]), ("2", [0, 1])])
def test_a_seed_list_of_one_is_that_seed_not_a_count(tmp_path, text, seeds):
    from mssbench.cli import suite

    path = _write(tmp_path, f"datasets: [tiny-synth]\nseeds: {text}\n", "s.yaml")
    values = read(path, "suite", suite)
    assert parse_seeds(values["seeds"]) == seeds


def _plan_suite(monkeypatch, *args):
    import mssbench.suite

    planned = []
    monkeypatch.setattr(mssbench.suite, "run_suite", lambda jobs, *a, **k: planned.append(jobs))
    monkeypatch.chdir(EXAMPLES.parent)
    result = CliRunner().invoke(main, ["suite", *args])
    jobs = planned[0] if planned else []
    return result, {(j.key, j.config.result_hash(), j.status) for j in jobs}


def test_a_suite_file_serves_a_subset_of_its_models(monkeypatch):
    """``--models`` with a track's file runs that track's runs of those models (same hashes,
    finished ones skipped); the file's parameters for the other models are left out with a
    note, while a typed ``-p`` for a model outside the suite is still an error."""
    config = ["--config", "examples/suite-converged-twin.yaml"]
    result, whole = _plan_suite(monkeypatch, *config)
    assert result.exit_code == 0, result.output
    result, subset = _plan_suite(monkeypatch, *config, "--models", "m3oe,supermoe")
    assert result.exit_code == 0, result.output
    assert subset == {job for job in whole if job[0][1] in ("m3oe", "supermoe")}
    assert len(subset) == 10
    [note] = [line for line in result.output.splitlines() if "config file's" in line]
    assert "mmoe.expert_hidden, mmoe.tower_hidden, ple.level_widths" in note
    assert note.endswith("apply to no model of this suite") and "supermoe" not in note
    result, _ = _plan_suite(monkeypatch, *config, "--models", "m3oe", "-p", "mmoe.expert_hidden=8")
    assert result.exit_code == 2
    assert "-p mmoe.expert_hidden: model 'mmoe' is not in this suite" in result.output
