"""Run configuration and the checking of user-given values against declared defaults."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

from mssbench.balancing import DEFAULT_BALANCER
from mssbench.errors import ConfigError, brief, brief_repr
from mssbench.spec import BATCHINGS, HEADS, Constraint

DEFAULT_OUT = "mssbench-runs"

#: ``--precision`` values (the runner maps them to autocast dtypes).
PRECISIONS = ("fp32", "bf16")
#: ``--step`` values: ``eager`` (one launch per kernel) or ``graph`` (the whole training step
#: replayed from one CUDA graph; :mod:`mssbench.runners.graph_step`).
STEPS = ("eager", "graph")


def check_step(step: str, *, distributed: bool, compiled: bool) -> None:
    """Raise :class:`ConfigError` when ``--step`` cannot be used with the other options."""
    if step not in STEPS:
        raise ConfigError(f"--step must be one of {', '.join(STEPS)}, got {step!r}")
    if step == "graph" and distributed:
        raise ConfigError("--step graph trains one process; it cannot be used with torchrun")
    if step == "graph" and compiled:
        raise ConfigError(
            "--step graph and --compile both remove launch overhead; choose one of them"
        )

#: ``--bias-init`` values: ``base_rate`` (every task's output bias starts at its training base
#: rate, :mod:`mssbench.runners.output_bias`) or ``none`` (the model's own initialisation).
BIAS_INITS = ("base_rate", "none")

#: ``--weight-decay-mode`` values: ``coupled`` (Adam with L2: the decay is added to the
#: gradient) or ``decoupled`` (AdamW: weights shrink by lr x decay after each step);
#: :mod:`mssbench.runners.weight_decay`.
WEIGHT_DECAY_MODES = ("coupled", "decoupled")

#: ``--select`` values: how the epoch kept is chosen on the validation split, and what each
#: records as its selection metric. ``mean_logloss`` is steady where a task has few positives
#: (validation AUC on a few dozen conversions is close to noise).
SELECTIONS = {
    "mean_logloss": "minus the mean over tasks of validation logloss",
    "mean_auc": "mean over tasks of pooled validation AUC (minus the summed logloss when no "
    "task has an AUC)",
}
#: A run that its budget ended (not early stopping) has not converged when its best epoch is
#: the last one, or when the last epoch still raised the selection score by more than this.
CONVERGENCE_TOLERANCE = 1e-3

#: A run stalled at the base rate when, at its best epoch, no task's validation logloss is
#: below ``1 - STALL_MARGIN`` times the logloss of predicting the train split's base rate.
STALL_MARGIN = 0.01

#: ``--pretrain`` values (``contrastive``: :mod:`mssbench.runners.pretrain`).
PRETRAIN_METHODS = ("none", "contrastive")


@dataclass
class RunConfig:
    """Everything that determines a run's numbers (plus where to write them).

    Attributes:
        model: Registered model name.
        dataset: Registered dataset name.
        params: Model hyper-parameters overriding the spec's defaults.
        data_options: Dataset options overriding the spec's defaults.
        seed: Seed for initialisation, shuffling and dropout.
        epochs: Maximum number of epochs.
        batch_size: Training batch size.
        eval_batch_size: Batch size for validation and test passes.
        lr: Adam learning rate.
        weight_decay: Weight decay of the weight matrices (embeddings, biases and normalisation
            parameters are not decayed); a model whose spec declares ``weight_decay_groups``
            decays as its paper does.
        weight_decay_mode: ``coupled`` (Adam with L2, the decay added to the gradient) or
            ``decoupled`` (AdamW).
        patience: Stop after this many epochs in a row without validation improvement.
        select: How the epoch kept is chosen on validation (:data:`SELECTIONS`):
            ``mean_logloss`` or ``mean_auc``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        batching: ``mixed`` (shuffled rows) or ``scenario_pure`` (every batch holds one scenario);
            ``auto`` takes the model's ``batching`` tag, else ``mixed``.
        head: ``direct`` (each task's logit as the model gives it), ``esmm`` (wrap the model in
            :class:`mssbench.nn.ESMMHead`: CTCVR = CTR x CVR in log space), or ``auto`` (the
            model's ``head`` tag where the dataset has related tasks, else ``direct``).
        max_steps_per_epoch: Cap on training steps per epoch (0 = a full pass); for smoke runs.
        precision: ``fp32``, or ``bf16`` for bfloat16 autocast of the forward passes.
        compile: Train through ``torch.compile``.
        step: ``eager``, or ``graph``: each full training batch replays one CUDA graph of the
            whole step over GPU-resident data (same numbers up to float reordering).
        flush_denormal: Train and evaluate with the CPU's denormal numbers flushed to zero
            (``torch.set_flush_denormal``): on Intel CPUs a model whose weights or Adam moments
            decay into the denormal range trains up to 12x slower without it; values that would
            be denormal become 0, so numbers can differ from a run without it.
        metrics: Registered plugin metrics (:class:`~mssbench.spec.MetricSpec` names) added to
            the test report, beside AUC and log loss.
        trackers: Experiment trackers the run reports to (``mlflow``, ``tensorboard``: the
            tracker plugins' names); they do not change the numbers.
        tracker_uris: ``{tracker: where}`` overriding a tracker's default location (an MLflow
            tracking URI, a TensorBoard log directory).
        out: Directory of run records.
        train_rows: Train on this many rows of the training split, drawn by a seeded
            permutation that does not depend on the run's seed (0 = all rows): learning curves
            and the data axis of ``mssbench scaling``. Validation and test are unchanged.
        bias_init: ``base_rate`` (each task's output bias shifted so that the mean prediction
            at step 0 equals the task's base rate in the training split; under the ESMM head the
            CVR logit starts at the conversion rate among clicks) or ``none``.
        pretrain: ``none``, or ``contrastive`` (InfoNCE over two field-masked views of each row,
            :mod:`mssbench.runners.pretrain`) before supervised training.
        pretrain_epochs: Epochs of contrastive pre-training.
        balancer: Registered loss balancer (:mod:`mssbench.balancing`) combining the task
            losses; ``fixed``: the model's task weights.
        balancer_params: The balancer's parameters overriding its defaults (``k=v`` strings
            from ``--balancer-param`` are parsed here).
        resume: Continue an interrupted run with the same configuration if one exists.
        progress: Show a progress bar.
        preset: The :mod:`mssbench.presets` preset the values came from (``""``: none); a
            record of where they came from only, the values themselves are the other fields.
        tuned_from: The ``mssbench tune`` study whose best configuration this is (``""``: not
            tuned); like ``preset``, a record of provenance that leaves the hash alone.
        tuning_budget: That study's budget, ``{"trials": N, "samples_per_trial": S}`` (empty
            when not tuned): what the tuned track's pages state; provenance, not in the hash.
    """

    model: str
    dataset: str
    params: dict[str, Any] = field(default_factory=dict)
    data_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    epochs: int = 20
    batch_size: int = 2048
    eval_batch_size: int = 65536
    lr: float = 1e-3
    weight_decay: float = 1e-6
    weight_decay_mode: str = "coupled"
    patience: int = 2
    select: str = "mean_logloss"
    device: str = "auto"
    batching: str = "auto"
    head: str = "auto"
    max_steps_per_epoch: int = 0
    precision: str = "fp32"
    compile: bool = False
    step: str = "eager"
    flush_denormal: bool = False
    metrics: list[str] = field(default_factory=list)
    train_rows: int = 0
    pretrain: str = "none"
    pretrain_epochs: int = 1
    balancer: str = DEFAULT_BALANCER
    balancer_params: dict[str, Any] = field(default_factory=dict)
    bias_init: str = "base_rate"
    trackers: list[str] = field(default_factory=list)
    tracker_uris: dict[str, str] = field(default_factory=dict)
    out: str = DEFAULT_OUT
    resume: bool = False
    progress: bool = True
    preset: str = ""
    tuned_from: str = ""
    tuning_budget: dict[str, int] = field(default_factory=dict)

    #: Fields that do not change a run's numbers and are left out of its hash.
    NON_RESULT_FIELDS = (
        "out", "resume", "progress", "trackers", "tracker_uris", "preset", "tuned_from",
        "tuning_budget",
    )
    #: Fields added after the first record version, with the value every earlier record had:
    #: they enter the hash only when set otherwise, so earlier records keep their hashes.
    LATER_FIELDS: ClassVar[dict[str, Any]] = {
        "precision": "fp32",
        "compile": False,
        "step": "eager",
        "flush_denormal": False,
        "metrics": [],
        "train_rows": 0,
        "pretrain": "none",
        "pretrain_epochs": 1,
        "balancer": DEFAULT_BALANCER,
        "balancer_params": {},
        "bias_init": "none",
        "weight_decay_mode": "coupled",
        "select": "mean_auc",
    }

    def __post_init__(self) -> None:
        self.metrics = list(self.metrics)  # a tuple from the command line hashes the same
        self.trackers = list(self.trackers)
        if isinstance(self.balancer_params, (list, tuple)):  # --balancer-param k=v
            self.balancer_params = parse_assignments(self.balancer_params, "--balancer-param")
        self.balancer_params = dict(self.balancer_params)

    #: Options that must be whole numbers >= the given minimum.
    MIN_INTS: ClassVar[dict[str, int]] = {
        "epochs": 1,
        "batch_size": 2,  # batch normalisation needs two rows
        "eval_batch_size": 1,
        "patience": 1,
        "max_steps_per_epoch": 0,  # 0 = a full pass
    }
    #: Allowed values of the choice options.
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "precision": PRECISIONS,
        "head": ("auto", *HEADS),
        "batching": ("auto", *BATCHINGS),
        "bias_init": BIAS_INITS,
        "weight_decay_mode": WEIGHT_DECAY_MODES,
        "select": tuple(SELECTIONS),
    }

    def validate(self) -> None:
        """Raise :class:`ConfigError` on an out-of-range value, naming the option."""
        for name, low in self.MIN_INTS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{_flag(name)} must be an integer, got {brief_repr(value)}")
            if value < low:
                raise ConfigError(f"{_flag(name)} must be >= {low}, got {value}")
        for name, positive in (("lr", True), ("weight_decay", False)):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and math.isfinite(value)
            if not ok or value < 0 or (positive and value == 0):
                rule = "a finite number > 0" if positive else "a finite number >= 0"
                raise ConfigError(f"{_flag(name)} must be {rule}, got {brief(value)}")
        for name, allowed in self.CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"{_flag(name)} must be one of {', '.join(allowed)}, "
                    f"got {brief_repr(getattr(self, name))}"
                )
        check_step(self.step, distributed=False, compiled=self.compile)
        if self.train_rows < 0:
            raise ConfigError(f"--train-rows must be >= 0 (0 = all), got {self.train_rows}")
        if self.pretrain not in PRETRAIN_METHODS:
            raise ConfigError(
                f"--pretrain must be one of {', '.join(PRETRAIN_METHODS)}, got {self.pretrain!r}"
            )
        if self.pretrain_epochs < 1:
            raise ConfigError(f"--pretrain-epochs must be >= 1, got {self.pretrain_epochs}")
        twice = sorted({m for m in self.metrics if self.metrics.count(m) > 1})
        if twice:
            raise ConfigError(f"--metric {', '.join(twice)} given more than once")

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-serialisable dict."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def result_hash(self) -> str:
        """Hash of everything that determines the numbers (used to find finished/partial runs)."""
        d = {
            k: v
            for k, v in self.to_dict().items()
            if k not in self.NON_RESULT_FIELDS
            and not (k in self.LATER_FIELDS and v == self.LATER_FIELDS[k])
        }
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _flag(name: str) -> str:
    """The command-line flag of a :class:`RunConfig` field."""
    return "--" + name.replace("_", "-")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(kind: str, key: str, value: Any, default: Any) -> Any:
    """Convert ``value`` (often a command-line string) to the type of ``default``."""
    expected = type(default).__name__

    def bad() -> ConfigError:
        return ConfigError(
            f"{kind} {brief_repr(key)} expects {expected} (default "
            f"{brief(json.dumps(default))}), got {brief_repr(value)}"
        )

    if not isinstance(value, str):
        return _coerce_value(kind, key, value, default, bad)
    text = value.strip()
    if isinstance(default, (list, tuple)):
        return _coerce_list_text(kind, key, text, default, bad)
    return _coerce_text(text, default, bad)


def _coerce_value(
    kind: str, key: str, value: Any, default: Any, bad: Callable[[], ConfigError]
) -> Any:
    """A value that is not text (from a config file or the API): checked against ``default``."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise bad()
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, float) and number:
        return float(value)
    if isinstance(default, int) and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return [_coerce(kind, key, v, default[0]) if default else v for v in value]
    if (isinstance(default, str) and isinstance(value, str)) or default is None:
        return value
    raise bad()


