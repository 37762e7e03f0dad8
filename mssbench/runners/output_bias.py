"""Output-layer bias at the base rate (``--bias-init base_rate``).

Every task's output bias is shifted so that, at step 0, the model's mean predicted probability
on the training rows equals the task's base rate in the training split; the model then starts
from the entropy of the base rate instead of spending its first steps on the intercept.

Under the ESMM head (CTCVR = CTR x CVR) the backbone's child column is the CVR logit: it starts
at the CVR base rate among the parent's positives (conversions among clicks), and its parent
column at the parent's base rate.

How a model exposes its output biases, in this order:

1. An optional method ``output_biases()`` returning, per logit column, a ``(parameter, index)``
   pair: adding ``d`` to ``parameter.view(-1)[index]`` (an int or index tensor) adds ``d`` to
   that column's logit on every row.
2. Otherwise they are found (:func:`find_output_biases`): the elements of one bias parameter
   that move a column's logit one-for-one on every row and leave the other columns alone.
   This finds the last ``Linear`` of each task tower, per-scenario towers (grouped or not), a
   shared ``Linear(h, T)`` output layer and mixtures of towers, without per-model code.

A model for which neither works declares the spec tag ``bias_init`` with the reason as value
(e.g. ``{"bias_init": "logits are scaled by a learned temperature"}``) and keeps its own init.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mssbench.errors import TrainingError
from mssbench.spec import Batch, DatasetSchema, Split

#: The spec tag a model opts out with (its value: the reason).
OPT_OUT_TAG = "bias_init"
#: Training rows (evenly spaced) on which the mean prediction is calibrated.
CALIBRATION_ROWS = 4096
#: Seed of the dropout and noise draws of the calibration passes (a fork of the global stream).
CALIBRATION_SEED = 0
#: Base rates are clipped to [RATE_FLOOR, 1 - RATE_FLOOR] (a task without positives).
RATE_FLOOR = 1e-6
#: Largest gap allowed between the calibrated mean probability and the base rate.
TOLERANCE = 1e-3

#: A column's output bias: elements ``index`` of ``parameter.view(-1)``, and whether the logit
#: moves one-for-one with them (else only monotonically: calibrated by forward passes).
Bias = tuple[torch.nn.Parameter, Any, bool]


def base_rates(labels: torch.Tensor, schema: DatasetSchema, esmm: bool) -> list[float]:
    """Per logit column, the base rate its output starts at.

    Args:
        labels: ``[N, T]`` training labels.
        schema: Tasks and relations.
        esmm: The backbone's child columns are CVR logits (ESMM head): their rate is the
            child's rate among the parent's positives.
    """
    labels = labels.float()
    rates = labels.mean(0).tolist() if len(labels) else [0.5] * labels.shape[1]
    if esmm:
        for rel in schema.relations:
            child, parent = schema.task_index(rel.child), schema.task_index(rel.parent)
            clicked = labels[:, parent] > 0.5
            rates[child] = float(labels[clicked, child].mean()) if clicked.any() else 0.5
    return [min(max(r, RATE_FLOOR), 1 - RATE_FLOOR) for r in rates]


def _sample(train: Split) -> torch.Tensor:
    n = len(train)
    if n <= CALIBRATION_ROWS:
        return torch.arange(n)
    return torch.linspace(0, n - 1, CALIBRATION_ROWS).long()


def _logits(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """The training-mode logits, with the same dropout and noise draws on every call.

    The global random streams and the model's integer buffers (the step counters of
    :class:`mssbench.nn.Dropout`) are left as they were, so every call
    draws the same masks and the run's draws do not depend on whether the biases were
    initialised.
    """
    devices = [batch.scenario.device] if batch.scenario.device.type == "cuda" else []
    # Integer buffers only: batch-norm statistics are saved for the backward pass (and
    # restored by the caller); training mode normalises by the batch's own.
    buffers = [(b, b.detach().clone()) for b in model.buffers() if not b.is_floating_point()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(CALIBRATION_SEED)
        try:
            return model(batch)[0].float()
        finally:
            with torch.no_grad():  # only what moved: index buffers may be saved for backward
                for b, saved in buffers:
                    if not torch.equal(b, saved):
                        b.copy_(saved)


def _moves_one_for_one(
    model: torch.nn.Module, batch: Batch, logits: torch.Tensor, column: int, bias: Bias
) -> bool:
    """Whether adding 1 to ``bias`` adds 1 to every row's logit ``column`` and nothing else."""
    param, index = bias[0], bias[1]
    with torch.no_grad():
        param.view(-1)[index] += 1.0
        moved = _logits(model, batch) - logits
        param.view(-1)[index] -= 1.0
    expected = torch.zeros_like(moved)
    expected[:, column] = 1.0
    return bool(torch.allclose(moved, expected, atol=1e-4))


def find_output_biases(
    model: torch.nn.Module, batch: Batch, logits: torch.Tensor
) -> list[Bias | None]:
    """For each column of ``logits`` (computed with grad by ``model`` on ``batch``), its bias.

    A column's output bias is the set of elements of one bias parameter that only this column
    depends on and whose gradients of the column's summed logits add up to the number of rows:
    one element (the last ``Linear`` of a task tower), or one per scenario tower (each row
    reaches one of them), or a mixture whose weights sum to one. The candidate is confirmed
    by moving it: every row's logit must move one-for-one. The last parameter that qualifies
    is taken; failing that, the last bias parameter with elements only this column depends on,
    all raising it (towers mixed in probability space), marked as not one-for-one.
    """
    rows, n_cols = logits.shape
    named = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")]
    if not named:
        return [None] * n_cols
    grads = []
    for t in range(n_cols):
        g = torch.autograd.grad(logits[:, t].sum(), named, retain_graph=True, allow_unused=True)
        grads.append([torch.zeros_like(p) if x is None else x.detach() for p, x in zip(named, g)])
    logits = logits.detach()
    found: list[Bias | None] = [None] * n_cols
    for t in range(n_cols):
        fallback = None
        for k in reversed(range(len(named))):
            index = _alone(grads, t, k, rows)
            own = grads[t][k].reshape(-1).double()[index]
            if not len(index):
                continue
            if abs(float(own.sum()) - rows) <= 1e-4 * rows and _moves_one_for_one(
                model, batch, logits, t, (named[k], index)
            ):
                found[t] = (named[k], index, True)
                break
            if fallback is None and bool((own > 0).all()):
                fallback = (named[k], index, False)
        found[t] = found[t] or fallback
    return found


