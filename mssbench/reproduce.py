"""A page's suite as a config file: the YAML that ``mssbench suite --config`` reads.

:func:`mssbench.leaderboard.suite_command` rebuilds one ``mssbench suite`` command line from a
page's records; :func:`suite_file` gives the same suite as the mapping of a config file
(:mod:`mssbench.configfile`), and :func:`suite_yaml` its text. Values are the ones the command
line carries (``-p``/``-D`` as typed, options typed after :class:`~mssbench.config.RunConfig`),
so the file plans exactly the runs the command does, under the same run hashes.
"""

from __future__ import annotations

import shlex
from typing import Any, Mapping, Sequence

from omegaconf import OmegaConf

from mssbench.config import DEFAULT_OUT, RunConfig

#: File names of a page's suites, first to last (``suite.yaml``, ``suite-2.yaml``, ...).
FIRST_SUITE_FILE = "suite.yaml"

_BASE = RunConfig(model="m", dataset="d")


def suite_file_name(index: int) -> str:
    """The file name of a page's ``index``-th suite (0-based)."""
    return FIRST_SUITE_FILE if index == 0 else f"suite-{index + 1}.yaml"


def _typed(key: str, text: str) -> Any:
    """``text`` as the type of ``RunConfig.<key>``'s default (strings stay strings)."""
    default = getattr(_BASE, key, None)
    if isinstance(default, bool):
        return text.lower() in ("1", "true", "yes")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    return text


def _options(rest: Sequence[str]) -> dict[str, Any]:
    """Command-line options (``--epochs 4 -D k=v --compile``) as config-file keys."""
    out: dict[str, Any] = {}
    args = list(rest)
    i = 0
    while i < len(args):
        flag = args[i]
        key = flag.lstrip("-").replace("-", "_")
        if flag == "-D":
            name, _, value = args[i + 1].partition("=")
            out.setdefault("data_options", {})[name] = value
            i += 2
        elif flag == "--compile":
            out["compile"] = True
            i += 1
        elif flag == "--metric":
            out.setdefault("metrics", []).append(args[i + 1])
            i += 2
        elif flag == "--balancer-param":
            name, _, value = args[i + 1].partition("=")
            out.setdefault("balancer_params", {})[name] = value
            i += 2
        else:
            out[key] = _typed(key, args[i + 1])
            i += 2
    return out


def suite_file(suite_argv: Sequence[str], out: str = DEFAULT_OUT) -> dict[str, Any]:
    """The config-file mapping of a ``mssbench suite`` command line.

    Args:
        suite_argv: ``shlex.split`` of a :func:`mssbench.leaderboard.suite_command` line.
        out: Where the runs write (the page's ``mssbench leaderboard build`` reads it).
    """
    args = list(suite_argv)[2:]  # past "mssbench suite"
    plan: dict[str, Any] = {}
    params: dict[str, str] = {}
    plugins: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        flag, value = args[i], args[i + 1] if i + 1 < len(args) else None
        if flag == "--plugin":
            plugins.append(str(value))
        elif flag == "--datasets":
            plan["datasets"] = str(value).split(",")
        elif flag == "--models":
            plan["models"] = str(value).split(",")
        elif flag == "--seeds":
            plan["seeds"] = int(value) if str(value).isdigit() else str(value)
        elif flag == "-p":
            name, _, text = str(value).partition("=")
            params[name] = text
        else:
            rest.append(flag)
            if flag != "--compile":
                rest.append(str(value))
                i += 1
            i += 1
            continue
        i += 2
    if plugins:
        plan["plugins"] = plugins
    plan.update(_options(rest))
    if params:
        plan["params"] = params
    plan["out"] = out
    return plan


def suite_yaml(suite_command: str, out: str = DEFAULT_OUT, header: str = "") -> str:
    """The YAML text of :func:`suite_file` for a suite command line, with a comment header."""
    body = OmegaConf.to_yaml(OmegaConf.create(suite_file(shlex.split(suite_command), out)))
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    return "\n".join([*lines, body]) if lines else body


