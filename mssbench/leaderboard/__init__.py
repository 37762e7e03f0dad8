"""Leaderboard pages: what ``mssbench leaderboard build RESULTS_DIR`` writes.

One page per (dataset, protocol id, dataset version) -- records that differ in any of these are
never ranked together -- in ``<out>/<dataset>/<protocol-slug>/``:

* ``README.md``: the ranking, per-scenario tables, the commands that reproduce it, where the runs
  came from (hardware, versions, contributor), and for datasets with published numbers of other
  libraries (``<out>/reported/<dataset>.csv``) a separate "reported elsewhere" table;
* ``results.csv``: the tidy per-run results (columns
  :data:`mssbench.leaderboard.tidy.LEADERBOARD_COLUMNS`);
* ``auc_by_scenario_<task>.png`` and ``auc_vs_cost.png``.

``<out>/README.md`` indexes the pages and lists rejected records with the reason. Every file is
written atomically (temporary file, then rename); files of an earlier build that are no longer
produced are removed, and nothing else in ``<out>`` is touched (``reported/`` and ``runs/``, for
submitted run records, in particular).
"""

from __future__ import annotations

from mssbench.leaderboard.build import (
    CSV_SCHEMAS,
    MANIFEST,
    STRICT_LISTED,
    BuildResult,
    build,
    csv_schema,
)
from mssbench.leaderboard.commands import (
    _cli_value,
    environments,
    page_suites,
    reproduce_commands,
    run_command,
    suite_command,
)
from mssbench.leaderboard.frame import (
    Defaults,
    Page,
    newest_model_versions,
    oracle_frame,
    plan_pages,
)
from mssbench.leaderboard.markdown import (
    GENERATED_MARK,
    REPORTED_COLUMNS,
    budget_lines,
    load_reported,
    render_index,
    render_page,
    render_reported,
)
from mssbench.leaderboard.plots import (
    model_style,
    plot_cost,
    plot_learning_curves,
    plot_scenarios,
)
from mssbench.leaderboard.statistics import (
    MARK,
    RANKING_RULE,
    TEST_RULE,
    TRANSFER_REFERENCE,
    TRANSFER_RULE,
    learning_curves,
    page_track,
    ranking,
    record_converged,
    record_stalled,
    record_tuned,
    seed_scores,
    transfer_reference,
    transfer_table,
)
from mssbench.leaderboard.text import (
    md_escape,
    slugify,
)
from mssbench.significance import ALPHA, paired_p_value

__all__ = [
    "ALPHA",
    "BuildResult",
    "CSV_SCHEMAS",
    "Defaults",
    "GENERATED_MARK",
    "MANIFEST",
    "MARK",
    "Page",
    "RANKING_RULE",
    "REPORTED_COLUMNS",
    "STRICT_LISTED",
    "TEST_RULE",
    "TRANSFER_REFERENCE",
    "TRANSFER_RULE",
    "_cli_value",
    "budget_lines",
    "build",
    "csv_schema",
    "environments",
    "learning_curves",
    "load_reported",
    "md_escape",
    "model_style",
    "newest_model_versions",
    "oracle_frame",
    "page_suites",
    "page_track",
    "paired_p_value",
    "plan_pages",
    "plot_cost",
    "plot_learning_curves",
    "plot_scenarios",
    "ranking",
    "record_converged",
    "record_stalled",
    "record_tuned",
    "render_index",
    "render_page",
    "render_reported",
    "reproduce_commands",
    "run_command",
    "seed_scores",
    "slugify",
    "suite_command",
    "transfer_reference",
    "transfer_table",
]
