"""Command-line interface: a thin shell over :mod:`mssbench.api`."""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import traceback
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import click
from tabulate import tabulate

from mssbench.balancing import resolve_balancer
from mssbench.config import (
    BIAS_INITS,
    DEFAULT_OUT,
    PRECISIONS,
    PRETRAIN_METHODS,
    SELECTIONS,
    STEPS,
    WEIGHT_DECAY_MODES,
    RunConfig,
    parse_assignments,
)
from mssbench.configfile import RAY_ONLY, config_file_option, file_only_params
from mssbench.errors import MESSAGE_CHARS, ConfigError, MssbenchError, brief
from mssbench.plugins import Registry, load_registry
from mssbench.presets import PRESETS, get_preset
from mssbench.spec import BATCHINGS, HEADS
from mssbench.trackers import configure as configure_trackers
from mssbench.trackers import registered as registered_trackers

#: The defaults of every run option, from the one place they are declared.
RUN_DEFAULTS = RunConfig(model="", dataset="")


def _fail(message: str, code: int = 2) -> None:
    if len(message) > MESSAGE_CHARS:  # a huge value must not flood the terminal
        message = brief(message, MESSAGE_CHARS)
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _internal(exc: Exception) -> str:
    """One line for an unexpected exception: its type, message and where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    text = " ".join(str(exc).split())
    return (
        f"unexpected {type(exc).__name__}: {brief(text, 500)}{where}. This is a bug; "
        "MSSBENCH_DEBUG=1 shows the traceback"
    )


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn harness errors into one ``Error:`` line and exit status 2.

    Any other exception is a bug: it is reported as one line naming its type and the file and
    line that raised it, with exit status 3. Set ``MSSBENCH_DEBUG=1`` to see the traceback
    instead.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MssbenchError as exc:
            if os.environ.get("MSSBENCH_DEBUG"):
                raise
            _fail(str(exc))
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - never a bare traceback for a user
            if os.environ.get("MSSBENCH_DEBUG"):
                raise
            _fail(_internal(exc), code=3)
        except KeyboardInterrupt:
            ctx = click.get_current_context(silent=True)
            command = ctx.info_name if ctx is not None else None
            click.echo("\nInterrupted." + INTERRUPTED.get(command, ""), err=True)
            sys.exit(130)

    return wrapper


#: What an interrupted command leaves behind, by command name.
INTERRUPTED = {
    "run": " The last finished epoch is checkpointed: repeat the command with --resume to "
    "continue.",
    "suite": " Repeat the command to continue: finished runs are skipped, and the runs of the "
    "local executor continue from their last finished epoch (runs on Ray start again).",
    "prepare": " Nothing was written that a run would read: repeat the command.",
}


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


def _progress(no_progress: bool) -> bool:
    """Progress bars unless hidden, or stderr is not a terminal (a log file, CI)."""
    return not no_progress and sys.stderr.isatty()


def _registry(plugins: tuple[str, ...], disabled: tuple[str, ...], strict: bool) -> Registry:
    registry = load_registry(plugins=plugins, disable=disabled, strict=strict)
    for problem in registry.problems:
        click.echo(f"Warning: {problem} (left out)", err=True)
    return registry


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mssbench")
def main() -> None:
    """mssbench: train and evaluate multi-scenario / multi-task recommendation models."""


def training_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by ``run`` and ``suite``: how a run is trained and where it goes."""
    decorators = [
        click.option(
            "--data-option",
            "-D",
            "data_options",
            multiple=True,
            metavar="KEY=VALUE",
            help="Dataset option (repeatable), e.g. -D protocol=official -D data_dir=/data/census.",
        ),
        click.option(
            "--scenarios",
            default=None,
            metavar="A,B,...",
            help="Restrict the scenario set (datasets with a scenarios option), e.g. NL,ES,FR,US.",
        ),
        click.option(
            "--epochs",
            type=int,
            default=RUN_DEFAULTS.epochs,
            show_default=True,
            help="Maximum epochs.",
        ),
        click.option(
            "--batch-size",
            type=int,
            default=RUN_DEFAULTS.batch_size,
            show_default=True,
            help="Training batch rows.",
        ),
        click.option(
            "--eval-batch-size",
            type=int,
            default=RUN_DEFAULTS.eval_batch_size,
            show_default=True,
            help="Rows per validation and test batch.",
        ),
        click.option(
            "--lr",
            type=float,
            default=RUN_DEFAULTS.lr,
            show_default=True,
            help="Adam learning rate.",
        ),
        click.option(
            "--weight-decay",
            type=float,
            default=RUN_DEFAULTS.weight_decay,
            show_default=True,
            help="Weight decay of the weight matrices (not embeddings, biases, norms); "
            "models that declare their own groups decay as their paper does.",
        ),
        click.option(
            "--weight-decay-mode",
            type=click.Choice(WEIGHT_DECAY_MODES),
            default=RUN_DEFAULTS.weight_decay_mode,
            show_default=True,
            help="coupled: Adam with L2 (decay added to the gradient); decoupled: AdamW.",
        ),
        click.option(
            "--patience",
            type=int,
            default=RUN_DEFAULTS.patience,
            show_default=True,
            help="Stop after this many epochs without validation improvement.",
        ),
        click.option(
            "--device",
            default=RUN_DEFAULTS.device,
            show_default=True,
            help="auto, cpu, cuda, cuda:N or mps.",
        ),
        click.option(
            "--batching",
            type=click.Choice(["auto", *BATCHINGS]),
            default=RUN_DEFAULTS.batching,
            show_default=True,
            help="auto takes the model's declared default (mixed for most).",
        ),
        click.option(
            "--head",
            type=click.Choice(["auto", *HEADS]),
            default=RUN_DEFAULTS.head,
            show_default=True,
            help="esmm: CTCVR = CTR x CVR in log space, any model; auto: the model default.",
        ),
        click.option(
            "--max-steps-per-epoch",
            type=int,
            default=RUN_DEFAULTS.max_steps_per_epoch,
            show_default=True,
            help="Cap training steps per epoch (0 = full pass); for smoke runs.",
        ),
        click.option(
            "--select",
            type=click.Choice(list(SELECTIONS)),
            default=RUN_DEFAULTS.select,
            show_default=True,
            help="Epoch selection on validation: mean_logloss (mean over tasks) or mean_auc.",
        ),
        click.option(
            "--bias-init",
            type=click.Choice(BIAS_INITS),
            default=RUN_DEFAULTS.bias_init,
            show_default=True,
            help="base_rate: every task's output bias starts at its training base rate "
            "(mean prediction at step 0 = base rate); none: the model's own initialisation.",
        ),
        click.option(
            "--precision",
            type=click.Choice(PRECISIONS),
            default=RUN_DEFAULTS.precision,
            show_default=True,
            help="bf16: bfloat16 autocast of forward passes (GPUs with bf16 support).",
        ),
        click.option(
            "--compile",
            "compile",
            is_flag=True,
            help="Train through torch.compile (pays a compile time once; fastest on GPU).",
        ),
        click.option(
            "--step",
            type=click.Choice(STEPS),
            default=RUN_DEFAULTS.step,
            show_default=True,
            help="graph: replay each full training batch from one CUDA graph of the whole step "
            "(GPU; training data kept on the GPU).",
        ),
        click.option(
            "--flush-denormal",
            "flush_denormal",
            is_flag=True,
            help="Flush denormal numbers to zero on the CPU while training and evaluating: "
            "up to 12x faster on Intel CPUs once weights or Adam moments decay that far; "
            "numbers can differ from a run without it (recorded, part of the run's identity).",
        ),
        click.option(
            "--metric",
            "metrics",
            multiple=True,
            metavar="NAME",
            help="Also report this registered test metric (repeatable; `mssbench plugins` "
            "lists them), e.g. --metric pr_auc --metric ne.",
        ),
        click.option(
            "--train-rows",
            type=int,
            default=RUN_DEFAULTS.train_rows,
            show_default=True,
            help="Train on this many rows of the training split, a fixed nested sample "
            "(0 = all); validation and test unchanged.",
        ),
        click.option(
            "--pretrain",
            type=click.Choice(PRETRAIN_METHODS),
            default=RUN_DEFAULTS.pretrain,
            show_default=True,
            help="contrastive: InfoNCE over two field-masked views of each row before "
            "supervised training (models with a shared representation).",
        ),
        click.option(
            "--pretrain-epochs",
            type=int,
            default=RUN_DEFAULTS.pretrain_epochs,
            show_default=True,
            help="Epochs of --pretrain.",
        ),
        click.option(
            "--balancer",
            default=RUN_DEFAULTS.balancer,
            show_default=True,
            metavar="NAME",
            help="How the task losses are combined: fixed (the model's task weights), "
            "uncertainty, gradnorm, pcgrad, or a plugin's balancer (`mssbench plugins`).",
        ),
        click.option(
            "--balancer-param",
            "balancer_params",
            multiple=True,
            metavar="KEY=VALUE",
            help="Balancer parameter (repeatable), e.g. --balancer-param alpha=1.5; "
            "`mssbench plugins NAME` lists them.",
        ),
        click.option(
            "--tracker",
            "trackers",
            multiple=True,
            metavar="NAME",
            help="Report the run to this experiment tracker (repeatable): mlflow, tensorboard "
            "(pip install 'mssbench[mlflow]' / 'mssbench[tensorboard]'); `mssbench plugins` "
            "lists them.",
        ),
        click.option(
            "--tracker-uri",
            "tracker_uris",
            multiple=True,
            metavar="NAME=URI",
            help="Where tracker NAME writes (repeatable), e.g. mlflow=sqlite:////tmp/mlflow.db, "
            "tensorboard=/tmp/tb [default: sqlite:///OUT/.mlflow/mlflow.db, OUT/tensorboard].",
        ),
        click.option(
            "--out",
            default=DEFAULT_OUT,
            envvar="MSSBENCH_RUNS_DIR",
            show_envvar=True,
            show_default=True,
            help="Directory of run records.",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


@main.command()
@click.option("--model", "-m", help="Registered model name (see `mssbench plugins`).")
@click.option("--dataset", "-d", help="Registered dataset name.")
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Model hyper-parameter (repeatable), e.g. -p n_experts=4 -p expert_hidden=256,128.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of initialisation and shuffling."
)
@click.option(
    "--preset",
    default=None,
    metavar="NAME",
    help="Start from a named configuration; options and -p given here win. "
    + "; ".join(f"{p.name}: {p.summary}" for p in PRESETS.values())
    + ".",
)
@training_options
@click.option("--resume", is_flag=True, help="Continue an interrupted run of the same config.")
@click.option(
    "--no-progress",
    is_flag=True,
    help="Hide the progress bar (hidden anyway when stderr is not a terminal).",
)
@plugin_options
@handle_errors
@config_file_option("run")
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
    preset: str | None,
    **options: Any,
) -> None:
    """Train MODEL on DATASET, stop early on validation, report test AUC and logloss."""
    from mssbench import api
    from mssbench.metrics import metrics_table

    registry = _registry(plugins, disabled, strict_plugins)
    configure_trackers(registry.pm, options)
    options_given = parse_assignments(data_options, "--data-option")
    if scenarios is not None:
        if "scenarios" not in registry.dataset(dataset).options:
            raise ConfigError(f"dataset {dataset!r} has no 'scenarios' option to restrict")
        options_given["scenarios"] = scenarios
    params_given: dict[str, Any] = parse_assignments(params, "--param")
    if preset is not None:
        options, params_given = _apply_preset(preset, registry.model(model), options, params_given)
    config = RunConfig(
        model=model,
        dataset=dataset,
        params=params_given,
        data_options=options_given,
        progress=_progress(no_progress),
        preset=preset or "",
        **options,
    )
    result = api.run(config, registry=registry, log=lambda m: click.echo(m, err=True))
    if result.path is None:
        return  # a data-parallel rank other than 0: rank 0 reports
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


