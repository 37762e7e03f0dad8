"""The plugin conformance suite, in the spirit of scikit-learn's ``check_estimator``.

Every check is a plain function ``check_<property>(spec, schema)`` that raises
``AssertionError`` with a message when the model breaks the contract. Plugin authors call
:func:`check_model` (or :func:`parametrize_with_checks` in pytest) from their own tests::

    from mssbench.testing import check_model
    from my_plugin import MY_SPEC

    def test_conformance():
        check_model(MY_SPEC)

Models are built from their defaults with the spec's ``check_params`` on top (smaller widths,
so the suite runs in seconds). Checks a spec lists in ``expected_failed_checks`` are reported as
expected failures.
"""

from __future__ import annotations

import copy
import functools
import io
import json
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F

from mssbench.config import resolve
from mssbench.errors import MssbenchError, describe_error
from mssbench.space import full_space, probe_points, split_point
from mssbench.spec import (
    Batch,
    DatasetSchema,
    ModelOutput,
    ModelSpec,
    SpecError,
    resolve_aux_loss,
)
from mssbench.testing.synthetic import make_schema, make_split

Check = Callable[[ModelSpec, DatasetSchema], None]


class SkipCheck(Exception):
    """A check cannot run here (no CUDA, no probe declared): ``skipped``, never ``passed``."""


SEED = 0


def _build(
    spec: ModelSpec, schema: DatasetSchema, seed: int = SEED, **overrides
) -> torch.nn.Module:
    torch.manual_seed(seed)
    params = {**dict(spec.defaults), **dict(spec.check_params), **overrides}
    return spec.build(schema, **params)


def _batch(schema: DatasetSchema, n: int, seed: int = 1) -> Batch:
    split = make_split(schema, max(n, 1), seed=seed)
    return split.batch(slice(0, n))


def _forward(model: torch.nn.Module, batch: Batch) -> ModelOutput:
    out = model(batch)
    assert isinstance(out, tuple) and len(out) == 2, (
        f"forward must return ModelOutput(logits, aux_loss), got {type(out).__name__}"
    )
    return ModelOutput(*out)


def _aux(out: ModelOutput, batch: Batch) -> torch.Tensor:
    """The scalar auxiliary loss of ``out`` (a function of the labels is called with them)."""
    try:
        return resolve_aux_loss(out.aux_loss, batch.labels)
    except SpecError as exc:
        raise AssertionError(str(exc)) from None


def _close(a: torch.Tensor, b: torch.Tensor, what: str, atol: float = 1e-5) -> None:
    diff = (a - b).abs().max().item() if a.numel() else 0.0
    assert a.shape == b.shape and diff <= atol, f"{what}: max abs difference {diff:.3g} > {atol}"


def check_spec_well_formed(spec: ModelSpec, schema: DatasetSchema) -> None:
    """The spec validates and its defaults survive a JSON round trip unchanged."""
    try:
        spec.validate()
    except SpecError as exc:
        raise AssertionError(str(exc)) from None
    roundtrip = json.loads(json.dumps(dict(spec.defaults)))
    assert roundtrip == dict(spec.defaults), "defaults change in a JSON round trip"


def check_unknown_param_rejected(spec: ModelSpec, schema: DatasetSchema) -> None:
    """``build`` rejects a hyper-parameter it does not declare (no ``**kwargs``)."""
    try:
        _build(spec, schema, not_a_real_hyperparameter=1)
    except (TypeError, ValueError):
        return
    raise AssertionError("build accepted an unknown hyper-parameter 'not_a_real_hyperparameter'")


def check_output_shape_and_dtype(spec: ModelSpec, schema: DatasetSchema) -> None:
    """Logits are floating ``[B, T]`` and ``aux_loss`` a scalar for several batch sizes.

    B in 1, 2, 7, 64 in eval mode and 2, 64 in train mode.
    """
    model = _build(spec, schema)
    for mode, sizes in (("eval", (1, 2, 7, 64)), ("train", (2, 64))):
        getattr(model, mode)()
        for b in sizes:
            batch = _batch(schema, b)
            out = _forward(model, batch)
            assert tuple(out.logits.shape) == (b, schema.n_tasks), (
                f"{mode} B={b}: logits {list(out.logits.shape)}, expected [{b}, {schema.n_tasks}]"
            )
            assert out.logits.is_floating_point(), f"logits dtype {out.logits.dtype}"
            _aux(out, batch)  # a scalar tensor, or a function of the labels giving one


