"""Bad input on every command gives one ``Error:`` line naming the field, never a traceback.

Each case is ``(id, arguments, expected text)``; ``{tmp}`` in an argument is replaced by a
fresh temporary directory, ``{bad_plugin}`` etc. by the files :func:`files` writes there.
"""

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SMALL_MMOE

from mssbench.cli import main
from mssbench.errors import MESSAGE_CHARS

SMALL = [arg for k, v in SMALL_MMOE.items() for arg in ("-p", f"{k}={v}")]
SUITE_SMALL = [arg for k, v in SMALL_MMOE.items() for arg in ("-p", f"mmoe.{k}={v}")]
TESTING = ["--plugin", "mssbench.testing.plugin"]


def run_args(*extra: str) -> list[str]:
    """``mssbench run`` of MMoE on tiny-synth, with ``extra`` last (overriding earlier flags)."""
    return ["run", *TESTING, "-m", "mmoe", "-d", "tiny-synth", *SMALL, "--epochs", "1",
            "--batch-size", "256", "--no-progress", "--out", "{tmp}/runs", *extra]


def suite_args(*extra: str) -> list[str]:
    return ["suite", *TESTING, "--models", "mmoe", "--datasets", "tiny-synth", "--seeds", "1",
            "--epochs", "1", "--batch-size", "256", "--jobs", "1", *SUITE_SMALL, "--out",
            "{tmp}/runs", *extra]


HUGE = "9" * 1_000_000

