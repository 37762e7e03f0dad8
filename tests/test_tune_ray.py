"""mssbench tune --executor ray: trials as Ray tasks, the study and the records on the driver."""

from pathlib import Path

import pytest

from mssbench.config import RunConfig
from mssbench.results import load_records

optuna = pytest.importorskip("optuna")

TESTING = ("mssbench.testing.plugin",)
SMALL = {"embed_dim": "4", "n_experts": "2", "tower_hidden": "8"}


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance for the module: starting Ray costs seconds."""
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        object_store_memory=100 * 2**20,
    )
    yield ray
    ray.shutdown()


def _study(directory: Path, trials: int, jobs: int):
    from mssbench.plugins import load_registry
    from mssbench.tune import Budget, Study, prepare

    base = RunConfig(model="mmoe", dataset="tiny-synth", params=dict(SMALL), epochs=2,
                     batch_size=128, device="cpu")
    registry = load_registry(plugins=TESTING)
    study = Study(base, Budget(trials, 1024), 0, directory, jobs, TESTING, (), tuple(SMALL))
    return prepare(study, registry)


def test_ray_study_keeps_the_study_and_records_on_the_driver(ray_local, tmp_path):
    from mssbench.tune_ray import run_study_ray

    lines = []
    study = _study(tmp_path / "study", trials=3, jobs=2)
    found = run_study_ray(study, log=lines.append)
    records, rejected = load_records(study.directory / "runs", trials=True)
    outcomes = [line for line in lines if line.startswith("trial ")]
    assert len(outcomes) == 3 and not rejected
    finished = [line for line in outcomes if "pruned" not in line]
    assert len(records) == len(finished) >= 1
    assert {r["trial"]["study"] for r in records} == {"study"}
    assert all(r["config"]["out"] == str(study.directory / "runs") for r in records)
    ostudy = optuna.load_study(study_name="study",
                               storage=f"sqlite:///{study.directory / 'optuna.db'}")
    values = [t.value for t in ostudy.get_trials() if t.value is not None]
    assert found["value"] == max(values)
    # Every epoch's score reached the study through the pruning actor.
    assert all(t.intermediate_values for t in ostudy.get_trials())
    assert (study.directory / "best.yaml").is_file()
    # The budget is used up: running again adds no trial.
    run_study_ray(study, log=lines.append)
    assert len(ostudy.get_trials()) == 3


def test_local_jobs_run_trials_in_parallel_processes(tmp_path):
    from mssbench.tune import run_study

    study = _study(tmp_path / "par", trials=2, jobs=2)
    found = run_study(study, log=lambda _m: None)
    records, _ = load_records(study.directory / "runs", trials=True)
    numbers = sorted(r["trial"]["number"] for r in records)
    storage = f"sqlite:///{study.directory / 'optuna.db'}"
    ostudy = optuna.load_study(study_name="par", storage=storage)
    assert len(ostudy.get_trials()) == 2 and numbers == sorted(
        t.number for t in ostudy.get_trials() if t.state.name == "COMPLETE"
    )
    assert found["trial"] in numbers
