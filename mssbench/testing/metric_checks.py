"""Conformance checks for metric plugins (:class:`~mssbench.spec.MetricSpec`).

Each check is a function ``check_metric_<property>(spec)`` that raises ``AssertionError`` with
a message when the metric breaks the contract of :class:`~mssbench.spec.MetricSpec`::

    from mssbench.testing import check_metric
    from my_plugin import MY_METRIC

    def test_conformance():
        check_metric(MY_METRIC)
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from mssbench.spec import MetricSpec
from mssbench.testing.checks import CheckResult, collect_results, raise_on_failures

MetricCheck = Callable[[MetricSpec], None]

__all__ = ["ALL_METRIC_CHECKS", "check_metric", "run_metric_checks"]


def _cell(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` float64 logits and int64 labels holding both classes, scores tied in places."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=g) < 0.3).long()
    labels[0], labels[-1] = 1, 0
    logits = torch.randn(n, generator=g, dtype=torch.float64) + 1.2 * labels
    logits[: n // 4] = torch.round(logits[: n // 4] * 2) / 2  # ties
    return logits, labels


def _value(
    spec: MetricSpec,
    logits: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor | None = None,
) -> float:
    """The metric on one cell (a grouped metric: ``groups``, default 5 consecutive rows each)."""
    from mssbench.metrics.core import call_metric

    try:
        return call_metric(spec, logits, labels, groups)[0]
    except ValueError as exc:
        raise AssertionError(f"compute {exc}") from None


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def check_metric_spec_well_formed(spec: MetricSpec) -> None:
    """The spec validates (name, summary, callables, flags, version)."""
    spec.validate()


def check_metric_defined_on_two_classes(spec: MetricSpec) -> None:
    """A cell with both classes gets a finite number, from 2 rows to 5,000."""
    for n in (2, 7, 100, 5000):
        value = _value(spec, *_cell(n, seed=n))
        assert math.isfinite(value), f"a {n}-row cell with both classes gave {value}"


def check_metric_row_order_invariant(spec: MetricSpec) -> None:
    """Shuffling the rows of a cell does not change the value."""
    logits, labels = _cell(500, seed=1)
    groups = torch.arange(len(labels)) // 5
    base = _value(spec, logits, labels, groups)
    for seed in range(3):
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
        value = _value(spec, logits[perm], labels[perm], groups[perm])
        assert _same(base, value), f"row order changed the value: {base!r} -> {value!r}"


def check_metric_inputs_unchanged(spec: MetricSpec) -> None:
    """``compute`` does not modify the tensors it is given."""
    logits, labels = _cell(200, seed=2)
    x, y = logits.clone(), labels.clone()
    g = torch.arange(len(y)) // 5
    spec.compute(x, y, g) if spec.grouped else spec.compute(x, y)
    assert torch.equal(x, logits) and torch.equal(y, labels), "compute modified its inputs"


def check_metric_deterministic(spec: MetricSpec) -> None:
    """The same cell twice gives the same value."""
    logits, labels = _cell(300, seed=3)
    a, b = _value(spec, logits, labels), _value(spec, logits, labels)
    assert _same(a, b), f"two calls on one cell gave {a!r} and {b!r}"


def check_metric_direction(spec: MetricSpec) -> None:
    """A perfect ranking scores better than its reverse, in the declared direction."""
    labels = torch.tensor([1, 0, 1, 0, 0, 1, 0, 0, 0, 1], dtype=torch.int64)
    good = torch.where(labels == 1, 3.0, -3.0).to(torch.float64)
    good = good + torch.linspace(-0.1, 0.1, len(labels), dtype=torch.float64)
    right, wrong = _value(spec, good, labels), _value(spec, -good, labels)
    better = right > wrong if spec.higher_is_better else right < wrong
    word = "higher" if spec.higher_is_better else "lower"
    assert better, (
        f"higher_is_better={spec.higher_is_better}, but a perfect ranking gave {right!r} and "
        f"its reverse {wrong!r} (expected the perfect one {word})"
    )


def check_metric_edge_cells(spec: MetricSpec) -> None:
    """All-tied and saturated scores give a number (NaN allowed), never an exception.

    With ``needs_both_classes=False`` the metric also meets single-class cells.
    """
    logits, labels = _cell(50, seed=4)
    cells = [
        ("all scores tied", torch.zeros_like(logits), labels),
        ("scores of +-60", torch.where(labels == 1, -60.0, 60.0).to(torch.float64), labels),
        ("one row of each class", logits[[0, -1]], labels[[0, -1]]),
    ]
    if not spec.needs_both_classes:
        cells += [
            ("only negatives", logits, torch.zeros_like(labels)),
            ("only positives", logits, torch.ones_like(labels)),
            ("one row", logits[:1], labels[:1]),
        ]
    for what, x, y in cells:
        try:
            _value(spec, x, y)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - the check's finding
            raise AssertionError(f"{what}: raised {type(exc).__name__}: {exc}") from None


ALL_METRIC_CHECKS: tuple[MetricCheck, ...] = (
    check_metric_spec_well_formed,
    check_metric_defined_on_two_classes,
    check_metric_row_order_invariant,
    check_metric_inputs_unchanged,
    check_metric_deterministic,
    check_metric_direction,
    check_metric_edge_cells,
)


def run_metric_checks(
    spec: MetricSpec, checks: Iterable[MetricCheck] = ALL_METRIC_CHECKS
) -> list[CheckResult]:
    """Run the metric checks and collect results (``passed`` or ``failed``) without raising."""
    return collect_results(checks, lambda check: check(spec), {})


def check_metric(spec: MetricSpec) -> list[CheckResult]:
    """Run every metric check; raise ``AssertionError`` listing the failures.

    Returns:
        The results of every check (when none failed).
    """
    return raise_on_failures("metric", spec.name, run_metric_checks(spec))
