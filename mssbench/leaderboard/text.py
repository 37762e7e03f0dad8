"""Markdown escaping and number formatting shared by the pages and the plots."""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any, Iterable

from tabulate import tabulate

_SLUG_BAD = re.compile(r"[^A-Za-z0-9._+-]+")


_MD_BACKSLASH = set("\\`*[]#|$~!{}")


def md_escape(value: Any) -> str:
    r"""Make any text safe inside a Markdown table cell, heading, list item or link text.

    Control characters and newlines become spaces; ``&``, ``<`` and ``>`` become HTML entities
    (no raw HTML gets through); Markdown punctuation (``\ ` * [ ] # | $ ~ ! { }``) is
    backslash-escaped, and ``_`` too except inside a word (where it cannot start emphasis).
    The result renders as the original text.
    """
    text = "" if value is None else str(value)
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)
    out = []
    for i, c in enumerate(text):
        if c == "&":
            out.append("&amp;")
        elif c == "<":
            out.append("&lt;")
        elif c == ">":
            out.append("&gt;")
        elif c in _MD_BACKSLASH:
            out.append("\\" + c)
        elif c == "_":
            inner = 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
            out.append("_" if inner else "\\_")
        else:
            out.append(c)
    return "".join(out).strip()


def _fence(text: str) -> str:
    """A backtick fence longer than any backtick run inside ``text``."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _plot_text(value: Any, limit: int = 48) -> str:
    """Text safe for matplotlib (no mathtext, not hidden from the legend)."""
    text = "".join(" " if unicodedata.category(c).startswith("C") else c for c in str(value))
    text = text.replace("$", r"\$")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return " " + text if text.startswith("_") else text


def slugify(text: str) -> str:
    """A file-name-safe form of ``text`` (``a/b+c`` -> ``a-b+c``), never empty or hidden."""
    slug = _SLUG_BAD.sub("-", text).strip("-").lstrip(".")
    return slug or "_"


def _fmt(mean: float, std: float = math.nan, digits: int = 4) -> str:
    if mean is None or math.isnan(mean):
        return "n/a"
    if std is None or math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _fmt_int(value: float) -> str:
    return f"{value:,.0f}"


def _fmt_count(value: float) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:,.0f}"


def _fmt_seeds(seeds: Iterable[int]) -> str:
    seeds = sorted(set(seeds))
    if not seeds:
        return "—"
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]} ({len(seeds)})"
    return ", ".join(str(s) for s in seeds) + f" ({len(seeds)})"


def _table(rows: list[list[str]], headers: list[str], align: str | None = None) -> str:
    return tabulate(
        rows,
        headers=headers,
        tablefmt="github",
        disable_numparse=True,
        colalign=[align] * len(headers) if align else None,
    )


def _with_n(text: str, n: int, n_total: int) -> str:
    return text if n >= n_total or text == "n/a" else f"{text} (n={n})"
