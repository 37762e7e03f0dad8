"""Errors the harness reports to users as one clear message (never a bare traceback)."""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback
from typing import Any

#: The most characters of one user-given value quoted in a message.
BRIEF_CHARS = 80
#: The most characters of a whole message shown to a user.
MESSAGE_CHARS = 2000


def brief(value: Any, limit: int = BRIEF_CHARS) -> str:
    """``value`` (a string as is, anything else as its repr) cut to ``limit`` characters.

    A value a user gave can be megabytes long; messages quote only its start and say how
    much was left out.
    """
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def brief_repr(value: Any, limit: int = BRIEF_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters (:func:`brief`)."""
    return brief(repr(value), limit)


class MssbenchError(Exception):
    """Base class: the CLI prints ``Error: <message>`` and exits with status 2."""


class DataError(MssbenchError):
    """Input data is missing or malformed; the message names the file, line or field."""


class ConfigError(MssbenchError):
    """A configuration value (option, hyper-parameter, device, path) is invalid."""


class PluginError(MssbenchError):
    """A plugin could not be loaded or registered something invalid."""


class TrainingError(MssbenchError):
    """Training cannot go on (for example a non-finite loss)."""


#: Libraries whose frames are never "where" a plugin's error happened.
_LIBRARIES = ("torch", "numpy", "pandas", "pluggy")


def _library_dirs() -> tuple[str, ...]:
    dirs = [sysconfig.get_paths()["stdlib"]]
    for name in _LIBRARIES:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            dirs.append(os.path.dirname(module.__file__))
    return tuple(os.path.join(d, "") for d in dirs)


def describe_error(exc: BaseException) -> str:
    """``Type: message (file, line N)`` at the innermost frame of the plugin's own code.

    Frames of the standard library and of :data:`_LIBRARIES` are passed over (a model's bug
    surfaces inside ``torch``), unless there are no others.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    libraries = _library_dirs()
    own = [f for f in frames if not f.filename.startswith(libraries)]
    frame = (own or frames or [None])[-1]
    where = f" ({frame.filename}, line {frame.lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"
