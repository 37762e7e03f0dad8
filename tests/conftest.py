import pytest

import mssbench.testing.plugin as testing_plugin
from mssbench.plugins import load_registry

# Small hyper-parameters so that harness tests train in a second.
SMALL_MMOE = {"embed_dim": "8", "n_experts": "3", "expert_hidden": "16", "tower_hidden": "8"}


@pytest.fixture
def registry():
    """A fresh registry: the installed plugins plus the testing plugin (constant, tiny-synth)."""
    return load_registry(extra=[("mssbench-testing", testing_plugin)])


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"
