"""Checks shared by the tests of the real-data dataset plugins (MovieLens, Ali-CCP, KuaiRand)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner

from mssbench.cli import main
from mssbench.plugins import load_registry
from mssbench.runners.trainer import task_weights, training_loss
from mssbench.spec import HEADS, LoadedDataset
from mssbench.testing import run_dataset_checks

SPLIT_NAMES = ("train", "valid", "test")


def check_loaded(data: LoadedDataset) -> None:
    """Ids inside the vocabularies, labels 0/1, relations hold, info JSON and consistent."""
    sizes = torch.tensor(data.schema.vocab_sizes)
    for name in SPLIT_NAMES:
        split = getattr(data, name)
        assert data.info["rows"][name] == len(split)
        if len(split) == 0:
            continue
        assert (split.categorical >= 0).all() and (split.categorical < sizes).all()
        assert set(split.labels.unique().tolist()) <= {0.0, 1.0}
        assert torch.isfinite(split.numeric).all()
        for r in data.schema.relations:
            child = split.labels[:, data.schema.task_index(r.child)]
            parent = split.labels[:, data.schema.task_index(r.parent)]
            assert (child <= parent).all(), f"{r.child} implies {r.parent}"
        for i, t in enumerate(data.schema.tasks):
            assert data.info["positives"][name][t.name] == int(split.labels[:, i].sum())
    json.dumps(dict(data.info))


def check_conformance(dataset: str, options: dict, failing: set[str] = frozenset()) -> dict:
    """``mssbench check`` on a prepared cache: the OOV probe runs and passes, ``failing`` fail.

    The planted cell held a training id before the probe planted its value, so the probe's 0 is
    the vocabulary's doing, not a value that was already unseen. Returns each check's message.
    """
    spec = load_registry().dataset(dataset)
    results = run_dataset_checks(spec, options)
    status = {r.check: r.status for r in results}
    assert status["check_dataset_unseen_value_is_oov"] == "passed"
    assert {c for c, v in status.items() if v == "failed"} == set(failing)
    assert "skipped" not in status.values()
    with tempfile.TemporaryDirectory() as workdir:
        planted = spec.tags["oov_probe"](Path(workdir), dict(options))
    data = spec.load(dict(options))
    j = [f.name for f in data.schema.categorical].index(planted.field)
    assert int(getattr(data, planted.split).categorical[planted.row, j]) != 0
    return {r.check: r.message for r in results}


def fit_every_model(data: LoadedDataset, steps: int = 2, batch: int = 32) -> list[str]:
    """Build every registered model on the schema and take a few training steps on it.

    Returns the names of the models run; raises if one fails or gives a non-finite loss. A
    model that supports only the ESMM head (``tags["heads"]``) is left out of a dataset with no
    click -> conversion relation, as ``mssbench run`` refuses it there.
    """
    registry = load_registry()
    ran = []
    for name, registered in sorted(registry.models.items()):
        spec = registered.spec
        if "direct" not in spec.tags.get("heads", HEADS) and not data.schema.relations:
            continue
        torch.manual_seed(0)
        model = spec.build(data.schema, **{**spec.defaults, **spec.check_params})
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        weights = task_weights(model, data.schema.n_tasks, torch.device("cpu"))
        model.train()
        for step in range(steps):
            rows = torch.arange(step * batch, (step + 1) * batch) % len(data.train)
            b = data.train.batch(rows)
            out = model(b)
            assert out.logits.shape == (len(rows), data.schema.n_tasks), name
            loss = training_loss(out.logits, out.aux_loss, b.labels, weights)
            assert torch.isfinite(loss), name
            opt.zero_grad()
            loss.backward()
            opt.step()
        ran.append(name)
    return ran


def cli_run(tmp_path, dataset: str, *options: str) -> dict:
    """``mssbench run`` of a small MMoE for one epoch; the finished run record."""
    out = tmp_path / "runs"
    args = ["run", "-m", "mmoe", "-d", dataset, *options, "--epochs", "1", "--batch-size", "64",
            "-p", "embed_dim=4", "-p", "n_experts=2", "-p", "expert_hidden=8",
            "-p", "tower_hidden=4", "--out", str(out)]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    [record] = [json.loads(p.read_text()) for p in out.rglob("*.json") if p.name != "index.json"]
    return record


def positive_rates(data: LoadedDataset) -> dict[str, dict[str, float]]:
    """Per split and task, the share of positive labels (for the dataset cards)."""
    return {
        s: {
            t.name: float(np.round(getattr(data, s).labels[:, i].mean().item(), 4))
            for i, t in enumerate(data.schema.tasks)
        }
        for s in SPLIT_NAMES
        if len(getattr(data, s))
    }
