import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import SMALL_MMOE
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from mssbench.cli import main
from mssbench.config import RunConfig
from mssbench.data.splits import nested_sample
from mssbench.errors import ConfigError
from mssbench.runners.pretrain import (
    PretrainSettings,
    pretrain_contrastive,
    shared_representation,
    view_agreement,
)
from mssbench.scaling.fit import MAX_EXPONENT, fit_power_law
from mssbench.scaling.grid import Point, halvings, scale_width, scaled_params, width_params
from mssbench.scaling.report import frontier
from mssbench.scaling.study import Study
from mssbench.testing.synthetic import make_dataset

GRID = np.geomspace(1e3, 1e6, 6)


@settings(max_examples=25, deadline=None)
@given(
    a=st.floats(0.5, 20.0),
    b=st.floats(0.2, 1.2),
    c=st.floats(0.01, 0.5),
)
@example(a=0.5, b=0.94140625, c=0.01)  # SciPy's default tolerances fit b = 0.908
def test_fit_recovers_a_noiseless_power_law(a, b, c):
    # Laws whose power-law term is at least 5% of the loss at the smallest point: below that,
    # what the fit recovers is set by the solver's tolerance (FIT_TOLERANCE), not by the data.
    assume(a * GRID[0] ** (-b) >= 0.05 * c)
    y = a * GRID ** (-b) + c
    law = fit_power_law(GRID, y, n_boot=20)
    assert law is not None
    assert law.b == pytest.approx(b, rel=0.02, abs=0.01)
    assert law.l_inf == pytest.approx(c, rel=0.02, abs=2e-3)
    assert law.r2 > 0.999
    assert np.allclose(law.predict(GRID), y, rtol=1e-3, atol=1e-4)


def test_bootstrap_interval_covers_the_truth_and_shrinks_with_seeds():
    rng = np.random.default_rng(0)

    def noisy(seeds):
        x = np.repeat(GRID[:5], seeds)
        return x, 2.0 * x ** (-0.5) + 0.1 + rng.normal(0, 0.002, len(x))

    one = fit_power_law(*noisy(1), n_boot=200)
    many = fit_power_law(*noisy(8), n_boot=200)
    for law in (one, many):
        assert law.b_low <= 0.5 <= law.b_high
        assert law.l_inf_low <= 0.1 <= law.l_inf_high
    assert many.b_high - many.b_low < one.b_high - one.b_low


def test_a_known_floor_identifies_the_exponent_a_short_grid_cannot():
    # Two decades of x, two seeds, the loss still far above its floor: the free fit trades
    # the exponent against the asymptote; holding the asymptote at the known Bayes loss
    # recovers the exponent of the excess loss, with an interval around it.
    rng = np.random.default_rng(1)
    x = np.repeat(np.geomspace(1e9, 1e11, 6), 2)
    y = 0.05 * (x / 1e9) ** (-0.3) + 0.1 + rng.normal(0, 3e-4, len(x))
    held = fit_power_law(x, y, n_boot=200, l_inf=0.1)
    assert held.l_inf == 0.1
    assert held.b == pytest.approx(0.3, abs=0.03)
    assert held.b_low <= 0.3 <= held.b_high and held.b_high - held.b_low < 0.1
    free = fit_power_law(x, y, n_boot=200)
    assert free.b_high - free.b_low > held.b_high - held.b_low


def test_fit_needs_four_sizes_and_flags_an_exponent_at_its_bound():
    assert fit_power_law([1, 2, 4, 4], [0.5, 0.4, 0.3, 0.31]) is None
    flat = fit_power_law(GRID, np.full(len(GRID), 0.3) + np.linspace(0, 1e-4, len(GRID)))
    assert flat is not None and flat.at_bound
    steep = fit_power_law(GRID, 0.5 * GRID**-0.5 + 0.2, n_boot=10)
    assert not steep.at_bound and steep.b < MAX_EXPONENT


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 5000), data=st.data())
def test_nested_samples_grow_without_swapping_rows(n, data):
    k1 = data.draw(st.integers(1, n))
    k2 = data.draw(st.integers(k1, n))
    small, large = nested_sample(n, k1), nested_sample(n, k2)
    assert len(small) == k1 and len(np.unique(small)) == k1
    assert np.all(np.diff(small) > 0) and small.min() >= 0 and small.max() < n
    assert set(small) <= set(large)
    assert np.array_equal(small, nested_sample(n, k1))


def test_nested_sample_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="cannot keep 6 of 5 rows"):
        nested_sample(5, 6)