CASES = [
    # --- run: runner options -------------------------------------------------------------
    ("lr-nan", run_args("--lr", "nan"), "--lr must be a finite number > 0, got nan"),
    ("lr-inf", run_args("--lr", "inf"), "--lr must be a finite number > 0, got inf"),
    ("lr-zero", run_args("--lr", "0"), "--lr must be a finite number > 0, got 0.0"),
    ("weight-decay-nan", run_args("--weight-decay", "nan"), "--weight-decay must be a finite"),
    ("weight-decay-negative", run_args("--weight-decay", "-1"), "--weight-decay must be"),
    ("max-steps-negative", run_args("--max-steps-per-epoch", "-1"),
     "--max-steps-per-epoch must be >= 0, got -1"),
    ("batch-size-zero", run_args("--batch-size", "0"), "--batch-size must be >= 2"),
    ("batch-size-negative", run_args("--batch-size", "-8"), "--batch-size must be >= 2, got -8"),
    ("batch-size-one", run_args("--batch-size", "1"), "--batch-size must be >= 2"),
    ("eval-batch-size-zero", run_args("--eval-batch-size", "0"), "--eval-batch-size must be"),
    ("epochs-zero", run_args("--epochs", "0"), "--epochs must be >= 1, got 0"),
    ("patience-zero", run_args("--patience", "0"), "--patience must be >= 1"),
    ("device-unknown", run_args("--device", "tpu"), "--device must be auto, cpu, cuda"),
    ("device-bad-index", run_args("--device", "cuda:x"), "--device cuda:x"),
    # --- run: model hyper-parameters -------------------------------------------------------
    ("embed-dim-negative", run_args("-p", "embed_dim=-4"),
     "model 'mmoe' param 'embed_dim' must be > 0, got -4"),
    ("embed-dim-zero", run_args("-p", "embed_dim=0"), "param 'embed_dim' must be > 0, got 0"),
    ("expert-hidden-empty", run_args("-p", "expert_hidden="),
     "param 'expert_hidden' must be a non-empty list of values > 0, got []"),
    ("expert-hidden-negative", run_args("-p", "expert_hidden=16,-3"),
     "param 'expert_hidden' must be a non-empty list of values > 0, got [16, -3]"),
    ("tower-hidden-zero", run_args("-p", "tower_hidden=0"),
     "param 'tower_hidden' must be a list of values > 0, got [0]"),
    ("dropout-one", run_args("-p", "dropout=1.0"), "param 'dropout' must be in [0, 1), got 1.0"),
    ("dropout-nan", run_args("-p", "dropout=nan"), "param 'dropout' must be in [0, 1), got NaN"),
    ("dropout-overflow", run_args("-p", "dropout=1e400"),
     "param 'dropout' must be in [0, 1), got Infinity"),
    ("embed-dim-text", run_args("-p", "embed_dim=abc"), "param 'embed_dim' expects int"),
    ("embed-dim-float", run_args("-p", "embed_dim=8.5"), "param 'embed_dim' expects int"),
    ("param-no-equals", run_args("-p", "embed_dim"), "--param expects KEY=VALUE, got 'embed_dim'"),
    ("param-typo", run_args("-p", "embdim=8"), "Did you mean 'embed_dim'?"),
    ("param-huge-value", run_args("-p", f"embed_dim={HUGE}"), "more characters)"),
    ("param-huge-key", run_args("-p", f"{HUGE}=1"), "more characters)"),
    ("scenario-towers-not-bool", run_args("-p", "scenario_towers=zz"),
     "model 'mmoe' param 'scenario_towers' expects bool (default true), got 'zz'"),
    # --- run: names, data options, metrics, output, checkpoints -------------------------------
    ("model-unknown", ["run", *TESTING, "-m", "nosuch", "-d", "tiny-synth", "--out",
                       "{tmp}/runs"], "unknown model 'nosuch'. Known models: adasparse, aesm"),
    ("dataset-unknown", ["run", *TESTING, "-m", "mmoe", "-d", "nosuch", "--out", "{tmp}/runs"],
     "unknown dataset 'nosuch'. Known datasets: ali-ccp, aliexpress"),
    ("data-option-unknown", run_args("-D", "nosuch=1"), "takes no data option 'nosuch'"),
    ("data-option-no-equals", run_args("-D", "rows"), "--data-option expects KEY=VALUE"),
    ("metric-unknown", run_args("--metric", "nosuch"), "nosuch"),
    ("metric-twice", run_args("--metric", "ne", "--metric", "ne"),
     "--metric ne given more than once"),
    ("out-is-a-file", run_args("--out", "{tmp}/file.txt"), "is not writable"),
    ("resume-garbage-checkpoint", run_args("--resume"), "cannot be resumed: not a checkpoint"),
    # --- suite -------------------------------------------------------------------------------
    ("suite-seeds-text", suite_args("--seeds", "abc"), "--seeds expects a count"),
    ("suite-seeds-none", suite_args("--seeds", "0"), "--seeds gives no seed"),
    ("suite-seeds-twice", suite_args("--seeds", "1,1"), "--seeds has duplicates"),
    ("suite-jobs-text", suite_args("--jobs", "many"), "--jobs expects a number or auto"),
    ("suite-jobs-zero", suite_args("--jobs", "0"), "--jobs must be >= 1"),
    ("suite-lr-nan", suite_args("--lr", "nan"), "--lr must be a finite number > 0"),
    ("suite-param-range", suite_args("-p", "mmoe.embed_dim=0"),
     "model 'mmoe' param 'embed_dim' must be > 0, got 0"),
    ("suite-param-type", suite_args("-p", "mmoe.dropout=x"), "param 'dropout' expects float"),
    ("suite-param-model", suite_args("-p", "nosuch.embed_dim=4"), "model 'nosuch' is not in"),
    ("suite-param-unknown", suite_args("-p", "zzz=4"), "no model of this suite takes 'zzz'"),
    ("suite-model-unknown", suite_args("--models", "nosuch"), "nosuch"),
    ("suite-ray-option", suite_args("--cpus-per-run", "2"), "--cpus-per-run is for --executor"),
    # --- data prepare ------------------------------------------------------------------------
    ("prepare-source-missing",
     ["data", "prepare", "aliexpress", "--source", "{tmp}/nowhere", "--dest", "{tmp}/c"],
     "--source"),
    ("prepare-source-empty",
     ["data", "prepare", "aliexpress", "--source", "{tmp}/empty", "--dest", "{tmp}/c"],
     "{tmp}/empty"),
    ("prepare-dest-is-a-file",
     ["data", "prepare", "aliexpress", "--source", "{tmp}/nl", "--dest", "{tmp}/file.txt"],
     "file.txt exists and is not a directory"),
    ("prepare-needs-none",
     ["data", "prepare", "census-income", "--source", "{tmp}/empty"],
     "dataset 'census-income' needs no preparation"),
    ("prepare-bad-line",
     ["data", "prepare", "aliexpress", "--source", "{tmp}/badline", "--dest", "{tmp}/c"],
     "nl_item_train.csv: line 5"),
    # --- check and plugins -------------------------------------------------------------------
    ("check-unknown", ["check", "nosuch"], "nosuch"),
    ("plugin-missing-file-strict", ["plugins", "--plugin", "{tmp}/missing.py",
                                    "--strict-plugins"], "missing.py"),
    ("plugin-syntax-error-strict", ["plugins", "--plugin", "{bad_syntax}", "--strict-plugins"],
     "bad_syntax.py"),
    ("plugin-default-breaks-constraint", ["plugins", "--plugin", "{bad_constraint}",
                                          "--strict-plugins"],
     "default of 'width' is 0, which breaks its constraint (> 0)"),
    ("plugin-constraint-unknown-key", ["plugins", "--plugin", "{unknown_constraint}",
                                       "--strict-plugins"],
     "constraints keys not in defaults: ['depth']"),
    ("run-with-broken-constraint-plugin", ["run", "--plugin", "{bad_constraint}", "-m", "bad",
                                           "-d", "census-income", "--strict-plugins"],
     "breaks its constraint"),
]

