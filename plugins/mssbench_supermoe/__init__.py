"""SUPERMOE-style model plugin (our reconstruction; see README.md)."""

from mssbench import Choice, FloatRange, IntRange, ModelSpec, Widths, hookimpl
from mssbench.lazy import lazy
from mssbench.spec import DROPOUT, NON_NEGATIVE, OPTIONAL_WIDTHS, POSITIVE, WIDTHS

DEFAULTS = {
    "d_model": 64,
    "n_layers": 2,
    "n_heads": 4,
    "n_experts": 8,
    "top_k": 2,
    "expert_hidden": [256],
    "router_noise": 1.0,
    "balance_coef": 0.01,
    "tower_hidden": [64],
    "scenario_towers": False,
    "dropout": 0.1,
}

#: Allowed values, checked before ``build`` (:class:`mssbench.Constraint`).
CONSTRAINTS = {
    "d_model": POSITIVE,
    "n_layers": POSITIVE,
    "n_heads": POSITIVE,
    "n_experts": POSITIVE,
    "top_k": POSITIVE,
    "expert_hidden": WIDTHS,
    "router_noise": NON_NEGATIVE,
    "balance_coef": NON_NEGATIVE,
    "tower_hidden": OPTIONAL_WIDTHS,
    "dropout": DROPOUT,
}


#: What ``mssbench tune`` searches besides the learning rate and weight decay.
SEARCH_SPACE = {
    "d_model": Choice((32, 64)),
    "n_experts": IntRange(4, 8),
    "top_k": IntRange(1, 2),
    "expert_hidden": Widths(layers=(1, 1), widths=(128, 256)),
    "dropout": FloatRange(0.0, 0.3),
    "balance_coef": FloatRange(1e-3, 1e-1, log=True),
}


@hookimpl
def mssbench_register_models():
    """Register ``supermoe``."""
    return [
        ModelSpec(
            name="supermoe",
            summary="SUPERMOE-style (our reconstruction): field-token transformer with noisy "
            "top-k MoE FFNs, scenario token and task-indicator tokens",
            build=lazy("mssbench_supermoe.model:SUPERMoE"),
            defaults=DEFAULTS,
            search_space=SEARCH_SPACE,
            constraints=CONSTRAINTS,
            paper="Jiang, Xue, Zhang, Liu, Zhu, Hao, Learning Large-scale Universal User "
            "Representation with Sparse Mixture of Experts, ICML 2022 Pre-training Workshop, "
            "https://arxiv.org/abs/2207.04648",
            # 2: grouped expert dispatch on GPUs (every expert on every token, mixed by the
            # routing weights): the same function, float summation order changed.
            version=3,
            check_params={
                "d_model": 16,
                "n_heads": 2,
                "n_experts": 4,
                "expert_hidden": [32],
                "tower_hidden": [8],
            },
            tags={
                "scenario_handling": "learned scenario token attended to by every field and "
                "task token; towers per task (scenario_towers: per (scenario, task))",
                "reconstruction": "SUPERMOE-style: only the abstract is known; every component "
                "is our adaptation",
            },
        )
    ]