@pytest.mark.parametrize(
    ("value", "factor", "expected"),
    [
        (512, 0.5, 256),
        (128, 0.125, 16),
        (64, 2.0, 128),
        (16, 0.25, 4),
        (8, 0.125, 1),
        (100, 1, 100),
        (100, 0.5, 48),
    ],
)
def test_scale_width_keeps_widths_that_heads_and_kernels_divide(value, factor, expected):
    assert scale_width(value, factor) == expected


def test_widths_of_built_in_models_and_their_scaling(registry):
    mmoe = registry.model("mmoe")
    assert set(width_params(mmoe)) == {"embed_dim", "expert_hidden", "tower_hidden"}
    assert scaled_params(mmoe, {}, 1.0) == {}
    half = scaled_params(mmoe, {"n_experts": 4}, 0.5)
    assert half["expert_hidden"] == [256, 128] and half["embed_dim"] == 64
    assert half["n_experts"] == 4  # not a width
    experts = scaled_params(mmoe, {}, 2.0, keys=["n_experts"])
    assert experts == {"n_experts": 16}
    with pytest.raises(ConfigError, match="no hyper-parameter 'widths'"):
        scaled_params(mmoe, {}, 2.0, keys=["widths"])
    with pytest.raises(ConfigError, match="scenario_towers=True is not a width"):
        scaled_params(mmoe, {}, 2.0, keys=["scenario_towers"])


def test_study_grids_per_axis():
    assert halvings(1.0, 3) == [0.25, 0.5, 1.0]
    params = Study(models=["mmoe"], axis="params", points=3)
    assert params.grids(1000, 256) == ([0.25, 0.5, 1.0], [1000], [256])
    data = Study(models=["mmoe"], axis="data", points=3)
    assert data.grids(1000, 256) == ([1.0], [250, 500, 1000], [256])
    compute = Study(models=["mmoe"], axis="compute", points=2, data_points=2)
    assert compute.grids(1000, 256) == ([0.5, 1.0], [500, 1000], [256])
    batch = Study(models=["mmoe"], axis="batch", points=3)
    assert batch.grids(1000, 256) == ([1.0], [1000], [64, 128, 256])
    with pytest.raises(ConfigError, match="not within the 1,000 training rows"):
        Study(models=["mmoe"], axis="data", rows=[2000]).grids(1000, 256)


def test_a_point_on_the_whole_split_is_a_plain_run_and_a_budget_caps_samples():
    base = RunConfig(model="mmoe", dataset="tiny-synth", epochs=5, batch_size=100)
    whole = Point("mmoe", 1.0, 1000, 100, {})
    assert whole.config(base, 0, 0, 1000).result_hash() == base.result_hash()
    part = Point("mmoe", 1.0, 250, 100, {}).config(base, 0, 1000, 1000)
    assert (part.train_rows, part.epochs, part.max_steps_per_epoch) == (250, 4, 3)


def test_frontier_takes_the_best_point_within_each_budget():
    frame = pd.DataFrame(
        {
            "model": ["m"] * 4,
            "factor": [0.5, 0.5, 1.0, 1.0],
            "train_rows": [100, 200, 100, 200],
            "batch_size": [10] * 4,
            "seed": [0] * 4,
            "n_params": [10, 10, 20, 20],
            "dense_params": [5, 5, 15, 15],
            "flops_per_sample": [1.0, 1.0, 2.0, 2.0],
            "compute": [100.0, 200.0, 200.0, 400.0],
            "test/ctr": [0.50, 0.40, 0.45, 0.30],
            "valid/ctr": [0.50, 0.40, 0.45, 0.30],
        }
    )
    table = frontier(frame, [], "ctr")
    assert list(table["best train rows"]) == [100, 200, 200]
    assert list(table["best width factor"]) == [0.5, 0.5, 1.0]
    assert list(table["test ctr loss"]) == ["0.50000", "0.40000", "0.30000"]


SCALING_ARGS = [
    "scaling",
    "--plugin",
    "mssbench.testing.plugin",
    "-m",
    "mmoe",
    "-d",
    "tiny-synth",
    "--axis",
    "params",
    "--points",
    "4",
    "--epochs",
    "1",
    "--batch-size",
    "256",
    "--bootstrap",
    "20",
    *[arg for k, v in SMALL_MMOE.items() for arg in ("-p", f"{k}={v}")],
]


