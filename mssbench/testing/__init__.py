"""Test helpers for plugin authors: the conformance suite and small synthetic data."""

from mssbench.testing.balancer_checks import (
    ALL_BALANCER_CHECKS,
    check_balancer,
    run_balancer_checks,
)
from mssbench.testing.checks import (
    ALL_CHECKS,
    CheckResult,
    SkipCheck,
    check_model,
    default_schema,
    parametrize_with_checks,
    run_checks,
)
from mssbench.testing.dataset_checks import (
    ALL_DATASET_CHECKS,
    OovProbe,
    check_dataset,
    run_dataset_checks,
)
from mssbench.testing.metric_checks import ALL_METRIC_CHECKS, check_metric, run_metric_checks
from mssbench.testing.synthetic import make_dataset, make_schema, make_split

__all__ = [
    "ALL_BALANCER_CHECKS",
    "ALL_CHECKS",
    "ALL_DATASET_CHECKS",
    "ALL_METRIC_CHECKS",
    "CheckResult",
    "OovProbe",
    "SkipCheck",
    "check_balancer",
    "check_dataset",
    "check_metric",
    "check_model",
    "default_schema",
    "make_dataset",
    "make_schema",
    "make_split",
    "parametrize_with_checks",
    "run_balancer_checks",
    "run_checks",
    "run_dataset_checks",
    "run_metric_checks",
]