def _apply_preset(
    name: str, spec: Any, options: dict[str, Any], params: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Options and params with preset ``name`` filling what the command line left at default."""
    chosen = get_preset(name)
    ctx = click.get_current_context()
    given = {
        key: value
        for key, value in options.items()
        if ctx.get_parameter_source(key) is not click.core.ParameterSource.DEFAULT
    }
    return {**options, **chosen.training_for(given)}, {**chosen.params_for(spec.defaults), **params}


def _tuned_plan(registry: Registry, tuned: str, seeds: list[int], base: RunConfig) -> list:
    """``suite --tuned``: each study's best configuration at every seed, finished ones marked."""
    from mssbench.suite import mark_finished
    from mssbench.tune import tuned_jobs

    ctx = click.get_current_context()
    for name in ("models", "datasets", "params"):
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
            raise ConfigError(f"--{name} cannot be combined with --tuned (the studies fix them)")
    jobs = tuned_jobs(Path(tuned), seeds, base)
    for job in jobs:
        registry.model(job.config.model)
        registry.dataset(job.config.dataset)
    return mark_finished(jobs, registry, base.out)


def _hours_left(frame: Any, n_jobs: int) -> str:
    """One line: the wall hours the runs left should take, from the finished runs' records."""
    left = frame[frame["status"] != "finished"]
    if left.empty:
        return "Nothing left to run."
    known = left[left["hours"] != ""]["hours"].astype(float)
    line = f"{len(left)} runs left"
    if len(known):
        line += f"; {len(known)} of them should take about {known.sum():.1f} h of runs (each "
        line += "its model's median wall time in the finished records)"
        line += f", about {known.sum() / n_jobs:.1f} h at {n_jobs} at a time" if n_jobs > 1 else ""
    unknown = sorted(set(left[left["hours"] == ""]["model"]))
    return line + (f"; no finished run to tell for {', '.join(unknown)}." if unknown else ".")


def _check_executor_options(executor: str) -> None:
    """Ray's options are an error with the local executor (they would be silently ignored)."""
    if executor == "ray":
        return
    ctx = click.get_current_context()
    for name in RAY_ONLY:
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} is for --executor ray (this suite uses --executor local)")


