"""PEPNet and EPNet model plugin (``pepnet``, ``epnet``)."""

from mssbench import Choice, FloatRange, ModelSpec, Widths, hookimpl
from mssbench.lazy import lazy
from mssbench.spec import DROPOUT, OPTIONAL_WIDTHS, POSITIVE, WIDTHS

PAPER = (
    "Chang et al., PEPNet: Parameter and Embedding Personalized Network for Infusing with "
    "Personalized Prior Information, KDD 2023, https://arxiv.org/abs/2302.01115"
)

#: ``gamma`` is the paper's; the widths are ours (the paper does not publish them).
EPNET_DEFAULTS = {
    "embed_dim": 16,
    "tower_hidden": [128, 64],
    "gate_hidden": [64],
    "gamma": 2.0,
    "epnet_gate": "field",
    "dropout": 0.0,
}
DEFAULTS = dict(EPNET_DEFAULTS)

#: Allowed values, checked before ``build`` (:class:`mssbench.Constraint`).
CONSTRAINTS = {
    "embed_dim": POSITIVE,
    "tower_hidden": OPTIONAL_WIDTHS,
    "gate_hidden": WIDTHS,
    "gamma": POSITIVE,
    "dropout": DROPOUT,
}

CHECK_PARAMS = {"embed_dim": 4, "tower_hidden": [16, 8], "gate_hidden": [8]}
SCENARIO_HANDLING = "scenario embedding as the gates' prior: it scales the field embeddings"


#: What ``mssbench tune`` searches besides the learning rate and weight decay.
SEARCH_SPACE = {
    "embed_dim": Choice((8, 16, 32)),
    "tower_hidden": Widths(layers=(1, 2), widths=(64, 128, 256)),
    "gate_hidden": Widths(layers=(1, 1), widths=(32, 64, 128)),
    "gamma": FloatRange(1.0, 3.0),
    "dropout": FloatRange(0.0, 0.5),
}


@hookimpl
def mssbench_register_models():
    """Register ``pepnet`` and ``epnet``."""
    return [
        ModelSpec(
            name="pepnet",
            summary="PEPNet: scenario-gated embeddings (EPNet) and per-layer gates on every "
            "task tower (PPNet)",
            build=lazy("mssbench_pepnet.model:PEPNet"),
            version=2,
            defaults=DEFAULTS,
            search_space=SEARCH_SPACE,
            constraints=CONSTRAINTS,
            paper=PAPER,
            check_params=CHECK_PARAMS,
            tags={"scenario_handling": SCENARIO_HANDLING + " and every task tower layer"},
        ),
        ModelSpec(
            name="epnet",
            summary="EPNet (PEPNet without PPNet): scenario-gated embeddings, one tower per task",
            build=lazy("mssbench_pepnet.model:build_epnet"),
            version=2,
            defaults=EPNET_DEFAULTS,
            search_space=SEARCH_SPACE,
            constraints=CONSTRAINTS,
            paper=PAPER,
            check_params=CHECK_PARAMS,
            tags={"scenario_handling": SCENARIO_HANDLING},
        ),
    ]
