"""STEM: task-specific and shared embeddings; all forward, task-specific backward."""

import pytest
import torch
import torch.nn.functional as F
from mssbench_stem import DEFAULTS, mssbench_register_models
from mssbench_stem.model import STEM

from mssbench.testing import make_schema
from mssbench.testing.synthetic import make_split

SCHEMA = make_schema()  # tasks ctr, ctcvr
SMALL = {
    "embed_dim": 3,
    "n_shared_experts": 2,
    "expert_hidden": [10, 6],
    "gate_hidden": [5],
    "tower_hidden": [4],
}


def build(seed=0, **overrides):
    torch.manual_seed(seed)
    return STEM(SCHEMA, **{**DEFAULTS, **SMALL, **overrides})


def batch(n=48, seed=1):
    return make_split(SCHEMA, n, seed=seed).batch(slice(0, n))


def embedding_slice_grad(model, task):
    """Gradient of the embedding columns that belong to stream ``task``."""
    d = model.embed_dim
    return model.encoder.embedding.weight.grad[:, task * d : (task + 1) * d]


def test_defaults_are_the_official_configuration():
    [spec] = mssbench_register_models()
    assert spec.defaults == {
        "embed_dim": 16,
        "n_layers": 1,
        "n_specific_experts": 1,
        "n_shared_experts": 8,
        "expert_hidden": [512, 512, 512],
        "gate_hidden": [128, 64],
        "tower_hidden": [128, 64],
        "dropout": 0.0,
    }


def test_each_field_has_one_embedding_per_task_and_a_shared_one():
    model, b = build(), batch()
    streams = model.streams(b)
    fields = model.encoder.fields(b)
    assert streams.shape == (48, SCHEMA.n_tasks + 1, model.encoder.n_fields * 3)
    assert torch.equal(streams[:, 1, :3], fields[:, 0, 3:6])  # task 1's slice of field 0
    assert torch.equal(streams[:, 2, 3:6], fields[:, 1, 6:9])  # shared slice of field 1


def test_a_task_loss_never_trains_another_tasks_embeddings_or_experts():
    model, b = build().train(), batch()
    logits = model(b).logits
    F.binary_cross_entropy_with_logits(logits[:, 0], b.labels[:, 0]).backward()
    layer = model.layers[0]
    other = [lin.weight.grad[1] for lin in layer.specific.linears]  # task 1's expert
    assert all(g.abs().sum() == 0 for g in other)
    assert embedding_slice_grad(model, 1).abs().sum() == 0
    assert embedding_slice_grad(model, 0).abs().sum() > 0  # own embeddings
    assert embedding_slice_grad(model, 2).abs().sum() > 0  # shared embeddings
    assert layer.shared.linears[0].weight.grad.abs().sum() > 0


def test_a_task_reads_the_other_tasks_experts_forward():
    model, b = build().eval(), batch()
    with torch.no_grad():
        before = model(b).logits
        layer = model.layers[0]
        for lin in layer.specific.linears:
            lin.weight[1] += torch.randn_like(lin.weight[1])  # task 1's expert only
        after = model(b).logits
    assert not torch.allclose(before[:, 0], after[:, 0])


def test_gates_mix_every_expert_with_weights_summing_to_one():
    model, b = build().eval(), batch()
    layer = model.layers[0]
    x = model.streams(b)
    tasks, shared = x[:, : model.T], x[:, model.T]
    with torch.no_grad():
        g = torch.softmax(layer.task_gates(tasks + shared.unsqueeze(1)), -1)
    assert g.shape == (48, model.T, model.T * 1 + 2)
    assert torch.allclose(g.sum(-1), torch.ones(48, model.T))


def test_two_layers_pass_a_shared_stream_and_the_last_has_no_shared_gate():
    model, b = build(n_layers=2).train(), batch()
    assert model.layers[0].shared_gate is not None
    assert model.layers[1].shared_gate is None
    out = model(b)
    F.binary_cross_entropy_with_logits(out.logits, b.labels).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"n_layers": 0}, "n_layers"),
        ({"n_specific_experts": 0}, "n_specific_experts"),
        ({"expert_hidden": []}, "expert_hidden"),
    ],
)
def test_bad_hyper_parameters_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        build(**overrides)