@main.command()
@click.option("--models", default="all", show_default=True, help="all, or a comma list.")
@click.option("--datasets", help="A comma list of dataset names.")
@click.option(
    "--seeds",
    default="5",
    show_default=True,
    help="A count (5 = seeds 0-4) or a list (0,3,7; one seed alone: 2,).",
)
@click.option(
    "--jobs",
    default="auto",
    show_default=True,
    help="Runs at a time: auto = one per GPU, else one per 4 CPU cores. With --executor ray: "
    "the most runs in flight; auto = no limit (Ray runs as many as the cluster has resources for).",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this machine (worker processes); ray: one Ray task per run, records written "
    "here (pip install 'mssbench[ray]').",
)
@click.option(
    "--ray-address",
    default=None,
    metavar="ADDRESS",
    help="Ray cluster: auto (the running one), ray://HOST:10001 or HOST:6379. "
    "Default: $RAY_ADDRESS, else a new local Ray instance.",
)
@click.option(
    "--cpus-per-run",
    type=float,
    default=1.0,
    show_default=True,
    help="With --executor ray: CPUs Ray reserves per run (also its torch threads).",
)
@click.option(
    "--gpus-per-run",
    type=float,
    default=0.0,
    show_default=True,
    help="With --executor ray: GPUs Ray reserves per run (0.5: two runs share a GPU); "
    "0: runs see no GPU.",
)
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="[MODEL.]KEY=VALUE",
    help="Hyper-parameter for every model that takes KEY, or MODEL.KEY for one model.",
)
@click.option(
    "--no-progress",
    is_flag=True,
    help="Hide progress bars (always hidden with --jobs > 1 and with --executor ray).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="List every planned run (finished with its record, running, or to run, with the "
    "epochs its checkpoint holds) and stop: nothing runs or is written.",
)
@click.option(
    "--tuned",
    default=None,
    metavar="STUDY_DIR",
    type=click.Path(file_okay=False),
    help="Run the best configuration of each study in STUDY_DIR (mssbench tune) at every seed, "
    "instead of --models x --datasets.",
)
@training_options
@plugin_options
@handle_errors
@config_file_option("suite")
def suite(
    models: str,
    datasets: str,
    seeds: str,
    jobs: str,
    executor: str,
    ray_address: str | None,
    cpus_per_run: float,
    gpus_per_run: float,
    params: tuple[str, ...],
    data_options: tuple[str, ...],
    scenarios: str | None,
    plugins: tuple[str, ...],
    disabled: tuple[str, ...],
    strict_plugins: bool,
    no_progress: bool,
    dry_run: bool,
    tuned: str | None,
    **options: Any,
) -> None:
    """Run every model x dataset x seed; finished runs (same config and seed) are skipped."""
    from mssbench.suite import (
        default_jobs,
        parse_seeds,
        plan,
        plan_frame,
        run_suite,
        summary_frame,
    )

    _check_executor_options(executor)
    if executor == "ray":
        from mssbench.suite_ray import check_resources, require_ray

        require_ray()
        check_resources(cpus_per_run, gpus_per_run, [options["device"]])
    registry = _registry(plugins, disabled, strict_plugins)
    configure_trackers(registry.pm, options)
    data_given = parse_assignments(data_options, "--data-option")
    if scenarios is not None:
        data_given["scenarios"] = scenarios
    try:
        n_jobs = (0 if executor == "ray" else default_jobs()) if jobs == "auto" else int(jobs)
    except ValueError:
        raise ConfigError(f"--jobs expects a number or auto, got {jobs!r}") from None
    if n_jobs < 1 and jobs != "auto":
        raise ConfigError(f"--jobs must be >= 1, got {n_jobs}")
    base = RunConfig(
        model="",
        dataset="",
        data_options=data_given,
        progress=_progress(no_progress),
        resume=True,  # an interrupted run continues from its last epoch
        **options,
    )
    base.validate()
    # An unknown balancer or parameter stops the suite before any run starts.
    resolve_balancer(
        registry, base.balancer, base.balancer_params, distributed=False, step=base.step
    )
    if tuned is not None:
        planned, notes = _tuned_plan(registry, tuned, parse_seeds(seeds), base), []
    else:
        planned, notes = plan(
            registry,
            models,
            datasets,
            parse_seeds(seeds),
            base,
            parse_assignments(params, "--param"),
            optional=file_only_params(),
        )
    for note in notes:
        click.echo(f"Note: {note}", err=True)
    skipped = sum(j.status == "skipped" for j in planned)
    if executor == "ray":
        from mssbench.suite_ray import describe_resources, run_suite_ray

        how = f"on Ray, {describe_resources(cpus_per_run, gpus_per_run)} each"
        how += f", at most {n_jobs} at a time" if n_jobs else ""
    else:
        how = f"{n_jobs} at a time"
    click.echo(
        f"Suite: {len(planned)} runs, {skipped} already finished in {base.out}, "
        f"{len(planned) - skipped} to run, {how}.",
        err=True,
    )
    if dry_run:
        frame = plan_frame(planned, registry, base.out)
        table = tabulate(
            frame, headers="keys", tablefmt="github", showindex=False, disable_numparse=True
        )
        click.echo(table)
        click.echo(_hours_left(frame, n_jobs if executor == "local" else 0))
        return
    log = functools.partial(click.echo, err=True)
    if executor == "ray":
        run_suite_ray(
            planned,
            plugins,
            disabled,
            address=ray_address,
            cpus_per_run=cpus_per_run,
            gpus_per_run=gpus_per_run,
            max_in_flight=n_jobs or None,
            log=log,
        )
    else:
        run_suite(planned, n_jobs, plugins, disabled, log=log)
    frame = summary_frame(planned, base.out)
    click.echo("")
    click.echo(tabulate(frame, headers="keys", tablefmt="github", showindex=False))
    failed = [j for j in planned if j.status == "error"]
    for job in failed:
        d, m, sd = job.key
        click.echo(f"error: {d} {m} seed {sd}: {job.error}")
    click.echo(f"Records: {base.out}")
    if failed:
        sys.exit(1)


@main.command()
@click.option("--model", "-m", required=True, help="Registered model name.")
@click.option("--dataset", "-d", required=True, help="Registered dataset name.")
@click.option("--trials", type=int, default=20, show_default=True, help="Trials of the study.")
@click.option(
    "--budget-samples",
    type=int,
    default=2_000_000,
    show_default=True,
    help="Training rows per trial, the same for every model (spread over --epochs epochs).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the sampler and the trials."
)
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Fix a hyper-parameter (repeatable); it is then left out of the search.",
)
@click.option(
    "--preset",
    default=None,
    metavar="NAME",
    help="Start the trials from a named configuration (its hyper-parameters apply where the "
    "search space does not set them).",
)
@click.option("--jobs", type=int, default=1, show_default=True, help="Trials at once.")
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: --jobs processes here; ray: one Ray task per trial, the study on this machine.",
)
@click.option("--ray-address", default=None, help="Ray address (executor ray).")
@click.option("--cpus-per-run", type=float, default=1.0, show_default=True,
              help="CPUs per trial (executor ray).")
