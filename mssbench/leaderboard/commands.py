"""The commands that reproduce a page, rebuilt from the records' validated configs."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from mssbench.balancing import balancer_flags
from mssbench.config import DEFAULT_OUT, RunConfig
from mssbench.identity import recorded_options
from mssbench.leaderboard.frame import Defaults, Page
from mssbench.leaderboard.labels import (
    contributor_name,
    default_head_batching,
    hardware_label,
    versions_label,
)
from mssbench.records import dirty_code, model_version, requested_values
from mssbench.reproduce import suite_file_name

_RUN_FLAGS = (
    ("epochs", "--epochs"),
    ("batch_size", "--batch-size"),
    ("eval_batch_size", "--eval-batch-size"),
    ("lr", "--lr"),
    ("weight_decay", "--weight-decay"),
    ("patience", "--patience"),
    ("device", "--device"),
    ("max_steps_per_epoch", "--max-steps-per-epoch"),
    ("step", "--step"),
    ("train_rows", "--train-rows"),
    ("pretrain", "--pretrain"),
    ("pretrain_epochs", "--pretrain-epochs"),
    ("bias_init", "--bias-init"),
    ("weight_decay_mode", "--weight-decay-mode"),
    ("select", "--select"),
)


def _cli_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        if all(
            isinstance(v, (int, float, str)) and not isinstance(v, bool) and "," not in str(v)
            for v in value
        ):
            return ",".join(str(v) for v in value)
        return json.dumps(list(value), separators=(",", ":"))
    if value is None or isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


@dataclass(frozen=True)
class _Command:
    """A record's configuration as command-line pieces (see :func:`run_command`)."""

    plugins: tuple[str, ...]
    model: str
    dataset: str
    params: tuple[str, ...]  # KEY=VALUE
    rest: tuple[str, ...]  # -D, training options, --metric, --head, --batching


def _command(record: dict[str, Any], defaults: Defaults) -> _Command:
    config = record["config"]
    model = record["model"]["name"]
    dataset = record["dataset"]["name"]
    plugins: list[str] = []
    named = [record["model"].get("plugin"), record["dataset"].get("plugin")]
    named += [m.get("plugin") for m in record.get("metrics") or []]
    named.append(((record.get("training") or {}).get("balancer") or {}).get("plugin"))
    for plugin in named:
        if plugin and plugin not in defaults.entry_points and plugin not in plugins:
            plugins.append(str(plugin))
    given = requested_values(record)
    if given is not None:  # the values as given: the rebuilt command hashes like the record
        params = [f"{k}={_cli_value(v)}" for k, v in sorted((given["params"] or {}).items())]
    else:
        params = _differing(config.get("params"), defaults.model_params.get(model))
    rest = [
        arg
        for key, value in _data_options(record, given, defaults)
        for arg in ("-D", f"{key}={_cli_value(value)}")
    ]
    base = RunConfig(model=model, dataset=dataset)
    for key, flag in _RUN_FLAGS:
        # A record older than an option ran with the value every earlier record had.
        if key not in config and key not in RunConfig.LATER_FIELDS:
            continue
        value = config.get(key, RunConfig.LATER_FIELDS.get(key))
        if value != getattr(base, key):
            rest += [flag, _cli_value(value)]
    if config.get("precision", "fp32") != "fp32":
        rest += ["--precision", str(config["precision"])]
    if config.get("compile"):
        rest.append("--compile")
    for name in config.get("metrics") or []:
        rest += ["--metric", str(name)]
    rest += balancer_flags(config)
    known = model in defaults.model_tags
    head, batching = default_head_batching(record, defaults.model_tags)
    for key, default, flag in (("head", head, "--head"), ("batching", batching, "--batching")):
        value = config.get(key) if given is None else given.get(key, "auto")
        if given is not None and value != "auto":
            rest += [flag, str(value)]
        elif given is None and value and (not known or value != default):
            rest += [flag, str(value)]
    return _Command(tuple(plugins), model, dataset, tuple(params), tuple(rest))


