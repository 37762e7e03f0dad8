"""The helpers of the benchmarks in benchmarks/ measure like for like."""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mssbench.metrics import conditional_logit
from mssbench.testing import make_dataset

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train_efficiency():
    return _load("train_efficiency")


@pytest.fixture(scope="module")
def evaluation():
    return _load("evaluation")


@pytest.mark.parametrize("layout", ["fields", "arrays"])
def test_per_row_loader_gives_the_runners_batch(train_efficiency, layout):
    from torch.utils.data import DataLoader

    data = make_dataset(n_train=64, n_valid=16, n_test=16)
    rows = train_efficiency.RowDataset(data.train, data.schema, layout)
    loader = DataLoader(rows, batch_size=16, shuffle=False)
    got = train_efficiency.to_batch(rows, next(iter(loader)))
    want = data.train.batch(slice(0, 16))
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert torch.equal(g, w)


def test_matmul_flops_of_a_linear_layer(train_efficiency):
    class Linear(torch.nn.Module):
        def __init__(self, n_in: int, n_out: int):
            super().__init__()
            self.fc = torch.nn.Linear(n_in, n_out, bias=False)

        def forward(self, batch):
            logits = self.fc(batch.numeric)
            return logits, logits.new_zeros(())

    data = make_dataset(n_train=64, n_valid=16, n_test=16)
    n_num = data.schema.n_numeric
    model = Linear(n_num, data.schema.n_tasks)
    batch = data.train.batch(slice(0, 8))
    total, _ = train_efficiency.count_matmul_flops(model, batch, data.schema, bf16=False)
    # Forward x @ W (2 B F T) and the weight gradient (2 B F T); no input gradient is needed.
    assert total == 2 * (2 * 8 * n_num * data.schema.n_tasks)


def test_numpy_conditional_logit_matches_the_core(evaluation):
    rng = np.random.default_rng(0)
    parent = rng.normal(-3, 3, 1000)
    child = parent - np.abs(rng.normal(0, 3, 1000))
    child[:10] = parent[:10] + 1.0  # broken relation: capped like the core does
    want = conditional_logit(torch.from_numpy(child), torch.from_numpy(parent)).numpy()
    np.testing.assert_allclose(evaluation.conditional_logit_np(child, parent), want, rtol=1e-12)


def test_sklearn_baseline_agrees_with_evaluate(evaluation, tmp_path):
    pytest.importorskip("sklearn")
    facts = evaluation.generate(tmp_path, 5000, decimals=2)
    names = tuple(facts["scenarios"])
    labels = torch.from_numpy(np.load(tmp_path / "labels.npy"))
    scenario = torch.from_numpy(np.load(tmp_path / "scenario.npy"))
    for variant in ("continuous", "ties"):
        logits = torch.from_numpy(np.load(tmp_path / f"logits_{variant}.npy"))
        ours = evaluation.ours_full(logits, labels, scenario, names)
        base = evaluation.sklearn_table(logits, labels, scenario, names, full=True)
        diff, where, _ = evaluation.max_difference(ours, base)
        assert diff < evaluation.TOLERANCE, where
        bare = evaluation.ours_bare(logits, labels, scenario, names)
        base = evaluation.sklearn_table(logits, labels, scenario, names, full=False)
        assert evaluation.max_difference(bare, base)[0] < evaluation.TOLERANCE
        assert len(base) == len(bare) == 2 * (len(names) + 1)


def test_max_difference_treats_nan_pairs_as_equal(evaluation):
    diff, _, both_nan = evaluation.max_difference(
        {"a": math.nan, "b": 0.5}, {"a": math.nan, "b": 0.5}
    )
    assert diff == 0.0 and both_nan == 1
    assert evaluation.max_difference({"a": 0.5}, {"a": math.nan})[0] == math.inf
    assert evaluation.max_difference({}, {"a": 0.5})[0] == math.inf


@pytest.fixture(scope="module")
def bad_inputs():
    return _load("bad_inputs")


