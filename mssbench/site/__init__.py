"""The static leaderboard site: ``<out>/site/``, written by ``mssbench leaderboard build``.

An index of tracks (one per dataset and protocol id), a page per track with sortable and
filterable tables and the plots, a page per run (configuration, environment, validation curve,
test metrics) and the numbers reported elsewhere. Plain HTML with a small script (no CDN, no
server): open ``index.html`` from disk. Templates are Jinja2 with autoescaping, so text from a
record is shown, never run.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import jinja2
import pandas as pd
from markupsafe import Markup

from mssbench.errors import DataError
from mssbench.leaderboard import (
    BuildResult,
    Defaults,
    Page,
    load_reported,
    record_converged,
    record_stalled,
    run_command,
)
from mssbench.leaderboard.markdown import budget_text

__all__ = ["SITE_DIR", "write_site"]

#: Directory of the site under the leaderboard output directory.
SITE_DIR = "site"
#: Marks a directory this module wrote (and may therefore replace).
MARKER = ".mssbench-site"
_HERE = Path(__file__).parent
_STATIC = ("static.js", "static.css")


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{float(value):.{digits}f}"


def _up(directory: str) -> str:
    """From ``site/<directory>/`` back to ``site/``."""
    return "../" * len(directory.split("/"))


def _run_name(record: dict[str, Any]) -> str:
    return Path(str(record.get("_path", record["run_hash"]))).stem


def _pooled_auc(frame: pd.DataFrame) -> pd.Series:
    rows = frame[(frame["scenario"] == "pooled") & (frame["metric"] == "auc")]
    return rows.groupby(["run_hash", "task"])["value"].mean()


def _ranking_rows(page: Page) -> list[dict[str, Any]]:
    table = page.table
    rows = page.frame[(page.frame["scenario"] == "pooled") & (page.frame["metric"] == "auc")]
    auc = rows.groupby(["variant", "task"])["value"].mean()
    return [
        {
            "rank": int(r["rank"]),
            "variant": r["variant"],
            "auc": {t: _num(auc.get((r["variant"], t))) for t in page.tasks},
            "mean": _num(r["mean"]),
            "std": _num(r["std"]),
            "n_seeds": int(r["n_seeds"]),
            "p_value": _num(r["p_value"], 3),
            "p_holm": _num(r["p_holm"], 3),
            "n_common": int(r["n_common"]),
            "not_different": bool(r["not_different"]),
        }
        for _, r in table.iterrows()
    ]


def _converged_cell(rec: dict[str, Any]) -> str:
    """A run's convergence: yes, no or — (a record without the flag), and "at the base rate"."""
    flag = record_converged(rec)
    text = "—" if flag is None else ("yes" if flag else "no")
    return f"{text}, at the base rate" if record_stalled(rec) else text


def _run_rows(page: Page) -> list[dict[str, Any]]:
    auc = _pooled_auc(page.frame)
    return [
        {
            "variant": label,
            "seed": rec["config"]["seed"],
            "auc": {t: _num(auc.get((rec["run_hash"], t))) for t in page.tasks},
            "n_params": int(rec["model"].get("n_params") or 0),
            "speed": float(rec["training"].get("train_samples_per_s") or 0.0),
            "converged": _converged_cell(rec),
            "href": f"runs/{_run_name(rec)}.html",
            "name": _run_name(rec),
        }
        for rec, label in zip(page.records, page.labels)
    ]


def _metrics_table(frame: pd.DataFrame, order: Sequence[str]) -> dict[str, Any]:
    table = frame.pivot_table(
        index="scenario", columns=["task", "metric"], values="value", aggfunc="first"
    )
    table = table.reindex([s for s in order if s in table.index])
    headers = ["scenario"] + [f"{task} {metric}" for task, metric in table.columns]
    rows = [[str(s)] + [_num(v) for v in table.loc[s]] for s in table.index]
    return {"headers": headers, "rows": rows}


def _curve(history: Sequence[dict[str, Any]]) -> str:
    """An inline SVG of the validation score (and training loss) per epoch."""
    points = [(h["epoch"], h.get("selection_score")) for h in history]
    points = [(e, s) for e, s in points if isinstance(s, (int, float)) and not math.isnan(s)]
    if not points:
        return "<p>No validation history in this record.</p>"
    width, height, pad = 480, 200, 36
    lo, hi = min(s for _, s in points), max(s for _, s in points)
    span_y = (hi - lo) or 1.0
    last = max(e for e, _ in points)
    first = min(e for e, _ in points)
    span_x = (last - first) or 1

    def xy(epoch: float, score: float) -> str:
        x = pad + (epoch - first) / span_x * (width - 2 * pad)
        y = height - pad - (score - lo) / span_y * (height - 2 * pad)
        return f"{x:.1f},{y:.1f}"

    line = " ".join(xy(e, s) for e, s in points)
    dots = "".join(
        f'<circle cx="{xy(e, s).split(",")[0]}" cy="{xy(e, s).split(",")[1]}" r="3">'
        f"<title>epoch {e}: {s:.4f}</title></circle>"
        for e, s in points
    )
    return (
        f'<svg class="curve" width="{width}" height="{height}" role="img" '
        f'aria-label="validation score per epoch" xmlns="http://www.w3.org/2000/svg">'
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{line}"/>{dots}'
        f'<text x="{pad}" y="14" font-size="12">validation score {lo:.4f} - {hi:.4f}</text>'
        f'<text x="{pad}" y="{height - 8}" font-size="12">epoch {first} - {last}</text></svg>'
    )