def _coerce_text(text: str, default: Any, bad: Callable[[], ConfigError]) -> Any:
    """Text converted to the scalar type of ``default`` (JSON, or the text, where it is None)."""
    if isinstance(default, bool):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise bad()
    if isinstance(default, (int, float)):
        try:
            return (int if isinstance(default, int) else float)(text)
        except ValueError:
            raise bad() from None
    if default is None:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def _coerce_list_text(
    kind: str, key: str, text: str, default: Sequence[Any], bad: Callable[[], ConfigError]
) -> list[Any]:
    """Text as a list: JSON (``[64, 32]``) or comma-separated, elements typed as ``default``'s."""
    items: Any
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            raise bad() from None
    else:
        items = [t for t in text.split(",") if t.strip()] if text else []
    if not isinstance(items, list):
        raise bad()
    if default:
        return [_coerce(kind, key, v, default[0]) for v in items]
    # No element type to follow: numbers become numbers, anything else stays text.
    return [_number_or_text(v) if isinstance(v, str) else v for v in items]


def _number_or_text(text: str) -> Any:
    """``"1"`` -> 1, ``"0.5"`` -> 0.5, anything else unchanged."""
    for kind in (int, float):
        try:
            return kind(text.strip())
        except ValueError:
            pass
    return text