@click.option("--gpus-per-run", type=float, default=0.0, show_default=True,
              help="GPUs per trial (executor ray).")
@training_options
@plugin_options
@handle_errors
def tune(
    model: str,
    dataset: str,
    trials: int,
    budget_samples: int,
    seed: int,
    params: tuple[str, ...],
    preset: str | None,
    jobs: int,
    executor: str,
    ray_address: str | None,
    cpus_per_run: float,
    gpus_per_run: float,
    data_options: tuple[str, ...],
    scenarios: str | None,
    plugins: tuple[str, ...],
    disabled: tuple[str, ...],
    strict_plugins: bool,
    **options: Any,
) -> None:
    """Tune MODEL on DATASET: Optuna TPE over its search space, selected on validation only.

    The study lives in --out (default mssbench-tune/DATASET_MODEL); giving the same command
    again continues an interrupted study. The best configuration goes to best.yaml there.
    """
    from mssbench import tune as tuning

    tuning.require_optuna()
    _check_executor_options(executor)
    registry = _registry(plugins, disabled, strict_plugins)
    configure_trackers(registry.pm, options)
    data_given = parse_assignments(data_options, "--data-option")
    if scenarios is not None:
        data_given["scenarios"] = scenarios
    params_given: dict[str, Any] = parse_assignments(params, "--param")
    fixed = tuple(params_given)
    if preset is not None:
        options, params_given = _apply_preset(preset, registry.model(model), options, params_given)
    ctx = click.get_current_context()
    out = options.pop("out")
    if ctx.get_parameter_source("out") is click.core.ParameterSource.DEFAULT:
        out = str(Path(tuning.DEFAULT_TUNE_OUT) / f"{dataset}_{model}")
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    base = RunConfig(model=model, dataset=dataset, params=params_given, data_options=data_given,
                     preset=preset or "", **options)
    study = tuning.prepare(
        tuning.Study(base, tuning.Budget(trials, budget_samples), seed, Path(out), jobs,
                     plugins, disabled, fixed),
        registry,
    )
    log = functools.partial(click.echo, err=True)
    if executor == "ray":
        from mssbench.tune_ray import run_study_ray

        found = run_study_ray(study, ray_address, cpus_per_run, gpus_per_run, log=log)
    else:
        found = tuning.run_study(study, log=log)
    run_cmd, suite_cmd = tuning.commands(Path(out))
    click.echo(f"Best trial {found['trial']}: validation {found['value']:.5f}")
    for key, value in found["point"].items():
        click.echo(f"  {key} = {value}")
    click.echo(f"Best configuration: {Path(out) / tuning.BEST_FILE}")
    click.echo(f"Rerun it:          {run_cmd}")
    click.echo(f"Over 5 seeds:      {suite_cmd}")