def _run_page(
    env: jinja2.Environment, page: Page, rec: dict[str, Any], label: str, defaults: Defaults
) -> str:
    """A run's page; its command is rebuilt from the validated config, never the record's text."""
    frame = page.frame[page.frame["run_hash"] == rec["run_hash"]]
    frame = frame[frame["seed"] == rec["config"]["seed"]]
    root = _up(page.directory) + "../"
    return env.get_template("run.html.j2").render(
        title=f"{label}, seed {rec['config']['seed']}",
        root=root,
        crumbs=[(page.protocol_id, "../index.html")],
        rec=rec,
        metrics=_metrics_table(frame, page.scenarios),
        curve=Markup(_curve(rec["training"].get("history") or [])),
        command=run_command(rec, defaults),
        config=json.dumps(rec["config"], indent=2, sort_keys=True),
        environment=json.dumps(rec["environment"], indent=2, sort_keys=True),
        record_path=str(frame["record"].iloc[0]) if len(frame) else _run_name(rec) + ".json",
    )


def _track_page(
    env: jinja2.Environment, page: Page, pngs: Sequence[str], reported: str | None
) -> str:
    up = _up(page.directory)
    return env.get_template("page.html.j2").render(
        title=f"{page.dataset}: {page.protocol_id}",
        root=up,
        crumbs=[],
        page=page,
        seeds=", ".join(str(s) for s in page.seeds),
        budget=budget_text(page, escape=str),
        ranking_tasks=", ".join(page.ranking_tasks),
        tasks=page.tasks,
        ranking=_ranking_rows(page),
        runs=_run_rows(page),
        plots=[(Path(p).stem.replace("_", " "), f"{up}../{p}") for p in pngs],
        markdown=f"{up}../{page.directory}/README.md",
        reported=reported,
    )


def _reported_pages(env: jinja2.Environment, reported_dir: Path | None) -> dict[str, Any]:
    pages: dict[str, Any] = {}
    if reported_dir is None or not reported_dir.is_dir():
        return pages
    for path in sorted(reported_dir.glob("*.csv")):
        frame = load_reported(path)
        rows = [["" if pd.isna(v) else str(v) for v in row] for row in frame.itertuples(False)]
        html = env.get_template("reported.html.j2").render(
            title=f"Reported elsewhere: {path.stem}",
            root="../",
            crumbs=[],
            name=path.name,
            headers=list(frame.columns),
            rows=rows,
        )
        pages[path.stem] = {"html": html, "rows": len(rows), "name": path.name}
    return pages


def render_site(result: BuildResult, reported_dir: Path | None = None) -> dict[str, str]:
    """Every file of the site, by path relative to the site directory.

    Args:
        result: What :func:`mssbench.leaderboard.build` returned (pages and files written).
        reported_dir: Directory of ``<dataset>.csv`` files of published numbers.
    """
    env = _env()
    files: dict[str, str] = {name: (_HERE / name).read_text(encoding="utf-8") for name in _STATIC}
    reported = _reported_pages(env, reported_dir)
    for stem, info in reported.items():
        files[f"reported/{stem}.html"] = info["html"]
    tracks = []
    for page in result.pages:
        prefix = page.directory + "/"
        pngs = [f for f in result.files if f.startswith(prefix) and f.endswith(".png")]
        link = f"{_up(page.directory)}reported/{page.dataset}.html"
        files[f"{page.directory}/index.html"] = _track_page(
            env, page, pngs, link if page.dataset in reported else None
        )
        for rec, label in zip(page.records, page.labels):
            files[f"{page.directory}/runs/{_run_name(rec)}.html"] = _run_page(
                env, page, rec, label, result.defaults
            )
        tracks.append(
            {
                "dataset": page.dataset,
                "protocol_id": page.protocol_id,
                "href": f"{page.directory}/index.html",
                "models": len(page.variants),
                "runs": len(page.records),
                "seeds": ", ".join(str(s) for s in page.seeds),
            }
        )
    files["index.html"] = env.get_template("index.html.j2").render(
        title="Leaderboards",
        root="",
        crumbs=[],
        tracks=tracks,
        reported=[
            {"href": f"reported/{stem}.html", "name": info["name"], "rows": info["rows"]}
            for stem, info in reported.items()
        ],
        rejected=result.rejected,
    )
    return files


def write_site(result: BuildResult, out: str | Path, reported_dir: Path | None = None) -> Path:
    """Write the site to ``<out>/site``, replacing an earlier one as a whole.

    The new site is written beside the old one and swapped in, so a failed build leaves the
    old site as it was. A ``site`` directory this module did not write is never replaced.

    Returns:
        The site directory.

    Raises:
        DataError: ``<out>/site`` exists and was not written by this module.
    """
    out = Path(out)
    target = out / SITE_DIR
    if target.exists() and not (target / MARKER).is_file():
        raise DataError(
            f"refusing to replace {str(target)!r}: it was not written by `mssbench leaderboard "
            "build` (move it away or choose another --out)"
        )
    files = render_site(result, reported_dir)
    staging = Path(tempfile.mkdtemp(prefix=".site-", dir=out))
    try:
        for rel, text in files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        (staging / MARKER).write_text("written by mssbench leaderboard build\n", encoding="utf-8")
        old = out / f".site-old-{staging.name}"
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
