"""Conformance checks for dataset plugins (:class:`~mssbench.spec.DatasetSpec`).

Each check is a function ``check_dataset_<property>(case)`` that raises ``AssertionError`` when
the dataset breaks the contract (or :class:`~mssbench.testing.checks.SkipCheck` when it cannot
run). A :class:`DatasetCase` loads the dataset at most twice, whatever the number of checks::

    from mssbench.testing import check_dataset
    from my_plugin import MY_DATASET

    def test_conformance(tmp_path):
        check_dataset(MY_DATASET, {"n_rows": 5000})

**Vocabularies fitted on train only.** Two checks, one generic and one the plugin declares:

* ``check_dataset_vocab_fitted_on_train`` needs no help: with vocabularies fitted on train, every
  id other than the out-of-vocabulary id 0 met in valid or test was met in train too. An id seen
  only in valid or test means that its category was given an id of its own, i.e. the vocabulary
  saw more than train. Generated data (``tags={"synthetic": True}``) draws ids from a declared
  universe and fits nothing, so the check is skipped there.
* ``check_dataset_unseen_value_is_oov`` plants a category in the test split only and checks it
  is encoded 0. Only the plugin knows how to write its raw input, so the plugin declares the
  probe in its spec, ``tags={"oov_probe": probe}`` (or a test passes ``oov_probe=`` to
  :func:`check_dataset`): ``probe(workdir, options) -> OovProbe`` writes a copy of its input
  under ``workdir`` with the planted value and returns the options that load it, the split,
  row and field of the planted cell. Without a probe the check is skipped.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from mssbench.config import resolve
from mssbench.data import contract
from mssbench.errors import describe_error
from mssbench.spec import DatasetSpec, LoadedDataset, SpecError, Split
from mssbench.testing.checks import CheckResult, SkipCheck, collect_results, raise_on_failures

__all__ = [
    "ALL_DATASET_CHECKS",
    "OOV_PROBE_TAG",
    "DatasetCase",
    "OovProbe",
    "check_dataset",
    "run_dataset_checks",
]

#: The :attr:`DatasetSpec.tags` key under which a plugin declares its OOV probe.
OOV_PROBE_TAG = "oov_probe"


@dataclass(frozen=True)
class OovProbe:
    """A category planted in one split only, which must be encoded as the OOV id 0.

    Attributes:
        options: Load options that read the planted copy of the data (merged over the case's).
        split: The split holding the planted row (``"test"`` or ``"valid"``).
        row: Its row in that split.
        field: The categorical field whose value exists nowhere else.
    """

    options: Mapping[str, Any]
    split: str
    row: int
    field: str


Probe = Callable[[Path, dict[str, Any]], OovProbe]


@dataclass
class DatasetCase:
    """One dataset under test: its spec, resolved options and (lazily, cached) two loads.

    Attributes:
        spec: The dataset spec.
        options: Load options, merged over the declared defaults.
        oov_probe: The probe of ``check_dataset_unseen_value_is_oov`` (default: the spec's
            ``tags["oov_probe"]``, if any).
    """

    spec: DatasetSpec
    options: dict[str, Any]
    oov_probe: Probe | None = None
    _loads: dict[int, LoadedDataset | BaseException] = field(default_factory=dict, repr=False)

    def load(self, attempt: int = 0, options: Mapping[str, Any] | None = None) -> LoadedDataset:
        """Load number ``attempt`` (0 or 1) is done once and cached; ``options`` loads afresh."""
        if options is not None:
            return _checked_load(self.spec, resolve_options(self.spec, options))
        if attempt not in self._loads:
            try:
                self._loads[attempt] = _checked_load(self.spec, self.options)
            except Exception as exc:  # noqa: BLE001 - every check that needs it reports it
                self._loads[attempt] = exc
        got = self._loads[attempt]
        if isinstance(got, BaseException):
            raise AssertionError(f"load failed: {describe_error(got)}")
        return got


def resolve_options(spec: DatasetSpec, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` merged over the spec's declared defaults (unknown keys rejected)."""
    return resolve("data option", f"dataset {spec.name!r}", spec.options, dict(options or {}))


def _checked_load(spec: DatasetSpec, options: dict[str, Any]) -> LoadedDataset:
    data = spec.load(dict(options))
    _require(
        isinstance(data, LoadedDataset),
        f"load() returned {type(data).__name__}, expected LoadedDataset",
    )
    return data


def _require(condition: bool, message: str) -> None:
    """``AssertionError(message)`` unless ``condition`` (the message as is, even under pytest)."""
    if not condition:
        raise AssertionError(message)


def _splits(data: LoadedDataset) -> Iterable[tuple[str, Split]]:
    return ((name, getattr(data, name)) for name in contract.SPLITS)


def check_dataset_spec_well_formed(case: DatasetCase) -> None:
    """The spec validates: name, summary, callables, JSON-serialisable options."""
    try:
        case.spec.validate()
    except SpecError as exc:
        raise AssertionError(str(exc)) from None


def check_dataset_loads(case: DatasetCase) -> None:
    """``load`` returns a LoadedDataset whose protocol names the dataset; ``info`` is JSON."""
    data = case.load()
    _require(
        data.protocol.dataset == case.spec.name,
        f"protocol.dataset is {data.protocol.dataset!r}, expected {case.spec.name!r}",
    )
    try:
        json.dumps(dict(data.info))
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"info is not JSON-serialisable: {exc}") from None


