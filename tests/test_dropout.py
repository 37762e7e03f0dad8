"""Counter-based dropout (mssbench.nn.dropout): masks from (seed, step, index) alone."""

import copy
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mssbench.nn import MLP, Dropout, GroupedMLP, counter_dropout, keep_mask, relu_dropout

M64 = (1 << 64) - 1
GOLDEN, MIX1, MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * MIX1) & M64
    z = ((z ^ (z >> 27)) * MIX2) & M64
    return z ^ (z >> 31)


def reference_mask(n: int, p: float, seed: int, step: int) -> list[bool]:
    """The same hash in unsigned 64-bit Python integers, independent of torch and the CPU."""
    base = _mix((seed & M64) ^ _mix((step * GOLDEN + GOLDEN) & M64))
    threshold = round(p * (1 << 16))
    out = []
    for i in range(n):
        word = _mix((base + (i // 4 + 1) * GOLDEN) & M64)
        out.append(((word >> (48 - 16 * (i % 4))) & 0xFFFF) >= threshold)
    return out


seeds = st.integers(-(2**62), 2**62)
steps = st.integers(0, 2**40)


@settings(max_examples=30, deadline=None)
@given(seed=seeds, step=steps, p=st.floats(0.0, 0.95), n=st.integers(1, 200))
def test_mask_equals_the_unsigned_64_bit_reference(seed, step, p, n):
    assert keep_mask((n,), p, seed, step).tolist() == reference_mask(n, p, seed, step)


@settings(max_examples=30, deadline=None)
@given(seed=seeds, step=steps, p=st.floats(0.05, 0.9))
def test_keep_rate_is_within_binomial_tolerance(seed, step, p):
    n = 20_000
    rate = keep_mask((n,), p, seed, step).double().mean().item()
    assert abs(rate - (1 - p)) < 6 * ((p * (1 - p) / n) ** 0.5) + 1e-6


@settings(max_examples=30, deadline=None)
@given(seed=seeds, step=steps, shape=st.lists(st.integers(1, 9), min_size=1, max_size=3))
def test_same_seed_step_and_shape_give_the_same_mask(seed, step, shape):
    assert torch.equal(keep_mask(shape, 0.3, seed, step), keep_mask(shape, 0.3, seed, step))


@settings(max_examples=30, deadline=None)
@given(seed=seeds, step=steps)
def test_different_steps_and_seeds_give_different_masks(seed, step):
    mask = keep_mask((512,), 0.5, seed, step)
    assert not torch.equal(mask, keep_mask((512,), 0.5, seed, step + 1))
    assert not torch.equal(mask, keep_mask((512,), 0.5, seed + 1, step))


@settings(max_examples=20, deadline=None)
@given(seed=seeds, p=st.floats(0.05, 0.8))
def test_expectation_is_preserved(seed, p):
    x = torch.full((4_000,), 3.0, dtype=torch.float64)
    means = torch.stack([counter_dropout(x, p, seed, s).mean() for s in range(10)])
    # each mean is 3 * keep-rate / (1 - p); 40k Bernoulli draws in all
    assert abs(means.mean().item() - 3.0) < 6 * 3.0 * ((p / (1 - p) / 40_000) ** 0.5)


def test_a_probability_that_rounds_to_one_drops_everything():
    assert not keep_mask((5, 3), 1 - 2**-18, 1, 2).any()
    assert keep_mask((5, 3), 2**-18, 1, 2).all()


def test_kept_elements_are_scaled_and_dropped_ones_are_zero():
    x = torch.randn(64, 32)
    out = counter_dropout(x, 0.25, 7, 3)
    keep = keep_mask(x.shape, 0.25, 7, 3)
    assert torch.equal(out[~keep], torch.zeros_like(out[~keep]))
    torch.testing.assert_close(out[keep], x[keep] / 0.75)


def test_module_is_identity_in_eval_and_advances_its_step_in_training():
    torch.manual_seed(0)
    drop = Dropout(0.5)
    x = torch.ones(8, 16)
    assert torch.equal(drop.eval()(x), x)
    assert drop.step.item() == 0
    drop.train()
    first, second = drop(x), drop(x)
    assert drop.step.item() == 2
    assert not torch.equal(first, second)
    assert torch.equal(first, counter_dropout(x, 0.5, drop.seed, 0))


def test_seed_comes_from_the_default_generator_and_resumes_from_the_state_dict():
    torch.manual_seed(3)
    a = Dropout(0.3).train()
    torch.manual_seed(3)
    b = Dropout(0.3).train()
    assert a.seed.item() == b.seed.item()
    x = torch.ones(4, 4)
    a(x)
    resumed = Dropout(0.3).train()
    resumed.load_state_dict(a.state_dict())
    assert torch.equal(resumed(x), a(x))


def test_zero_probability_draws_nothing_and_returns_the_input():
    torch.manual_seed(1)
    expected = torch.rand(())
    torch.manual_seed(1)
    drop = Dropout(0.0).train()
    assert torch.rand(()) == expected
    x = torch.randn(3, 3)
    assert drop(x) is x


@settings(max_examples=25, deadline=None)
@given(
    p=st.floats(0.0, 0.9),
    rows=st.integers(1, 40),
    cols=st.integers(1, 40),
    steps=st.integers(1, 3),
    data=st.data(),
)
def test_fused_relu_dropout_has_the_bits_of_relu_then_dropout(p, rows, cols, steps, data):
    """Forward, backward and the step counter equal the unfused pair, inf and -0.0 included."""
    values = st.floats(allow_nan=False, width=32) | st.sampled_from([-0.0, 0.0, float("inf")])
    x = torch.tensor(data.draw(st.lists(values, min_size=rows * cols, max_size=rows * cols)))
    x = x.view(rows, cols)
    torch.manual_seed(0)
    fused = Dropout(p).train()
    torch.manual_seed(0)
    plain = Dropout(p).train()
    for _ in range(steps):
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_a, out_b = relu_dropout(a, fused), plain(torch.relu(b))
        assert torch.equal(out_a, out_b)
        grad = torch.randn(rows, cols)
        (ga,) = torch.autograd.grad(out_a, a, grad)
        (gb,) = torch.autograd.grad(out_b, b, grad)
        assert torch.equal(ga, gb)
    assert fused.step.item() == plain.step.item() == (steps if p else 0)


def _layer_by_layer(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``net``'s forward with ``relu`` and the dropout module called one after the other."""
    if isinstance(net, MLP):
        for layer in net:
            x = layer(x)
        return x
    for linear, norm in zip(net.linears, net.norms):
        x = linear(x)
        b, g, h = x.shape
        x = net.dropout(torch.relu(norm(x.reshape(b, g * h)).view(b, g, h)))
    return net.head(x)


@pytest.mark.parametrize("grouped", [False, True])
def test_mlps_run_relu_and_dropout_fused_with_unchanged_results(grouped):
    """MLP and GroupedMLP give the values and gradients of their layers run one by one."""
    torch.manual_seed(4)
    net = GroupedMLP(3, 12, [16, 8], dropout=0.25, out_dim=1) if grouped else MLP(12, [16, 8], 0.25)
    reference = copy.deepcopy(net)
    x = torch.randn(32, 12)
    for _ in range(2):
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_a, out_b = net(a), _layer_by_layer(reference, b)
        assert torch.equal(out_a, out_b)
        (ga,) = torch.autograd.grad(out_a.sum(), a)
        (gb,) = torch.autograd.grad(out_b.sum(), b)
        assert torch.equal(ga, gb)
    for key, value in net.state_dict().items():
        assert torch.equal(value, reference.state_dict()[key]), key


@pytest.mark.parametrize("p", [-0.1, 1.0, float("nan")])
def test_invalid_probability_is_rejected(p):
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        Dropout(p)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_masks_equal_cpu_masks():
    for seed, step in [(0, 0), (12345, 678), (-(2**61), 2**33)]:
        cpu = keep_mask((97, 33), 0.2, seed, step)
        gpu = keep_mask((97, 33), 0.2, torch.tensor(seed, device="cuda"), step)
        assert torch.equal(cpu, gpu.cpu())


def test_no_built_in_model_draws_torch_dropout_masks():
    """Every built-in model and building block uses mssbench.nn.Dropout (one rule, one place)."""
    root = Path(__file__).resolve().parents[1]
    banned = re.compile(
        r"\bnn\.Dropout\(|\bF\.dropout\(|\bnn\.MultiheadAttention\(|\bnn\.Transformer\w*\("
        r"|scaled_dot_product_attention\(|\bdropout=(?!dropout\b)"
    )
    sources = [*root.glob("plugins/mssbench_*/*.py"), *root.glob("mssbench/nn/*.py")]
    assert sources
    for path in sources:
        code = re.sub(r"``[^`]*``", "", path.read_text())  # docstrings may name torch's layers
        for number, line in enumerate(code.splitlines(), 1):
            assert not banned.search(line), f"{path.relative_to(root)}:{number}: {line.strip()}"
