"""The training step over static buffers, captured whole in a CUDA graph (``--step graph``).

At the field's batch sizes a step of a recommendation model is a few hundred tiny kernels: the
GPU waits on the launches, not on the arithmetic. :class:`StaticStep` fixes every address a
step touches (the batch's row indices, the parameters, their gradients, the optimizer's state,
the running loss), so that the whole step (gather of the batch rows on the device, forward,
loss, backward, optimizer update, loss accumulation) is recorded once with
:class:`torch.cuda.CUDAGraph` and then replayed with one launch per step:

* the training rows stay on the device; each step copies its ``[B]`` row indices into a static
  index buffer (one device-to-device copy of the epoch's indices, moved to the device once per
  epoch) and replays the graph, which gathers the rows itself;
* the optimizer is Adam with ``fused=True, capturable=True`` (its step counter lives on the
  device; :func:`mssbench.runners.trainer.make_optimizer`);
* the loss is summed on the device and read by the caller every ``check_every`` steps, never
  per step: no host synchronisation inside an epoch;
* a batch of another size (the last, partial batch of an epoch; scenario-pure batches) runs the
  **same** step function eagerly, so no row is dropped;
* dropout and other random ops draw from torch's CUDA generator, which registers with the graph:
  every replay advances the Philox offset like the eager step would, so each step gets fresh
  random numbers (``tests/test_graph_step.py`` compares replays with eager steps on a GPU).

The warm-up steps a capture needs (on a side stream, so that lazily created state such as the
optimizer's moments and cuBLAS workspaces exist before recording) train on real data; they are
undone (weights, buffers, optimizer state and RNG restored) before the first counted step, so a
graph run trains on exactly the same steps as an eager one.

On the CPU (no graphs) the same object runs its step function directly: the tests use that to
check that the static-buffer path gives the eager path's batches, losses and weights.

A model whose forward synchronises with the host (``.item()``, ``.tolist()``, shapes that
depend on data) cannot be captured. Such a module says so with a ``cuda_graph_unsafe``
attribute holding the reason (:data:`UNSAFE_ATTRIBUTE`; built in: STAR's per-domain row
groups, single-task's per-scenario networks, SUPERMOE-style's ``loop`` dispatch), and the step
is refused before anything runs with a :class:`TrainingError` that names the model, the reason
and ``--step eager``. A module that synchronises without saying so fails during capture, and
that error is turned into the same message.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import torch

from mssbench.errors import TrainingError
from mssbench.runners.streaming import ChunkStream
from mssbench.spec import Batch, Split

#: Eager steps run before capturing (side stream), then undone.
WARMUP_STEPS = 3
#: A module attribute naming why the module cannot run inside a CUDA graph (falsy: it can).
UNSAFE_ATTRIBUTE = "cuda_graph_unsafe"


def unsafe_reasons(model: torch.nn.Module) -> list[str]:
    """Why ``model`` cannot be captured: the ``cuda_graph_unsafe`` reasons of its modules."""
    reasons = []
    for module in model.modules():
        reason = getattr(module, UNSAFE_ATTRIBUTE, None)
        if reason:
            reasons.append(f"{type(module).__name__}: {reason}")
    return sorted(set(reasons))


def gather_batch(data: Split, index: torch.Tensor) -> Batch:
    """Rows ``index`` of ``data`` as a :class:`Batch`; the same values as ``Split.batch``."""
    return Batch(
        data.categorical.index_select(0, index).long(),
        data.numeric.index_select(0, index).float(),
        data.scenario.index_select(0, index).long(),
        data.labels.index_select(0, index).float(),
    )


class StaticStep:
    """A training step whose tensors keep their addresses, replayed from a CUDA graph.

    Args:
        model: The model (on the device of ``data``); ``net`` calls it.
        optimizer: Its optimizer (capturable on CUDA: ``make_optimizer(..., capturable=True)``).
        data: Training rows, resident on the device.
        batch_size: Rows of a full batch (the captured shape).
        loss_fn: ``loss_fn(batch) -> scalar loss`` (forward under autocast and the training
            loss; :func:`mssbench.runners.trainer.fit` builds it).
        model_name: For error messages.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        data: Split,
        batch_size: int,
        loss_fn: Callable[[Batch], torch.Tensor],
        model_name: str,
    ):
        self.model, self.optimizer, self.data = model, optimizer, data
        self.batch_size, self.loss_fn, self.model_name = batch_size, loss_fn, model_name
        self.device = data.scenario.device
        self.index = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        self.loss_sum = torch.zeros((), device=self.device)
        self.finite = torch.ones((), dtype=torch.bool, device=self.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.captured_steps = 0
        self.eager_steps = 0

    # -- the step function, identical for replays and eager calls ------------------------------

    def _step(self, index: torch.Tensor) -> None:
        loss = self.loss_fn(gather_batch(self.data, index))
        if not _capturing():
            # A capture starts from grad None, so its backward writes (does not add) the
            # gradients at fixed addresses; eagerly the same holds after set_to_none.
            self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        detached = loss.detach()
        self.loss_sum += detached
        self.finite &= torch.isfinite(detached)

    def reset_loss(self) -> None:
        """Start a new running loss (in place: the graph keeps the addresses)."""
        self.loss_sum.zero_()
        self.finite.fill_(True)

    # -- running batches -------------------------------------------------------------------

    def run(self, rows: torch.Tensor) -> None:
        """Train on rows ``rows`` (``[b]`` int64 on the device): a replay when ``b`` is full."""
        if len(rows) != self.batch_size or self.device.type != "cuda":
            self._step(rows)
            self.eager_steps += 1
            return
        self.index.copy_(rows, non_blocking=True)
        if self.graph is None:
            self.capture()
        assert self.graph is not None
        self.graph.replay()
        self.captured_steps += 1

    def capture(self) -> None:
        """Warm up on the side stream, undo the warm-up, record the step (needs ``self.index``)."""
        reasons = unsafe_reasons(self.model)
        if reasons:
            raise TrainingError(
                f"model {self.model_name!r} cannot be captured in a CUDA graph ("
                + "; ".join(reasons)
                + "). Train it with --step eager."
            )
        saved = _snapshot(self.model, self.optimizer, self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):
                    self._step(self.index)
            torch.cuda.current_stream(self.device).wait_stream(side)
            _restore(saved, self.model, self.optimizer, self.device)
            self.reset_loss()
            self.optimizer.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._step(self.index)
        except RuntimeError as exc:
            _restore(saved, self.model, self.optimizer, self.device)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrainingError(
                f"model {self.model_name!r} cannot be captured in a CUDA graph ({first}); its "
                "forward probably synchronises with the host (.item(), .tolist(), data-dependent "
                "shapes). Train it with --step eager."
            ) from exc
        self.graph = graph


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _tensors(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every parameter and buffer, non-persistent buffers (running estimates) included."""
    return [*model.named_parameters(), *model.named_buffers()]


def _snapshot(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> dict[str, Any]:
    """Copies of everything the warm-up steps change."""
    return {
        "model": {k: v.detach().clone() for k, v in _tensors(model)},
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "cpu_rng": torch.get_rng_state(),
    }


def _restore(
    saved: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> None:
    """Put back ``saved`` in place (the tensors keep their addresses for the graph)."""
    with torch.no_grad():
        for k, v in _tensors(model):
            v.copy_(saved["model"][k])
        before = saved["optimizer"]["state"]
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for i, p in enumerate(params):
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if not torch.is_tensor(value):
                    continue
                old = before.get(i, {}).get(key)
                if old is None:
                    value.zero_()  # created by the warm-up: a fresh optimizer has none
                else:
                    value.copy_(old)
    if saved["rng"] is not None:
        torch.cuda.set_rng_state(saved["rng"], device)
    torch.set_rng_state(saved["cpu_rng"])


def device_indices(batches: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """The epoch's batch indices moved to ``device`` in one copy, as views per batch."""
    if not batches:
        return []
    flat = torch.cat(list(batches)).to(device, non_blocking=True)
    return list(torch.split(flat, [len(b) for b in batches]))


def run_epoch(
    static: StaticStep,
    batches: Sequence[torch.Tensor],
    check_every: int,
    check: Callable[[int], None],
    advance: Callable[[int], None],
    stream: ChunkStream | None = None,
) -> None:
    """Train one epoch of ``batches`` (CPU index tensors) through ``static``.

    ``check(step)`` runs every ``check_every`` steps and after the last one (the only points
    where the host waits for the device); ``advance(rows)`` after each step (progress). With
    ``stream`` the rows come chunk by chunk into ``static.data`` (``stream.current``) and the
    batches index that buffer; otherwise ``static.data`` holds every training row.
    """
    chunks = (
        stream.epoch(batches) if stream is not None else [device_indices(batches, static.device)]
    )
    step = 0
    for local in chunks:
        for rows in local:
            step += 1
            static.run(rows)
            if step % check_every == 0 or step == len(batches):
                check(step)
            advance(len(rows))