def test_bad_inputs_audit_has_30_distinct_cases(bad_inputs):
    names = [case.name for case in bad_inputs.CASES]
    assert len(names) >= 30 and len(set(names)) == len(names)


def test_bad_inputs_verdicts(bad_inputs, tmp_path):
    from click.testing import CliRunner

    from mssbench.cli import main

    def verdict(argv):
        return bad_inputs.message(CliRunner().invoke(main, argv))

    text, kind = verdict(bad_inputs.run_argv(tmp_path, "--lr", "nan"))
    assert kind == "refused" and text == "Error: --lr must be a finite number > 0, got nan"
    assert verdict(["plugins"])[1] == "ACCEPTED"
    assert verdict(["check", "--help"])[1] == "ACCEPTED"
    argv = bad_inputs.bad_data_argv(tmp_path, "labels", "2")
    text, kind = verdict(argv)
    assert kind == "refused" and text.endswith("expected 0 or 1 (+1 more Error: lines)")


@pytest.fixture(scope="module")
def twin_sharing():
    return _load("twin_sharing")


def test_twin_sharing_differences_are_paired_by_seed(twin_sharing):
    import pandas as pd

    rows = []
    for seed, (base, sb, mm) in enumerate(
        [(0.60, 0.62, 0.70), (0.70, 0.66, 0.80), (0.65, 0.64, 0.75)]
    ):
        for model, auc in (("single_task", base), ("shared_bottom", sb), ("mmoe", mm)):
            rows.append({"model": model, "seed": seed, "scenario": "NL", "task": "ctr", "auc": auc})
    oracle = pd.DataFrame(
        [{"model": "oracle", "seed": 0, "scenario": "NL", "task": "ctr", "auc": 0.9}]
    )
    table = twin_sharing.summarise(pd.DataFrame(rows), oracle).set_index("model")
    # mmoe - single_task is +0.10 in every seed: a paired std of 0, unlike the AUCs' own std.
    assert table.at["mmoe", "diff_mean"] == pytest.approx(0.10)
    assert table.at["mmoe", "diff_std"] == pytest.approx(0.0, abs=1e-12)
    assert table.at["mmoe", "auc_std"] == pytest.approx(0.05)
    assert table.at["shared_bottom", "diff_mean"] == pytest.approx(-0.01)
    assert table.at["mmoe", "oracle"] == 0.9
    lines = twin_sharing.verdict(table.reset_index(), small=("NL",))
    assert lines[0].startswith("NL ctr: best MS-MT mmoe +0.1000") and "beats" in lines[0]
    assert lines[-1] == "shared_bottom worse than single_task on: NL/ctr (-0.0100)"
    assert "| NL | ctr | 0.6500 ± 0.0500 |" in twin_sharing.render(table.reset_index())


def test_twin_sharing_tables_seeds_of_parallel_processes_as_one_run(twin_sharing, tmp_path):
    """--raw files of processes with different seeds summarise like one run with all seeds."""
    import pandas as pd

    def aucs(seeds):
        return pd.DataFrame(
            [
                {"model": m, "seed": s, "scenario": "NL", "task": "ctr", "auc": 0.6 + 0.1 * s + d}
                for s in seeds
                for m, d in (("single_task", 0.0), ("mmoe", 0.02 * (s + 1)))
            ]
        )

    oracle = pd.DataFrame(
        [{"model": "oracle", "seed": 0, "scenario": "NL", "task": "ctr", "auc": 0.9}]
    )
    twin_sharing.write_raw(tmp_path / "a.csv", aucs([0, 2]), oracle)
    twin_sharing.write_raw(tmp_path / "b.csv", aucs([1]), oracle)
    merged, merged_oracle = twin_sharing.read_raw([tmp_path / "a.csv", tmp_path / "b.csv"])
    expected = twin_sharing.summarise(aucs([0, 1, 2]), oracle)
    pd.testing.assert_frame_equal(
        twin_sharing.summarise(merged, merged_oracle), expected, check_like=True
    )
    with pytest.raises(SystemExit, match="appears in two of"):
        twin_sharing.read_raw([tmp_path / "a.csv", tmp_path / "a.csv"])
