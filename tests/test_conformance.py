import pytest

import mssbench.testing.plugin as testing_plugin
from mssbench.plugins import load_registry
from mssbench.spec import ModelSpec
from mssbench.testing import check_model, default_schema, parametrize_with_checks, run_checks

REGISTRY = load_registry(extra=[("mssbench-testing", testing_plugin)])
SPECS = [REGISTRY.models[name].spec for name in sorted(REGISTRY.models)]
SCHEMA = default_schema()


@parametrize_with_checks(SPECS)
def test_builtin_models_conform(spec, check):
    check(spec, SCHEMA)


def test_check_model_reports_a_broken_model():
    """The suite catches a model that reorders its batch and one that ignores unknown params."""
    import torch

    from mssbench import ModelOutput

    class Sorting(torch.nn.Module):
        def __init__(self, schema, width):
            super().__init__()
            self.lin = torch.nn.Linear(schema.n_numeric, schema.n_tasks)

        def forward(self, batch):
            logits = self.lin(batch.numeric)
            order = logits[:, 0].argsort()
            return ModelOutput(logits[order], logits.new_zeros(()))

    def build(schema, **hp):  # takes anything: violates the contract
        return Sorting(schema, **{k: v for k, v in hp.items() if k == "width"})

    spec = ModelSpec(name="sorting", summary="broken", build=build, defaults={"width": 4})
    results = {r.check: r.status for r in run_checks(spec)}
    assert results["check_batch_permutation"] == "failed"
    assert results["check_unknown_param_rejected"] == "failed"
    with pytest.raises(AssertionError, match="fails .* check"):
        check_model(spec)
