"""The contract between the core harness and plugins.

Everything a plugin receives from, or hands to, the core is one of the frozen dataclasses
defined here. They are deliberately small: a model plugin needs :class:`ModelSpec`,
:class:`DatasetSchema` and :class:`Batch`; a dataset plugin needs :class:`DatasetSpec`,
:class:`DatasetSchema`, :class:`Protocol` and :class:`LoadedDataset`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, Sequence

from mssbench.space import Dimension, SpaceError, validate_space

if TYPE_CHECKING:  # torch is imported by whoever builds tensors: `mssbench --help` stays fast
    import torch

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_\-]*$")

__all__ = [
    "Batch",
    "CategoricalField",
    "Constraint",
    "DatasetSchema",
    "DatasetSpec",
    "Implies",
    "LoadedDataset",
    "MetricSpec",
    "ModelOutput",
    "ModelSpec",
    "Protocol",
    "Split",
    "SpecError",
    "Task",
    "resolve_aux_loss",
]


class SpecError(ValueError):
    """A plugin handed the core something that breaks the contract."""


@dataclass(frozen=True)
class CategoricalField:
    """One categorical input field.

    Attributes:
        name: Column name.
        vocab_size: Number of ids the field can take, *including* the out-of-vocabulary id 0.
            Ids in the data lie in ``[0, vocab_size)``.
    """

    name: str
    vocab_size: int


@dataclass(frozen=True)
class Task:
    """One binary prediction task.

    Attributes:
        name: Task name as it appears in results (``"ctr"``, ``"income"``).
        label: Name of the label column in the source data.
    """

    name: str
    label: str


@dataclass(frozen=True)
class Implies:
    """A logical relation between two tasks' labels: ``child == 1`` implies ``parent == 1``.

    The core evaluates the conditional task ``conditional`` (for example ``"cvr"``) on the rows
    where the parent label is 1, scoring each row with ``P(child) / P(parent)`` computed from
    the two logits in log space. For an ESMM-style head this is exactly the CVR tower's output.

    Attributes:
        child: Name of the implied-by task (``"ctcvr"``).
        parent: Name of the implied task (``"ctr"``).
        conditional: Name under which the conditional metric is reported (``"cvr"``).
    """

    child: str
    parent: str
    conditional: str


@dataclass(frozen=True)
class DatasetSchema:
    """What a model needs to know about a dataset to build itself.

    Attributes:
        categorical: Categorical fields in column order of ``Batch.categorical``.
        numeric: Names of the numeric fields in column order of ``Batch.numeric``.
        scenario_field: Name of the attribute that defines the scenarios.
        scenarios: Scenario names; scenario id ``i`` is ``scenarios[i]``.
        tasks: Tasks in column order of the model's logits and of ``Batch.labels``.
        relations: Label relations between tasks (``ctcvr`` implies ``ctr``).
    """

    categorical: tuple[CategoricalField, ...]
    numeric: tuple[str, ...]
    scenario_field: str
    scenarios: tuple[str, ...]
    tasks: tuple[Task, ...]
    relations: tuple[Implies, ...] = ()

    def __post_init__(self) -> None:
        if not self.scenarios:
            raise SpecError("DatasetSchema.scenarios: at least one scenario is required")
        if not self.tasks:
            raise SpecError("DatasetSchema.tasks: at least one task is required")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise SpecError(f"DatasetSchema.tasks: duplicate task names in {names}")
        for f in self.categorical:
            if f.vocab_size < 1:
                raise SpecError(f"DatasetSchema.categorical: field {f.name!r} has vocab_size < 1")
        for r in self.relations:
            for t in (r.child, r.parent):
                if t not in names:
                    raise SpecError(f"DatasetSchema.relations: unknown task {t!r} (tasks: {names})")

    @property
    def n_scenarios(self) -> int:
        """Number of scenarios ``S``."""
        return len(self.scenarios)

    @property
    def n_tasks(self) -> int:
        """Number of tasks ``T``."""
        return len(self.tasks)

    @property
    def task_names(self) -> tuple[str, ...]:
        """Task names in logit column order."""
        return tuple(t.name for t in self.tasks)

    @property
    def vocab_sizes(self) -> tuple[int, ...]:
        """Vocabulary size of each categorical field (OOV id included)."""
        return tuple(f.vocab_size for f in self.categorical)

    @property
    def n_numeric(self) -> int:
        """Number of numeric fields ``F_n``."""
        return len(self.numeric)

    def task_index(self, name: str) -> int:
        """Column of task ``name`` in logits and labels."""
        return self.task_names.index(name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description, as stored in run records."""
        return {
            "categorical": {f.name: f.vocab_size for f in self.categorical},
            "numeric": list(self.numeric),
            "scenario_field": self.scenario_field,
            "scenarios": list(self.scenarios),
            "tasks": {t.name: t.label for t in self.tasks},
            "relations": [
                {"child": r.child, "parent": r.parent, "conditional": r.conditional}
                for r in self.relations
            ],
        }