def check_dataset_contract(case: DatasetCase) -> None:
    """Ids in ``[0, vocab_size)``, 0/1 labels, declared relations, finite numerics."""
    found = contract.violations(case.load(), case.spec.name)
    _require(not found, "\n".join(found))


def check_dataset_scenarios_in_train(case: DatasetCase) -> None:
    """Every declared scenario has training rows, and the protocol lists the same scenarios."""
    data = case.load()
    counts = contract.split_counts(data)["train"]["scenarios"]
    empty = [s for s, c in counts.items() if c["rows"] == 0]
    _require(not empty, f"scenarios without training rows: {', '.join(empty)}")
    _require(
        tuple(data.protocol.scenarios) == tuple(data.schema.scenarios),
        (
            f"protocol scenarios {list(data.protocol.scenarios)} differ from the schema's "
            f"{list(data.schema.scenarios)}"
        ),
    )


def check_dataset_split_deterministic(case: DatasetCase) -> None:
    """Two loads with the same options give the same rows in every split, in the same order."""
    first, second = case.load(0), case.load(1)
    _require(first.schema == second.schema, "the schema differs between two loads")
    for name, a in _splits(first):
        b: Split = getattr(second, name)
        for column in ("categorical", "numeric", "scenario", "labels", "oracle"):
            x, y = getattr(a, column), getattr(b, column)
            same = (x is None and y is None) or (
                x is not None and y is not None and x.shape == y.shape and torch.equal(x, y)
            )
            _require(same, f"split {name}: {column} differs between two loads")


def check_dataset_protocol_stable(case: DatasetCase) -> None:
    """The protocol id is the same across loads and says ``synthetic/`` for generated data."""
    first, second = case.load(0), case.load(1)
    _require(
        first.protocol.id == second.protocol.id,
        f"protocol id changed between loads: {first.protocol.id!r} -> {second.protocol.id!r}",
    )
    synthetic = bool(case.spec.tags.get("synthetic", False))
    _require(
        first.protocol.synthetic == synthetic,
        f"tags say synthetic={synthetic} but the protocol says {first.protocol.synthetic}",
    )