def test_scaling_command_writes_fits_and_plots_and_resumes(tmp_path):
    args = [*SCALING_ARGS, "--out", str(tmp_path / "runs"), "--report", str(tmp_path / "rep")]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "4 to run" in first.output
    payload = json.loads((tmp_path / "rep" / "scaling.json").read_text())
    points = payload["points"]
    assert len(points) == 4
    assert sorted(p["factor"] for p in points) == [0.125, 0.25, 0.5, 1.0]
    dense = [p["dense_params"] for p in sorted(points, key=lambda p: p["factor"])]
    assert dense == sorted(dense) and dense[0] < dense[-1]
    assert all(p["bayes/ctr"] is not None for p in points)  # the twin's oracle loss
    assert {(f["task"], f["split"]) for f in payload["fits"]} >= {("ctr", "test"), ("ctr", "valid")}
    assert (tmp_path / "rep" / "scaling_params_ctr.png").stat().st_size > 1000
    assert "Bayes loss" in (tmp_path / "rep" / "scaling.md").read_text()
    for fit in payload["fits"]:  # the exponent with L_inf held at the test split's Bayes loss
        if fit["split"] == "valid":
            assert fit["fit_at_bayes"] is None
            continue
        bayes = np.mean([p[f"bayes/{fit['task']}"] for p in points])
        assert fit["fit_at_bayes"]["l_inf"] == pytest.approx(bayes), fit
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert "4 finished, 0 to run" in again.output


def test_scaling_rejects_a_bad_grid(tmp_path):
    args = [*SCALING_ARGS, "--factors", "0.5,x", "--out", str(tmp_path / "runs")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert "--factors expects a comma list of numbers, got '0.5,x'" in result.output


def _tiny_model(registry, name, schema, **params):
    from mssbench.api import build_model

    torch.manual_seed(0)
    return build_model(registry, name, schema, params)


def test_contrastive_pretraining_makes_views_of_a_row_agree(registry):
    data = make_dataset(n_train=3000)
    model = _tiny_model(
        registry, "shared_bottom", data.schema, embed_dim=8, bottom_hidden=[32], tower_hidden=[8]
    )
    random_model = _tiny_model(
        registry, "shared_bottom", data.schema, embed_dim=8, bottom_hidden=[32], tower_hidden=[8]
    )
    info = pretrain_contrastive(
        model,
        data.train,
        PretrainSettings(epochs=3, batch_size=256, lr=3e-3, seed=0),
        model_name="shared_bottom",
        device=torch.device("cpu"),
        log=lambda _m: None,
    )
    represent = shared_representation(random_model, "shared_bottom")
    held_out = view_agreement(random_model, represent, data.valid, torch.device("cpu"), 1)
    trained = view_agreement(
        model, shared_representation(model, "shared_bottom"), data.valid, torch.device("cpu"), 1
    )
    assert info["view_agreement_after"] > info["view_agreement_before"] + 0.05
    assert trained > held_out + 0.05
    assert info["steps"] == 3 * 12


def test_pretraining_needs_a_shared_representation(registry):
    data = make_dataset(n_train=500)
    model = _tiny_model(registry, "star", data.schema)
    with pytest.raises(ConfigError, match="'star' has none"):
        shared_representation(model, "star")


def test_run_records_pretraining_and_train_rows(tmp_path, registry):
    from mssbench.api import run

    cfg = RunConfig(
        model="mmoe",
        dataset="tiny-synth",
        params=dict(SMALL_MMOE),
        epochs=1,
        batch_size=256,
        train_rows=700,
        pretrain="contrastive",
        out=str(tmp_path),
        progress=False,
    )
    record = run(cfg, registry=registry, log=lambda _m: None).record
    assert record["dataset"]["rows"]["train"] == 700
    assert record["pretraining"]["method"] == "contrastive"
    assert record["config"]["train_rows"] == 700 and record["config"]["pretrain"] == "contrastive"
    plain = RunConfig(model="mmoe", dataset="tiny-synth", params=dict(SMALL_MMOE), epochs=1)
    assert cfg.result_hash() != plain.result_hash()
    with pytest.raises(ConfigError, match="more than the 2,000 training rows"):
        run(
            RunConfig(
                model="mmoe",
                dataset="tiny-synth",
                params=dict(SMALL_MMOE),
                epochs=1,
                train_rows=5000,
                out=str(tmp_path),
                progress=False,
            ),
            registry=registry,
            log=lambda _m: None,
        )


def test_size_benchmark_grows_the_model_and_trains_it(registry):
    import argparse
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "scaling_size.py"
    spec = importlib.util.spec_from_file_location("bench_scaling_size", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    data = make_dataset(n_train=300)
    args = argparse.Namespace(
        model="mmoe",
        scale_params="",
        batch_size=32,
        steps=2,
        warmup=1,
        device="cpu",
        precision="fp32",
    )
    small, large = (bench.measure(args, registry, data, f) for f in (0.125, 0.25))
    assert small["dense_params"] < large["dense_params"]
    assert 0 < small["matmul_flops_per_sample"] < large["matmul_flops_per_sample"]
    assert small["samples_per_s"] > 0 and small["peak_gib"] is None
