"""Conformance checks for loss balancers (:class:`~mssbench.balancing.BalancerSpec`).

Each check is a function ``check_balancer_<property>(spec)`` that raises ``AssertionError``
with a message when the balancer breaks the contract of :class:`~mssbench.balancing.Balancer`::

    from mssbench.testing import check_balancer
    from my_plugin import MY_BALANCER

    def test_conformance():
        check_balancer(MY_BALANCER)

The checks train a small shared-bottom network (one shared layer, one head per task) on a
learnable toy problem.
"""

from __future__ import annotations

import io
import json
import math
from typing import Callable, Iterable

import torch

from mssbench.balancing import Balancer, BalancerSpec, build_balancer
from mssbench.testing.checks import CheckResult, collect_results, raise_on_failures

BalancerCheck = Callable[[BalancerSpec], None]

__all__ = ["ALL_BALANCER_CHECKS", "check_balancer", "run_balancer_checks"]


class _Toy(torch.nn.Module):
    """A shared layer and one linear head per task; ``extra`` is reached by the aux loss only."""

    def __init__(self, n_tasks: int) -> None:
        super().__init__()
        self.shared = torch.nn.Linear(6, 8)
        self.heads = torch.nn.ModuleList(torch.nn.Linear(8, 1) for _ in range(n_tasks))
        self.extra = torch.nn.Parameter(torch.ones(3))

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.shared(x))
        logits = torch.cat([head(h) for head in self.heads], dim=1)
        return torch.nn.functional.binary_cross_entropy_with_logits(
            logits, y, reduction="none"
        ).mean(0)

    def aux(self) -> torch.Tensor:
        return 0.01 * (self.extra**2).sum()


def _data(n_tasks: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 6, generator=g)
    w = torch.randn(6, n_tasks, generator=g)
    return x, (x @ w > 0).float()


def _setup(spec: BalancerSpec, n_tasks: int = 2, seed: int = 0) -> tuple[_Toy, Balancer]:
    torch.manual_seed(seed)
    model = _Toy(n_tasks)
    return model, build_balancer(spec, n_tasks, torch.ones(n_tasks), {})


def _step(model: _Toy, balancer: Balancer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    for p in [*model.parameters(), *balancer.parameters()]:
        p.grad = None
    return balancer.backward(model.losses(x, y), list(model.parameters()), model.aux())


def check_balancer_spec_well_formed(spec: BalancerSpec) -> None:
    """The spec validates and its parameters survive a JSON round trip."""
    spec.validate()
    assert json.loads(json.dumps(dict(spec.params))) == dict(spec.params), (
        "params change in a JSON round trip"
    )


def check_balancer_builds(spec: BalancerSpec) -> None:
    """The factory gives a Balancer whose task weights are ``[T]`` and finite."""
    _, balancer = _setup(spec, n_tasks=3)
    assert isinstance(balancer, Balancer), f"factory returned {type(balancer).__name__}"
    w = balancer.task_weights()
    assert tuple(w.shape) == (3,), f"task_weights() has shape {list(w.shape)}, expected [3]"
    assert torch.isfinite(w).all(), f"task_weights() not finite: {w.tolist()}"
    for p in balancer.parameters():
        assert isinstance(p, torch.nn.Parameter), "parameters() must be nn.Parameter"


def check_balancer_sets_gradients(spec: BalancerSpec) -> None:
    """Every parameter gets a finite gradient; the returned loss is a detached finite scalar."""
    model, balancer = _setup(spec)
    loss = _step(model, balancer, *_data(2))
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0, "backward must return a scalar"
    assert not loss.requires_grad, "backward must return the loss detached"
    assert math.isfinite(float(loss)), f"backward returned {float(loss)}"
    for name, p in model.named_parameters():
        assert p.grad is not None, f"parameter {name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"parameter {name} has a non-finite gradient"


def check_balancer_adds_aux_loss(spec: BalancerSpec) -> None:
    """A parameter that only the auxiliary loss reaches gets exactly the aux gradient."""
    model, balancer = _setup(spec)
    _step(model, balancer, *_data(2))
    expected = 0.02 * model.extra.detach()
    assert torch.allclose(model.extra.grad, expected), (
        f"aux-only parameter gradient {model.extra.grad.tolist()}, expected {expected.tolist()}"
    )


def check_balancer_single_task(spec: BalancerSpec) -> None:
    """One task works (a single-task dataset)."""
    model, balancer = _setup(spec, n_tasks=1)
    loss = _step(model, balancer, *_data(1))
    assert math.isfinite(float(loss)), "single task: non-finite loss"
    assert model.heads[0].weight.grad is not None, "single task: the head got no gradient"


def check_balancer_deterministic(spec: BalancerSpec) -> None:
    """The same seed gives the same gradients."""
    grads = []
    for _ in range(2):
        model, balancer = _setup(spec, seed=3)
        torch.manual_seed(5)
        _step(model, balancer, *_data(2))
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    assert torch.equal(grads[0], grads[1]), "two runs with one seed give different gradients"


def check_balancer_loss_falls(spec: BalancerSpec) -> None:
    """Adam over the model and the balancer's parameters lowers every task loss."""
    model, balancer = _setup(spec)
    x, y = _data(2)
    opt = torch.optim.Adam([*model.parameters(), *balancer.parameters()], lr=0.02)
    with torch.no_grad():
        before = model.losses(x, y)
    for _ in range(60):
        _step(model, balancer, x, y)
        opt.step()
    with torch.no_grad():
        after = model.losses(x, y)
    assert (after < before).all(), f"task losses {before.tolist()} -> {after.tolist()}"


def check_balancer_state_round_trip(spec: BalancerSpec) -> None:
    """``state_dict`` saves with ``torch.save`` and loads (weights only) into a fresh one."""
    model, balancer = _setup(spec)
    x, y = _data(2)
    opt = torch.optim.Adam([*model.parameters(), *balancer.parameters()], lr=0.05)
    for _ in range(3):
        _step(model, balancer, x, y)
        opt.step()
    buf = io.BytesIO()
    torch.save(balancer.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    _, fresh = _setup(spec)
    fresh.load_state_dict(state)
    assert torch.allclose(fresh.task_weights(), balancer.task_weights()), (
        "task weights differ after a state_dict round trip"
    )


ALL_BALANCER_CHECKS: tuple[BalancerCheck, ...] = (
    check_balancer_spec_well_formed,
    check_balancer_builds,
    check_balancer_sets_gradients,
    check_balancer_adds_aux_loss,
    check_balancer_single_task,
    check_balancer_deterministic,
    check_balancer_loss_falls,
    check_balancer_state_round_trip,
)


def run_balancer_checks(
    spec: BalancerSpec, checks: Iterable[BalancerCheck] = ALL_BALANCER_CHECKS
) -> list[CheckResult]:
    """Run the balancer checks and collect results (``passed`` or ``failed``) without raising."""
    return collect_results(checks, lambda check: check(spec), {})


def check_balancer(spec: BalancerSpec) -> list[CheckResult]:
    """Run every balancer check; raise ``AssertionError`` listing the failures.

    Returns:
        The results of every check (when none failed).
    """
    return raise_on_failures("balancer", spec.name, run_balancer_checks(spec))