def check_finite_outputs_and_loss(spec: ModelSpec, schema: DatasetSchema) -> None:
    """Logits, ``aux_loss`` and the training loss are finite."""
    model = _build(spec, schema).train()
    batch = _batch(schema, 64)
    out = _forward(model, batch)
    assert torch.isfinite(out.logits).all(), "non-finite logits"
    aux = _aux(out, batch)
    assert torch.isfinite(aux), "non-finite aux_loss"
    loss = F.binary_cross_entropy_with_logits(out.logits, batch.labels) + aux
    assert torch.isfinite(loss), "non-finite loss"


def check_batch_permutation(spec: ModelSpec, schema: DatasetSchema) -> None:
    """In eval mode, permuting the batch permutes the outputs (no hidden reordering)."""
    model = _build(spec, schema).eval()
    batch = _batch(schema, 32)
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = _forward(model, batch).logits
        b = _forward(model, Batch(*(t[perm] for t in batch))).logits
    _close(a[perm], b, "outputs of a permuted batch")


def check_eval_deterministic(spec: ModelSpec, schema: DatasetSchema) -> None:
    """Two eval-mode passes over the same batch give identical outputs."""
    model = _build(spec, schema).eval()
    batch = _batch(schema, 32)
    with torch.no_grad():
        a, b = _forward(model, batch).logits, _forward(model, batch).logits
    assert torch.equal(a, b), "eval outputs differ between two passes"


def check_batch_independence(spec: ModelSpec, schema: DatasetSchema) -> None:
    """In eval mode a sample's output does not depend on the other samples in the batch."""
    model = _build(spec, schema).eval()
    batch = _batch(schema, 32)
    with torch.no_grad():
        full = _forward(model, batch).logits
        first = _forward(model, Batch(*(t[:5] for t in batch))).logits
        single = _forward(model, Batch(*(t[7:8] for t in batch))).logits
    _close(full[:5], first, "outputs of a sub-batch")
    _close(full[7:8], single, "output of a one-row batch")


def check_same_seed_same_init(spec: ModelSpec, schema: DatasetSchema) -> None:
    """Building twice with the same seed gives the same initial outputs."""
    batch = _batch(schema, 16)
    with torch.no_grad():
        a = _forward(_build(spec, schema, seed=7).eval(), batch).logits
        b = _forward(_build(spec, schema, seed=7).eval(), batch).logits
    assert torch.equal(a, b), "same seed, different initial outputs"


