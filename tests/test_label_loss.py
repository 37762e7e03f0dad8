"""A model loss that needs the labels: ``aux_loss`` as a function of them (ModelOutput)."""

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from mssbench import ModelOutput, ModelSpec, hookimpl
from mssbench.cli import main
from mssbench.nn import ESMMHead, FeatureEncoder
from mssbench.runners.trainer import training_loss
from mssbench.spec import SpecError, resolve_aux_loss
from mssbench.testing import check_model, make_schema
from mssbench.testing.synthetic import make_split

SCHEMA = make_schema()


class LabelLossModel(torch.nn.Module):
    """Logistic regression whose extra loss is ``weight * mean(labels[:, 0] * logits[:, 0]^2)``."""

    def __init__(self, schema, weight):
        super().__init__()
        self.encoder = FeatureEncoder(schema, 4, scenario_as_feature=True)
        self.head = torch.nn.Linear(self.encoder.out_dim, schema.n_tasks)
        self.weight = weight
        self.calls = []

    def forward(self, batch):
        logits = self.head(self.encoder(batch))

        def aux_loss(labels):
            self.calls.append(labels)
            return self.weight * (labels[:, 0] * logits[:, 0] ** 2).mean()

        return ModelOutput(logits, aux_loss)


SPEC = ModelSpec(
    name="label_loss_model",
    summary="logistic regression with a label-dependent extra loss",
    build=LabelLossModel,
    defaults={"weight": 0.5},
)


class VectorLabelLossModel(LabelLossModel):
    """Breaks the contract: its label loss is a vector."""

    def forward(self, batch):
        logits = self.head(self.encoder(batch))
        return ModelOutput(logits, lambda labels: labels[:, 0])


@hookimpl
def mssbench_register_models():
    bad = ModelSpec(
        name="vector_label_loss_model",
        summary="label loss of the wrong shape",
        build=VectorLabelLossModel,
        defaults={"weight": 0.5},
    )
    return [SPEC, bad]


def batch(n=16):
    return make_split(SCHEMA, n, seed=3).batch(slice(0, n))


def test_resolve_passes_a_tensor_through_and_calls_a_function_with_the_labels():
    labels = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    zero = torch.zeros(())
    assert resolve_aux_loss(zero, labels) is zero
    assert resolve_aux_loss(lambda y: y.sum(), labels).item() == 1.0


@pytest.mark.parametrize("aux", [torch.zeros(2), lambda y: y, lambda y: 1.0])
def test_resolve_rejects_anything_but_a_scalar_tensor(aux):
    with pytest.raises(SpecError, match="must be a scalar tensor"):
        resolve_aux_loss(aux, torch.zeros(2, 2))


def test_training_loss_adds_the_label_loss_of_the_batch_labels():
    torch.manual_seed(0)
    model, b = LabelLossModel(SCHEMA, 0.5), batch()
    out = model(b)
    weights = torch.ones(SCHEMA.n_tasks)
    loss = training_loss(out.logits, out.aux_loss, b.labels, weights)
    bce = sum(
        F.binary_cross_entropy_with_logits(out.logits[:, t], b.labels[:, t]) for t in range(2)
    )
    expected = bce + 0.5 * (b.labels[:, 0] * out.logits[:, 0] ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert len(model.calls) == 1 and torch.equal(model.calls[0], b.labels)


def test_label_loss_changes_the_gradient():
    torch.manual_seed(0)
    model, b = LabelLossModel(SCHEMA, 10.0), batch()
    out = model(b)
    weights = torch.ones(SCHEMA.n_tasks)
    training_loss(out.logits, out.aux_loss, b.labels, weights).backward()
    with_label_loss = model.head.weight.grad.clone()
    model.zero_grad()
    out = model(b)
    training_loss(out.logits, torch.zeros(()), b.labels, weights).backward()
    assert not torch.allclose(with_label_loss, model.head.weight.grad)


def test_esmm_head_passes_the_label_loss_through():
    torch.manual_seed(0)
    model = ESMMHead(LabelLossModel(SCHEMA, 0.5), SCHEMA)
    out = model(batch())
    assert callable(out.aux_loss)


def test_conformance_suite_accepts_a_label_loss():
    check_model(SPEC)


def run_args(model, out):
    args = ["run", "--plugin", "mssbench.testing.plugin", "--plugin", __name__]
    args += ["-m", model, "-d", "tiny-synth", "-D", "n_train=400", "--epochs", "1"]
    return [*args, "--batch-size", "128", "--no-progress", "--out", str(out)]


def test_a_run_trains_with_the_label_loss(tmp_path):
    res = CliRunner().invoke(main, run_args("label_loss_model", tmp_path), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    [record] = tmp_path.glob("*.json")
    assert json.loads(record.read_text())["status"] == "finished"


def test_a_label_loss_that_is_not_a_scalar_stops_the_run_with_one_line(tmp_path):
    res = CliRunner().invoke(main, run_args("vector_label_loss_model", tmp_path))
    assert res.exit_code != 0
    assert "aux_loss(labels) must be a scalar tensor, got [128]" in res.output
    assert "Traceback" not in res.output