def _alone(grads: list[list[torch.Tensor]], t: int, k: int, rows: int) -> torch.Tensor:
    """Elements of bias ``k`` that column ``t`` depends on and no other column does."""
    alone = grads[t][k].reshape(-1).double().abs() > 1e-6 * rows
    for u in range(len(grads)):
        if u != t:
            alone &= grads[u][k].reshape(-1).double().abs() <= 1e-6 * rows
    return alone.nonzero().flatten()


def _mean_after_shift(
    model: torch.nn.Module, batch: Batch, column: int, bias: Bias, shift: float
) -> float:
    param, index = bias[0], bias[1]
    param.view(-1)[index] += shift
    mean = float(torch.sigmoid(_logits(model, batch)[:, column].double()).mean())
    param.view(-1)[index] -= shift
    return mean


def _forward_shift(
    model: torch.nn.Module, batch: Batch, column: int, bias: Bias, rate: float
) -> float:
    """The shift of ``bias`` giving mean prediction ``rate`` (bisection over forward passes).

    For output biases the model combines non-linearly (a mixture of the towers' probabilities),
    whose mean prediction still rises with the shift.
    """
    low, high = -30.0, 30.0
    for _ in range(40):
        mid = (low + high) / 2
        if _mean_after_shift(model, batch, column, bias, mid) < rate:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _shift_for(logits: torch.Tensor, rate: float) -> float:
    """The ``c`` with ``mean(sigmoid(logits + c)) == rate`` (bisection; monotone in ``c``)."""
    low, high = -60.0, 60.0
    target = torch.tensor(rate, dtype=torch.float64)
    z = logits.double()
    for _ in range(80):
        mid = (low + high) / 2
        if torch.sigmoid(z + mid).mean() < target:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _output_biases(model: torch.nn.Module, batch: Batch) -> tuple[list, torch.Tensor]:
    """The declared or found output biases, and the logits before any shift."""
    with torch.enable_grad():
        logits = _logits(model, batch)
        explicit = getattr(model, "output_biases", None)
        if callable(explicit):  # declared: calibrated by forward passes
            return [(p, i, False) for p, i in explicit()], logits.detach()
        return find_output_biases(model, batch, logits), logits.detach()


def init_output_biases(
    model: torch.nn.Module,
    train: Split,
    schema: DatasetSchema,
    *,
    model_name: str,
    esmm: bool,
) -> list[float]:
    """Shift ``model``'s output biases so its mean prediction equals each base rate.

    ``model`` is the backbone (before any ESMM wrapping), in the order of ``schema.task_names``.
    The calibration runs on evenly spaced training rows in training mode, as the loss of the
    first step sees the model (batch-norm on batch statistics, dropout and noise drawn from a
    fixed seed); the batch-norm running statistics and the global random streams are left as
    they were, and the model is left in training mode.

    Returns:
        The base rates (per logit column) the outputs start at. A model whose logits are
        not finite at initialisation is left alone (training stops on it with a clear message).

    Raises:
        TrainingError: A column's output bias cannot be found, or moving it does not move the
            mean prediction to the base rate (one line naming the model and the opt-out tag).
    """
    rates = base_rates(train.labels, schema, esmm)
    device = next(model.parameters()).device
    batch = train.batch(_sample(train).to(train.scenario.device)).to(device)
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    model.train()
    try:
        biases, logits = _output_biases(model, batch)
        if not bool(torch.isfinite(logits).all()):
            return rates  # nothing to calibrate; the first training step reports the model
        missing = [schema.task_names[t] for t, b in enumerate(biases) if b is None]
        if missing or len(biases) != len(rates):
            raise TrainingError(
                f"model {model_name!r}: no output bias found for task(s) "
                f"{', '.join(missing) or '?'} for --bias-init base_rate; give the model an "
                f"output_biases() method, declare the spec tag {OPT_OUT_TAG!r} with the reason, "
                f"or run with --bias-init none"
            )
        with torch.no_grad():
            for t, bias in enumerate(biases):
                param, index, exact = bias  # type: ignore[misc]
                if exact:
                    shift = _shift_for(logits[:, t], rates[t])
                else:
                    shift = _forward_shift(model, batch, t, bias, rates[t])
                param.view(-1)[index] += shift
            check = torch.sigmoid(_logits(model, batch)).mean(0).tolist()
    finally:
        with torch.no_grad():  # batch-norm statistics as built
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
    off = [
        f"{schema.task_names[t]} {check[t]:.4f} vs {rates[t]:.4f}"
        for t in range(len(rates))
        if not math.isclose(check[t], rates[t], abs_tol=TOLERANCE, rel_tol=0.01)
    ]
    if off:
        raise TrainingError(
            f"model {model_name!r}: moving the output biases did not bring the mean prediction "
            f"to the base rate ({'; '.join(off)}); declare the spec tag {OPT_OUT_TAG!r} with the "
            f"reason, or run with --bias-init none"
        )
    return rates