def check_state_dict_roundtrip(spec: ModelSpec, schema: DatasetSchema) -> None:
    """Saving and loading the ``state_dict`` into a fresh model gives identical outputs."""
    model = _build(spec, schema, seed=1)
    # A few training steps so running statistics and weights move away from their init.
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = _batch(schema, 64)
    model.train()
    for _ in range(3):
        out = _forward(model, batch)
        loss = F.binary_cross_entropy_with_logits(out.logits, batch.labels) + _aux(out, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = _build(spec, schema, seed=2)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    model.eval()
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(_forward(model, batch).logits, _forward(fresh, batch).logits), (
            "outputs differ after a state_dict round trip"
        )


def check_every_parameter_gets_gradient(spec: ModelSpec, schema: DatasetSchema) -> None:
    """One step on a batch covering every scenario gives every parameter a gradient."""
    model = _build(spec, schema).train()
    batch = _batch(schema, 256)
    assert set(batch.scenario.tolist()) == set(range(schema.n_scenarios))
    out = _forward(model, batch)
    loss = F.binary_cross_entropy_with_logits(out.logits, batch.labels) + _aux(out, batch)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {', '.join(missing[:10])}"
    bad = [
        n for n, p in model.named_parameters() if p.grad is not None and not p.grad.isfinite().all()
    ]
    assert not bad, f"non-finite gradients: {', '.join(bad[:10])}"


def check_single_scenario_batch(spec: ModelSpec, schema: DatasetSchema) -> None:
    """A batch holding a single scenario works in train and eval mode."""
    model = _build(spec, schema)
    batch = _batch(schema, 64)
    pure = Batch(batch.categorical, batch.numeric, torch.zeros_like(batch.scenario), batch.labels)
    for mode in ("train", "eval"):
        getattr(model, mode)()
        out = _forward(model, pure)
        assert torch.isfinite(out.logits).all(), (
            f"{mode}: non-finite logits on a one-scenario batch"
        )


def check_learns(spec: ModelSpec, schema: DatasetSchema) -> None:
    """A few hundred Adam steps on one small batch drive the training loss well down."""
    model = _build(spec, schema).train()
    batch = _batch(schema, 128, seed=5)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        out = _forward(model, batch)
        loss = F.binary_cross_entropy_with_logits(out.logits, batch.labels)
        opt.zero_grad()
        (loss + _aux(out, batch)).backward()
        opt.step()
        losses.append(loss.item())
    start, end = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    assert end < 0.7 * start, f"training loss went from {start:.4f} to {end:.4f} (< 30% drop)"


def check_moves_to_device(spec: ModelSpec, schema: DatasetSchema) -> None:
    """With CUDA present, the model moves to the GPU and its eval outputs match the CPU's."""
    if not torch.cuda.is_available():
        raise SkipCheck("CUDA is not available")
    model = _build(spec, schema).eval()
    batch = _batch(schema, 32)
    with torch.no_grad():
        cpu = _forward(model, batch).logits
        gpu = _forward(copy.deepcopy(model).cuda(), batch.to("cuda")).logits.cpu()
    _close(cpu, gpu, "CPU vs CUDA outputs", atol=1e-3)


def check_parameter_count(spec: ModelSpec, schema: DatasetSchema) -> None:
    """The model has trainable parameters, all registered (counted by ``parameters()``)."""
    model = _build(spec, schema)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n > 0, "no trainable parameters"


def check_search_space_builds(spec: ModelSpec, schema: DatasetSchema) -> None:
    """Every probed point of the search space builds and gives finite logits.

    The points are each dimension's corners and three seeded samples
    (:func:`mssbench.space.probe_points`), over the defaults and ``check_params``, checked
    against the declared constraints as a user value would be.
    """
    for point in probe_points(full_space(spec.search_space)):
        _, params = split_point(point)
        given = {**dict(spec.check_params), **params}
        try:
            resolved = resolve("param", f"model {spec.name!r}", spec.defaults, given,
                               spec.constraints)
        except MssbenchError as exc:
            raise AssertionError(f"search-space point {params}: {exc}") from None
        torch.manual_seed(SEED)
        try:
            model = spec.build(schema, **resolved).train()
        except Exception as exc:  # noqa: BLE001 - reported with the point that broke it
            raise AssertionError(
                f"search-space point {params} does not build: {describe_error(exc)}"
            ) from None
        batch = _batch(schema, 16)
        out = _forward(model, batch)
        assert torch.isfinite(out.logits).all(), f"search-space point {params}: non-finite logits"


ALL_CHECKS: tuple[Check, ...] = (
    check_spec_well_formed,
    check_unknown_param_rejected,
    check_output_shape_and_dtype,
    check_finite_outputs_and_loss,
    check_batch_permutation,
    check_eval_deterministic,
    check_batch_independence,
    check_same_seed_same_init,
    check_state_dict_roundtrip,
    check_every_parameter_gets_gradient,
    check_single_scenario_batch,
    check_learns,
    check_moves_to_device,
    check_parameter_count,
    check_search_space_builds,
)


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check: ``passed``, ``failed``, ``skipped``, ``xfail`` or ``xpass``."""

    check: str
    status: str
    message: str = ""


def default_schema() -> DatasetSchema:
    """The schema checks run on: 3 scenarios, tasks ctr and ctcvr (ctcvr implies ctr)."""
    return make_schema()


def schema_variants() -> dict[str, DatasetSchema]:
    """The other schemas a model must handle, by name (see :data:`SCHEMA_CHECKS`)."""
    return {
        "no_relations": make_schema(implies=False),
        "one_task": make_schema(tasks=("ctr",)),
        "no_numeric": make_schema(n_numeric=0),
        "one_scenario": make_schema(n_scenarios=1),
        "many_scenarios": make_schema(n_scenarios=12),
    }


#: The checks that also run on every schema of :func:`schema_variants`, as
#: ``<check>[<variant>]`` (``expected_failed_checks`` takes either name).
SCHEMA_CHECKS: tuple[Check, ...] = (
    check_output_shape_and_dtype,
    check_finite_outputs_and_loss,
    check_every_parameter_gets_gradient,
    check_single_scenario_batch,
)


def on_schema(check: Check, variant: str, schema: DatasetSchema) -> Check:
    """``check`` bound to ``schema``, named ``<check>[<variant>]`` (ignores its schema arg)."""

    def bound(spec: ModelSpec, _schema: DatasetSchema | None = None) -> None:
        check(spec, schema)

    bound.__name__ = bound.__qualname__ = f"{check.__name__}[{variant}]"
    bound.__doc__ = f"{check.__doc__} (schema: {variant})"
    return bound


def model_checks(checks: Iterable[Check] = ALL_CHECKS) -> list[Check]:
    """``checks`` on the default schema, then those in :data:`SCHEMA_CHECKS` on each variant."""
    checks = list(checks)
    variants = schema_variants()
    return checks + [
        on_schema(check, variant, schema)
        for variant, schema in variants.items()
        for check in SCHEMA_CHECKS
        if check in checks
    ]


def expected_reason(expected: Mapping[str, str], name: str) -> str | None:
    """The declared reason for check ``name`` (``check[variant]`` falls back to ``check``)."""
    return expected.get(name, expected.get(name.split("[", 1)[0]))


def collect_results(
    checks: Iterable[Callable[..., None]],
    call: Callable[[Callable[..., None]], None],
    expected: Mapping[str, str],
) -> list[CheckResult]:
    """Run ``call(check)`` for each check and collect results without raising.

    ``expected`` maps the names of checks known to fail to the reason (``xfail``/``xpass``).
    """
    results = []
    for check in checks:
        name = check.__name__
        reason = expected_reason(expected, name)
        try:
            call(check)
        except SkipCheck as exc:
            results.append(CheckResult(name, "skipped", str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - a failing check is a result, not a crash
            msg = str(exc) if isinstance(exc, AssertionError) else describe_error(exc)
            results.append(CheckResult(name, "xfail" if reason else "failed", reason or msg))
            continue
        results.append(CheckResult(name, "xpass" if reason else "passed", reason or ""))
    return results


def raise_on_failures(kind: str, name: str, results: list[CheckResult]) -> list[CheckResult]:
    """``results``, or an ``AssertionError`` listing the checks that failed unexpectedly."""
    failed = [r for r in results if r.status == "failed"]
    if failed:
        lines = "\n".join(f"  {r.check}: {r.message}" for r in failed)
        raise AssertionError(f"{kind} {name!r} fails {len(failed)} check(s):\n{lines}")
    return results


def run_checks(
    spec: ModelSpec, schema: DatasetSchema | None = None, checks: Iterable[Check] = ALL_CHECKS
) -> list[CheckResult]:
    """Run the checks and collect results without raising.

    Without ``schema``, the checks run on :func:`default_schema` and the schema-sensitive ones
    also on every schema of :func:`schema_variants` (see :func:`model_checks`).
    """
    if schema is None:
        schema, checks = default_schema(), model_checks(checks)
    return collect_results(checks, lambda check: check(spec, schema), spec.expected_failed_checks)


def check_model(spec: ModelSpec, schema: DatasetSchema | None = None) -> list[CheckResult]:
    """Run every conformance check; raise ``AssertionError`` listing the unexpected failures.

    Args:
        spec: The model spec to check.
        schema: Schema to build on (default: a small 3-scenario, 2-task schema, and the
            schema-sensitive checks also on the variants of :func:`schema_variants`).

    Returns:
        The results of every check (when none failed unexpectedly).
    """
    return raise_on_failures("model", spec.name, run_checks(spec, schema))


def parametrize_with_checks(specs: Iterable[ModelSpec]):
    """A ``pytest.mark.parametrize`` over ``(spec, check)`` with readable ids.

    Every check of :func:`model_checks` (the schema variants included; those ignore the schema
    they are given). A check that cannot run here (:class:`SkipCheck`) is skipped. Checks
    listed in a spec's ``expected_failed_checks`` are marked ``xfail`` with the reason::

        @parametrize_with_checks([MY_SPEC])
        def test_conformance(spec, check):
            check(spec, default_schema())
    """
    import pytest

    def skipping(check: Check) -> Check:
        @functools.wraps(check)
        def run(spec: ModelSpec, schema: DatasetSchema | None = None) -> None:
            try:
                check(spec, schema)
            except SkipCheck as exc:
                pytest.skip(str(exc))

        return run

    params = []
    for spec in specs:
        for check in model_checks():
            reason = expected_reason(spec.expected_failed_checks, check.__name__)
            marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
            params.append(
                pytest.param(spec, skipping(check), id=f"{spec.name}-{check.__name__}", marks=marks)
            )
    return pytest.mark.parametrize("spec, check", params)
