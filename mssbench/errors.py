"""Errors the harness reports to users as one clear message (never a bare traceback)."""

import traceback


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


def describe_error(exc: BaseException) -> str:
    """``Type: message (file, line N)``, the place being the innermost frame that raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
