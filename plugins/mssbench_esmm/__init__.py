"""ESMM model plugin (``esmm``)."""

from mssbench import Choice, FloatRange, ModelSpec, Widths, hookimpl
from mssbench.lazy import lazy
from mssbench.spec import DROPOUT, OPTIONAL_WIDTHS, POSITIVE

#: The paper's setup as commonly reported (embedding 18 per field, towers 360-200-80, no
#: dropout); see README.
DEFAULTS = {
    "embed_dim": 18,
    "tower_hidden": [360, 200, 80],
    "dropout": 0.0,
    "scenario_towers": False,
}

#: Allowed values, checked before ``build`` (:class:`mssbench.Constraint`).
CONSTRAINTS = {
    "embed_dim": POSITIVE,
    "tower_hidden": OPTIONAL_WIDTHS,
    "dropout": DROPOUT,
}


#: What ``mssbench tune`` searches besides the learning rate and weight decay.
SEARCH_SPACE = {
    "embed_dim": Choice((8, 16, 32)),
    "tower_hidden": Widths(layers=(2, 3), widths=(128, 256, 512)),
    "dropout": FloatRange(0.0, 0.5),
}


@hookimpl
def mssbench_register_models():
    """Register ``esmm``."""
    return [
        ModelSpec(
            name="esmm",
            summary="ESMM: shared embeddings, independent CTR and CVR towers, "
            "p_ctcvr = p_ctr * p_cvr (ESMM head where ctcvr implies ctr, else direct heads); "
            "scenario id as a feature",
            build=lazy("mssbench_esmm.model:ESMM"),
            version=2,
            defaults=DEFAULTS,
            search_space=SEARCH_SPACE,
            constraints=CONSTRAINTS,
            paper="Ma et al., Entire Space Multi-Task Model: An Effective Approach for "
            "Estimating Post-Click Conversion Rate, SIGIR 2018, "
            "https://doi.org/10.1145/3209978.3210104",
            check_params={"embed_dim": 4, "tower_hidden": [16, 8]},
            tags={"head": "esmm", "scenario_handling": "scenario as input feature"},
        )
    ]
