"""Loss balancers: fixed weights, uncertainty weighting, GradNorm and PCGrad."""

from mssbench import hookimpl
from mssbench.balancing import BalancerSpec
from mssbench.lazy import lazy

_PER_TASK = (
    "it needs each task's gradient on this process before the all-reduce, which "
    "DistributedDataParallel does not give; train it in one process"
)


@hookimpl
def mssbench_register_balancers():
    """Register ``fixed``, ``uncertainty``, ``gradnorm`` and ``pcgrad``."""
    return [
        BalancerSpec(
            name="fixed",
            summary="Fixed task weights: the weighted sum of the task losses (the default)",
            factory=lazy("mssbench.balancing:WeightedSum"),
            paper="-",
        ),
        BalancerSpec(
            name="uncertainty",
            summary="Uncertainty weighting: learned per-task log-variances s_t, "
            "loss sum_t exp(-s_t) L_t + s_t / 2",
            factory=lazy("mssbench_balancers.methods:Uncertainty"),
            params={"init_log_var": 0.0},
            paper="Kendall, Gal and Cipolla, 'Multi-Task Learning Using Uncertainty to Weigh "
            "Losses for Scene Geometry and Semantics', CVPR 2018, arXiv:1705.07115",
        ),
        BalancerSpec(
            name="gradnorm",
            summary="GradNorm: learned task weights that equalise the tasks' gradient norms "
            "on the shared parameters, scaled by their relative training rates",
            factory=lazy("mssbench_balancers.methods:GradNorm"),
            params={"alpha": 1.5},
            paper="Chen, Badrinarayanan, Lee and Rabinovich, 'GradNorm: Gradient Normalization "
            "for Adaptive Loss Balancing in Deep Multitask Networks', ICML 2018, "
            "arXiv:1711.02257",
            ddp_ok=False,
            ddp_reason=_PER_TASK,
        ),
        BalancerSpec(
            name="pcgrad",
            summary="PCGrad: each task's gradient on the shared parameters loses its component "
            "along any other task's gradient it conflicts with",
            factory=lazy("mssbench_balancers.methods:PCGrad"),
            paper="Yu, Kumar, Gupta, Levine, Hausman and Finn, 'Gradient Surgery for Multi-Task "
            "Learning', NeurIPS 2020, arXiv:2001.06782",
            ddp_ok=False,
            ddp_reason=_PER_TASK,
        ),
    ]