@main.command()
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--data-option",
    "-D",
    "data_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Option of the datasets checked (repeatable), e.g. -D n_rows=20000.",
)
@plugin_options
@handle_errors
def check(
    names: tuple[str, ...],
    data_options: tuple[str, ...],
    plugins: tuple[str, ...],
    disabled: tuple[str, ...],
    strict_plugins: bool,
) -> None:
    """Run the plugin conformance suite on NAMES (models, datasets, metrics or balancers)."""
    registry = _registry(plugins, disabled, strict_plugins)
    options = _dataset_options(registry, names, parse_assignments(data_options, "--data-option"))
    failed = False
    for name in names:
        kind, results = _conformance(registry, name, options.get(name, {}))
        rows = [[r.check, r.status, r.message] for r in results]
        click.echo(f"\n{name} ({kind}, plugin {registry.plugin_of(kind, name)})")
        click.echo(tabulate(rows, headers=["check", "status", "message"], tablefmt="simple"))
        failed |= any(r.status == "failed" for r in results)
    if failed:
        sys.exit(1)


@main.command()
@click.argument("records", nargs=-1, required=True, type=click.Path())
@click.option(
    "--tolerance",
    type=float,
    default=0.0,
    show_default=True,
    help="Largest absolute difference accepted for a number that is not identical (0: every "
    "number must repeat bit for bit, as on the recorded hardware and library versions).",
)
@click.option(
    "--out",
    default=None,
    help="Keep the repeated runs' records here (default: a temporary directory, removed).",
)
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    default=None,
    help="Repeat only this many of the records, drawn at random (a spot check of a page).",
)
@click.option(
    "--sample-seed", type=int, default=0, show_default=True, help="Seed of the --sample draw."
)
@click.option(
    "--same-hardware",
    is_flag=True,
    help="Leave out records written on another CPU model, GPU model or device type (their "
    "numbers are not expected to repeat bit for bit here); each is named.",
)
@plugin_options
@handle_errors
def repeat(
    records: tuple[str, ...],
    tolerance: float,
    out: str | None,
    sample: int | None,
    sample_seed: int,
    same_hardware: bool,
    plugins: tuple[str, ...],
    disabled: tuple[str, ...],
    strict_plugins: bool,
) -> None:
    """Run each record's configuration again and compare its numbers with the record's.

    RECORDS are record files or directories of them (their finished runs of installed model
    versions). Every test cell and the training facts (epochs run, best epoch, best validation
    score) are compared. Exit status 1 if any number differs by more than --tolerance, 2 if a
    record could not be repeated at all (each is reported and the others still run). Bit for
    bit needs the recorded hardware: a record written on another CPU model, GPU model or device
    type is named as such, and its differences may be the hardware's alone (--same-hardware
    leaves such records out).
    """
    from mssbench.repeat import record_paths

    if tolerance < 0 or math.isnan(tolerance):
        raise ConfigError(f"--tolerance must be a number >= 0, got {tolerance}")
    registry = _registry(plugins, disabled, strict_plugins)
    paths, left_out = record_paths(records, registry, sample, sample_seed)
    if left_out:
        click.echo(f"{left_out} record(s) of model versions not installed here left out")
    if not paths:
        raise ConfigError(f"no repeatable run record in {', '.join(records)}")
    if sample is not None:
        click.echo(f"Repeating {len(paths)} record(s) drawn with --sample-seed {sample_seed}")
    if same_hardware:
        paths = _on_this_hardware(paths)
    outcomes = Counter(_repeat_one(path, registry, out, tolerance) for path in paths)
    if len(paths) > 1:
        click.echo(
            f"{len(paths)} records: {outcomes['repeats']} repeat, "
            f"{outcomes['differs'] + outcomes['differs elsewhere']} differ "
            f"({outcomes['differs elsewhere']} of them on other hardware), "
            f"{outcomes['error']} could not be repeated"
        )
    if outcomes["error"]:
        sys.exit(2)
    if outcomes["differs"] or outcomes["differs elsewhere"]:
        sys.exit(1)