BAD_CONSTRAINT = """
from mssbench import Constraint, ModelSpec, hookimpl

@hookimpl
def mssbench_register_models():
    positive = Constraint(low=0, low_open=True)
    return [ModelSpec(name="bad", summary="x", build=lambda schema, width: None,
                      defaults={"width": 0}, constraints={"width": positive})]
"""

UNKNOWN_CONSTRAINT = BAD_CONSTRAINT.replace('{"width": 0}', '{"width": 4}').replace(
    'constraints={"width"', 'constraints={"depth"'
)


def files(tmp: Path) -> dict[str, str]:
    """The files the cases refer to, written into ``tmp``."""
    from test_aliexpress import _edit_line, make_source

    (tmp / "empty").mkdir()
    (tmp / "file.txt").write_text("not a directory\n")
    make_source(tmp / "nl", "tianchi-csv", countries=("NL",))
    make_source(tmp / "badline", "tianchi-csv", countries=("NL",),
                edit=_edit_line("item_train", 5, lambda f: f[:-1]))
    (tmp / "bad_syntax.py").write_text("def broken(:\n")
    (tmp / "bad_constraint.py").write_text(textwrap.dedent(BAD_CONSTRAINT))
    (tmp / "unknown_constraint.py").write_text(textwrap.dedent(UNKNOWN_CONSTRAINT))
    checkpoint_dir = tmp / "runs" / ".partial"
    checkpoint_dir.mkdir(parents=True)
    return {
        "bad_syntax": str(tmp / "bad_syntax.py"),
        "bad_constraint": str(tmp / "bad_constraint.py"),
        "unknown_constraint": str(tmp / "unknown_constraint.py"),
    }


def _plant_garbage_checkpoint(tmp: Path) -> None:
    from mssbench.api import checkpoint_path
    from mssbench.config import RunConfig
    from mssbench.plugins import load_registry
    from mssbench.testing import plugin as testing_plugin

    cfg = RunConfig(model="mmoe", dataset="tiny-synth", params=dict(SMALL_MMOE), epochs=1,
                    batch_size=256, out=str(tmp / "runs"))
    registry = load_registry(extra=[("mssbench-testing", testing_plugin)])
    checkpoint_path(tmp / "runs", cfg, registry).write_bytes(b"\x80\x04garbage")


def test_there_are_at_least_30_cases():
    assert len(CASES) >= 30
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize(("args", "expect"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_naming_the_field(tmp_path, args, expect):
    names = {"tmp": str(tmp_path), **files(tmp_path)}
    _plant_garbage_checkpoint(tmp_path)
    args = [a.format(**names) if "{" in a and len(a) < 1000 else a for a in args]
    expect = expect.format(**names) if "{" in expect else expect
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.output
    assert expect in errors[0], errors[0]
    assert len(errors[0]) <= len("Error: ") + MESSAGE_CHARS + 40
    assert not list((tmp_path / "runs").glob("*.json"))  # nothing was recorded
    # Nothing is left behind by a run refused before it started (a planted checkpoint stays).
    partial = tmp_path / "runs" / ".partial"
    assert sorted(p.suffix for p in partial.iterdir()) in ([], [".pt"])