class Batch(NamedTuple):
    """One mini-batch, as models receive it.

    Attributes:
        categorical: ``[B, F_c]`` int64 ids.
        numeric: ``[B, F_n]`` float32.
        scenario: ``[B]`` int64 scenario ids in ``[0, S)``.
        labels: ``[B, T]`` float32 in {0, 1}; models must not read it in ``forward``.
    """

    categorical: torch.Tensor
    numeric: torch.Tensor
    scenario: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """The same batch on ``device``."""
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in self))

    def pin_memory(self) -> "Batch":
        """The same batch in page-locked host memory (for asynchronous copies to a GPU)."""
        return Batch(*(t.pin_memory() for t in self))

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.scenario.shape[0])


class ModelOutput(NamedTuple):
    """What a model's ``forward`` returns.

    Attributes:
        logits: ``[B, T]`` logits for each sample's own scenario, in the schema's task order.
        aux_loss: Scalar tensor, already weighted by the model's own coefficients; a zero
            tensor for models without auxiliary terms. A model whose extra loss needs the
            labels (ESCM²'s counterfactual CVR risk) returns instead a function
            ``aux_loss(labels) -> scalar tensor``: ``forward`` still never reads the labels;
            in training the core calls the function once with the batch's ``[B, T]`` float
            labels (:func:`resolve_aux_loss`) and adds the result to the loss. The function
            may use any tensor of the forward pass (it is a closure over them).
    """

    logits: torch.Tensor
    aux_loss: torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


def resolve_aux_loss(
    aux_loss: torch.Tensor | Callable[[torch.Tensor], torch.Tensor], labels: torch.Tensor
) -> torch.Tensor:
    """The auxiliary loss of one forward pass as a scalar tensor.

    Args:
        aux_loss: :attr:`ModelOutput.aux_loss`: a scalar tensor, or a function of the labels.
        labels: ``[B, T]`` float labels of the batch the forward pass saw.

    Returns:
        ``aux_loss`` itself, or ``aux_loss(labels)``.

    Raises:
        SpecError: The value (or the function's result) is not a scalar tensor.
    """
    import torch  # here, not at module level: registering plugins imports no torch

    value = aux_loss(labels) if callable(aux_loss) else aux_loss
    if not isinstance(value, torch.Tensor) or value.dim() != 0:
        what = "aux_loss(labels)" if callable(aux_loss) else "aux_loss"
        shape = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise SpecError(f"{what} must be a scalar tensor, got {shape}")
    return value


