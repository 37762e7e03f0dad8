"""Training: batches cut from resident tensors, early stopping on validation.

One process by default; data-parallel across the processes of a ``torchrun`` launch
(:mod:`mssbench.runners.distributed`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import pickle
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mssbench.balancing import Balancer, WeightedSum
from mssbench.config import check_step
from mssbench.errors import ConfigError, TrainingError, brief
from mssbench.io import atomic_write
from mssbench.metrics import evaluate, summary
from mssbench.runners.distributed import (
    SINGLE,
    World,
    all_objects,
    all_true,
    barrier,
    gather_rows,
    shard,
    shard_range,
)
from mssbench.runners.graph_step import StaticStep, run_epoch
from mssbench.runners.host_memory import retained_host_memory
from mssbench.runners.streaming import DEFAULT_CHUNK_ROWS, ChunkStream
from mssbench.spec import Batch, DatasetSchema, SpecError, Split, resolve_aux_loss

#: The autocast dtype of each ``--precision`` value (``fp32`` = no autocast).
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16}

SELECTION_METRIC = "mean over tasks of pooled validation AUC"


def resolve_device(name: str) -> torch.device:
    """Turn ``auto|cpu|cuda[:N]|mps`` into a device, checking that it exists."""
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError("--device mps requested, but this machine has no MPS device")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "no visible CUDA device"
            raise ConfigError(
                f"--device {name} requested, but CUDA is not available ({build} of torch "
                f"{torch.__version__}); use --device cpu or auto"
            )
        if ":" in name:
            try:
                index = int(name.split(":", 1)[1])
            except ValueError:
                raise ConfigError(f"--device {name}: expected cuda:N with an integer N") from None
            if not 0 <= index < torch.cuda.device_count():
                raise ConfigError(
                    f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present"
                )
        return torch.device(name)
    raise ConfigError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) and numpy."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def block_shuffled_rows(
    n_rows: int, block_rows: int, window_blocks: int, generator: torch.Generator
) -> torch.Tensor:
    """A row order for data read from disk: shuffled blocks, rows shuffled within windows.

    Contiguous blocks of ``block_rows`` rows are put in random order; each run of
    ``window_blocks`` consecutive blocks of that order forms a window whose rows are shuffled
    together. A batch then touches at most ``window_blocks`` contiguous regions of the file, so
    reads stay sequential and the page cache works, while the order still mixes rows from
    distant parts of the (time-ordered) data.
    """
    n_blocks = math.ceil(n_rows / block_rows)
    blocks = torch.randperm(n_blocks, generator=generator)
    parts = []
    for start in range(0, n_blocks, window_blocks):
        rows = torch.cat(
            [
                torch.arange(b * block_rows, min((b + 1) * block_rows, n_rows))
                for b in blocks[start : start + window_blocks].tolist()
            ]
        )
        parts.append(rows[torch.randperm(len(rows), generator=generator)])
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def batch_indices(
    n_rows: int,
    batch_size: int,
    generator: torch.Generator,
    scenario: torch.Tensor | None = None,
    n_scenarios: int = 0,
    block_rows: int = 0,
    window_blocks: int = 8,
    min_rows: int = 2,
) -> list[torch.Tensor]:
    """One epoch of shuffled training batches as index tensors.

    With ``scenario`` given, every batch holds rows of one scenario only ("scenario-pure"), and
    the order of the batches is shuffled. With ``block_rows`` set (memory-mapped data), rows
    follow :func:`block_shuffled_rows` instead of a full permutation. Every row appears exactly
    once; a final batch of fewer than ``min_rows`` rows is merged into the previous batch of the
    same kind, since batch normalisation cannot train on one row.

    Args:
        n_rows: Number of rows.
        batch_size: Rows per batch.
        generator: CPU generator that owns the shuffling state.
        scenario: ``[N]`` scenario ids for scenario-pure batching.
        n_scenarios: Number of scenarios (with ``scenario``).
        block_rows: Block size for block shuffling (0 = full permutation).
        window_blocks: Blocks shuffled together (with ``block_rows``).
        min_rows: Smallest final batch kept on its own (data-parallel runs need two rows per
            process).

    Returns:
        Index tensors (int64, CPU).
    """

    def chunks(idx: torch.Tensor) -> list[torch.Tensor]:
        parts = list(torch.split(idx, batch_size))
        if len(parts) > 1 and len(parts[-1]) < min_rows:
            last = parts.pop()
            parts[-1] = torch.cat([parts[-1], last])
        return parts

    if scenario is None:
        if block_rows:
            return chunks(block_shuffled_rows(n_rows, block_rows, window_blocks, generator))
        return chunks(torch.randperm(n_rows, generator=generator))
    scenario = scenario.cpu()
    order = torch.argsort(scenario, stable=True)
    counts = torch.bincount(scenario, minlength=n_scenarios).tolist()
    batches: list[torch.Tensor] = []
    for rows in torch.split(order, counts):
        if len(rows):
            batches.extend(chunks(rows[torch.randperm(len(rows), generator=generator)]))
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


def autocast(
    device: torch.device, precision: str, cache: bool = True
) -> contextlib.AbstractContextManager:
    """The autocast region of ``--precision`` (a no-op for ``fp32``).

    ``cache=False`` turns off autocast's cache of cast weights, as CUDA graph capture requires.
    """
    if precision not in AUTOCAST_DTYPES:
        raise ConfigError(
            f"--precision must be one of {', '.join(AUTOCAST_DTYPES)}, got {precision!r}"
        )
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache)


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    split: Split,
    device: torch.device,
    batch_size: int,
    world: World = SINGLE,
    precision: str = "fp32",
) -> torch.Tensor:
    """Eval-mode logits ``[N, T]`` (float32, on ``device``) for a whole split.

    In a data-parallel run every rank predicts its contiguous part of the rows and the parts
    are gathered in row order, so every rank returns the logits of all ``N`` rows.
    """
    model.eval()
    start, stop = shard_range(len(split), world)
    outs = []
    with autocast(device, precision):
        for first in range(start, stop, batch_size):
            rows = slice(first, min(first + batch_size, stop))
            batch = split.batch(rows).to(device, non_blocking=True)
            outs.append(model(batch).logits.float())
    local = torch.cat(outs) if outs else torch.zeros((0, split.labels.shape[1]), device=device)
    return gather_rows(local, world)


def iter_batches(
    split: Split,
    batches: Sequence[torch.Tensor],
    device: torch.device,
    world: World = SINGLE,
    prefetch: bool = False,
) -> Iterator[tuple[torch.Tensor, Batch]]:
    """``(global rows, batch on device)`` for each index tensor of ``batches``.

    Each batch holds this rank's share of the rows (:func:`~mssbench.runners.distributed.shard`).
    With ``prefetch`` a background thread cuts the next batch (the gather from a memory map, and
    on CUDA the copy into page-locked memory) while the current one trains, and the copy to
    the GPU is asynchronous. The batches are the same either way.
    """

    def cut(idx: torch.Tensor) -> Batch:
        rows = shard(idx, world)
        batch = split.batch(rows.to(split.scenario.device))
        if prefetch and device.type == "cuda" and batch.scenario.device.type == "cpu":
            batch = batch.pin_memory()
        return batch

    if not prefetch or not batches:
        for idx in batches:
            yield idx, cut(idx).to(device, non_blocking=True)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="mssbench-prefetch") as pool:
        pending = pool.submit(cut, batches[0])
        for i, idx in enumerate(batches):
            batch = pending.result()
            if i + 1 < len(batches):
                pending = pool.submit(cut, batches[i + 1])
            yield idx, batch.to(device, non_blocking=True)


@dataclass
class TrainState:
    """What a checkpoint holds to resume a run exactly."""

    epoch: int = 0
    best_epoch: int = 0
    best_score: float = -math.inf
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    train_samples: int = 0
    stopped_early: bool = False
    #: Wall seconds of the processes that ran the epochs so far (up to the last checkpoint).
    wall_seconds: float = 0.0


@dataclass
class TrainResult:
    """Outcome of :func:`fit`."""

    state: TrainState
    best_state_dict: dict[str, torch.Tensor]
    #: Wall seconds spent by earlier processes of a resumed run (0 for a fresh one).
    earlier_wall_seconds: float = 0.0


def _validate_output(out: Any, batch_rows: int, n_tasks: int, model_name: str) -> None:
    if not isinstance(out, tuple) or len(out) != 2:
        raise TrainingError(
            f"model {model_name!r}: forward must return ModelOutput(logits, aux_loss), "
            f"got {type(out).__name__}"
        )
    logits, aux = out
    if tuple(logits.shape) != (batch_rows, n_tasks):
        raise TrainingError(
            f"model {model_name!r}: logits must be [B, T] = [{batch_rows}, {n_tasks}], "
            f"got {list(logits.shape)}"
        )
    if not callable(aux) and (not isinstance(aux, torch.Tensor) or aux.dim() != 0):
        raise TrainingError(
            f"model {model_name!r}: aux_loss must be a scalar tensor or a function of the labels"
        )


def task_weights(model: torch.nn.Module, n_tasks: int, device: torch.device) -> torch.Tensor:
    """The loss weight of each task, ``[T]``, as the model's spec declares it.

    :func:`mssbench.api.build_model` resolves ``ModelSpec.task_weights`` for the schema and
    hyper-parameters and records it on the model; a model built otherwise weighs every task 1.
    """
    if hasattr(model, "task_weights"):
        raise ConfigError(
            f"{type(model).__name__} sets a task_weights attribute, which the loss no longer "
            "reads: declare the weights as ModelSpec.task_weights"
        )
    weights = getattr(model, "mssbench_task_weights", None)
    if weights is None:
        return torch.ones(n_tasks, device=device)
    w = torch.as_tensor(list(weights), dtype=torch.float32, device=device)
    if w.shape != (n_tasks,):
        raise ConfigError(f"model task_weights must have {n_tasks} entries, got {w.tolist()}")
    return w


def training_loss(
    logits: torch.Tensor,
    aux: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    row_scale: float | None = None,
) -> torch.Tensor:
    """The loss every run trains on: per-task BCE with logits, weighted, plus ``aux``.

    Args:
        logits: ``[B, T]`` model logits (any float dtype; the loss is float32).
        aux: Scalar auxiliary loss of the model, or its function of the labels
            (:func:`~mssbench.spec.resolve_aux_loss`).
        labels: ``[B, T]`` float labels.
        weights: ``[T]`` task weights (:func:`task_weights`).
        row_scale: ``None``: each task's BCE is the mean over the rows. Otherwise the sum over
            the rows times ``row_scale`` (a data-parallel shard: ``world size / global batch
            rows``, so that DDP's average over ranks is the gradient of the global-batch mean).
    """
    per_task = task_losses(logits, labels, row_scale)
    return (per_task * weights).sum() + resolve_aux_loss(aux, labels).float()


# --- loss balancing: the per-task losses a balancer combines
def task_losses(
    logits: torch.Tensor, labels: torch.Tensor, row_scale: float | None = None
) -> torch.Tensor:
    """``[T]`` float32 per-task BCE with logits (``row_scale``: see :func:`training_loss`)."""
    per_row = F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none")
    return per_row.mean(0) if row_scale is None else per_row.sum(0) * row_scale
# --- end loss balancing


def make_optimizer(
    model: torch.nn.Module,
    device: torch.device,
    lr: float,
    weight_decay: float,
    capturable: bool = False,
) -> torch.optim.Optimizer:
    """Adam; the fused kernel on CUDA (one launch for all parameters), the default elsewhere.

    ``capturable`` (CUDA only) keeps the step counter on the device, so that the update can be
    recorded in a CUDA graph (:mod:`mssbench.runners.graph_step`).
    """
    fused = device.type == "cuda"
    return torch.optim.Adam(
        model.parameters(),
        lr=lr,
        weight_decay=weight_decay,
        fused=fused or None,
        capturable=capturable and fused,
    )


def _static_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train: Split,
    device: torch.device,
    batch_size: int,
    precision: str,
    weights: torch.Tensor,
    schema: DatasetSchema,
    model_name: str,
) -> StaticStep:
    """The ``--step graph`` step: training rows on ``device``, the same loss as eager steps."""
    if train.scenario.device != device:
        train = train.to(device)  # once; graphs gather their batches on the device
    validated = []

    def loss_fn(batch: Batch) -> torch.Tensor:
        with autocast(device, precision, cache=False):
            out = model(batch)
        if not validated:
            _validate_output(out, len(batch), schema.n_tasks, model_name)
            validated.append(True)
        logits, aux = out
        return training_loss(logits, aux, batch.labels, weights)

    return StaticStep(model, optimizer, train, batch_size, loss_fn, model_name)


def _check_finite(
    static: StaticStep,
    step: int,
    epoch: int,
    check_every: int,
    lr: float,
    model_name: str,
    bar: Any,
) -> None:
    """Stop a ``--step graph`` epoch whose running loss is no longer finite (one sync)."""
    if not bool(static.finite):
        bar.close()
        raise TrainingError(
            f"training loss became non-finite at epoch {epoch}, step {step} (or up to "
            f"{check_every - 1} steps before) of model {model_name!r}; the run is stopped. "
            f"Try a lower --lr (now {lr})."
        )


#: Keys every checkpoint holds (tensors, state dicts and plain Python values only).
#: (``rng``, one entry per process, is absent from checkpoints of single-process runs written
#: before data-parallel training: their RNG states sit at the top level.)
CHECKPOINT_KEYS = ("model", "optimizer", "best", "state", "generator")


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, lambda fh: torch.save(payload, fh), binary=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


#: Lines of torch's weights-only refusal that say nothing about the file.
_TORCH_BOILERPLATE = ("weights only load failed", "please file an issue", "check the documentation")


def _unpickling_reason(exc: BaseException) -> str:
    """What the weights-only unpickler objected to, in one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next(
        (ln for ln in lines if not ln.lower().startswith(_TORCH_BOILERPLATE)), _first_line(exc)
    )
    if "GLOBAL" in detail:  # an object of some Python class: loading it could run code
        return f"it holds Python objects other than tensors and plain values (refused: {detail})"
    return f"not a checkpoint ({detail})"


def _unreadable(path: Path, why: str) -> ConfigError:
    return ConfigError(
        f"checkpoint {path} cannot be resumed: {brief(why)}; delete it to start the run over"
    )


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """Read a checkpoint written by :func:`fit`, refusing anything that could run code.

    The file is read with ``torch.load(weights_only=True)``: only tensors, state dicts and
    plain Python values are accepted, so a planted pickle whose objects would execute code on
    loading is refused.

    Raises:
        ConfigError: The file is not a checkpoint of this harness (one line naming it).
    """
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of odd files
            warnings.simplefilter("ignore")
            ck = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _unreadable(path, _unpickling_reason(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        raise _unreadable(path, f"not a checkpoint ({_first_line(exc)})") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise _unreadable(path, f"not a checkpoint of mssbench (missing {', '.join(missing)})")
    known = {f.name for f in fields(TrainState)}
    if not isinstance(ck["state"], dict) or set(ck["state"]) - known:
        raise _unreadable(path, "its training state has unknown fields")
    return ck


def _restore(
    ck: dict[str, Any],
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    device: torch.device,
    world: World,
) -> TrainState:
    """Load a checkpoint's weights, optimizer, RNG streams and training state."""
    try:
        model.load_state_dict(ck["best"])  # checked now, restored after the last epoch
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        state = TrainState(**ck["state"])
        generator.set_state(ck["generator"])
        rng = ck["rng"][world.rank] if "rng" in ck else ck
        torch.set_rng_state(rng["torch_rng"])
        if device.type == "cuda" and rng.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(rng["cuda_rng"], device)
    except (RuntimeError, TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise _unreadable(path, f"it does not fit this run ({_first_line(exc)})") from None
    return state


def fit(
    model: torch.nn.Module,
    schema: DatasetSchema,
    train: Split,
    valid: Split,
    *,
    model_name: str,
    device: torch.device,
    seed: int,
    epochs: int,
    batch_size: int,
    eval_batch_size: int,
    lr: float,
    weight_decay: float,
    patience: int,
    scenario_pure: bool = False,
    max_steps_per_epoch: int = 0,
    block_rows: int = 0,
    checkpoint: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    log: Callable[[str], None] = print,
    world: World = SINGLE,
    precision: str = "fp32",
    compile_model: bool = False,
    prefetch: bool | None = None,
    retain_host_memory: bool = True,
    step_mode: str = "eager",
    stream_chunk_rows: int = DEFAULT_CHUNK_ROWS,
    started: float | None = None,
    balancer: Balancer | None = None,
) -> TrainResult:
    """Train with Adam, select the epoch with the best validation score, restore it.

    Args:
        model: The model, already on ``device``.
        schema: Dataset schema (tasks and scenarios for the metrics).
        train: Training split (resident; moved to ``device`` by the caller when it fits).
        valid: Validation split, the only data used for early stopping.
        model_name: For messages.
        device: Compute device.
        seed: Seeds the shuffling generator (the caller seeds initialisation).
        epochs: Maximum epochs.
        batch_size: Training batch size.
        eval_batch_size: Validation batch size.
        lr: Learning rate.
        weight_decay: Weight decay.
        patience: Epochs without improvement before stopping.
        scenario_pure: Single-scenario batches.
        max_steps_per_epoch: Stop each epoch after this many steps (0 = full pass).
        block_rows: Block-shuffle rows in blocks of this size (memory-mapped data; 0 = off).
        checkpoint: Where to keep the resumable state after every epoch.
        resume: Continue from ``checkpoint`` if it exists.
        progress: Show a progress bar.
        on_epoch_end: Called with ``(epoch, metrics)`` after the checkpoint is saved.
        log: Where status lines go.
        world: This process's place in a data-parallel run (rank 0 alone checkpoints; the
            caller silences ``log`` and ``progress`` on the other ranks).
        precision: ``fp32``, or ``bf16`` for bfloat16 autocast of forward passes (the loss
            and the optimizer stay float32).
        compile_model: Train through ``torch.compile`` (evaluation uses the eager model).
        prefetch: Cut the next batch in a background thread (:func:`iter_batches`); default:
            for memory-mapped data (``block_rows``) and for training data in host memory
            feeding a GPU.
        retain_host_memory: On the CPU, keep freed buffers in the process for the next step
            (:mod:`mssbench.runners.host_memory`; changes no value, only the speed).
        step_mode: ``eager``, or ``graph``: full batches replay one CUDA graph of the whole step
            over device-resident data (:mod:`mssbench.runners.graph_step`; on the CPU the same
            static-buffer step runs eagerly). Memory-mapped training rows (``block_rows``)
            are streamed to the device in chunks (:mod:`mssbench.runners.streaming`), other
            rows are moved to the device once.
        stream_chunk_rows: Rows per streamed chunk (``step_mode="graph"`` with memory-mapped
            rows).
        started: ``time.perf_counter()`` when this process started the run (default: now);
            checkpoints add the time since then to the wall time of earlier processes.
        balancer: Combines the per-task losses and runs the backward pass
            (:mod:`mssbench.balancing`); default: the model's fixed task weights.

    Returns:
        The final training state and the best weights (already loaded into ``model``).
    """
    check_step(step_mode, distributed=world.enabled, compiled=compile_model)
    started = time.perf_counter() if started is None else started
    optimizer = make_optimizer(model, device, lr, weight_decay, capturable=step_mode == "graph")
    # --- loss balancing: default weighted sum; learnable weights join the optimizer
    if balancer is None:
        balancer = WeightedSum(schema.n_tasks, task_weights(model, schema.n_tasks, device))
    balancer = balancer.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if balancer.parameters():
        optimizer.add_param_group({"params": balancer.parameters()})
    # --- end loss balancing
    generator = torch.Generator().manual_seed(seed)
    state = TrainState()
    best = copy.deepcopy(model.state_dict())
    if resume and checkpoint is not None and checkpoint.exists():
        ck = load_checkpoint(checkpoint, device)
        state = _restore(ck, checkpoint, model, optimizer, generator, device, world)
        best = ck["best"]
        balancer.load_state_dict(ck.get("balancer", {}))  # --- loss balancing
        log(f"Resuming from {checkpoint} after epoch {state.epoch}.")
    earlier_wall = state.wall_seconds

    weights = task_weights(model, schema.n_tasks, device)
    check_every = 1 if device.type == "cpu" else 50
    scenario = train.scenario if scenario_pure else None
    if prefetch is None:
        prefetch = bool(block_rows) or (
            device.type == "cuda" and train.scenario.device.type == "cpu"
        )
    net = model
    if world.enabled:
        # Top-k expert routing and per-scenario gates leave parameters unused in some steps.
        net = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    if compile_model:
        net = torch.compile(net)

    static, stream = None, None
    if step_mode == "graph":
        if block_rows:
            # Memory-mapped rows: streamed to the device chunk by chunk, not moved whole.
            stream = ChunkStream(train, device, max(stream_chunk_rows, batch_size))
        static = _static_step(
            model,
            optimizer,
            stream.current if stream else train,
            device,
            batch_size,
            precision,
            weights,
            schema,
            model_name,
        )
    with retained_host_memory(enabled=retain_host_memory and device.type == "cpu"):
        while state.epoch < epochs and not state.stopped_early:
            epoch = state.epoch + 1
            net.train()
            batches = batch_indices(
                len(train),
                batch_size,
                generator,
                scenario,
                schema.n_scenarios,
                block_rows,
                min_rows=2 * world.size,
            )
            if world.enabled:
                # A lone scenario-pure batch too small to give every process two rows is skipped.
                batches = [b for b in batches if len(b) >= 2 * world.size]
            if max_steps_per_epoch:
                batches = batches[:max_steps_per_epoch]
            n_samples = sum(len(b) for b in batches)
            bar = tqdm(
                total=n_samples,
                unit="samples",
                unit_scale=True,
                desc=f"epoch {epoch}/{epochs}",
                disable=not progress,
                leave=False,
                dynamic_ncols=True,
            )
            loss_sum = torch.zeros((), device=device)
            finite = torch.ones((), dtype=torch.bool, device=device)
            t0 = time.perf_counter()
            if static is not None:
                static.reset_loss()
                loss_sum = static.loss_sum
                run_epoch(
                    static,
                    batches,
                    check_every,
                    check=functools.partial(
                        _check_finite,
                        static,
                        epoch=epoch,
                        check_every=check_every,
                        lr=lr,
                        model_name=model_name,
                        bar=bar,
                    ),
                    advance=bar.update,
                    stream=stream,
                )
            else:
                for step, (idx, batch) in enumerate(
                    iter_batches(train, batches, device, world, prefetch), 1
                ):
                    with autocast(device, precision):
                        out = net(batch)
                    if step == 1:
                        _validate_output(out, len(batch), schema.n_tasks, model_name)
                    logits, aux = out
                    # DDP averages gradients over ranks: scaling each shard's sum by
                    # world / global rows makes that average the gradient of the global mean.
                    row_scale = world.size / len(idx) if world.enabled else None
                    # --- loss balancing: per-task losses, the balancer's backward pass
                    try:
                        aux_loss = resolve_aux_loss(aux, batch.labels).float()
                    except SpecError as exc:
                        raise TrainingError(f"model {model_name!r}: {exc}") from None
                    optimizer.zero_grad(set_to_none=True)
                    loss = balancer.backward(
                        task_losses(logits, batch.labels, row_scale), trainable, aux_loss
                    )
                    # --- end loss balancing
                    optimizer.step()
                    detached = loss.detach()
                    loss_sum += detached
                    finite &= torch.isfinite(detached)
                    if step % check_every == 0 or step == len(batches):
                        if not all_true(finite, world):
                            bar.close()
                            raise TrainingError(
                                f"training loss became {detached.item()} at epoch {epoch}, step "
                                f"{step} (or up to {check_every - 1} steps before) of model "
                                f"{model_name!r}; the run is stopped. Try a lower --lr (now {lr})."
                            )
                    bar.update(len(idx))
                    if progress and step % 20 == 0:
                        bar.set_postfix(loss=f"{loss_sum.item() / step:.4f}", refresh=False)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0
            bar.close()
            state.train_seconds += seconds
            state.train_samples += n_samples

            logits = predict(model, valid, device, eval_batch_size, world, precision)
            metrics_df = evaluate(
                logits, valid.labels.to(device), valid.scenario.to(device), schema
            )
            flat = summary(metrics_df)
            aucs = [flat.get(f"auc/{t}", math.nan) for t in schema.task_names]
            score = float(np.nanmean(aucs)) if not all(math.isnan(a) for a in aucs) else math.nan
            if math.isnan(score):
                # No task has a defined validation AUC: fall back to (negative) validation loss.
                score = -float(
                    np.nansum([flat.get(f"logloss/{t}", 0.0) for t in schema.task_names])
                )
            train_loss = loss_sum.item() / max(len(batches), 1)
            improved = score > state.best_score
            if improved:
                state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
                best = copy.deepcopy(model.state_dict())
            else:
                state.bad_epochs += 1
            entry = {
                "epoch": epoch,
                "train_loss": train_loss,
                "train_seconds": seconds,
                "train_samples_per_s": n_samples / seconds if seconds > 0 else math.nan,
                "selection_score": score,
                "valid": flat,
            }
            state.history.append(entry)
            state.epoch = epoch
            if state.bad_epochs >= patience:
                state.stopped_early = True
            mark = " *" if improved else ""
            log(
                f"epoch {epoch:>3}  train loss {train_loss:.4f}  valid score {score:.4f}{mark}  "
                f"{entry['train_samples_per_s']:,.0f} samples/s"
            )
            if checkpoint is not None:
                rng = {
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                }
                rngs = all_objects(rng, world)  # dropout streams differ between ranks
                state.wall_seconds = earlier_wall + time.perf_counter() - started
                if world.is_main:
                    _save_checkpoint(
                        checkpoint,
                        {
                            "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "best": best,
                            "state": state.__dict__,
                            "generator": generator.get_state(),
                            "rng": rngs,
                            "balancer": balancer.state_dict(),  # --- loss balancing
                        },
                    )
                barrier(world)
            if on_epoch_end is not None:
                on_epoch_end(epoch, {"train_loss": train_loss, "selection_score": score, **flat})
    if state.stopped_early:
        log(
            f"Early stop: no validation improvement for {state.bad_epochs} epochs; "
            f"restoring epoch {state.best_epoch}."
        )
    model.load_state_dict(best)
    return TrainResult(state=state, best_state_dict=best, earlier_wall_seconds=earlier_wall)