def _on_this_hardware(paths: list[str]) -> list[str]:
    """``paths`` less the records written on other hardware (each named); none left: an error."""
    from mssbench.repeat import mismatch

    kept = []
    for path in paths:
        try:
            elsewhere = mismatch(path)
        except MssbenchError:  # not a repeatable record: reported as such when its turn comes
            elsewhere = None
        if elsewhere:
            click.echo(f"left out: {path}: {elsewhere}")
        else:
            kept.append(path)
    if not kept:
        raise ConfigError(f"none of the {len(paths)} record(s) was written on this hardware")
    return kept


def _repeat_one(path: str, registry: Registry, out: str | None, tolerance: float) -> str:
    """Repeat one record and report it: ``repeats``, ``differs``, ``differs elsewhere``, ``error``.

    ``differs elsewhere``: it differs, and the record was written on other hardware.
    """
    from mssbench.repeat import repeat as repeat_run

    try:
        comparison = repeat_run(path, registry, out=out, tolerance=tolerance, log=click.echo)
    except MssbenchError as exc:
        click.echo(f"Error: cannot repeat {brief(str(exc), MESSAGE_CHARS)}", err=True)
        return "error"
    click.echo(comparison.summary())
    for note in comparison.environment:
        click.echo(f"  environment: {note}")
    if comparison.repeated_path:
        click.echo(f"  repeated run: {comparison.repeated_path}")
    if comparison.repeats:
        return "repeats"
    return "differs elsewhere" if comparison.other_hardware else "differs"


def _conformance(registry: Registry, name: str, options: dict[str, str]) -> tuple[str, list]:
    """The kind of ``name`` (model, dataset, metric, balancer: first found) and its results."""
    from mssbench.testing import run_checks, run_dataset_checks, run_metric_checks

    if name in registry.models:
        return "model", run_checks(registry.model(name))
    if name in registry.datasets:
        return "dataset", run_dataset_checks(registry.dataset(name), options)
    if name in registry.metrics:
        return "metric", run_metric_checks(registry.metric(name))
    if name in registry.balancers:
        from mssbench.testing import run_balancer_checks

        return "balancer", run_balancer_checks(registry.balancer(name))
    known = {
        "models": registry.models,
        "datasets": registry.datasets,
        "metrics": registry.metrics,
        "balancers": registry.balancers,
    }
    listed = "; ".join(f"{kind}: {', '.join(sorted(names))}" for kind, names in known.items())
    raise ConfigError(f"no model, dataset, metric or balancer named {name!r} ({listed})")


