"""AESM² model plugin (``aesm``)."""

from mssbench import Choice, Constraint, FloatRange, ModelSpec, Widths, hookimpl
from mssbench.lazy import lazy
from mssbench.spec import DROPOUT, NON_NEGATIVE, OPTIONAL_WIDTHS, POSITIVE, WIDTHS
from mssbench_aesm.task_weights import aesm_task_weights

#: The official AliExpress configuration (ant-research/aes_msl_mtl) where published; embedding,
#: indicator and tower sizes are our choices (§2.6 "not published").
DEFAULTS = {
    "embed_dim": 16,
    "scenario_embed_dim": 8,
    "task_embed_dim": 8,
    "scenario_tree": [],
    "scenario_layers": 2,
    "scenario_experts": 10,
    "scenario_topk_specific": 2,
    "scenario_topk_shared": 2,
    "scenario_expert_hidden": [64],
    "scenario_noise_scale": 0.1,
    "task_layers": 2,
    "task_experts": 3,
    "task_topk_specific": 1,
    "task_topk_shared": 1,
    "task_expert_hidden": [32],
    "task_noise_scale": 0.1,
    "share_task_layer_params": True,
    "expert_activation": "relu",
    "dropout": 0.1,
    "gate_norm": "bn",
    "bn_momentum": 0.001,
    "tower_hidden": [32],
    "lambda_sp": 1e-3,
    "lambda_sh": 1e-4,
    "task_weights": [],
    "mask": "additive",
}

#: Allowed values, checked before ``build`` (:class:`mssbench.Constraint`).
CONSTRAINTS = {
    "embed_dim": POSITIVE,
    "scenario_embed_dim": POSITIVE,
    "task_embed_dim": POSITIVE,
    "scenario_layers": NON_NEGATIVE,
    "scenario_experts": POSITIVE,
    "scenario_topk_specific": NON_NEGATIVE,
    "scenario_topk_shared": NON_NEGATIVE,
    "scenario_expert_hidden": WIDTHS,
    "scenario_noise_scale": NON_NEGATIVE,
    "task_layers": NON_NEGATIVE,
    "task_experts": POSITIVE,
    "task_topk_specific": NON_NEGATIVE,
    "task_topk_shared": NON_NEGATIVE,
    "task_expert_hidden": WIDTHS,
    "task_noise_scale": NON_NEGATIVE,
    "dropout": DROPOUT,
    "bn_momentum": Constraint(low=0, high=1, low_open=True),
    "tower_hidden": OPTIONAL_WIDTHS,
    "lambda_sp": NON_NEGATIVE,
    "lambda_sh": NON_NEGATIVE,
}


#: What ``mssbench tune`` searches besides the learning rate and weight decay.
SEARCH_SPACE = {
    "embed_dim": Choice((8, 16, 32)),
    "dropout": FloatRange(0.0, 0.3),
    "lambda_sp": FloatRange(1e-4, 1e-2, log=True),
    "lambda_sh": FloatRange(1e-5, 1e-3, log=True),
    "tower_hidden": Widths(layers=(1, 2), widths=(16, 32, 64)),
}


@hookimpl
def mssbench_register_models():
    """Register ``aesm``."""
    return [
        ModelSpec(
            name="aesm",
            summary="AESM²: automatic selection of scenario-specific and shared experts over "
            "scenario then task layers (ESMM head where ctcvr implies ctr, else direct heads)",
            build=lazy("mssbench_aesm.model:AESM2"),
            defaults=DEFAULTS,
            search_space=SEARCH_SPACE,
            constraints=CONSTRAINTS,
            task_weights=aesm_task_weights,
            paper="Zou et al., Automatic Expert Selection for Multi-Scenario and Multi-Task "
            "Search, SIGIR 2022, https://arxiv.org/abs/2205.14321",
            tags={
                "head": "esmm",
                "weight_decay_groups": lazy("mssbench_aesm.weight_decay:weight_decay_groups"),
                "scenario_handling": "per-scenario gates select scenario-specific and shared "
                "experts per sample; scenario indicator embedding in the gate input",
            },
            # 2: debiased batch-norm moving averages; loss weights by task role.
            # 3: one GEMM for the shared-input expert layer (float summation order).
            version=4,
            check_params={
                "embed_dim": 8,
                "scenario_embed_dim": 4,
                "task_embed_dim": 4,
                "scenario_experts": 5,
                "scenario_expert_hidden": [16],
                "task_expert_hidden": [8],
                "tower_hidden": [8],
            },
        )
    ]
