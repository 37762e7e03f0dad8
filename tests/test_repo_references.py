"""Tracked files cite papers and the plugins' READMEs, never notes kept outside the repository."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The folder name, assembled so that this file (tracked too) does not match itself.
FOLDER = "spec" + "s/"
#: A path into that folder (``<folder>models.md``, ``../shared/<folder>data.md``).
OUTSIDE_NOTE = re.compile(r"(?<![\w-])" + FOLDER + r"[\w.-]+")


def _tracked_text_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [ROOT / name for name in out.split("\0") if name]


def _mentions(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
        return []
    return [
        f"{path.relative_to(ROOT)}:{number}: {match.group(0)}"
        for number, line in enumerate(text.splitlines(), start=1)
        for match in OUTSIDE_NOTE.finditer(line)
    ]


def test_no_tracked_file_points_at_specs_outside_the_repository():
    found = [hit for path in _tracked_text_files() for hit in _mentions(path)]
    assert not found, "cite the paper or the plugin's README instead of:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "line",
    [
        f"see {FOLDER}models.md §2",
        f"(``../../../shared/{FOLDER}data.md`` §1)",
        f"`{FOLDER}gpu-h200.md`",
    ],
)
def test_the_pattern_catches_the_forms_once_used(line):
    assert OUTSIDE_NOTE.search(line)


@pytest.mark.parametrize("line", ["the model specs are frozen", "mssbench/spec.py", "inspecs/x"])
def test_the_pattern_leaves_ordinary_words_alone(line):
    assert not OUTSIDE_NOTE.search(line)
