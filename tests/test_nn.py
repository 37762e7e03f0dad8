import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mssbench.nn import ESMMHead, GroupedLinear, GroupedMLP, esmm_logit, gather_scenario
from mssbench.spec import Batch, ModelOutput
from mssbench.testing import make_schema, make_split

finite = st.floats(-1e3, 1e3, allow_nan=False)


@given(st.lists(st.tuples(finite, finite), min_size=1, max_size=50))
def test_esmm_ctcvr_never_exceeds_ctr_and_is_finite(pairs):
    a = torch.tensor([p[0] for p in pairs], dtype=torch.float64)
    b = torch.tensor([p[1] for p in pairs], dtype=torch.float64)
    z = esmm_logit(a, b)
    assert torch.isfinite(z).all()
    assert (torch.sigmoid(z) <= torch.sigmoid(a) + 1e-12).all()


def test_esmm_loss_finite_at_extreme_logits():
    a = torch.tensor([-500.0, 500.0, 80.0, -80.0], requires_grad=True)
    b = torch.tensor([500.0, -500.0, 80.0, 80.0], requires_grad=True)
    y = torch.tensor([1.0, 0.0, 1.0, 0.0])
    loss = torch.nn.functional.binary_cross_entropy_with_logits(esmm_logit(a, b), y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_esmm_matches_probability_product_in_normal_range():
    a, b = torch.randn(100, dtype=torch.float64), torch.randn(100, dtype=torch.float64)
    expected = torch.sigmoid(a) * torch.sigmoid(b)
    assert torch.allclose(torch.sigmoid(esmm_logit(a, b)), expected, atol=1e-12)


def test_esmm_head_replaces_only_the_child_column():
    schema = make_schema()

    class Fixed(torch.nn.Module):
        def forward(self, batch):
            n = batch.scenario.shape[0]
            return ModelOutput(torch.tensor([[0.3, -0.7]]).expand(n, 2), torch.zeros(()))

    out = ESMMHead(Fixed(), schema)(make_split(schema, 4).batch(slice(0, 4)))
    assert torch.allclose(out.logits[:, 0], torch.tensor(0.3))
    assert torch.allclose(out.logits[:, 1], esmm_logit(torch.tensor(0.3), torch.tensor(-0.7)))


def test_gather_scenario_picks_own_slice_without_reordering():
    values = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4).expand(5, 2, 3, 4)
    values = values + torch.arange(5).view(5, 1, 1, 1) * 100
    scenario = torch.tensor([1, 0, 1, 1, 0])
    out = gather_scenario(values, scenario)
    for b in range(5):
        assert torch.equal(out[b], values[b, scenario[b]])


def test_grouped_linear_equals_independent_linears():
    g = GroupedLinear(3, 5, 4)
    x = torch.randn(7, 5)
    y = g(x)
    for i in range(3):
        assert torch.allclose(y[:, i], x @ g.weight[i] + g.bias[i], atol=1e-6)
    xs = torch.randn(7, 3, 5)
    ys = g(xs)
    for i in range(3):
        assert torch.allclose(ys[:, i], xs[:, i] @ g.weight[i] + g.bias[i], atol=1e-6)
    assert not torch.allclose(g.weight[0], g.weight[1])  # initialised independently


def test_grouped_mlp_groups_are_independent():
    torch.manual_seed(0)
    m = GroupedMLP(4, 6, [8, 5], dropout=0.0, out_dim=1).eval()
    x = torch.randn(9, 4, 6)
    base = m(x)
    with torch.no_grad():
        m.linears[0].weight[2].add_(1.0)
    changed = m(x)
    assert torch.equal(base[:, [0, 1, 3]], changed[:, [0, 1, 3]])
    assert not torch.equal(base[:, 2], changed[:, 2])


def test_batch_to_and_split_subset():
    schema = make_schema()
    split = make_split(schema, 10)
    sub = split.subset(torch.tensor([1, 3]))
    assert len(sub) == 2 and torch.equal(sub.labels, split.labels[[1, 3]])
    b = split.batch(slice(0, 3)).to("cpu")
    assert isinstance(b, Batch) and b.categorical.dtype == torch.int64


def test_a_model_setting_its_own_task_weights_attribute_is_told_to_declare_them():
    from mssbench.errors import ConfigError
    from mssbench.runners.trainer import task_weights

    model = torch.nn.Linear(2, 2)
    model.task_weights = [0.1, 1.0]
    with pytest.raises(ConfigError, match="declare the weights as ModelSpec.task_weights"):
        task_weights(model, 2, torch.device("cpu"))
    del model.task_weights
    model.mssbench_task_weights = (0.1, 1.0)
    assert task_weights(model, 2, torch.device("cpu")).tolist() == pytest.approx([0.1, 1.0])
