"""Writing the pages: ``mssbench leaderboard build``."""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

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
    records, rejected = _read_records(root, strict)
    pages = plan_pages(records, defaults, root=root)
    reported = _Reported.find(reported_dir, out)
    outputs: dict[str, Callable[[Path], None]] = {}
    for page in pages:
        page_path = f"{out.as_posix()}/{page.directory}"
        outputs.update(_page_outputs(page, defaults, str(results_dir), reported, plots, page_path))
    outputs["README.md"] = _text(render_index(pages, rejected, str(results_dir), reported.links))
    previous = _read_manifest(out)
    _check_owned(outputs, out, previous)
    out.mkdir(parents=True, exist_ok=True)
    for rel, write in outputs.items():
        write(out / rel)
    removed = _remove_stale(sorted(previous - set(outputs)), out)
    files = sorted(outputs)
    _write_text(out / MANIFEST, json.dumps({"files": files}, indent=1) + "\n")
    return BuildResult(
        pages=pages, files=files, removed=removed, rejected=rejected, defaults=defaults
    )


def _read_records(root: Path, strict: bool) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The valid records below ``root`` and ``(relative path, reason)`` of the refused ones.

    Raises:
        DataError: No valid record, or a refused one with ``strict``.
    """
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
    return records, rejected


@dataclass(frozen=True)
class _Reported:
    """The published numbers of other libraries (``<dataset>.csv``) and their links."""

    files: list[Path]
    links: list[str]  # relative to the output directory where possible, else the path as given

    @classmethod
    def find(cls, reported_dir: Path, out: Path) -> _Reported:
        files = sorted(reported_dir.glob("*.csv")) if reported_dir.is_dir() else []
        links = []
        for f in files:
            try:
                links.append(f.resolve().relative_to(out.resolve()).as_posix())
            except ValueError:
                links.append(str(f))
        return cls(files, links)

    def for_page(self, dataset: str) -> tuple[Any, str] | None:
        """The table and Markdown link of ``dataset``'s numbers, for a page two levels down."""
        matching = [f for f in self.files if f.stem == dataset]
        if not matching:
            return None
        link_target = self.links[self.files.index(matching[0])]
        if not os.path.isabs(link_target):
            link_target = f"../../{link_target}"
        return (
            load_reported(matching[0]),
            f"[{md_escape(matching[0].name)}]({link_target})",
        )


def _page_outputs(
    page: Page,
    defaults: Defaults,
    results_dir: str,
    reported: _Reported,
    plots: bool,
    page_path: str,
) -> dict[str, Callable[[Path], None]]:
    """The files of one page, relative to the output directory: plots, README, suites, CSV."""
    outputs, plot_files = _plot_outputs(page) if plots else ({}, [])
    text = render_page(
        page, defaults, results_dir, reported.for_page(page.dataset), plot_files, page_path
    )
    outputs[f"{page.directory}/README.md"] = _text(text)
    for name, yaml_text in suite_files(page_suites(page, defaults)).items():
        outputs[f"{page.directory}/{name}"] = _text(yaml_text)
    csv = page.frame.to_csv(index=False, lineterminator="\n")
    outputs[f"{page.directory}/results.csv"] = _text(csv)
    return outputs


def _plot_outputs(
    page: Page,
) -> tuple[dict[str, Callable[[Path], None]], list[tuple[str, str]]]:
    """A page's PNG writers by relative path, and ``(caption key, file name)`` for its text."""
    outputs: dict[str, Callable[[Path], None]] = {}
    plot_files: list[tuple[str, str]] = []
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
        outputs[f"{page.directory}/learning_curves.png"] = _png(plot_learning_curves, page, curves)
    return outputs, plot_files


def _check_owned(outputs: Mapping[str, Any], out: Path, previous: set[str]) -> None:
    """Refuse, before writing anything, to overwrite a file an earlier build did not write."""
    for rel in outputs:
        if rel.split("/", 1)[0] in _RESERVED_DIRS and "/" in rel:
            raise DataError(f"refusing to write {rel}: reserved directory")  # pragma: no cover
        target = out / rel
        if not _owned(target, out, previous):
            raise DataError(
                f"refusing to overwrite {str(target)!r}: it was not written by "
                "`mssbench leaderboard build` (move it away or choose another --out)"
            )


def _remove_stale(stale: list[str], out: Path) -> list[str]:
    """Remove files of an earlier build that this one no longer writes, and emptied folders."""
    removed = []
    for rel in stale:
        target = out / rel
        if rel.split("/", 1)[0] in _RESERVED_DIRS or not target.is_file():
            continue
        target.unlink()
        removed.append(rel)
        parent = target.parent
        while parent != out and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    return removed


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