def _dataset_options(registry: Registry, names: tuple[str, ...], given: dict[str, str]) -> dict:
    """``{dataset: its options among given}``; a key no named dataset declares is an error."""
    datasets = [n for n in names if n in registry.datasets and n not in registry.models]
    declared = {n: registry.dataset(n).options for n in datasets}
    for key in given:
        if not any(key in opts for opts in declared.values()):
            valid = sorted({k for opts in declared.values() for k in opts}) or ["(none)"]
            raise ConfigError(
                f"no dataset checked takes the data option {key!r}; valid: {', '.join(valid)}"
            )
    return {n: {k: v for k, v in given.items() if k in opts} for n, opts in declared.items()}


@main.command("plugins")
@click.argument("name", required=False)
@plugin_options
@handle_errors
def plugins_cmd(
    name: str | None, plugins: tuple[str, ...], disabled: tuple[str, ...], strict_plugins: bool
) -> None:
    """List registered models, datasets, metrics, balancers and trackers; NAME: describe it in full.

    Plugins that only implement lifecycle hooks are listed as kind ``hooks``.
    """
    registry = load_registry(plugins=plugins, disable=disabled, strict=strict_plugins)
    if name is not None:
        from mssbench.describe import describe

        click.echo(describe(registry, name))
        return
    rows = [
        ["model", name, reg.plugin, reg.spec.summary]
        for name, reg in sorted(registry.models.items())
    ]
    rows += [
        ["dataset", name, reg.plugin, reg.spec.summary]
        for name, reg in sorted(registry.datasets.items())
    ]
    rows += [
        ["metric", name, reg.plugin, reg.spec.summary]
        for name, reg in sorted(registry.metrics.items())
    ]
    rows += [
        ["balancer", name, reg.plugin, reg.spec.summary]
        for name, reg in sorted(registry.balancers.items())
    ]
    rows += [
        ["hooks", name, name, ", ".join(hooks) or "(no hooks)"]
        for name, hooks in registry.hook_only_plugins().items()
    ]
    rows += [
        ["tracker", name, plugin, spec.summary]
        for name, (spec, plugin) in sorted(registered_trackers(registry.pm).items())
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


@main.group()
def schema() -> None:
    """Print the JSON Schema of a file mssbench writes."""


@schema.command("record")
def schema_record() -> None:
    """The JSON Schema of a finished run record (mssbench.records.RunRecord)."""
    from mssbench.records import record_json_schema

    click.echo(json.dumps(record_json_schema(), indent=2))


@main.group()
def leaderboard() -> None:
    """Build the published leaderboard pages from run records."""


@leaderboard.command("build")
@click.argument("results_dir", metavar="RESULTS_DIR")
@click.option(
    "--out",
    default="leaderboards",
    show_default=True,
    help="Output directory: one page per dataset and protocol id, and README.md as the index.",
)
@click.option(
    "--reported",
    default=None,
    metavar="DIR",
    help="Published numbers of other libraries, DIR/<dataset>.csv [default: OUT/reported].",
)
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@click.option("--no-site", is_flag=True, help="Skip the HTML site (OUT/site/index.html).")
@click.option("--strict", is_flag=True, help="Fail if any record in RESULTS_DIR is rejected.")
@plugin_options
@handle_errors
def leaderboard_build(
    results_dir: str,
    out: str,
    reported: str | None,
    no_plots: bool,
    no_site: bool,
    strict: bool,
    plugins: tuple[str, ...],
    disabled: tuple[str, ...],
    strict_plugins: bool,
) -> None:
    """Write a Markdown page, a CSV and plots per dataset and protocol id from RESULTS_DIR.

    Also writes a static HTML site, OUT/site/index.html (open it from disk; no server needed).

    Every valid run record below RESULTS_DIR is included (a contributed record too); a file
    that is not a valid finished record is listed with the reason and left out. The installed
    plugins (and --plugin) give the models' defaults for variant labels and commands.
    """
    from mssbench.leaderboard import Defaults, build

    registry = _registry(plugins, disabled, strict_plugins)
    result = build(
        results_dir,
        out,
        defaults=Defaults.from_registry(registry),
        reported_dir=reported,
        plots=not no_plots,
        strict=strict,
    )
    for path, reason in result.rejected:
        click.echo(f"Rejected {path}: {reason}", err=True)
    for page in result.pages:
        click.echo(
            f"{page.directory}: {len(page.records)} runs, {len(page.variants)} models "
            f"({page.protocol_id})"
        )
    if result.removed:
        click.echo(f"Removed {len(result.removed)} stale file(s) of an earlier build.")
    click.echo(f"Index: {out}/README.md")
    if not no_site:
        from pathlib import Path

        from mssbench.site import write_site

        reported_dir = Path(reported) if reported is not None else Path(out) / "reported"
        click.echo(f"Site: {write_site(result, out, reported_dir) / 'index.html'}")


if __name__ == "__main__":  # pragma: no cover
    main()


def _floats(text: str | None, flag: str, kind: type = float) -> list | None:
    """A comma list of numbers (``None`` when not given)."""
    if text is None:
        return None
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} expects a comma list of numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"{flag} expects positive numbers, got {text!r}")
    return sorted(values)


