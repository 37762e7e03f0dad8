"""Errors the harness reports to users as one clear message (never a bare traceback)."""

from __future__ import annotations

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
