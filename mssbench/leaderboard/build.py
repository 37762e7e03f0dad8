"""Writing the pages: ``mssbench leaderboard build``."""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mssbench.errors import DataError
from mssbench.io import atomic_write, write_text
from mssbench.leaderboard.commands import page_suites
from mssbench.leaderboard.frame import _RESERVED_DIRS, Defaults, Page, plan_pages
from mssbench.leaderboard.markdown import (
    GENERATED_MARK,
    REPORTED_COLUMNS,
    load_reported,
    render_index,
    render_page,
)
from mssbench.leaderboard.plots import plot_cost, plot_learning_curves, plot_scenarios
from mssbench.leaderboard.statistics import learning_curves
from mssbench.leaderboard.text import md_escape, slugify
from mssbench.leaderboard.tidy import LEADERBOARD_COLUMNS
from mssbench.records import load_records
from mssbench.reproduce import suite_files

#: Schema of every CSV under a leaderboard directory, by path pattern relative to it.
CSV_SCHEMAS: dict[str, list[str]] = {
    "reported/*.csv": REPORTED_COLUMNS,
    "*/*/results.csv": LEADERBOARD_COLUMNS,
}


#: Refused records a ``--strict`` error names (the others are counted).
STRICT_LISTED = 10


#: Lists the files the last build wrote, so that the next one removes only its own stale files.
MANIFEST = ".leaderboard-files.json"


def _write_text(path: Path, text: str) -> None:
    write_text(path, text)


def _write_png(path: Path, fig: Any) -> None:
    atomic_write(
        path,
        lambda fh: fig.savefig(
            fh, format="png", dpi=100, metadata={"Software": None}, bbox_inches="tight"
        ),
        binary=True,
    )


def _owned(path: Path, out: Path, previous: set[str]) -> bool:
    """May the build overwrite ``path``? Only files it wrote before."""
    rel = path.relative_to(out).as_posix()
    if not path.exists() or rel in previous:
        return True
    if path.suffix == ".md":
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.readline().rstrip("\n") == GENERATED_MARK
    page_md = path.parent / "README.md"
    if page_md.exists():
        with open(page_md, encoding="utf-8", errors="replace") as fh:
            return fh.readline().rstrip("\n") == GENERATED_MARK
    return False


@dataclass
class BuildResult:
    """What a build wrote.

    Attributes:
        pages: The pages.
        files: Files written, relative to the output directory.
        removed: Stale files of an earlier build that were removed.
        rejected: ``(file, reason)`` of records left out.
        defaults: The declared defaults the pages' commands were rebuilt with.
    """

    pages: list[Page]
    files: list[str]
    removed: list[str]
    rejected: list[tuple[str, str]]
    defaults: Defaults = field(default_factory=Defaults)


