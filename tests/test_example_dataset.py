"""The 40-line dataset plugin of CONTRIBUTING.md (examples/my_dataset.py) works as documented."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mssbench.cli import main
from mssbench.errors import DataError
from mssbench.plugins import load_registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "my_dataset.py"


def write_shop(path: Path, n: int = 300, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = ["user_id,item_id,city,price,channel,click,purchase"]
    for _ in range(n):
        click = int(rng.random() < 0.4)
        buy = int(click and rng.random() < 0.4)
        city = rng.choice(["paris", "lyon", "nice"])
        lines.append(
            f"{rng.integers(1, 80)},{rng.integers(1, 30)},{city},{rng.random() * 90:.2f},"
            f"{rng.choice(['app', 'web'])},{click},{buy}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def test_contributing_shows_the_example_verbatim():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    section = text[text.index("### A dataset plugin in 40 lines") :]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert block == EXAMPLE.read_text()
    assert len(block.splitlines()) <= 45


def test_example_loads_with_train_only_encoding(tmp_path):
    registry = load_registry(plugins=[str(EXAMPLE)])
    spec = registry.dataset("my-shop")
    data = spec.load({"path": str(write_shop(tmp_path / "shop.csv"))})
    assert data.protocol.id == "my-shop/standard/v1/app+web"
    assert sum(data.info["rows"].values()) == 300
    assert data.schema.task_names == ("ctr", "ctcvr")
    assert float(data.train.numeric.max()) == 1.0  # scaled with the train range
    user = data.schema.categorical[0]
    assert user.name == "user_id" and int(data.train.categorical[:, 0].max()) == user.vocab_size - 1
    assert data.info["files"][0]["file"] == "shop.csv"


def test_example_runs_from_the_command_line(tmp_path):
    shop = write_shop(tmp_path / "shop.csv")
    out = tmp_path / "runs"
    args = ["run", "--plugin", str(EXAMPLE), "-m", "mmoe", "-d", "my-shop", "-D", f"path={shop}",
            "--epochs", "1", "--batch-size", "64", "-p", "embed_dim=4", "-p", "n_experts=2",
            "-p", "expert_hidden=8", "-p", "tower_hidden=4", "--out", str(out)]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    [record] = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert record["protocol"]["id"] == "my-shop/standard/v1/app+web"


def test_example_reports_bad_rows_in_one_line(tmp_path):
    shop = write_shop(tmp_path / "shop.csv")
    lines = shop.read_text().splitlines()
    lines[5] = lines[5].rsplit(",", 2)[0] + ",2,0"
    shop.write_text("\n".join(lines) + "\n")
    spec = load_registry(plugins=[str(EXAMPLE)]).dataset("my-shop")
    with pytest.raises(
        DataError, match=r"shop.csv: line 6, column 'click': expected 0 or 1, got 2"
    ):
        spec.load({"path": str(shop)})