def _data_options(
    record: dict[str, Any], given: dict[str, Any] | None, defaults: Defaults
) -> list[tuple[str, Any]]:
    """The ``-D`` options of a record's command: its data with today's dataset defaults.

    Where the dataset is installed, every option whose recorded value (an option the record
    predates: its earlier value) differs from today's default, so that a default changed since
    does not change the data the command means; the run's identity, which finds it finished,
    is the same (:mod:`mssbench.identity`). Otherwise the options as given, or all of them.
    """
    dataset = record["dataset"]["name"]
    options = defaults.dataset_options.get(dataset)
    recorded = record["config"].get("data_options") or {}
    if options is not None:
        data = recorded_options(options, defaults.dataset_earlier.get(dataset, {}), recorded)
        if data is not None:
            return [(k, v) for k, v in sorted(data.items()) if v != options[k]]
    chosen = given["data_options"] if given is not None else recorded
    return sorted((chosen or {}).items())


def _differing(values: Any, declared: Mapping[str, Any] | None) -> list[str]:
    """``KEY=VALUE`` of ``values`` where they differ from ``declared`` (all when unknown)."""
    return [
        f"{key}={_cli_value(value)}"
        for key, value in sorted((values or {}).items())
        if declared is None or key not in declared or declared[key] != value
    ]


def _plugin_flags(plugins: Iterable[str]) -> list[str]:
    return [arg for plugin in plugins for arg in ("--plugin", plugin)]


def run_command(record: dict[str, Any], defaults: Defaults, seed: str | None = None) -> str:
    """The ``mssbench run`` command that reproduces ``record``, rebuilt from its config.

    Hyper-parameters and data options are listed where they differ from the declared defaults
    (all of them when the model or dataset is not installed here), the head and batching where
    they differ from the model's default, and ``--plugin`` for plugins that are not loaded
    through the ``mssbench`` entry points. Every value is shell-quoted.

    Args:
        record: A valid run record.
        defaults: What the installed plugins declare.
        seed: Text for the seed (``"$seed"`` in a loop); the record's seed by default.
    """
    cmd = _command(record, defaults)
    argv = ["mssbench", "run", *_plugin_flags(cmd.plugins), "-m", cmd.model, "-d", cmd.dataset]
    argv += [arg for p in cmd.params for arg in ("-p", p)]
    text = shlex.join([*argv, *cmd.rest])
    return f"{text} --seed {seed if seed is not None else int(record['config']['seed'])}"


def _seeds_text(seeds: set[int]) -> str | None:
    """``--seeds`` for a suite: a count for seeds 0..n-1, a list for two or more, else None."""
    ordered = sorted(seeds)
    if ordered == list(range(len(ordered))):
        return str(len(ordered))
    return ",".join(map(str, ordered)) if len(ordered) > 1 else None


def suite_command(records: Sequence[dict[str, Any]], defaults: Defaults) -> str | None:
    """One ``mssbench suite`` command that reproduces ``records``, if one can.

    It can when the records share every option but the model, its hyper-parameters and the
    seed, each model has one configuration, all models have the same seeds, and there are at
    least two models. Rebuilt from the records' configs, like :func:`run_command`.
    """
    commands = [_command(r, defaults) for r in records]
    by_model: dict[str, set[tuple[str, ...]]] = {}
    seeds: dict[str, set[int]] = {}
    for rec, cmd in zip(records, commands):
        by_model.setdefault(cmd.model, set()).add(cmd.params)
        seeds.setdefault(cmd.model, set()).add(int(rec["config"]["seed"]))
    shared = {(c.dataset, c.rest) for c in commands}
    seed_sets = {frozenset(s) for s in seeds.values()}
    if len(by_model) < 2 or len(shared) != 1 or len(seed_sets) != 1:
        return None
    if any(len(params) != 1 for params in by_model.values()):
        return None
    seeds_text = _seeds_text(set(next(iter(seed_sets))))
    if seeds_text is None:
        return None
    plugins = list(dict.fromkeys(p for c in commands for p in c.plugins))
    models = sorted(by_model)
    argv = ["mssbench", "suite", *_plugin_flags(plugins), "--datasets", commands[0].dataset]
    argv += ["--models", ",".join(models), "--seeds", seeds_text]
    for model in models:
        [params] = by_model[model]
        argv += [arg for p in params for arg in ("-p", f"{model}.{p}")]
    return shlex.join([*argv, *commands[0].rest])