def build(
    results_dir: str | Path,
    out: str | Path = "leaderboards",
    defaults: Defaults | None = None,
    reported_dir: str | Path | None = None,
    plots: bool = True,
    strict: bool = False,
) -> BuildResult:
    """Build every leaderboard page from the run records in ``results_dir``.

    Args:
        results_dir: Directory of run records (searched recursively).
        out: Output directory.
        defaults: Declared defaults of the installed plugins (labels, shorter commands).
        reported_dir: Where published numbers of other libraries live (``<dataset>.csv``);
            ``<out>/reported`` by default. Never written to.
        plots: Write the PNG plots.
        strict: Fail, writing nothing, if any record is rejected.

    Returns:
        The pages, the files written and removed, and the rejected records.

    Raises:
        DataError: No valid record in ``results_dir``, a rejected record with ``strict``, an
            unreadable reported CSV, or a file in the way that an earlier build did not write.
    """
    defaults = defaults or Defaults()
    root = Path(results_dir)
    out = Path(out)
    reported_dir = Path(reported_dir) if reported_dir is not None else out / "reported"
    records, rejected_paths = load_records(root)
    rejected = [(_relative(p, root), reason) for p, reason in rejected_paths]
    if not records:
        raise DataError(
            f"no valid run record in {str(root)!r}"
            + (
                f" ({len(rejected)} rejected: {rejected[0][0]}: {rejected[0][1]})"
                if rejected
                else ""
            )
        )
    if strict and rejected:
        listed = "; ".join(f"{path}: {reason}" for path, reason in rejected[:STRICT_LISTED])
        more = len(rejected) - STRICT_LISTED
        listed += f"; and {more} more" if more > 0 else ""
        raise DataError(f"{len(rejected)} record(s) rejected (--strict): {listed}")
    pages = plan_pages(records, defaults, root=root)
    previous = _read_manifest(out)
    reported_files = sorted(reported_dir.glob("*.csv")) if reported_dir.is_dir() else []
    reported_links = []
    for f in reported_files:
        try:
            reported_links.append(f.resolve().relative_to(out.resolve()).as_posix())
        except ValueError:
            reported_links.append(str(f))

    outputs: dict[str, Callable[[Path], None]] = {}
    for page in pages:
        reported = None
        matching = [f for f in reported_files if f.stem == page.dataset]
        if matching:
            link_target = reported_links[reported_files.index(matching[0])]
            if not os.path.isabs(link_target):
                link_target = f"../../{link_target}"
            reported = (
                load_reported(matching[0]),
                f"[{md_escape(matching[0].name)}]({link_target})",
            )
        plot_files: list[tuple[str, str]] = []
        if plots:
            table = page.table
            order = list(table["variant"])
            for task in page.tasks:
                name = f"auc_by_scenario_{slugify(task)}.png"
                plot_files.append((task, name))
                outputs[f"{page.directory}/{name}"] = _png(plot_scenarios, page, task, order)
            plot_files.append(("cost", "auc_vs_cost.png"))
            outputs[f"{page.directory}/auc_vs_cost.png"] = _png(plot_cost, page, table)
            curves = learning_curves(page)
            if not curves.empty:
                plot_files.append(("learning curves", "learning_curves.png"))
                outputs[f"{page.directory}/learning_curves.png"] = _png(
                    plot_learning_curves, page, curves
                )
        page_path = f"{out.as_posix()}/{page.directory}"
        text = render_page(page, defaults, str(results_dir), reported, plot_files, page_path)
        outputs[f"{page.directory}/README.md"] = _text(text)
        for name, yaml_text in suite_files(page_suites(page, defaults)).items():
            outputs[f"{page.directory}/{name}"] = _text(yaml_text)
        csv = page.frame.to_csv(index=False, lineterminator="\n")
        outputs[f"{page.directory}/results.csv"] = _text(csv)
    outputs["README.md"] = _text(render_index(pages, rejected, str(results_dir), reported_links))

    for rel in outputs:
        if rel.split("/", 1)[0] in _RESERVED_DIRS and "/" in rel:
            raise DataError(f"refusing to write {rel}: reserved directory")  # pragma: no cover
        target = out / rel
        if not _owned(target, out, previous):
            raise DataError(
                f"refusing to overwrite {str(target)!r}: it was not written by "
                "`mssbench leaderboard build` (move it away or choose another --out)"
            )
    out.mkdir(parents=True, exist_ok=True)
    for rel, write in outputs.items():
        write(out / rel)
    removed = []
    for rel in sorted(previous - set(outputs)):
        target = out / rel
        if rel.split("/", 1)[0] in _RESERVED_DIRS or not target.is_file():
            continue
        target.unlink()
        removed.append(rel)
        parent = target.parent
        while parent != out and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    files = sorted(outputs)
    _write_text(out / MANIFEST, json.dumps({"files": files}, indent=1) + "\n")
    return BuildResult(
        pages=pages, files=files, removed=removed, rejected=rejected, defaults=defaults
    )


def _text(text: str) -> Callable[[Path], None]:
    return lambda path: _write_text(path, text)


def _png(plot: Callable[..., Any], *args: Any) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        _write_png(path, plot(*args))

    return write


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _read_manifest(out: Path) -> set[str]:
    path = out / MANIFEST
    if not path.is_file():
        return set()
    try:
        files = json.loads(path.read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {f for f in files if isinstance(f, str) and ".." not in f.split("/")}


def csv_schema(path: Path, root: Path) -> list[str] | None:
    """The expected columns of a CSV under a leaderboard directory (None: no schema known)."""
    rel = path.relative_to(root).as_posix()
    for pattern, columns in CSV_SCHEMAS.items():
        if fnmatch.fnmatchcase(rel, pattern) and rel.count("/") == pattern.count("/"):
            return columns
    return None
