"""predict never hands labels to forward."""

import pytest
import torch

from mssbench.errors import TrainingError
from mssbench.runners.trainer import predict
from mssbench.spec import ModelOutput
from mssbench.testing import make_schema, make_split

SCHEMA = make_schema()
VALID = make_split(SCHEMA, 100, seed=2)
CPU = torch.device("cpu")


class Peeking(torch.nn.Module):
    """Returns the labels as logits: perfect AUC if labels reached it."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(1, 1)

    def forward(self, batch):
        logits = batch.labels * 10 - 5 + self.w.bias * 0
        return ModelOutput(logits, logits.sum() * 0)


class Honest(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(SCHEMA.n_numeric, SCHEMA.n_tasks)

    def forward(self, batch):
        logits = self.w(batch.numeric)
        return ModelOutput(logits, logits.sum() * 0)


def test_a_model_that_reads_labels_fails_at_predict():
    with pytest.raises(TrainingError, match="forward must not read batch.labels"):
        predict(Peeking(), VALID, CPU, batch_size=32)


def test_an_honest_model_predicts_every_row():
    logits = predict(Honest(), VALID, CPU, batch_size=32)
    assert logits.shape == (len(VALID), SCHEMA.n_tasks)
    assert torch.isfinite(logits).all()
