"""Errors the harness reports to users as one clear message (never a bare traceback)."""


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