def suite_files(suites: Sequence[str], out: str = DEFAULT_OUT) -> Mapping[str, str]:
    """File name -> YAML text for each of a page's ``mssbench suite`` command lines."""
    return {
        suite_file_name(i): suite_yaml(
            command,
            out,
            header=(
                "This page's runs as a suite config file (the command line beside it on the "
                "page plans the same runs):\n"
                "  mssbench suite --config PATH/OF/THIS/FILE\n"
                f"  mssbench leaderboard build {out}"
            ),
        )
        for i, command in enumerate(suites)
    }


# --- A record's command line, parsed back ---------------------------------------------------

#: Options of ``mssbench run`` and ``mssbench suite`` that are :class:`RunConfig` fields and
#: reach the record's config unchanged (the others are checked through ``run_hash``).
_SAME_IN_CONFIG = (
    "epochs",
    "batch_size",
    "eval_batch_size",
    "lr",
    "weight_decay",
    "patience",
    "device",
    "max_steps_per_epoch",
    "precision",
    "compile",
    "step",
    "metrics",
    "train_rows",
    "pretrain",
    "pretrain_epochs",
)


def _given(ctx: Any) -> dict[str, Any]:
    """The values typed on the command line (not defaults, not a ``--config`` file)."""
    from click.core import ParameterSource

    return {
        name: value
        for name, value in ctx.params.items()
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    }


def _suite_names(text: str) -> list[str] | None:
    """``--models``/``--datasets`` as names (None for ``all``)."""
    return None if text.strip() == "all" else [n.strip() for n in text.split(",")]


def _identity_mismatch(name: str, given: Mapping[str, Any], record: Mapping[str, Any]) -> str:
    from mssbench.suite import parse_seeds

    model, dataset = str(record["model"]["name"]), str(record["dataset"]["name"])
    seed = record["config"].get("seed")
    if name == "run":
        for key, want in (("model", model), ("dataset", dataset), ("seed", seed)):
            if key in given and given[key] != want:
                return f"it runs {key} {given[key]!r}, the record {want!r}"
        return ""
    for key, want in (("models", model), ("datasets", dataset)):
        names = _suite_names(str(given.get(key, "all")))
        if names is not None and want not in names:
            return f"its --{key} {given[key]!r} do not include {want!r}"
    if "seeds" in given and seed not in parse_seeds(str(given["seeds"])):
        return f"its --seeds {given['seeds']!r} do not include seed {seed!r}"
    return ""


def command_mismatch(record: Mapping[str, Any]) -> str:
    """Why a record's ``mssbench run``/``suite`` command line does not give its config.

    The command is parsed by the CLI's own parser; the model, dataset and seed must be ones it
    runs and every training option typed on it must be the recorded one. Returns ``""`` when
    it does (or the command is another ``mssbench`` subcommand that parses), else the reason.
    """
    import click

    from mssbench.cli import main

    argv = [str(a) for a in record["command"]]
    name = argv[1] if len(argv) > 1 else ""
    sub = main.commands.get(name)
    if sub is None:
        return f"{name!r} is not an mssbench command"
    if isinstance(sub, click.Group):
        return ""  # data, schema, leaderboard: none of them runs a model
    try:  # the parser alone: unknown options and stray words, before any value is checked
        _, extra, _ = sub.make_parser(click.Context(sub)).parse_args(argv[2:])
        if extra:
            raise click.UsageError(f"unexpected argument {extra[0]!r}")
        sub_ctx = sub.make_context(f"mssbench {name}", argv[2:], resilient_parsing=True)
    except click.ClickException as exc:
        return f"does not parse as an mssbench command line: {exc.format_message()}"
    if name not in ("run", "suite"):
        return ""
    given = _given(sub_ctx)
    wrong = _identity_mismatch(name, given, record)
    if wrong:
        return wrong
    config = record["config"]
    for key in _SAME_IN_CONFIG:
        value = list(given[key]) if isinstance(given.get(key), tuple) else given.get(key)
        if key in given and key in config and value != config[key]:
            return f"it gives {key} {value!r}, the record's config {config[key]!r}"
    return ""
