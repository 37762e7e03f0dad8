"""mssbench tune: validation-only selection, trial records, resumable studies, best config."""

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from mssbench.cli import main
from mssbench.errors import DataError
from mssbench.records import content_digest, verify_record
from mssbench.results import load_records

optuna = pytest.importorskip("optuna")

# A dataset whose test split raises when any of its tensors is read after loading.
SEALED = textwrap.dedent(
    """
    import dataclasses

    from mssbench import DatasetSpec, Split, hookimpl
    from mssbench.testing.synthetic import make_dataset

    class SealedSplit(Split):
        def __getattribute__(self, name):
            if name in ("categorical", "numeric", "scenario", "labels", "oracle") and (
                object.__getattribute__(self, "__dict__").get("_sealed")
            ):
                raise RuntimeError("the test split was read")
            return object.__getattribute__(self, name)

    def load(options):
        data = make_dataset(n_train=600, seed=0)
        test = data.test
        sealed = SealedSplit(test.categorical, test.numeric, test.scenario, test.labels)
        out = dataclasses.replace(data, test=sealed)
        object.__setattr__(sealed, "_sealed", True)
        return out

    @hookimpl
    def mssbench_register_datasets():
        return [DatasetSpec(name="sealed-synth", summary="test split sealed", load=load,
                            source="generated", tags={"synthetic": True})]
    """
)

SMALL = ("-p", "embed_dim=4", "-p", "n_experts=2", "-p", "tower_hidden=8")


def _tune(out, *extra, dataset="tiny-synth", plugin="mssbench.testing.plugin"):
    args = ["tune", "--plugin", plugin, "-m", "mmoe", "-d", dataset, *SMALL,
            "--epochs", "2", "--batch-size", "128", "--budget-samples", "1024",
            "--device", "cpu", "--out", str(out), *extra]
    return CliRunner().invoke(main, args)


@pytest.fixture
def sealed_plugin(tmp_path):
    path = tmp_path / "sealed.py"
    path.write_text(SEALED)
    return str(path)


def test_a_tune_run_reads_no_test_row(tmp_path, sealed_plugin):
    # The guard works: an ordinary run on this dataset fails when it evaluates on test.
    run = CliRunner().invoke(main, ["run", "--plugin", sealed_plugin, "-m", "mmoe", "-d",
                                    "sealed-synth", *SMALL, "--epochs", "1", "--device", "cpu",
                                    "--out", str(tmp_path / "plain")])
    assert run.exit_code != 0 and "the test split was read" in run.output
    study = tmp_path / "study"
    result = _tune(study, "--trials", "2", dataset="sealed-synth", plugin=sealed_plugin)
    assert result.exit_code == 0, result.output
    records, rejected = load_records(study / "runs", trials=True)
    assert len(records) == 2 and not rejected
    for record in records:
        assert "test" not in record and record["dataset"]["rows"]["test"] == 0
        assert record["trial"]["budget"] == {"trials": 2, "samples_per_trial": 1024}
        assert record["training"]["train_samples"] <= 1024
    # Trial records are not results: the ordinary reader leaves them out.
    assert load_records(study / "runs")[0] == []
    # A record has test results or a trial block: without either it is refused.
    bare = {k: v for k, v in records[0].items() if k not in ("trial", "_path")}
    bare["digest"] = content_digest(bare)
    with pytest.raises(DataError, match="a test block"):
        verify_record(bare)


def test_study_writes_a_best_config_that_run_reads(tmp_path):
    study = tmp_path / "study"
    result = _tune(study, "--trials", "3", "--seed", "1")
    assert result.exit_code == 0, result.output
    described = json.loads(json.dumps(_yaml(study / "study.yaml")))
    assert described["budget"] == {"trials": 3, "samples_per_trial": 1024}
    assert described["objective"] == (
        "best validation selection score (minus the mean over tasks of validation logloss)"
    )
    assert "embed_dim" not in described["search_space"]  # fixed with -p
    assert {"lr", "weight_decay", "dropout", "expert_hidden.layers"} <= set(
        _trial_params(study)
    )
    best = _yaml(study / "best.yaml")
    assert best["params"]["embed_dim"] == "4" and best["max_steps_per_epoch"] == 4
    assert f"mssbench run --config {study / 'best.yaml'}" in result.output
    assert f"mssbench suite --tuned {study}" in result.output
    values = [t.value for t in _ostudy(study).get_trials() if t.value is not None]
    assert described["best"]["value"] == max(values)
    rerun = CliRunner().invoke(main, ["run", "--plugin", "mssbench.testing.plugin",
                                      "--config", str(study / "best.yaml"),
                                      "--out", str(tmp_path / "rerun")])
    assert rerun.exit_code == 0, rerun.output
    [record], _ = load_records(tmp_path / "rerun")
    trial = next(r for r in load_records(study / "runs", trials=True)[0]
                 if r["trial"]["number"] == described["best"]["trial"])
    assert record["run_hash"] == trial["run_hash"]  # the same configuration, now with test
    assert record["training"]["best_selection_score"] == pytest.approx(described["best"]["value"])


