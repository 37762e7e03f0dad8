"""A complete model plugin in one file: a logistic regression over the shared encoder.

Run it without installing anything:

    mssbench run --plugin examples/my_model.py --model my_model --dataset census-income
"""

import torch
from torch import nn

from mssbench import ModelOutput, ModelSpec, hookimpl
from mssbench.nn import FeatureEncoder


class MyModel(nn.Module):
    """One linear layer per task over the embedded fields (scenario id as a feature).

    Args:
        schema: Dataset schema (fields, scenarios, tasks).
        embed_dim: Width of each field embedding.
    """

    def __init__(self, schema, embed_dim):
        super().__init__()
        self.encoder = FeatureEncoder(schema, embed_dim, scenario_as_feature=True)
        self.head = nn.Linear(self.encoder.out_dim, schema.n_tasks)

    def forward(self, batch):
        """Logits ``[B, T]``; no auxiliary loss."""
        logits = self.head(self.encoder(batch))
        return ModelOutput(logits, torch.zeros((), device=logits.device))


@hookimpl
def mssbench_register_models():
    """Register ``my_model``."""
    return [
        ModelSpec(
            name="my_model",
            summary="Logistic regression over field embeddings (example plugin)",
            build=MyModel,
            defaults={"embed_dim": 8},
            paper="",
        )
    ]
