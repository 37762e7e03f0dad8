"""--bias-init base_rate: every task's mean prediction starts at its training base rate."""

import pytest
import torch
from conftest import SMALL_MMOE

from mssbench.api import run
from mssbench.config import RunConfig
from mssbench.errors import ConfigError, TrainingError
from mssbench.nn import ESMMHead
from mssbench.runners.output_bias import base_rates, init_output_biases
from mssbench.spec import ModelOutput
from mssbench.testing import make_schema, make_split

SCHEMA = make_schema()
TRAIN = make_split(SCHEMA, 3000, seed=1, base_rate=-2.0)


def mean_prediction(model, split):
    """The mean training-mode prediction: what the loss of the first step sees."""
    model.train()
    with torch.no_grad():
        return torch.sigmoid(model(split.batch(slice(None)))[0]).mean(0)


def built(registry, name):
    spec = registry.model(name)
    torch.manual_seed(0)
    return spec.build(SCHEMA, **spec.defaults)


@pytest.mark.parametrize("name", ["aesm", "mmoe", "esmm", "hmoe", "star", "ple"])
def test_mean_prediction_starts_at_the_base_rate(registry, name):
    model = built(registry, name)
    init_output_biases(model, TRAIN, SCHEMA, model_name=name, esmm=False)
    rates = TRAIN.labels.mean(0)
    assert torch.allclose(mean_prediction(model, TRAIN), rates, atol=0.01)


@pytest.mark.parametrize("name", ["aesm", "esmm"])
def test_esmm_head_starts_ctr_at_the_click_rate_and_cvr_at_the_rate_among_clicks(registry, name):
    backbone = built(registry, name)
    init_output_biases(backbone, TRAIN, SCHEMA, model_name=name, esmm=True)
    clicks, buys = TRAIN.labels[:, 0], TRAIN.labels[:, 1]
    cvr = buys[clicks == 1].mean()
    backbone_mean = mean_prediction(backbone, TRAIN)
    assert backbone_mean[0] == pytest.approx(float(clicks.mean()), abs=0.01)
    assert backbone_mean[1] == pytest.approx(float(cvr), abs=0.01)
    wrapped = mean_prediction(ESMMHead(backbone, SCHEMA), TRAIN)
    assert wrapped[1] == pytest.approx(float(buys.mean()), abs=0.02)


@pytest.mark.parametrize("name", ["mmoe", "aesm"])
def test_skipping_the_init_leaves_the_mean_away_from_the_base_rate(registry, name):
    model = built(registry, name)
    rates = TRAIN.labels.mean(0)
    assert (mean_prediction(model, TRAIN) - rates).abs().max() > 0.05


def test_base_rates_are_clipped_and_conditional_under_esmm():
    labels = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    assert base_rates(labels, SCHEMA, esmm=False) == [0.5, 0.25]
    assert base_rates(labels, SCHEMA, esmm=True) == [0.5, 0.5]
    assert base_rates(torch.zeros(4, 2), SCHEMA, esmm=False)[0] == pytest.approx(1e-6)


class Temperature(torch.nn.Module):
    """Logits that a bias cannot move one-for-one or monotonically (no bias at all)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(SCHEMA.n_numeric, SCHEMA.n_tasks, bias=False)

    def forward(self, batch):
        logits = self.w(batch.numeric)
        return ModelOutput(logits, logits.sum() * 0)


def test_a_model_without_output_bias_is_a_one_line_error():
    with pytest.raises(TrainingError, match="no output bias found.*--bias-init none"):
        init_output_biases(Temperature(), TRAIN, SCHEMA, model_name="temp", esmm=False)


class Declared(Temperature):
    def __init__(self):
        super().__init__()
        self.offset = torch.nn.Parameter(torch.zeros(SCHEMA.n_tasks))

    def forward(self, batch):
        logits = self.w(batch.numeric) + self.offset
        return ModelOutput(logits, logits.sum() * 0)

    def output_biases(self):
        return [(self.offset, t) for t in range(SCHEMA.n_tasks)]


def test_a_declared_output_bias_is_used():
    model = Declared()
    init_output_biases(model, TRAIN, SCHEMA, model_name="declared", esmm=False)
    assert model.offset.abs().min() > 0.5
    assert torch.allclose(mean_prediction(model, TRAIN), TRAIN.labels.mean(0), atol=0.01)


def run_config(runs_dir, **kw):
    base = dict(
        model="mmoe",
        dataset="tiny-synth",
        params=dict(SMALL_MMOE),
        epochs=1,
        batch_size=256,
        max_steps_per_epoch=1,
        out=str(runs_dir),
        progress=False,
    )
    return RunConfig(**{**base, **kw})


def test_the_run_records_the_choice_and_it_enters_the_hash(registry, runs_dir):
    rec = run(run_config(runs_dir), registry=registry, log=lambda m: None).record
    assert rec["config"]["bias_init"] == "base_rate"
    none = run_config(runs_dir, bias_init="none")
    assert run_config(runs_dir).result_hash() != none.result_hash()
    with pytest.raises(ConfigError, match="--bias-init must be one of base_rate, none"):
        run_config(runs_dir, bias_init="zero").validate()


def entropy(p):
    return float(-(p * torch.log(p) + (1 - p) * torch.log(1 - p)))


def test_a_run_starts_from_the_base_rate_entropy_and_fails_without_the_init(registry, runs_dir):
    def first_step_loss(bias_init):
        # Without dropout the first step's loss is the cross-entropy of the initial predictions
        # alone (a mask adds spread to the logits, so the loss sits above the entropy).
        cfg = run_config(runs_dir, bias_init=bias_init, batch_size=1024, seed=3)
        cfg.params["dropout"] = 0.0
        return run(cfg, registry=registry, log=lambda m: None).record["training"]["history"][0]

    spec = registry.dataset("tiny-synth")
    data = spec.load(dict(spec.options))
    floor = sum(entropy(p) for p in data.train.labels.mean(0))
    calibrated, raw = first_step_loss("base_rate"), first_step_loss("none")
    assert calibrated["train_loss"] == pytest.approx(floor, abs=0.02)
    assert raw["train_loss"] > floor + 0.05