def test_the_study_names_the_selection_its_trials_use(tmp_path):
    study = tmp_path / "study"
    result = _tune(study, "--trials", "1", "--select", "mean_auc")
    assert result.exit_code == 0, result.output
    objective = _yaml(study / "study.yaml")["objective"]
    assert objective.startswith("best validation selection score (mean over tasks of pooled")
    [record], _ = load_records(study / "runs", trials=True)
    assert record["trial"]["selection"] == objective
    assert record["config"]["select"] == "mean_auc"


def test_interrupted_study_continues_with_the_same_point(tmp_path, monkeypatch):
    study = tmp_path / "study"
    report = optuna.trial.Trial.report

    def interrupt(self, value, step):
        if self.number == 1:
            raise KeyboardInterrupt
        report(self, value, step)

    monkeypatch.setattr(optuna.trial.Trial, "report", interrupt)
    stopped = CliRunner().invoke(main, _args(study, "--trials", "3"))
    assert stopped.exit_code != 0  # Ctrl-C in trial 1
    monkeypatch.setattr(optuna.trial.Trial, "report", report)
    assert any(Path(study, "runs", ".partial").glob("*.pt"))  # left to resume from
    result = _tune(study, "--trials", "3")
    assert result.exit_code == 0, result.output
    assert "1 interrupted trial(s) queued again" in result.output
    trials = _ostudy(study).get_trials()
    counted = [t for t in trials if t.state.is_finished() and t.state.name != "FAIL"]
    assert len(counted) == 3
    assert trials[1].state.name == "FAIL" and trials[2].params == trials[1].params
    # The sampler does not start its sequence over: the new trial is not an earlier point.
    assert trials[3].params not in (trials[0].params, trials[1].params)


def test_other_settings_in_the_same_directory_are_refused(tmp_path):
    study = tmp_path / "study"
    assert _tune(study, "--trials", "1").exit_code == 0
    result = _tune(study, "--trials", "2")
    assert result.exit_code != 0 and "other settings (budget)" in result.output


def _args(out, *extra):
    return ["tune", "--plugin", "mssbench.testing.plugin", "-m", "mmoe", "-d", "tiny-synth",
            *SMALL, "--epochs", "2", "--batch-size", "128", "--budget-samples", "1024",
            "--device", "cpu", "--out", str(out), *extra]


def _yaml(path):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path))


def _ostudy(study):
    return optuna.load_study(study_name=study.name, storage=f"sqlite:///{study / 'optuna.db'}")


def _trial_params(study):
    return {k for t in _ostudy(study).get_trials() for k in t.params}


def test_suite_tuned_reruns_each_best_configuration_over_seeds(tmp_path):
    studies = tmp_path / "tune"
    assert _tune(studies / "tiny_mmoe", "--trials", "1").exit_code == 0
    out = tmp_path / "suite"
    args = ["suite", "--plugin", "mssbench.testing.plugin", "--tuned", str(studies),
            "--seeds", "2", "--jobs", "1", "--device", "cpu", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    records, _ = load_records(out)
    best = _yaml(studies / "tiny_mmoe" / "best.yaml")
    assert sorted(r["config"]["seed"] for r in records) == [0, 1]
    assert all(r["config"]["requested"]["params"] == best["params"] for r in records)
    assert all(r["config"]["lr"] == best["lr"] for r in records)
    assert all(r["config"]["tuned_from"] == "tiny_mmoe" for r in records)
    assert all(r["config"]["tuning_budget"] == {"trials": 1, "samples_per_trial": 1024}
               for r in records)
    again = CliRunner().invoke(main, args)
    assert "2 already finished" in again.output
    mixed = CliRunner().invoke(main, [*args, "--models", "mmoe"])
    assert mixed.exit_code != 0 and "--models cannot be combined with --tuned" in mixed.output
    missing = CliRunner().invoke(main, [*args[:4], str(tmp_path / "nothing"), *args[5:]])
    assert missing.exit_code != 0 and "no study there" in missing.output



def test_a_pruned_trial_leaves_no_record_and_no_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: self.number == 0)
    study = tmp_path / "study"
    result = _tune(study, "--trials", "2")
    assert result.exit_code == 0, result.output
    assert "trial 0: pruned" in result.output
    trials = _ostudy(study).get_trials()
    assert [t.state.name for t in trials] == ["PRUNED", "COMPLETE"]
    assert list(trials[0].intermediate_values) == [1]  # stopped after its first epoch
    records, _ = load_records(study / "runs", trials=True)
    assert [r["trial"]["number"] for r in records] == [1]
    assert not (study / "runs" / ".partial").exists()
