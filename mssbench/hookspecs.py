"""Hook specifications: the extension points of mssbench.

A plugin is any module (or object) with functions marked ``@mssbench.hookimpl`` whose names
match the hooks below. Plugins are found through the entry-point group ``mssbench`` or given on
the command line with ``--plugin MODULE_OR_FILE``. A function named ``mssbench_*`` marked
``@hookimpl`` that matches no hook below (a typo such as ``mssbench_epochs_end``) makes its plugin
broken: it is reported by name and left out.

The lifecycle hooks (``mssbench_run_start``, ``mssbench_epoch_end``, ``mssbench_run_end``,
``mssbench_run_failed``) receive read-only copies: mappings refuse assignment (``TypeError``) and
lists are tuples, so a hook cannot change the run or its record. A lifecycle hook that raises is
reported once as a ``Warning:`` line naming its plugin, and the run goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import pluggy

if TYPE_CHECKING:
    from mssbench.balancing import BalancerSpec
    from mssbench.spec import DatasetSpec, MetricSpec, ModelSpec
    from mssbench.trackers import TrackerSpec

hookspec = pluggy.HookspecMarker("mssbench")


@hookspec
def mssbench_register_models() -> "list[ModelSpec]":
    """Register models.

    Called once per plugin manager. Each implementation returns a list of
    :class:`mssbench.ModelSpec`. Names must be unique across all plugins: a second spec with a
    taken name is rejected and reported against the plugin that offered it.

    Returns:
        The plugin's model specs (possibly empty).
    """


@hookspec
def mssbench_register_datasets() -> "list[DatasetSpec]":
    """Register datasets.

    Called once per plugin manager. Each implementation returns a list of
    :class:`mssbench.DatasetSpec`, with the same uniqueness rule as models.

    Returns:
        The plugin's dataset specs (possibly empty).
    """


@hookspec
def mssbench_register_metrics() -> "list[MetricSpec]":
    """Register test metrics (optional).

    Called once per plugin manager. Each implementation returns a list of
    :class:`mssbench.MetricSpec`, with the same uniqueness rule as models. A run computes a
    registered metric when asked (``mssbench run --metric NAME``).

    Returns:
        The plugin's metric specs (possibly empty).
    """


@hookspec
def mssbench_run_start(run: Mapping[str, Any]) -> None:
    """Called once when a run starts, after data is loaded and the model is built.

    Args:
        run: The run record as it stands (config, protocol, environment); read-only.
            From here on, the run ends with exactly one of ``mssbench_run_end`` and
            ``mssbench_run_failed`` (unless the process is killed outright).
    """


@hookspec
def mssbench_epoch_end(run: Mapping[str, Any], epoch: int, metrics: Mapping[str, float]) -> None:
    """Called after each epoch's validation.

    Args:
        run: The run record as it stands; read-only.
        epoch: 1-based epoch number.
        metrics: The epoch's numbers, read-only: ``train_loss`` (mean training loss),
            ``selection_score`` (what early stopping maximises: the mean over tasks of the
            pooled validation AUC) and, per task of the schema (conditional tasks included),
            the validation ``auc/<task>`` and ``logloss/<task>`` (pooled over scenarios) and
            ``macro_auc/<task>`` (mean of the per-scenario AUCs). NaN where undefined.
            (``--metric`` plugin metrics are computed on test only, not here.)
    """


@hookspec
def mssbench_run_end(run: Mapping[str, Any], path: str) -> None:
    """Called once after the run record has been written.

    Args:
        run: The final run record; read-only.
        path: Path of the written JSON record.
    """


@hookspec
def mssbench_run_failed(run: Mapping[str, Any], error: BaseException) -> None:
    """Called once when a started run raises, instead of ``mssbench_run_end``.

    A started run is one for which ``mssbench_run_start`` was called. Trackers close the run
    here (for example mark it failed); the error then goes on to the caller unchanged.
    ``KeyboardInterrupt`` (Ctrl-C) is a failure too.

    Args:
        run: The run record as it stood when the error happened (``status`` is still
            ``"running"``); read-only.
        error: The exception that ended the run.
    """


@hookspec
def mssbench_register_trackers() -> "list[TrackerSpec]":
    """Register experiment trackers (optional).

    Called once per plugin manager. A tracker is enabled per run (``--tracker NAME``, or
    ``trackers:`` in a config file; the names are in ``run["config"]["trackers"]``) and reports
    through the lifecycle hooks above; registering it lets the command line check the name and
    ``mssbench plugins`` list it.

    Returns:
        The plugin's tracker specs (possibly empty).
    """


@hookspec
def mssbench_register_balancers() -> "list[BalancerSpec]":
    """Register loss-balancing methods (optional).

    Called once per plugin manager. Each implementation returns a list of
    :class:`mssbench.balancing.BalancerSpec`, with the same uniqueness rule as models. A run
    uses one when asked (``mssbench run --balancer NAME``); the default is ``fixed``.

    Returns:
        The plugin's balancer specs (possibly empty).
    """
