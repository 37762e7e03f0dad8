"""mssbench.reproduce: a suite command line as the config file that plans the same runs."""

from __future__ import annotations

import shlex

from mssbench.reproduce import suite_file, suite_file_name, suite_files, suite_yaml


def test_every_kind_of_option_becomes_its_config_key():
    line = (
        "mssbench suite --plugin my_pkg --datasets aliexpress-synth --models mmoe,ple "
        "--seeds 0,3 -p mmoe.expert_hidden=128,64 -p embed_dim=16 -D n_rows=150000 "
        "--epochs 4 --lr 0.002 --compile --metric pr_auc --metric ne --precision bf16 "
        "--head esmm"
    )
    plan = suite_file(shlex.split(line), out="runs")
    assert plan == {
        "plugins": ["my_pkg"],
        "datasets": ["aliexpress-synth"],
        "models": ["mmoe", "ple"],
        "seeds": "0,3",
        "data_options": {"n_rows": "150000"},
        "epochs": 4,
        "lr": 0.002,
        "compile": True,
        "metrics": ["pr_auc", "ne"],
        "precision": "bf16",
        "head": "esmm",
        "params": {"mmoe.expert_hidden": "128,64", "embed_dim": "16"},
        "out": "runs",
    }


def test_file_names_and_header():
    assert [suite_file_name(i) for i in range(3)] == ["suite.yaml", "suite-2.yaml", "suite-3.yaml"]
    text = suite_yaml("mssbench suite --datasets d --models a,b --seeds 5", header="one\ntwo")
    assert text.startswith("# one\n# two\n") and "seeds: 5" in text
    files = suite_files(["mssbench suite --datasets d --models a,b", "mssbench suite --datasets e"])
    assert list(files) == ["suite.yaml", "suite-2.yaml"]
