"""DEPHN-style model plugin (our reconstruction; see README.md)."""

from mssbench import Choice, FloatRange, ModelSpec, Widths, hookimpl
from mssbench.lazy import lazy
from mssbench.spec import (
    DROPOUT,
    NON_NEGATIVE,
    OPTIONAL_WIDTHS,
    POSITIVE,
    WIDTHS,
    Constraint,
)

DEFAULTS = {
    "embed_dim": 16,
    "expert_dim": 128,
    "expert_types": ["dnn", "fm", "cross", "attention"],
    "n_expert_copies": 1,
    "dnn_hidden": [256, 128],
    "n_cross_layers": 2,
    "n_attention_layers": 2,
    "n_heads": 2,
    "tower_hidden": [64],
    "dropout": 0.2,
    "vg_beta": 1.0,
    "rho_ema": 0.99,
}

#: Allowed values, checked before ``build`` (:class:`mssbench.Constraint`).
CONSTRAINTS = {
    "embed_dim": POSITIVE,
    "expert_dim": POSITIVE,
    "expert_types": Constraint(non_empty=True),
    "n_expert_copies": POSITIVE,
    "dnn_hidden": WIDTHS,
    "n_cross_layers": NON_NEGATIVE,
    "n_attention_layers": NON_NEGATIVE,
    "n_heads": POSITIVE,
    "tower_hidden": OPTIONAL_WIDTHS,
    "dropout": DROPOUT,
    "vg_beta": NON_NEGATIVE,
    "rho_ema": Constraint(low=0, high=1, high_open=True),
}


#: What ``mssbench tune`` searches besides the learning rate and weight decay.
SEARCH_SPACE = {
    "embed_dim": Choice((8, 16)),
    "expert_dim": Choice((64, 128)),
    "dnn_hidden": Widths(layers=(1, 2), widths=(128, 256)),
    "tower_hidden": Widths(layers=(1, 2), widths=(32, 64)),
    "dropout": FloatRange(0.0, 0.5),
}


@hookimpl
def mssbench_register_models():
    """Register ``dephn``."""
    return [
        ModelSpec(
            name="dephn",
            summary="DEPHN-style (our reconstruction): heterogeneous DNN/FM/cross/attention "
            "experts, per-(scenario, task) gates with a virtual gradient coefficient",
            build=lazy("mssbench_dephn.model:DEPHN"),
            version=2,
            defaults=DEFAULTS,
            search_space=SEARCH_SPACE,
            constraints=CONSTRAINTS,
            paper="Kong, Su, Zhao, Hou, DEPHN: Different Expression Parallel Heterogeneous "
            "Network using virtual gradient optimization for Multi-task Learning, IJCNN 2023, "
            "https://arxiv.org/abs/2307.12519",
            check_params={
                "embed_dim": 4,
                "expert_dim": 8,
                "dnn_hidden": [16],
                "tower_hidden": [8],
            },
            tags={
                "scenario_handling": "scenario id as an input field; gates per (scenario, task); "
                "towers per task",
                "reads_labels": "training only, for the running task-correlation estimate of the "
                "virtual gradient coefficient; never changes the forward output",
                "reconstruction": "DEPHN-style: only the abstract is known; every component is "
                "our adaptation",
            },
        )
    ]