@main.command()
@click.option("--models", "-m", required=True, help="A model, or a comma list (one plot).")
@click.option("--dataset", "-d", required=True, help="Registered dataset name.")
@click.option(
    "--axis",
    type=click.Choice(["params", "data", "compute", "batch"]),
    required=True,
    help="params: width factors; data: training rows; compute: widths x rows, in FLOPs; "
    "batch: batch sizes.",
)
@click.option("--points", type=int, default=4, show_default=True, help="Grid points on the axis.")
@click.option(
    "--data-points", type=int, default=3, show_default=True, help="Data sizes of a compute grid."
)
@click.option(
    "--factors", default=None, help="Width factors, e.g. 0.25,0.5,1,2 (default: halvings to 1)."
)
@click.option("--rows", default=None, help="Training rows, e.g. 10000,40000 (default: halvings).")
@click.option(
    "--batch-sizes", default=None, help="Batch sizes (default: halvings to --batch-size)."
)
@click.option(
    "--scale-params",
    default=None,
    help="Hyper-parameters the width factor scales, e.g. n_experts (default: the model's widths).",
)
@click.option("--seeds", default="1", show_default=True, help="A count (3) or a list (0,1,2).")
@click.option(
    "--budget-samples",
    type=int,
    default=0,
    show_default=True,
    help="Training samples per point (0: --epochs over the point's rows).",
)
@click.option("--jobs", type=int, default=1, show_default=True, help="Runs at a time (local).")
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this machine; ray: one Ray task per point (pip install 'mssbench[ray]').",
)
@click.option("--ray-address", default=None, help="Ray cluster address (--executor ray).")
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Base hyper-parameter (repeatable; model.key=value for one model of several).",
)
@training_options
@click.option("--report", default="mssbench-scaling", show_default=True, help="Report directory.")
@click.option("--bootstrap", type=int, default=300, show_default=True, help="Bootstrap resamples.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@plugin_options
@handle_errors
def scaling(**kw: Any) -> None:
    """Fit L(x) = a*x^(-b) + L_inf of MODELS' loss along one axis (records are normal runs)."""
    from pathlib import Path

    from mssbench.scaling import Study, execute
    from mssbench.scaling.report import write_report
    from mssbench.suite import parse_seeds, run_suite, split_params

    plugins, disabled = kw.pop("plugins"), kw.pop("disabled")
    registry = _registry(plugins, disabled, kw.pop("strict_plugins"))
    models = [m.strip() for m in kw.pop("models").split(",") if m.strip()]
    per_model, _ = split_params(registry, models, parse_assignments(kw.pop("params"), "--param"))
    scale_keys = kw.pop("scale_params")
    study = Study(
        models=models,
        axis=kw.pop("axis"),
        points=kw.pop("points"),
        data_points=kw.pop("data_points"),
        seeds=parse_seeds(kw.pop("seeds")),
        factors=_floats(kw.pop("factors"), "--factors"),
        rows=_floats(kw.pop("rows"), "--rows", int),
        batch_sizes=_floats(kw.pop("batch_sizes"), "--batch-sizes", int),
        scale_keys=[k.strip() for k in scale_keys.split(",")] if scale_keys else None,
        budget_samples=kw.pop("budget_samples"),
    )
    n_jobs, executor, address = kw.pop("jobs"), kw.pop("executor"), kw.pop("ray_address")
    report, n_boot, no_plots = Path(kw.pop("report")), kw.pop("bootstrap"), kw.pop("no_plots")
    scenarios = kw.pop("scenarios")
    data_given = parse_assignments(kw.pop("data_options"), "--data-option")
    if scenarios is not None:
        data_given["scenarios"] = scenarios
    base = RunConfig(
        model=models[0],
        dataset=kw.pop("dataset"),
        data_options=data_given,
        resume=True,
        progress=False,
        **kw,
    )
    base.validate()
    log = functools.partial(click.echo, err=True)

    def run_jobs(jobs: list) -> None:
        if executor == "ray":
            from mssbench.suite_ray import run_suite_ray

            run_suite_ray(
                jobs,
                plugins,
                disabled,
                address=address,
                cpus_per_run=1.0,
                gpus_per_run=0.0,
                max_in_flight=None,
                log=log,
            )
        else:
            run_suite(jobs, n_jobs, plugins, disabled, log=log)

    frame = execute(registry, study, base, per_model, run_jobs=run_jobs, log=log)
    if frame.empty:
        raise MssbenchError("no run of the study finished: nothing to fit")
    header = {
        "command": "mssbench " + " ".join(sys.argv[1:]),
        "protocol": str(frame["protocol"].iloc[0]),
        "models": ", ".join(models),
        "seeds": ", ".join(map(str, study.seeds)),
        "runs": str(len(frame)),
    }
    path = write_report(frame, study.axis, report, header, plots=not no_plots, n_boot=n_boot)
    click.echo(path.read_text(encoding="utf-8"))
