"""Command-line interface: a thin shell over :mod:`mssbench.api`."""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable

import click
from tabulate import tabulate

from mssbench.config import DEFAULT_OUT, RunConfig, parse_assignments
from mssbench.errors import ConfigError, MssbenchError
from mssbench.plugins import Registry, load_registry


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn harness errors into one ``Error:`` line and exit status 2.

    Set ``MSSBENCH_DEBUG=1`` to see the traceback instead.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MssbenchError as exc:
            if os.environ.get("MSSBENCH_DEBUG"):
                raise
            _fail(str(exc))
        except KeyboardInterrupt:
            click.echo(
                "\nInterrupted. The last finished epoch is checkpointed: repeat the command with "
                "--resume to continue.",
                err=True,
            )
            sys.exit(130)

    return wrapper


def plugin_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by every command that loads plugins."""
    func = click.option(
        "--plugin",
        "plugins",
        multiple=True,
        metavar="MODULE_OR_FILE",
        help="Load a plugin from a module name or a .py file (repeatable).",
    )(func)
    func = click.option(
        "--disable-plugin",
        "disabled",
        multiple=True,
        metavar="NAME",
        help="Do not load the entry-point plugin NAME (repeatable).",
    )(func)
    func = click.option(
        "--strict-plugins",
        is_flag=True,
        help="Fail if any plugin is broken instead of leaving it out.",
    )(func)
    return func


def _registry(plugins: tuple[str, ...], disabled: tuple[str, ...], strict: bool) -> Registry:
    registry = load_registry(plugins=plugins, disable=disabled, strict=strict)
    for problem in registry.problems:
        click.echo(f"Warning: {problem} (left out)", err=True)
    return registry


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mssbench")
def main() -> None:
    """mssbench: train and evaluate multi-scenario / multi-task recommendation models."""


@main.command()
@click.option(
    "--model", "-m", required=True, help="Registered model name (see `mssbench plugins`)."
)
@click.option("--dataset", "-d", required=True, help="Registered dataset name.")
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Model hyper-parameter (repeatable), e.g. -p n_experts=4 -p expert_hidden=256,128.",
)
@click.option(
    "--data-option",
    "-D",
    "data_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Dataset option (repeatable), e.g. -D protocol=official -D data_dir=/data/census.",
)
@click.option(
    "--scenarios",
    default=None,
    metavar="A,B,...",
    help="Restrict the scenario set (datasets with a 'scenarios' option), e.g. NL,ES,FR,US.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=int, default=20, show_default=True, help="Maximum epochs.")
@click.option("--batch-size", type=int, default=2048, show_default=True)
@click.option("--eval-batch-size", type=int, default=65536, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--weight-decay", type=float, default=1e-6, show_default=True)
@click.option(
    "--patience",
    type=int,
    default=2,
    show_default=True,
    help="Stop after this many epochs without validation improvement.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option(
    "--batching",
    type=click.Choice(["auto", "mixed", "scenario_pure"]),
    default="auto",
    show_default=True,
    help="auto takes the model's declared default (mixed for most).",
)
@click.option(
    "--head",
    type=click.Choice(["auto", "direct", "esmm"]),
    default="auto",
    show_default=True,
    help="esmm: CTCVR = CTR x CVR (log space) on any model; auto takes the model's default.",
)
@click.option(
    "--max-steps-per-epoch",
    type=int,
    default=0,
    show_default=True,
    help="Cap training steps per epoch (0 = full pass); for smoke runs.",
)
@click.option(
    "--out",
    default=lambda: os.environ.get("MSSBENCH_RUNS_DIR", DEFAULT_OUT),
    show_default=f"$MSSBENCH_RUNS_DIR or ./{DEFAULT_OUT}",
    help="Directory of run records.",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run of the same config.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@plugin_options
@handle_errors
def run(
    model: str,
    dataset: str,
    params: tuple[str, ...],
    data_options: tuple[str, ...],
    plugins: tuple[str, ...],
    disabled: tuple[str, ...],
    strict_plugins: bool,
    no_progress: bool,
    scenarios: str | None,
    **options: Any,
) -> None:
    """Train MODEL on DATASET, stop early on validation, report test AUC and logloss."""
    from mssbench import api
    from mssbench.metrics import metrics_table

    registry = _registry(plugins, disabled, strict_plugins)
    options_given = parse_assignments(data_options, "--data-option")
    if scenarios is not None:
        if "scenarios" not in registry.dataset(dataset).options:
            raise ConfigError(f"dataset {dataset!r} has no 'scenarios' option to restrict")
        options_given["scenarios"] = scenarios
    config = RunConfig(
        model=model,
        dataset=dataset,
        params=parse_assignments(params, "--param"),
        data_options=options_given,
        progress=not no_progress,
        **options,
    )
    result = api.run(config, registry=registry, log=lambda m: click.echo(m, err=True))
    rec = result.record
    click.echo("")
    click.echo(
        f"Test metrics: {rec['model']['name']} on {rec['protocol']['id']} "
        f"(best epoch {rec['training']['best_epoch']} of {rec['training']['epochs_run']}, "
        f"seed {config.seed})"
    )
    click.echo(metrics_table(result.test_metrics))
    if result.oracle_metrics is not None:
        click.echo(
            "\nOracle (the true probabilities of this synthetic data; no model can beat it):"
        )
        click.echo(metrics_table(result.oracle_metrics))
    speed = rec["training"]["train_samples_per_s"] or 0.0
    click.echo(
        f"\n{rec['model']['n_params']:,} parameters, {speed:,.0f} training samples/s, "
        f"{rec['wall_seconds']:.1f} s wall time on {rec['environment']['hardware']['device']}"
    )
    click.echo(f"Run record: {result.path}")


@main.command("plugins")
@plugin_options
@handle_errors
def plugins_cmd(plugins: tuple[str, ...], disabled: tuple[str, ...], strict_plugins: bool) -> None:
    """List registered models and datasets with the plugin that provides each."""
    registry = load_registry(plugins=plugins, disable=disabled, strict=strict_plugins)
    rows = [
        ["model", name, reg.plugin, reg.spec.summary]
        for name, reg in sorted(registry.models.items())
    ]
    rows += [
        ["dataset", name, reg.plugin, reg.spec.summary]
        for name, reg in sorted(registry.datasets.items())
    ]
    click.echo(tabulate(rows, headers=["kind", "name", "plugin", "summary"], tablefmt="simple"))
    if registry.problems:
        click.echo("\nBroken plugins (left out):")
        for problem in registry.problems:
            click.echo(f"  {problem}")


@main.group()
def data() -> None:
    """Prepare datasets that users download themselves."""


@data.command("prepare")
@click.argument("dataset")
@click.option(
    "--source",
    required=True,
    type=click.Path(file_okay=False, path_type=str),
    help="Directory holding the downloaded files.",
)
@click.option(
    "--dest",
    default=None,
    help="Where to write the prepared data (default: $MSSBENCH_DATA_DIR/DATASET, "
    "else ~/.cache/mssbench/DATASET).",
)
@plugin_options
@handle_errors
def data_prepare(
    dataset: str,
    source: str,
    dest: str | None,
    plugins: tuple[str, ...],
    disabled: tuple[str, ...],
    strict_plugins: bool,
) -> None:
    """Convert downloaded files of DATASET into mssbench's cache."""
    from pathlib import Path

    from mssbench.data import dataset_dir
    from mssbench.errors import ConfigError, DataError

    registry = _registry(plugins, disabled, strict_plugins)
    spec = registry.dataset(dataset)
    if spec.prepare is None:
        raise ConfigError(f"dataset {dataset!r} needs no preparation (it has no prepare step)")
    src = Path(source).expanduser()
    if not src.is_dir():
        raise DataError(f"--source {str(src)!r} is not a directory")
    target = dataset_dir(dataset, dest)
    rows = spec.prepare(src, target, lambda m: click.echo(m, err=True))
    if rows:
        click.echo(tabulate(rows, headers="keys", tablefmt="github", intfmt=","))
    click.echo(f"Prepared data: {target}")


if __name__ == "__main__":  # pragma: no cover
    main()