@dataclass(frozen=True)
class Split:
    """One split of a dataset, resident in memory as tensors.

    Attributes:
        categorical: ``[N, F_c]`` integer ids (any integer dtype; batches are cast to int64).
        numeric: ``[N, F_n]`` float32.
        scenario: ``[N]`` integer scenario ids.
        labels: ``[N, T]`` float32 labels in {0, 1}.
        oracle: Optional ``[N, T]`` logits of the *true* label probabilities, known only for
            generated data; the runner then reports the oracle (Bayes) metrics, the ceiling no
            model can beat, beside the model's.
        groups: Optional ``[N]`` integer ids of the rows' groups (a search page, a user), for a
            dataset whose spec declares a group column (``DatasetSpec.tags["group"]``): grouped
            metrics (GAUC, NDCG@k) rank within them and test-set intervals resample them.
    """

    categorical: torch.Tensor
    numeric: torch.Tensor
    scenario: torch.Tensor
    labels: torch.Tensor
    oracle: torch.Tensor | None = None
    groups: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.scenario.shape[0]
        if self.groups is not None and (self.groups.dim() != 1 or self.groups.shape[0] != n):
            raise SpecError(f"Split.groups: expected [{n}], got {list(self.groups.shape)}")
        for name in ("categorical", "numeric", "labels", "oracle"):
            t = getattr(self, name)
            if t is None:
                continue
            if t.dim() != 2 or t.shape[0] != n:
                raise SpecError(f"Split.{name}: expected [{n}, *], got {list(t.shape)}")

    def __len__(self) -> int:
        return int(self.scenario.shape[0])

    def batch(self, index: torch.Tensor | slice) -> Batch:
        """Rows ``index`` as a :class:`Batch` (int64 ids, float32 values)."""
        return Batch(
            self.categorical[index].long(),
            self.numeric[index].float(),
            self.scenario[index].long(),
            self.labels[index].float(),
        )

    def subset(self, index: torch.Tensor) -> "Split":
        """A new split holding rows ``index``."""
        return Split(
            self.categorical[index],
            self.numeric[index],
            self.scenario[index],
            self.labels[index],
            None if self.oracle is None else self.oracle[index],
            None if self.groups is None else self.groups[index],
        )

    def to(self, device: torch.device | str) -> "Split":
        """The same split with every tensor on ``device``."""
        oracle = None if self.oracle is None else self.oracle.to(device)
        groups = None if self.groups is None else self.groups.to(device)
        return Split(
            self.categorical.to(device),
            self.numeric.to(device),
            self.scenario.to(device),
            self.labels.to(device),
            oracle,
            groups,
        )


@dataclass(frozen=True)
class Protocol:
    """A named, versioned evaluation protocol. Its :attr:`id` goes into every result.

    Results with different protocol ids are never ranked together.

    Attributes:
        dataset: Dataset name.
        name: Protocol name (``"bundled"``, ``"official"``).
        version: Bumped whenever the split rule, preprocessing or encoding changes.
        scenarios: Scenario names in the protocol's scenario set.
        split_rule: One line describing how train/valid/test are formed.
        synthetic: True for generated data; the id then says so.
    """

    dataset: str
    name: str
    version: int
    scenarios: tuple[str, ...]
    split_rule: str
    synthetic: bool = False

    @property
    def id(self) -> str:
        """``dataset/name/v<version>/<scenarios>``, prefixed ``synthetic/`` for generated data."""
        scen = "+".join(self.scenarios)
        prefix = "synthetic/" if self.synthetic else ""
        return f"{prefix}{self.dataset}/{self.name}/v{self.version}/{scen}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description, as stored in run records."""
        return {
            "id": self.id,
            "dataset": self.dataset,
            "name": self.name,
            "version": self.version,
            "scenarios": list(self.scenarios),
            "split_rule": self.split_rule,
            "synthetic": self.synthetic,
        }


