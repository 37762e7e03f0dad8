"""Holm's correction and the wording of the significance marker."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_leaderboard import cells, make_record, tables

from mssbench.leaderboard import plan_pages, ranking, render_page, seed_scores
from mssbench.significance import holm

p_lists = st.lists(st.one_of(st.floats(0.0, 1.0), st.just(math.nan)), min_size=0, max_size=12)


def _holm_reference(p):
    """Holm by the textbook loop: reject in increasing order while p_(k) < alpha / (m - k + 1)."""
    idx = [i for i, v in enumerate(p) if not math.isnan(v)]
    idx.sort(key=lambda i: (p[i], i))
    m = len(idx)
    out = [math.nan] * len(p)
    running = 0.0
    for k, i in enumerate(idx):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out


@given(p_lists)
def test_holm_matches_the_step_down_loop(p):
    np.testing.assert_allclose(holm(p), _holm_reference(p), equal_nan=True)


@given(p_lists)
def test_holm_never_lowers_a_p_value_and_stays_a_probability(p):
    adj = holm(p)
    raw = np.asarray(p, dtype=float)
    defined = ~np.isnan(raw)
    assert np.all(np.isnan(adj[~defined]))
    assert np.all(adj[defined] >= raw[defined] - 1e-15)
    assert np.all(adj[defined] <= 1.0)


def test_holm_on_a_worked_example():
    # m = 3: 0.01 * 3 = 0.03, 0.02 * 2 = 0.04, 0.04 * 1 = 0.04
    np.testing.assert_allclose(holm([0.04, 0.01, 0.02]), [0.04, 0.03, 0.04])


def test_page_states_the_correction_and_applies_it():
    base = np.array([0.80, 0.78, 0.81, 0.79, 0.80])
    recs = [make_record("best", seed=s, auc=float(v)) for s, v in enumerate(base)]
    # Three challengers, each with raw p a little under 0.05: Holm keeps them all.
    shift = np.array([0.010, 0.002, 0.012, 0.001, 0.009])
    for name in ("a", "b", "c"):
        recs += [make_record(name, seed=s, auc=float(v)) for s, v in enumerate(base - shift)]
    page = plan_pages(recs)[0]
    table = ranking(seed_scores(page.frame, page.ranking_tasks)).set_index("variant")
    assert 0.01 < table.loc["a", "p_value"] < 0.05
    assert table.loc["a", "p_holm"] == pytest.approx(min(1.0, 3 * table.loc["a", "p_value"]))
    assert table.loc["a", "not_different"]
    text = render_page(page)
    assert "not significantly different from the best with n seeds" in text
    assert "Holm" in text
    assert "tied" not in text.lower()


# --- negative transfer --------------------------------------------------------------------------


def _transfer_records():
    rng = np.random.default_rng(0)
    base = 0.75 + rng.normal(0, 0.01, 5)
    recs = []
    for name, shift in (("single_task", 0.0), ("worse", -0.02), ("same", 0.0)):
        noise = rng.normal(0, 0.001, 5) if name != "single_task" else np.zeros(5)
        recs += [
            make_record(name, seed=s, auc=float(v)) for s, v in enumerate(base + shift + noise)
        ]
    return recs, base


def test_transfer_table_pairs_by_seed_and_marks_only_significant_cells():
    from mssbench.leaderboard import transfer_table

    recs, base = _transfer_records()
    page = plan_pages(recs)[0]
    cells = [(s, t) for t in page.tasks for s in page.scenarios]
    table = transfer_table(page.frame, "single_task", cells).set_index(
        ["variant", "scenario", "task"]
    )
    assert len(table) == 2 * len(cells)
    worse = table.loc[("worse", "pooled", "ctr")]
    assert worse["diff"] == pytest.approx(-0.02, abs=0.002)
    assert worse["sign"] == -1 and worse["n_common"] == 5
    assert (table.xs("same", level="variant")["sign"] == 0).all()
    # The adjusted p-values are Holm's over the whole table.
    np.testing.assert_allclose(table["p_holm"], holm(table["p_value"].to_numpy()))


def test_transfer_section_on_page_and_without_single_task():
    recs, _ = _transfer_records()
    text = render_page(plan_pages(recs)[0])
    assert "negative transfer" in text and "▼" in text and "Holm" in text
    others = [r for r in recs if r["model"]["name"] != "single_task"]
    assert "No single_task runs on this page" in render_page(plan_pages(others)[0])


def test_test_set_interval_is_shown_beside_the_seed_mean():
    recs = []
    for seed, (auc, low, high) in enumerate(((0.70, 0.68, 0.72), (0.72, 0.70, 0.74))):
        rec = make_record("m", seed=seed, auc=auc)
        for s in ("a", "b", "pooled"):
            for t in ("ctr", "ctcvr"):
                rec["test"]["metrics"] += [
                    {"scenario": s, "task": t, "metric": "auc_ci_low", "value": low},
                    {"scenario": s, "task": t, "metric": "auc_ci_high", "value": high},
                ]
        recs.append(rec)
    text = render_page(plan_pages(recs)[0])
    assert "0.7100 ± 0.0141 [0.6900, 0.7300]" in text
    assert "bootstrap interval" in text


# --- budget box, convergence, learning curves, tracks -------------------------------------------


def _with_training(rec, converged=None, scores=(0.6, 0.7)):
    rec["dataset"]["rows"] = {"train": 1000, "valid": 100, "test": 200}
    rec["training"] = {
        "epochs_run": len(scores),
        "train_samples": 1000 * len(scores),
        "history": [{"epoch": i + 1, "selection_score": v} for i, v in enumerate(scores)],
    }
    if converged is not None:
        rec["training"]["converged"] = converged
    return rec


def test_page_opens_with_a_budget_box_and_shows_convergence_per_row():
    recs = [
        _with_training(make_record("a", seed=0), converged=True),
        _with_training(make_record("a", seed=1), converged=False),
        _with_training(make_record("b", seed=0)),  # an older record: no flag
    ]
    page = plan_pages(recs)[0]
    text = render_page(page)
    header = text.split("## Ranking")[0]
    assert "**Budget.**" in header
    assert "train 1,000, valid 100, test 200" in header
    assert "2,000 samples seen per run, 2 epochs run (limit 1)" in header
    assert "defaults, not tuned" in header
    assert "1 of the 2 runs converged (1 of 3 records do not say)" in header
    assert "; not converged: a seed 1" in header
    rows = {cells(line)[2].strip(): cells(line) for line in tables(text)[0]}
    col = [h.strip() for h in cells(tables(text)[0][0])].index("converged")
    assert rows["a"][col].strip() == "1/2"
    assert rows["b"][col].strip() == "—"


def test_learning_curves_average_the_history_over_runs():
    from mssbench.leaderboard import learning_curves

    recs = [
        _with_training(make_record("a", seed=0), scores=(0.6, 0.7)),
        _with_training(make_record("a", seed=1), scores=(0.8, 0.9)),
    ]
    curves = learning_curves(plan_pages(recs)[0]).set_index(["variant", "epoch"])
    assert curves.loc[("a", 1), "mean"] == pytest.approx(0.7)
    assert curves.loc[("a", 2), "mean"] == pytest.approx(0.8)
    assert curves.loc[("a", 2), "n"] == 2


def test_index_groups_pages_by_track(tmp_path):
    from mssbench.leaderboard import page_track, render_index

    cpu = [make_record("a", seed=0)]
    gpu = [make_record("a", seed=0, device="cuda:0", dataset="other", protocol_id="other/x/v1/a")]
    pages = plan_pages(cpu + gpu)
    assert {page_track(p.records) for p in pages} == {
        "default hyperparameters, CPU",
        "default hyperparameters, GPU",
    }
    index = render_index(pages, [], "runs")
    assert index.index("## Track: default hyperparameters, CPU") < index.index("toy/standard")
    assert index.index("## Track: default hyperparameters, GPU") < index.index("other/x/v1")


def test_a_page_whose_every_run_converged_is_in_the_converged_track():
    from mssbench.leaderboard import page_track

    def run(seed, converged):
        rec = make_record("a", seed=seed)
        if converged is not None:
            rec.setdefault("training", {})["converged"] = converged
        return rec

    assert page_track([run(0, True), run(1, True)]) == "default hyperparameters, converged, CPU"
    assert page_track([run(0, True), run(1, False)]) == "default hyperparameters, CPU"
    assert page_track([run(0, True), run(1, None)]) == "default hyperparameters, CPU"


def test_tuned_runs_get_their_own_page_beside_the_defaults():
    from mssbench.leaderboard import page_track, render_index

    defaults = [make_record("a", seed=s, auc=0.70) for s in (0, 1)]
    tuned = [make_record("a", seed=s, auc=0.75) for s in (0, 1)]
    for rec in tuned:
        rec["config"]["tuned_from"] = "toy_a"
        rec["config"]["tuning_budget"] = {"trials": 20, "samples_per_trial": 400000}
    pages = plan_pages(defaults + tuned)
    assert len(pages) == 2
    by_track = {page_track(p.records): p for p in pages}
    assert set(by_track) == {"default hyperparameters, CPU", "tuned, CPU"}
    page = by_track["tuned, CPU"]
    assert page.tuned and page.directory.endswith("--tuned")
    assert all(r["config"]["tuned_from"] for r in page.records)
    assert page.siblings == [by_track["default hyperparameters, CPU"].directory]
    header = render_page(page).split("## Ranking")[0]
    assert "runs at the declared defaults of the same protocol are on [their own page]" in header
    assert "names the study its configuration came from (`config.tuned_from`: `toy_a`)" in (
        render_page(page)
    )
    defaults_page = by_track["default hyperparameters, CPU"]
    assert "config.tuned_from" not in render_page(defaults_page)
    assert "runs of tuned configurations (the tuned track)" in render_page(defaults_page)
    assert "tuned in 2 of 2 runs (equal budget for every model: 20 trials x 400,000" in header
    index = render_index(pages, [], "runs")
    assert index.index("## Track: tuned, CPU") < index.index(f"({page.directory}/README.md)")


def test_every_model_keeps_one_style_and_plots_name_the_protocol():
    from mssbench.leaderboard import model_style, plot_cost, plot_learning_curves

    assert model_style("mmoe") == model_style("mmoe")
    styles = {model_style(m) for m in ("mmoe", "ple", "star", "single_task", "esmm", "aitm")}
    assert len(styles) == 6
    recs = [
        _with_training(make_record(m, seed=s, auc=0.7 + 0.01 * s))
        for m in ("mmoe", "ple")
        for s in range(2)
    ]
    page = plan_pages(recs)[0]
    table = ranking(seed_scores(page.frame, page.ranking_tasks))
    from mssbench.leaderboard import learning_curves

    for fig in (plot_cost(page, table), plot_learning_curves(page, learning_curves(page))):
        titles = [fig._suptitle.get_text()] if fig._suptitle else []
        titles += [ax.get_title() for ax in fig.axes]
        assert any(page.protocol_id in t for t in titles)
    cost = plot_cost(page, table)
    assert "seconds per million samples" in cost.axes[0].get_xlabel()
    assert cost.axes[0].get_xticks().size >= 1