def _train_ids(column: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Which ids occur in ``column`` (ids outside the vocabulary are the contract check's)."""
    seen = torch.zeros(vocab_size, dtype=torch.bool)
    for start in range(0, len(column), 1 << 20):
        seen[column[start : start + (1 << 20)].long().clamp(0, vocab_size - 1)] = True
    return seen


def check_dataset_vocab_fitted_on_train(case: DatasetCase) -> None:
    """Every non-OOV id of valid and test also occurs in train (ids fitted on train only)."""
    if case.spec.tags.get("synthetic"):
        raise SkipCheck("generated data: ids come from a declared universe, nothing is fitted")
    data = case.load()
    problems = []
    for j, fld in enumerate(data.schema.categorical):
        seen = _train_ids(data.train.categorical[:, j], fld.vocab_size)
        for name in ("valid", "test"):
            col = getattr(data, name).categorical[:, j].long()
            bad = torch.nonzero((col != 0) & ~seen[col.clamp(0, fld.vocab_size - 1)])
            if len(bad):
                row = int(bad[0, 0])
                problems.append(
                    f"split {name}, field {fld.name!r}: id {int(col[row])} at row {row} never "
                    "occurs in train (a category unseen in train must map to 0)"
                )
    _require(not problems, "\n".join(problems))


def check_dataset_unseen_value_is_oov(case: DatasetCase) -> None:
    """A category planted in the test split only (the plugin's OOV probe) is encoded 0."""
    probe = case.oov_probe or case.spec.tags.get(OOV_PROBE_TAG)
    if probe is None:
        raise SkipCheck(f"the dataset declares no tags[{OOV_PROBE_TAG!r}] probe")
    with tempfile.TemporaryDirectory(prefix="mssbench-oov-probe-") as workdir:
        planted = probe(Path(workdir), dict(case.options))
        data = case.load(options={**case.options, **dict(planted.options)})
    names = [f.name for f in data.schema.categorical]
    _require(planted.field in names, f"probe names unknown field {planted.field!r}")
    split: Split = getattr(data, planted.split)
    _require(
        0 <= planted.row < len(split),
        f"probe row {planted.row} is outside split {planted.split} ({len(split)} rows)",
    )
    value = int(split.categorical[planted.row, names.index(planted.field)])
    _require(
        value == 0,
        (
            f"a {planted.field!r} value seen only in split {planted.split} (row {planted.row}) "
            f"was encoded {value}, expected the OOV id 0"
        ),
    )


ALL_DATASET_CHECKS: tuple[Callable[[DatasetCase], None], ...] = (
    check_dataset_spec_well_formed,
    check_dataset_loads,
    check_dataset_contract,
    check_dataset_scenarios_in_train,
    check_dataset_split_deterministic,
    check_dataset_protocol_stable,
    check_dataset_vocab_fitted_on_train,
    check_dataset_unseen_value_is_oov,
)


def _spec_of(spec_or_name: DatasetSpec | str) -> DatasetSpec:
    if isinstance(spec_or_name, DatasetSpec):
        return spec_or_name
    from mssbench.plugins import load_registry

    return load_registry().dataset(spec_or_name)


def run_dataset_checks(
    spec_or_name: DatasetSpec | str,
    options: Mapping[str, Any] | None = None,
    oov_probe: Probe | None = None,
    checks: Iterable[Callable[[DatasetCase], None]] = ALL_DATASET_CHECKS,
) -> list[CheckResult]:
    """Run the dataset checks and collect results without raising.

    Args:
        spec_or_name: The spec, or the name of a registered dataset.
        options: Load options (merged over the declared defaults).
        oov_probe: Overrides the spec's declared OOV probe.
        checks: The checks to run.
    """
    spec = _spec_of(spec_or_name)
    case = DatasetCase(spec, resolve_options(spec, options), oov_probe)
    return collect_results(checks, lambda check: check(case), {})


def check_dataset(
    spec_or_name: DatasetSpec | str,
    options: Mapping[str, Any] | None = None,
    oov_probe: Probe | None = None,
) -> list[CheckResult]:
    """Run every dataset check; raise ``AssertionError`` listing the failed ones.

    Args:
        spec_or_name: The spec, or the name of a registered dataset.
        options: Load options (merged over the declared defaults), e.g. a small ``n_rows``.
        oov_probe: Overrides the spec's declared OOV probe (see the module docstring).

    Returns:
        The results of every check (when none failed).
    """
    spec = _spec_of(spec_or_name)
    return raise_on_failures("dataset", spec.name, run_dataset_checks(spec, options, oov_probe))
