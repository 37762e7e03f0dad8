"""ESMM standalone: shared embeddings, independent towers, the core's ESMM head."""

import json

import torch
import torch.nn.functional as F
from click.testing import CliRunner
from mssbench_esmm import DEFAULTS, mssbench_register_models
from mssbench_esmm.model import ESMM

from mssbench.cli import main
from mssbench.nn import ESMMHead
from mssbench.testing import make_schema
from mssbench.testing.synthetic import make_split

SCHEMA = make_schema()  # 3 scenarios, tasks ctr and ctcvr; ctcvr implies ctr
SMALL = {"embed_dim": 4, "tower_hidden": [12, 6]}


def build(schema=SCHEMA, seed=0, **overrides):
    torch.manual_seed(seed)
    return ESMM(schema, **{**DEFAULTS, **SMALL, **overrides})


def batch(schema=SCHEMA, n=48, seed=1):
    return make_split(schema, n, seed=seed).batch(slice(0, n))


def test_defaults_and_head_tag():
    [spec] = mssbench_register_models()
    assert spec.name == "esmm"
    assert spec.defaults == {
        "embed_dim": 18,
        "tower_hidden": [360, 200, 80],
        "dropout": 0.0,
        "scenario_towers": False,
    }
    assert spec.tags["head"] == "esmm"


def test_towers_have_no_batch_norm():
    model = build()
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())


def test_a_task_loss_reaches_its_tower_and_the_shared_embeddings_only():
    model, b = build().train(), batch()
    logits = model(b).logits
    F.binary_cross_entropy_with_logits(logits[:, 0], b.labels[:, 0]).backward()
    for layer in [*model.towers.linears, model.towers.head]:
        assert layer.weight.grad[0].abs().sum() > 0
        assert torch.equal(layer.weight.grad[1], torch.zeros_like(layer.weight.grad[1]))
    assert model.encoder.embedding.weight.grad.abs().sum() > 0


def test_under_the_esmm_head_ctcvr_is_the_product_and_cvr_learns_only_through_it():
    model = ESMMHead(build().train(), SCHEMA)
    b = batch()
    towers = model.backbone(b).logits
    logits = model(b).logits
    assert torch.allclose(logits[:, 0], towers[:, 0])
    p = torch.sigmoid(towers[:, 0]) * torch.sigmoid(towers[:, 1])
    assert torch.allclose(torch.sigmoid(logits[:, 1]), p, atol=1e-6)
    # CTR loss alone: no gradient in the CVR tower.
    model.zero_grad()
    F.binary_cross_entropy_with_logits(logits[:, 0], b.labels[:, 0]).backward()
    assert model.backbone.towers.head.weight.grad[1].abs().sum() == 0


def test_scenario_towers_only_move_their_own_scenarios_rows():
    model, b = build(scenario_towers=True).eval(), batch()
    T = SCHEMA.n_tasks
    with torch.no_grad():
        before = model(b).logits
        model.towers.head.bias[2 * T : 3 * T] += 1.0  # scenario 2's towers
        after = model(b).logits
    own = b.scenario == 2
    assert torch.equal(before[~own], after[~own])
    assert torch.allclose(after[own], before[own] + 1.0)


def test_cli_smoke_run_uses_the_esmm_head_on_related_tasks(tmp_path):
    small = [f"{k}={json.dumps(v)}" for k, v in SMALL.items()]
    args = ["run", "--plugin", "mssbench.testing.plugin", "-m", "esmm", "-d", "tiny-synth"]
    args += [x for kv in small for x in ("-p", kv)]
    args += ["-D", "n_train=600", "--epochs", "1", "--batch-size", "128", "--no-progress"]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    [record] = tmp_path.glob("*.json")
    assert json.loads(record.read_text())["config"]["head"] == "esmm"