@dataclass(frozen=True)
class LoadedDataset:
    """A dataset ready for training: schema, protocol and the three splits.

    Attributes:
        schema: The dataset schema.
        protocol: The protocol the splits follow.
        train: Training split.
        valid: Validation split (early stopping and model selection only).
        test: Test split (reported once, after training).
        info: Free-form JSON-serialisable facts for the run record (source files, checksums,
            row counts, out-of-vocabulary counts).
        memory_mapped: The split tensors are views of memory-mapped files (larger than memory):
            the runner then block-shuffles rows instead of a full random permutation.
    """

    schema: DatasetSchema
    protocol: Protocol
    train: Split
    valid: Split
    test: Split
    info: Mapping[str, Any] = field(default_factory=dict)
    memory_mapped: bool = False

    def __post_init__(self) -> None:
        for name in ("train", "valid", "test"):
            split: Split = getattr(self, name)
            if split.categorical.shape[1] != len(self.schema.categorical):
                raise SpecError(
                    f"{name} split has {split.categorical.shape[1]} categorical columns, "
                    f"schema declares {len(self.schema.categorical)}"
                )
            if split.numeric.shape[1] != self.schema.n_numeric:
                raise SpecError(
                    f"{name} split has {split.numeric.shape[1]} numeric columns, "
                    f"schema declares {self.schema.n_numeric}"
                )
            if split.labels.shape[1] != self.schema.n_tasks:
                raise SpecError(
                    f"{name} split has {split.labels.shape[1]} label columns, "
                    f"schema declares {self.schema.n_tasks} tasks"
                )
            if len(split) and (
                int(split.scenario.min()) < 0
                or int(split.scenario.max()) >= self.schema.n_scenarios
            ):
                raise SpecError(
                    f"{name} split has scenario ids outside [0, {self.schema.n_scenarios}) "
                    f"(scenarios: {', '.join(self.schema.scenarios)})"
                )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class Constraint:
    """The allowed values of one hyper-parameter, declared in :attr:`ModelSpec.constraints`.

    For a number, the bounds apply to the value; for a list, to each element (and
    ``non_empty`` requires at least one). NaN never satisfies a bound. The core checks every
    constrained value before ``build`` is called and reports a violation as one line naming
    the parameter; the shortcuts :data:`POSITIVE`, :data:`NON_NEGATIVE`, :data:`DROPOUT`,
    :data:`PROBABILITY`, :data:`WIDTHS` and :data:`OPTIONAL_WIDTHS` cover the usual cases.

    Attributes:
        low: Smallest allowed value (``None``: no lower bound).
        high: Largest allowed value (``None``: no upper bound).
        low_open: ``low`` itself is not allowed (``> low``).
        high_open: ``high`` itself is not allowed (``< high``).
        non_empty: A list value must hold at least one element.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    non_empty: bool = False

    def describe(self, value: Any = None) -> str:
        """The rule in words: ``"> 0"``, ``"in [0, 1)"``, ``"a non-empty list of values > 0"``.

        With a list ``value`` the words say that the rule applies to each element.
        """
        if self.low is not None and self.high is not None:
            rule = (
                f"in {'(' if self.low_open else '['}{_bound(self.low)}, "
                f"{_bound(self.high)}{')' if self.high_open else ']'}"
            )
        elif self.low is not None:
            rule = f"{'>' if self.low_open else '>='} {_bound(self.low)}"
        elif self.high is not None:
            rule = f"{'<' if self.high_open else '<='} {_bound(self.high)}"
        else:
            rule = ""
        if self.non_empty:
            return "a non-empty list" + (f" of values {rule}" if rule else "")
        if isinstance(value, (list, tuple)):
            return f"a list of values {rule}"
        return rule

    def _number_ok(self, x: Any) -> bool:
        if not _is_number(x) or math.isnan(x):
            return False
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return False
        return not (self.high is not None and (x >= self.high if self.high_open else x > self.high))

    def allows(self, value: Any) -> bool:
        """Whether ``value`` satisfies the constraint."""
        bounded = self.low is not None or self.high is not None
        if isinstance(value, (list, tuple)):
            if self.non_empty and not value:
                return False
            return not bounded or all(self._number_ok(v) for v in value)
        if self.non_empty:
            return False
        return not bounded or self._number_ok(value)


#: A number (or every element of a list) greater than 0.
POSITIVE = Constraint(low=0, low_open=True)
#: A number greater than or equal to 0.
NON_NEGATIVE = Constraint(low=0)
#: A dropout probability: in [0, 1).
DROPOUT = Constraint(low=0, high=1, high_open=True)
#: A probability or mixing weight: in [0, 1].
PROBABILITY = Constraint(low=0, high=1)
#: Layer widths: a non-empty list of positive numbers.
WIDTHS = Constraint(low=0, low_open=True, non_empty=True)
#: Layer widths that may be empty (no hidden layer): a list of positive numbers.
OPTIONAL_WIDTHS = POSITIVE


def _check_name(kind: str, name: Any) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise SpecError(
            f"{kind} name {name!r} is invalid: expected lowercase letters, digits, '_' or '-', "
            "starting with a letter"
        )


@dataclass(frozen=True)
class ModelSpec:
    """A model a plugin registers.

    Attributes:
        name: Registry name, lowercase and unique (``"mmoe"``).
        summary: One line; reconstructed or non-faithful variants say so here.
        build: ``build(schema, **hparams) -> torch.nn.Module``. Receives every key of
            ``defaults`` (the core has already merged and type-checked user values); it must not
            take ``**kwargs``. The module's ``forward(batch)`` returns a :class:`ModelOutput`.
        defaults: Every hyper-parameter with its default; JSON-serialisable scalars or lists.
        paper: Title, venue and link of the paper the model follows.
        tags: Declared properties the core and the conformance suite act on, e.g.
            ``{"batching": "scenario_pure"}`` for a model whose faithful training uses
            single-scenario batches, ``{"head": "esmm"}`` for its preferred head where the tasks
            allow it, ``{"heads": ["direct"]}`` for the only heads it supports.
        expected_failed_checks: ``{check_name: reason}`` for conformance checks known to fail.
        check_params: Hyper-parameter overrides the conformance suite builds with, to keep the
            checks fast (smaller widths); keys must be keys of ``defaults``.
        constraints: ``{key: Constraint}`` for hyper-parameters with a restricted range
            (widths > 0, dropout in [0, 1)); keys must be keys of ``defaults``, and the
            defaults and ``check_params`` must satisfy them. User values are checked before
            ``build``.
        task_weights: ``task_weights(schema, params) -> [w_1, ..., w_T]``, the loss weight of
            each task in the schema's task order given the resolved hyper-parameters (a model's
            published weighting, e.g. AESM²'s 0.1 on CTR); ``None``: every task weighs 1. The
            core resolves it when it builds the model (:func:`resolve_task_weights`) and the
            trainer's loss reads the result.
        search_space: ``{name: dimension}`` that ``mssbench tune`` searches
            (:mod:`mssbench.space`: ``FloatRange``, ``IntRange``, ``Choice``, ``Widths``); names
            are keys of ``defaults`` or the training options ``lr`` and ``weight_decay``. The
            optimiser's common space is always searched as well (a declared name replaces it).
        version: Bumped whenever a change alters the numbers the model gives at an unchanged
            configuration. Every record states it; ``mssbench suite`` runs a configuration
            again when its finished record is of another version, and a leaderboard page shows
            only each model's newest version.
    """

    name: str
    summary: str
    build: Callable[..., torch.nn.Module]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    paper: str = ""
    tags: Mapping[str, Any] = field(default_factory=dict)
    expected_failed_checks: Mapping[str, str] = field(default_factory=dict)
    check_params: Mapping[str, Any] = field(default_factory=dict)
    version: int = 1
    constraints: Mapping[str, Constraint] = field(default_factory=dict)
    task_weights: Callable[[DatasetSchema, Mapping[str, Any]], Sequence[float]] | None = None
    search_space: Mapping[str, Dimension] = field(default_factory=dict)

    def _validate_constraints(self) -> None:
        unknown = sorted(set(self.constraints) - set(self.defaults))
        if unknown:
            raise SpecError(f"model {self.name!r}: constraints keys not in defaults: {unknown}")
        for key, rule in self.constraints.items():
            if not isinstance(rule, Constraint):
                raise SpecError(
                    f"model {self.name!r}: constraints[{key!r}] must be a mssbench.Constraint, "
                    f"got {type(rule).__name__}"
                )
            for where, values in (("default", self.defaults), ("check_params", self.check_params)):
                if key in values and not rule.allows(values[key]):
                    raise SpecError(
                        f"model {self.name!r}: {where} of {key!r} is {values[key]!r}, "
                        f"which breaks its constraint ({rule.describe()})"
                    )

    def validate(self) -> None:
        """Raise :class:`SpecError` if the spec is malformed."""
        _check_name("model", self.name)
        if not callable(self.build):
            raise SpecError(f"model {self.name!r}: build is not callable")
        if self.task_weights is not None and not callable(self.task_weights):
            raise SpecError(f"model {self.name!r}: task_weights must be callable or None")
        if not isinstance(self.summary, str) or not self.summary.strip():
            raise SpecError(f"model {self.name!r}: summary must be a non-empty string")
        try:
            json.dumps(dict(self.defaults))
        except TypeError as exc:
            raise SpecError(
                f"model {self.name!r}: defaults are not JSON-serialisable: {exc}"
            ) from None
        unknown = sorted(set(self.check_params) - set(self.defaults))
        if unknown:
            raise SpecError(f"model {self.name!r}: check_params keys not in defaults: {unknown}")
        self._validate_constraints()
        try:
            validate_space(self.search_space, self.defaults, f"model {self.name!r}")
        except SpaceError as exc:
            raise SpecError(str(exc)) from None
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise SpecError(
                f"model {self.name!r}: version must be an integer >= 1, got {self.version!r}"
            )
        heads = self.tags.get("heads")
        if heads is not None and (
            isinstance(heads, str) or not heads or any(h not in HEADS for h in heads)
        ):
            raise SpecError(
                f"model {self.name!r}: tag heads must be a non-empty list of "
                f"{', '.join(HEADS)}, got {heads!r}"
            )


def resolve_task_weights(
    spec: ModelSpec, schema: DatasetSchema, params: Mapping[str, Any]
) -> tuple[float, ...]:
    """The loss weight of each task for ``spec`` built with ``params`` on ``schema``.

    Raises:
        ValueError: The declared function returned other than one finite weight >= 0 per task.
    """
    if spec.task_weights is None:
        return (1.0,) * schema.n_tasks
    weights = tuple(float(w) for w in spec.task_weights(schema, params))
    if len(weights) != schema.n_tasks:
        raise ValueError(
            f"task_weights has {len(weights)} entries but the dataset has {schema.n_tasks} "
            f"tasks ({', '.join(schema.task_names)})"
        )
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"task_weights must be finite and >= 0, got {list(weights)}")
    return weights


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset a plugin registers.

    Attributes:
        name: Registry name, lowercase and unique (``"census-income"``).
        summary: One line.
        load: ``load(options) -> LoadedDataset``, where ``options`` is a dict of the keys of
            ``options`` (user values merged over the defaults, types checked).
        options: Every loader option with its default (for example ``{"protocol": "bundled",
            "data_dir": ""}``).
        source: Where the data comes from and under which licence.
        tags: Declared properties, e.g. ``{"synthetic": True}``. ``{"group": "search_id"}``
            declares the column its splits carry as :attr:`Split.groups` (the search page, the
            user), within which grouped metrics rank and over which test intervals resample.
        prepare: Optional ``prepare(source, dest, log) -> list[dict]`` for data users bring:
            converts the files under ``source`` (a directory) into the dataset's cache under
            ``dest`` (``mssbench data prepare NAME --source DIR``), reporting progress through
            ``log(str)``, and returns the rows of a summary table (one dict per row). It must
            leave nothing under ``dest`` that ``load`` would accept if it fails or is
            interrupted.
        earlier_options: For run records made before an option existed: the value that gives
            the data such a run had (``{"small_train": 1.0}``: no thinning before the option).
            An option not named here is taken at its default; ``None`` says no value of the
            option gives that data. Suites use it to tell whether a record ran on the data a
            configuration means today (:mod:`mssbench.identity`).
    """

    name: str
    summary: str
    load: Callable[[dict[str, Any]], LoadedDataset]
    options: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    tags: Mapping[str, Any] = field(default_factory=dict)
    prepare: Callable[..., list[dict[str, Any]]] | None = None
    earlier_options: Mapping[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise :class:`SpecError` if the spec is malformed."""
        _check_name("dataset", self.name)
        if not callable(self.load):
            raise SpecError(f"dataset {self.name!r}: load is not callable")
        if self.prepare is not None and not callable(self.prepare):
            raise SpecError(f"dataset {self.name!r}: prepare is not callable")
        if not isinstance(self.summary, str) or not self.summary.strip():
            raise SpecError(f"dataset {self.name!r}: summary must be a non-empty string")
        try:
            json.dumps(dict(self.options))
            json.dumps(dict(self.earlier_options))
        except TypeError as exc:
            raise SpecError(
                f"dataset {self.name!r}: options are not JSON-serialisable: {exc}"
            ) from None
        unknown = sorted(set(self.earlier_options) - set(self.options))
        if unknown:
            raise SpecError(
                f"dataset {self.name!r}: earlier_options names undeclared options {unknown}"
            )


#: The heads the core can put on a model's logits (``--head``, and a spec's ``heads`` tag).
HEADS = ("direct", "esmm")

#: How training batches are drawn (``--batching``; a spec's ``tags["batching"]`` default).
BATCHINGS = ("mixed", "scenario_pure")

#: Metric names the core computes itself (and the prefix of its macro keys): not for plugins.
RESERVED_METRIC_NAMES = ("auc", "logloss")


@dataclass(frozen=True)
class MetricSpec:
    """A test metric a plugin registers, computed for every (scenario, task) cell.

    ``mssbench run --metric NAME`` adds it to the test report and the run record beside the
    built-in AUC and log loss: one value per scenario and task, ``pooled`` over all scenarios
    and ``macro`` (the mean over the scenarios where it is defined). Model selection stays on
    the built-in validation metric.

    Attributes:
        name: Registry name, lowercase and unique (``"pr_auc"``); not ``auc`` or ``logloss``
            and not starting with ``macro_``.
        summary: One line.
        compute: ``compute(logits, labels) -> float`` for one cell: ``logits`` is a float64
            ``[M]`` tensor of the cell's scores as logits (for a conditional task such as CVR
            on clicked rows, the conditional logit), ``labels`` an int64 ``[M]`` tensor of 0/1,
            both on the evaluation device, ``M >= 1`` and no NaN score. It must not modify its
            inputs, must not depend on the order of the rows, and returns NaN where the metric
            is undefined for the cell.
        needs_both_classes: The cell is undefined (NaN, with the reason) unless it holds
            positives and negatives; ``compute`` is then never called with one class only.
        grouped: ``compute(logits, labels, groups)`` takes a third ``[M]`` int64 tensor, the
            cell's group ids (search page, user) from the test split; on a dataset that declares
            no group column the metric's cells are NaN, with that reason.
        higher_is_better: Direction of the metric (AUC-like: True; loss-like: False).
        reference: Where the definition comes from (paper, library function).
        version: Bumped whenever a change alters the values the metric gives; records state it.
    """

    name: str
    summary: str
    compute: Callable[..., float]
    needs_both_classes: bool = True
    grouped: bool = False
    higher_is_better: bool = True
    reference: str = ""
    version: int = 1

    def validate(self) -> None:
        """Raise :class:`SpecError` if the spec is malformed."""
        _check_name("metric", self.name)
        if self.name in RESERVED_METRIC_NAMES or self.name.startswith("macro_"):
            raise SpecError(
                f"metric name {self.name!r} is reserved: the core computes "
                f"{' and '.join(RESERVED_METRIC_NAMES)} and names macro averages 'macro_*'"
            )
        if not callable(self.compute):
            raise SpecError(f"metric {self.name!r}: compute is not callable")
        if not isinstance(self.summary, str) or not self.summary.strip():
            raise SpecError(f"metric {self.name!r}: summary must be a non-empty string")
        for flag in ("needs_both_classes", "higher_is_better"):
            if not isinstance(getattr(self, flag), bool):
                raise SpecError(
                    f"metric {self.name!r}: {flag} must be True or False, "
                    f"got {getattr(self, flag)!r}"
                )
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise SpecError(
                f"metric {self.name!r}: version must be an integer >= 1, got {self.version!r}"
            )