def _page_plan(page: Page, defaults: Defaults) -> tuple[list[str], dict[str, set[int]]]:
    """A page's ``mssbench suite`` commands, and its ``mssbench run`` commands with their seeds."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for rec in page.records:
        cmd = _command(rec, defaults)
        groups.setdefault((cmd.dataset, cmd.rest), []).append(rec)
    suites: list[str] = []
    runs: dict[str, set[int]] = {}
    for key in sorted(groups):
        configs: dict[str, set[tuple[str, ...]]] = {}
        for rec in groups[key]:
            cmd = _command(rec, defaults)
            configs.setdefault(cmd.model, set()).add(cmd.params)
        single = [r for r in groups[key] if len(configs[r["model"]["name"]]) == 1]
        suite = suite_command(single, defaults) if single else None
        if suite is not None:
            suites.append(suite)
        for rec in groups[key] if suite is None else [r for r in groups[key] if r not in single]:
            runs.setdefault(run_command(rec, defaults, seed='"$seed"'), set()).add(
                int(rec["config"]["seed"])
            )
    return suites, runs


def page_suites(page: Page, defaults: Defaults) -> list[str]:
    """The ``mssbench suite`` command lines of a page (see :func:`reproduce_commands`)."""
    return _page_plan(page, defaults)[0]


def reproduce_commands(page: Page, defaults: Defaults) -> str:
    """Shell commands that reproduce a page, then the build.

    Records sharing all options but the model, its hyper-parameters and the seed are one
    ``mssbench suite`` command where :func:`suite_command` can express them (models run in one
    configuration only); the others are one
    ``mssbench run`` per configuration (a loop over its seeds). Every command is rebuilt from
    the records' validated configurations: text a record carries as a command line
    (``command``, or anything in its config) is never printed.
    """
    suites, runs = _page_plan(page, defaults)
    lines = list(suites)
    for command, seeds in sorted(runs.items()):
        if len(seeds) == 1:
            lines.append(command.replace('"$seed"', str(next(iter(seeds)))))
        else:
            lines.append(f"for seed in {' '.join(str(s) for s in sorted(seeds))}; do")
            lines.append(f"  {command}")
            lines.append("done")
    lines.append(f"mssbench leaderboard build {DEFAULT_OUT}")  # where the runs write
    return "\n".join(lines)


def _suite_file_lines(n_suites: int, page_path: str) -> list[str]:
    """Where the page's suites are as config files (:mod:`mssbench.reproduce`), as Markdown."""
    if not n_suites:
        return []
    lines = ["The same suite as a config file, committed beside this page:", "", "```bash"]
    lines += [
        f"mssbench suite --config {shlex.quote(f'{page_path}/{suite_file_name(i)}')}"
        for i in range(n_suites)
    ]
    return [*lines, "```", ""]


def commit_label(git: Mapping[str, Any]) -> str:
    """A record's commit for the *from* table: the short hash and what, if anything, had changed.

    "(dirty)" only where the checkout had changes that could change a number (or the record does
    not list them); changed records or pages alone are named as such.
    """
    sha = str(git["commit"])[:12]
    if not git.get("dirty"):
        return sha
    return sha + (
        " (records/pages changed, code clean)" if dirty_code(git) is False else " (dirty)"
    )


def environments(page: Page) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Distinct (contributor, hardware, versions) of a page's records.

    Returns:
        ``(environments, variant -> "E1, E2")``: each environment a dict with ``id``,
        ``contributor``, ``hardware``, ``versions``, ``git`` (distinct commits), ``platform``,
        ``runs`` and ``variants`` (with the model version where it is not 1).
    """
    labels = page.labels
    envs: dict[tuple[str, str, str], dict[str, Any]] = {}
    of_variant: dict[str, list[str]] = {}
    for rec, variant in zip(page.records, labels):
        key = (contributor_name(rec), hardware_label(rec), versions_label(rec))
        if key not in envs:
            envs[key] = {
                "id": f"E{len(envs) + 1}",
                "contributor": key[0],
                "hardware": key[1],
                "versions": key[2],
                "git": [],
                "platform": [],
                "runs": 0,
                "variants": [],
            }
        env = envs[key]
        env["runs"] += 1
        git = rec["environment"].get("git")
        if isinstance(git, dict) and git.get("commit"):
            sha = commit_label(git)
            if sha not in env["git"]:
                env["git"].append(sha)
        hw = rec["environment"].get("hardware")
        plat = hw.get("platform") if isinstance(hw, dict) else None
        if plat and plat not in env["platform"]:
            env["platform"].append(str(plat))
        version = model_version(rec)
        shown = variant if version == 1 else f"{variant} (model version {version})"
        if shown not in env["variants"]:
            env["variants"].append(shown)
        ids = of_variant.setdefault(variant, [])
        if env["id"] not in ids:
            ids.append(env["id"])
    return list(envs.values()), {v: ", ".join(ids) for v, ids in of_variant.items()}
