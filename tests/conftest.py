import os

import pytest
import torch
from hypothesis import settings

import mssbench.testing.plugin as testing_plugin
from mssbench.plugins import load_registry

# Tests use tiny tensors: one thread avoids oversubscribing small CI machines, where a second
# thread per process costs far more in contention than it gains.
torch.set_num_threads(1)

# The project's own hypothesis profile (the pytest11 plugin only registers one for plugin
# authors and loads none): no deadline, since the first call of a model builds it.
settings.register_profile("ci", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Small hyper-parameters so that harness tests train in a second.
SMALL_MMOE = {"embed_dim": "8", "n_experts": "3", "expert_hidden": "16", "tower_hidden": "8"}


def tiny_run_args(out, epochs: int, *extra: str) -> list[str]:
    """``mssbench run`` arguments: MMoE at ``SMALL_MMOE`` on tiny-synth, batch 256, into ``out``."""
    params = [arg for k, v in SMALL_MMOE.items() for arg in ("-p", f"{k}={v}")]
    return [
        "run",
        "--plugin",
        "mssbench.testing.plugin",
        "-m",
        "mmoe",
        "-d",
        "tiny-synth",
        *params,
        "--epochs",
        str(epochs),
        "--batch-size",
        "256",
        *extra,
        "--out",
        str(out),
    ]


@pytest.fixture
def registry():
    """A fresh registry: the installed plugins plus the testing plugin (constant, tiny-synth)."""
    return load_registry(extra=[("mssbench-testing", testing_plugin)])


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"