def resolve(
    kind: str,
    owner: str,
    defaults: Mapping[str, Any],
    given: Mapping[str, Any],
    constraints: Mapping[str, Constraint] | None = None,
) -> dict:
    """Merge user values over declared defaults, rejecting unknown keys, wrong types and values.

    Args:
        kind: ``"param"`` or ``"data option"`` (for messages).
        owner: The model or dataset name (for messages).
        defaults: Declared keys and defaults.
        given: User values (strings from the command line, or typed values from the API).
        constraints: Declared allowed values (:class:`~mssbench.spec.Constraint`) by key.

    Returns:
        The resolved dict, every declared key present.
    """
    out = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "(none)"
            msg = f"{owner} takes no {kind} {brief_repr(key)}. Valid {kind}s: {known}."
            close = difflib.get_close_matches(key, list(defaults), n=1)
            if close:
                msg += f" Did you mean {close[0]!r}?"
            raise ConfigError(msg)
        out[key] = _coerce(f"{owner} {kind}", key, value, defaults[key])
    for key, rule in (constraints or {}).items():
        if key in out and not rule.allows(out[key]):
            raise ConfigError(
                f"{owner} {kind} {key!r} must be {rule.describe(out[key])}, "
                f"got {brief(json.dumps(out[key], default=str))}"
            )
    return out


def parse_assignments(items: tuple[str, ...] | list[str], flag: str) -> dict[str, str]:
    """Parse ``k=v`` strings from a repeatable command-line flag."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE, got {brief_repr(item)}")
        out[key.strip()] = value
    return out
