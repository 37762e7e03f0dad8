"""Atomic writes: records, checkpoints, caches and pages are either whole or absent.

Every file the harness writes goes through :func:`atomic_write`: the content is written to a
hidden temporary file in the target's directory, flushed to disk, then moved into place in one
step. Files are created with the permissions ``open`` gives (``0666`` less the user's umask),
like any other file the user creates, not the ``0600`` of :func:`tempfile.mkstemp`.

A whole directory (a prepared dataset cache) is put in place by :func:`replace_dir`; a process
killed in the middle of that swap leaves a state :func:`recover_dir` turns back into the
previous cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import IO, Any, Callable, Mapping

__all__ = [
    "atomic_write",
    "recover_dir",
    "replace_dir",
    "work_dir",
    "write_json",
    "write_text",
]


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(
    path: str | Path,
    write: Callable[[IO[Any]], None],
    *,
    binary: bool = False,
    overwrite: bool = True,
) -> Path:
    """Write ``path`` through ``write(file)`` so that readers see the old file or the new one.

    Args:
        path: The file to write; its directory is created if needed.
        write: Receives the open temporary file (text: UTF-8, line ends untranslated; or binary)
            and writes the whole content.
        binary: Open the temporary file in binary mode.
        overwrite: Replace an existing ``path``. Without it an existing file is never replaced:
            the call raises :class:`FileExistsError` and nothing is written.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    mode = "xb" if binary else "x"
    kwargs: dict[str, Any] = {} if binary else {"encoding": "utf-8", "newline": "\n"}
    try:
        with open(tmp, mode, **kwargs) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # FileExistsError rather than replace
            os.unlink(tmp)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return path


def write_text(path: str | Path, text: str, *, overwrite: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda fh: fh.write(text), overwrite=overwrite)


def write_json(path: str | Path, payload: Mapping[str, Any], *, overwrite: bool = True) -> Path:
    """Write ``payload`` as indented JSON (NaN allowed) to ``path`` atomically."""

    def write(fh: IO[str]) -> None:
        json.dump(payload, fh, indent=1, sort_keys=False, allow_nan=True, default=str)
        fh.write("\n")

    return atomic_write(path, write, overwrite=overwrite)


def work_dir(final: str | Path, tag: str = "tmp") -> Path:
    """A new empty hidden directory beside ``final`` to build it in: ``.{name}.{tag}-{pid}-{id}``.

    Unlike :func:`tempfile.mkdtemp` (always ``0700``) it is created with the user's umask, so
    the directory renamed into place later has the permissions of any other the user makes.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    path = final.parent / f".{final.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def _old_name(dest: Path, pid: int) -> Path:
    return dest.parent / f".{dest.name}.old-{pid}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def replace_dir(work: Path, dest: Path) -> None:
    """Put the finished directory ``work`` at ``dest``, replacing a previous ``dest``.

    POSIX has no portable atomic exchange of two directories, so the previous ``dest`` is
    first renamed to ``.{dest.name}.old-{pid}``, then ``work`` to ``dest``. A process killed
    between the two renames leaves no ``dest`` and the old one beside it under that name:
    :func:`recover_dir` renames it back.
    """
    work, dest = Path(work), Path(dest)
    if dest.exists():
        old = _old_name(dest, os.getpid())
        shutil.rmtree(old, ignore_errors=True)
        os.rename(dest, old)
        os.rename(work, dest)
        _fsync_dir(dest.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(work, dest)
        _fsync_dir(dest.parent)


def recover_dir(dest: Path, log: Callable[[str], None] | None = None) -> bool:
    """Undo a :func:`replace_dir` that was killed between its two renames.

    When ``dest`` is missing and a ``.{dest.name}.old-{pid}`` of a process that is gone lies
    beside it, that directory (the previous ``dest``) is renamed back. Old directories of dead
    processes next to an existing ``dest`` are leftovers of a finished swap and are removed.

    Returns:
        True when a previous ``dest`` was restored.
    """
    dest = Path(dest)
    pattern = re.compile(rf"^\.{re.escape(dest.name)}\.old-(\d+)$")
    olds = []
    for p in dest.parent.glob(f".{dest.name}.old-*"):
        m = pattern.match(p.name)
        if m and p.is_dir() and not _pid_alive(int(m[1])):
            olds.append(p)
    if not olds:
        return False
    olds.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    restored = False
    if not dest.exists():
        try:
            os.rename(olds[0], dest)
        except OSError:
            return False  # another process restored or replaced it first
        restored = True
        if log is not None:
            log(f"restored {dest} from {olds[0].name} (left by an interrupted prepare)")
        olds = olds[1:]
    for p in olds:
        shutil.rmtree(p, ignore_errors=True)
    return restored
