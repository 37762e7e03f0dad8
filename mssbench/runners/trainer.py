"""Training: batches cut from resident tensors, early stopping on validation.

One process by default; data-parallel across the processes of a ``torchrun`` launch
(:mod:`mssbench.runners.distributed`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
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

from mssbench.balancing import Balancer, WeightedSum, weighted_loss
from mssbench.config import CONVERGENCE_TOLERANCE, SELECTIONS, check_step
from mssbench.errors import ConfigError, TrainingError, brief
from mssbench.io import atomic_write
from mssbench.metrics import evaluate, summary
from mssbench.runners.distributed import SINGLE, World
from mssbench.runners.graph_step import StaticStep, run_epoch
from mssbench.runners.host_memory import retained_host_memory
from mssbench.runners.streaming import DEFAULT_CHUNK_ROWS, ChunkStream
from mssbench.runners.weight_decay import Groups, parameter_groups
from mssbench.runners.weight_decay import make_optimizer as optimizer_for
from mssbench.spec import Batch, DatasetSchema, SpecError, Split, resolve_aux_loss

#: The autocast dtype of each ``--precision`` value (``fp32`` = no autocast).
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16}



def selection_score(flat: dict[str, float], task_names: Sequence[str], select: str) -> float:
    """The validation score an epoch is selected by (higher is better; ``--select``)."""
    losses = [flat.get(f"logloss/{t}", math.nan) for t in task_names]
    if select == "mean_logloss":
        return -float(np.nanmean(losses)) if not all(map(math.isnan, losses)) else math.nan
    if select != "mean_auc":
        raise ConfigError(f"--select must be one of {', '.join(SELECTIONS)}, got {select!r}")
    aucs = [flat.get(f"auc/{t}", math.nan) for t in task_names]
    if not all(math.isnan(a) for a in aucs):
        return float(np.nanmean(aucs))
    # No task has a defined validation AUC: fall back to (negative) validation loss.
    return -float(np.nansum([flat.get(f"logloss/{t}", 0.0) for t in task_names]))


def converged(history: Sequence[dict[str, Any]], best_epoch: int, stopped_early: bool) -> bool:
    """Whether the run ended because it stopped improving, not because its budget ran out.

    True when early stopping ended it (``patience`` epochs without a better validation score:
    the protocol's own rule ended the run, whatever the last epoch's score). Otherwise False
    when the best epoch is the last, or when the last epoch still raised the selection score by
    more than :data:`~mssbench.config.CONVERGENCE_TOLERANCE`: more epochs would likely have
    changed the result.
    """
    if not history:
        return False
    if stopped_early:
        return True
    if best_epoch == history[-1]["epoch"]:
        return False
    if len(history) >= 2:
        gain = history[-1]["selection_score"] - history[-2]["selection_score"]
        if gain > CONVERGENCE_TOLERANCE:
            return False
    return True


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


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads, then restore the caller's count.

    The thread count sets the order of floating-point reductions on the CPU, so a run repeats
    bit for bit only with the count it was recorded with (``environment.hardware.torch_threads``).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def denormals_flushed(enabled: bool) -> Iterator[None]:
    """Run the block with the CPU's denormal numbers flushed to zero when ``enabled``.

    Intel CPUs compute on denormal floats through slow microcode: a model whose weights or
    Adam moments decay below 1.2e-38 (dead units under weight decay) trains up to 12x slower.
    Flushing makes such values 0, which can change a run's numbers, so it is a recorded run
    option (``--flush-denormal``), off by default. Torch has no getter for the mode: it is
    switched off again after the block.
    """
    if not enabled:
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


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


def label_free(batch: Batch) -> Batch:
    """``batch`` with its labels replaced by an empty ``[B, 0]`` tensor.

    Any use of them as ``[B, T]`` labels (indexing a task, broadcasting against the logits)
    raises, so a model that reads labels in ``forward`` is caught at prediction time.
    """
    return Batch(batch.categorical, batch.numeric, batch.scenario, batch.labels[:, :0])


def _label_free_logits(model: torch.nn.Module, batch: Batch, n_tasks: int) -> torch.Tensor:
    """``model``'s float32 logits of a :func:`label_free` batch, refusing any use of labels."""
    why = "predictions never see labels; forward must not read batch.labels"
    name = type(model).__name__
    try:
        logits = model(batch).logits
    except (IndexError, RuntimeError) as exc:
        raise TrainingError(
            f"model {name}: forward failed on a batch without labels ({why}): {brief(str(exc))}"
        ) from exc
    if tuple(logits.shape) != (len(batch), n_tasks):
        raise TrainingError(
            f"model {name}: logits {list(logits.shape)} on a batch without labels, expected "
            f"[{len(batch)}, {n_tasks}] ({why})"
        )
    return logits.float()


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
    are gathered in row order, so every rank returns the logits of all ``N`` rows. The model
    gets :func:`label_free` batches: a forward that reads the labels fails here.
    """
    model.eval()
    start, stop = world.shard_range(len(split))
    outs = []
    with autocast(device, precision):
        for first in range(start, stop, batch_size):
            rows = slice(first, min(first + batch_size, stop))
            batch = label_free(split.batch(rows)).to(device, non_blocking=True)
            outs.append(_label_free_logits(model, batch, split.labels.shape[1]))
    local = torch.cat(outs) if outs else torch.zeros((0, split.labels.shape[1]), device=device)
    return world.gather_rows(local)


def iter_batches(
    split: Split,
    batches: Sequence[torch.Tensor],
    device: torch.device,
    world: World = SINGLE,
    prefetch: bool = False,
) -> Iterator[tuple[torch.Tensor, Batch]]:
    """``(global rows, batch on device)`` for each index tensor of ``batches``.

    Each batch holds this rank's share of the rows
    (:meth:`~mssbench.runners.distributed.World.shard`). With ``prefetch`` a background thread
    cuts the next batch (the gather from a memory map, and on CUDA the copy into page-locked
    memory) while the current one trains, and the copy to the GPU is asynchronous. The
    batches are the same either way.
    """

    def cut(idx: torch.Tensor) -> Batch:
        rows = world.shard(idx)
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
    #: The processes that trained the epochs so far, in order: each one's
    #: :attr:`FitSettings.process` with ``first_epoch`` and ``last_epoch``. A resumed run keeps
    #: its earlier processes' entries, so its record names every machine and code that trained it.
    processes: list[dict[str, Any]] = field(default_factory=list)


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
    return weighted_loss(per_task, weights, resolve_aux_loss(aux, labels).float())


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
    mode: str = "coupled",
    groups: Groups | None = None,
) -> torch.optim.Optimizer:
    """Adam (``mode="coupled"``) or AdamW (``"decoupled"``) over the model's decay groups.

    The groups are the model's declared ones (``groups``) or the default: no decay on
    embeddings, biases and normalisation parameters (:mod:`mssbench.runners.weight_decay`).
    The fused kernel runs on CUDA (one launch for all parameters). ``capturable`` (CUDA only)
    keeps the step counter on the device, so that the update can be recorded in a CUDA graph
    (:mod:`mssbench.runners.graph_step`).
    """
    name = type(model).__name__
    param_groups = parameter_groups(model, weight_decay, groups, name)
    return optimizer_for(param_groups, mode, lr, device, capturable)


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


@dataclass
class FitSettings:
    """How :func:`fit` trains: every option of a training run besides the model and data.

    Attributes:
        model_name: For messages.
        device: Compute device.
        seed: Seeds the shuffling generator (the caller seeds initialisation).
        epochs: Maximum epochs.
        batch_size: Training batch size.
        eval_batch_size: Validation batch size.
        lr: Learning rate.
        weight_decay: Weight decay of the default groups.
        patience: Epochs without improvement before stopping.
        select: The validation score an epoch is selected by (:func:`selection_score`).
        weight_decay_mode: ``coupled`` (Adam + L2) or ``decoupled`` (AdamW).
        decay_groups: The model's own parameter groups (spec tag ``weight_decay_groups``).
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
        task_weights: ``[T]`` loss weight of each task, as the caller resolved it once for the
            run (:func:`task_weights`) and gave to ``balancer``; ``None``: resolved here.
        process: What this process is (its start, hardware, code and versions): kept in the
            training state with the epochs it trains (:attr:`TrainState.processes`); ``None``:
            not kept.
    """

    model_name: str
    device: torch.device
    seed: int
    epochs: int
    batch_size: int
    eval_batch_size: int
    lr: float
    weight_decay: float
    patience: int
    select: str = "mean_auc"
    weight_decay_mode: str = "coupled"
    decay_groups: Groups | None = None
    scenario_pure: bool = False
    max_steps_per_epoch: int = 0
    block_rows: int = 0
    checkpoint: Path | None = None
    resume: bool = False
    progress: bool = True
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None
    log: Callable[[str], None] = print
    world: World = SINGLE
    precision: str = "fp32"
    compile_model: bool = False
    prefetch: bool | None = None
    retain_host_memory: bool = True
    step_mode: str = "eager"
    stream_chunk_rows: int = DEFAULT_CHUNK_ROWS
    started: float | None = None
    balancer: Balancer | None = None
    task_weights: torch.Tensor | None = None
    process: dict[str, Any] | None = None


@dataclass
class EpochStats:
    """What one training epoch measured."""

    loss: float
    seconds: float
    samples: int
    steps: int


class _Trainer:
    """One training run of :func:`fit`, step by step: resume, epochs, selection, checkpoints."""

    def __init__(
        self,
        model: torch.nn.Module,
        schema: DatasetSchema,
        train: Split,
        valid: Split,
        settings: FitSettings,
    ):
        s = self.s = settings
        check_step(s.step_mode, distributed=s.world.enabled, compiled=s.compile_model)
        self.model, self.schema, self.train, self.valid = model, schema, train, valid
        self.started = time.perf_counter() if s.started is None else s.started
        self.optimizer = make_optimizer(
            model, s.device, s.lr, s.weight_decay, s.step_mode == "graph",
            s.weight_decay_mode, s.decay_groups,
        )
        # --- loss balancing: default weighted sum; learnable weights join the optimizer
        if s.task_weights is None:
            self.weights = task_weights(model, schema.n_tasks, s.device)
        else:
            self.weights = s.task_weights.to(s.device)
        balancer = s.balancer
        if balancer is None:
            balancer = WeightedSum(schema.n_tasks, self.weights)
        self.balancer = balancer.to(s.device)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        if self.balancer.parameters():
            self.optimizer.add_param_group({"params": self.balancer.parameters()})
        # --- end loss balancing
        self.generator = torch.Generator().manual_seed(s.seed)
        self.state = TrainState()
        self.best = copy.deepcopy(model.state_dict())
        self.earlier_wall = 0.0

    def resume(self) -> None:
        """Continue from the checkpoint when asked to and one exists."""
        s = self.s
        if s.resume and s.checkpoint is not None and s.checkpoint.exists():
            ck = load_checkpoint(s.checkpoint, s.device)
            self.state = _restore(
                ck, s.checkpoint, self.model, self.optimizer, self.generator, s.device, s.world
            )
            self.best = ck["best"]
            self.balancer.load_state_dict(ck.get("balancer", {}))  # --- loss balancing
            s.log(f"Resuming from {s.checkpoint} after epoch {self.state.epoch}.")
        self.earlier_wall = self.state.wall_seconds
        self._enter_process()

    def _enter_process(self) -> None:
        """List this process in the training state, from the epoch it trains first.

        A checkpoint written before processes were listed gets one entry of unknown origin for
        its epochs.
        """
        s, state = self.s, self.state
        if s.process is None:
            return
        if state.epoch and not state.processes:
            unknown = {k: None for k in s.process}
            state.processes.append({**unknown, "first_epoch": 1, "last_epoch": state.epoch})
        first = state.epoch + 1  # last_epoch follows each epoch this process trains
        state.processes.append({**s.process, "first_epoch": first, "last_epoch": first - 1})

    def prepare(self) -> None:
        """The network that trains (DDP, compiled) and the graph step."""
        s, model, device = self.s, self.model, self.s.device
        self.check_every = 1 if device.type == "cpu" else 50
        self.prefetch = s.prefetch
        if self.prefetch is None:
            self.prefetch = bool(s.block_rows) or (
                device.type == "cuda" and self.train.scenario.device.type == "cpu"
            )
        self.net = model
        if s.world.enabled:
            # Top-k expert routing and per-scenario gates leave parameters unused in some steps.
            self.net = torch.nn.parallel.DistributedDataParallel(
                model,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        if s.compile_model:
            self.net = torch.compile(self.net)
        self.static, self.stream = None, None
        if s.step_mode == "graph":
            if s.block_rows:
                # Memory-mapped rows: streamed to the device chunk by chunk, not moved whole.
                self.stream = ChunkStream(
                    self.train, device, max(s.stream_chunk_rows, s.batch_size)
                )
            self.static = _static_step(
                model,
                self.optimizer,
                self.stream.current if self.stream else self.train,
                device,
                s.batch_size,
                s.precision,
                self.weights,
                self.schema,
                s.model_name,
            )

    def epoch_batches(self) -> list[torch.Tensor]:
        """This epoch's training batches (global row indices)."""
        s, world = self.s, self.s.world
        batches = batch_indices(
            len(self.train),
            s.batch_size,
            self.generator,
            self.train.scenario if s.scenario_pure else None,
            self.schema.n_scenarios,
            s.block_rows,
            min_rows=2 * world.size,
        )
        if world.enabled:
            # A lone scenario-pure batch too small to give every process two rows is skipped.
            batches = [b for b in batches if len(b) >= 2 * world.size]
        if s.max_steps_per_epoch:
            batches = batches[: s.max_steps_per_epoch]
        return batches

    def train_epoch(self, epoch: int) -> EpochStats:
        """One pass over this epoch's batches; the mean training loss and the speed."""
        s, device = self.s, self.s.device
        self.net.train()
        batches = self.epoch_batches()
        n_samples = sum(len(b) for b in batches)
        bar = tqdm(
            total=n_samples,
            unit="samples",
            unit_scale=True,
            desc=f"epoch {epoch}/{s.epochs}",
            disable=not s.progress,
            leave=False,
            dynamic_ncols=True,
        )
        t0 = time.perf_counter()
        if self.static is not None:
            loss_sum = self._graph_steps(batches, epoch, bar)
        else:
            loss_sum = self._eager_steps(batches, epoch, bar)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        bar.close()
        self.state.train_seconds += seconds
        self.state.train_samples += n_samples
        loss = loss_sum.item() / max(len(batches), 1)
        return EpochStats(loss, seconds, n_samples, len(batches))

    def _graph_steps(self, batches: list[torch.Tensor], epoch: int, bar: Any) -> torch.Tensor:
        static = self.static
        assert static is not None
        static.reset_loss()
        run_epoch(
            static,
            batches,
            self.check_every,
            check=functools.partial(
                _check_finite,
                static,
                epoch=epoch,
                check_every=self.check_every,
                lr=self.s.lr,
                model_name=self.s.model_name,
                bar=bar,
            ),
            advance=bar.update,
            stream=self.stream,
        )
        return static.loss_sum

    def _eager_steps(self, batches: list[torch.Tensor], epoch: int, bar: Any) -> torch.Tensor:
        s, device, world = self.s, self.s.device, self.s.world
        loss_sum = torch.zeros((), device=device)
        finite = torch.ones((), dtype=torch.bool, device=device)
        for step, (idx, batch) in enumerate(
            iter_batches(self.train, batches, device, world, self.prefetch), 1
        ):
            with autocast(device, s.precision):
                out = self.net(batch)
            if step == 1:
                _validate_output(out, len(batch), self.schema.n_tasks, s.model_name)
            logits, aux = out
            # DDP averages gradients over ranks: scaling each shard's sum by
            # world / global rows makes that average the gradient of the global mean.
            row_scale = world.size / len(idx) if world.enabled else None
            # --- loss balancing: per-task losses, the balancer's backward pass
            try:
                aux_loss = resolve_aux_loss(aux, batch.labels).float()
            except SpecError as exc:
                raise TrainingError(f"model {s.model_name!r}: {exc}") from None
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.balancer.backward(
                task_losses(logits, batch.labels, row_scale), self.trainable, aux_loss
            )
            # --- end loss balancing
            self.optimizer.step()
            detached = loss.detach()
            loss_sum += detached
            finite &= torch.isfinite(detached)
            if step % self.check_every == 0 or step == len(batches):
                if not world.all_true(finite):
                    bar.close()
                    raise TrainingError(
                        f"training loss became {detached.item()} at epoch {epoch}, step "
                        f"{step} (or up to {self.check_every - 1} steps before) of model "
                        f"{s.model_name!r}; the run is stopped. Try a lower --lr (now {s.lr})."
                    )
            bar.update(len(idx))
            if s.progress and step % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum.item() / step:.4f}", refresh=False)
        return loss_sum

    def validate_and_select(self, epoch: int, stats: EpochStats) -> dict[str, float]:
        """Score the epoch on validation, keep its weights if best, decide on stopping."""
        s, state, device = self.s, self.state, self.s.device
        logits = predict(self.model, self.valid, device, s.eval_batch_size, s.world, s.precision)
        metrics_df = evaluate(
            logits, self.valid.labels.to(device), self.valid.scenario.to(device), self.schema
        )
        flat = summary(metrics_df)
        score = selection_score(flat, self.schema.task_names, s.select)
        improved = score > state.best_score
        if improved:
            state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
            self.best = copy.deepcopy(self.model.state_dict())
        else:
            state.bad_epochs += 1
        speed = stats.samples / stats.seconds if stats.seconds > 0 else math.nan
        state.history.append(
            {
                "epoch": epoch,
                "train_loss": stats.loss,
                "train_seconds": stats.seconds,
                "train_samples_per_s": speed,
                "selection_score": score,
                "valid": flat,
            }
        )
        state.epoch = epoch
        if state.processes:
            state.processes[-1]["last_epoch"] = epoch
        if state.bad_epochs >= s.patience:
            state.stopped_early = True
        mark = " *" if improved else ""
        s.log(
            f"epoch {epoch:>3}  train loss {stats.loss:.4f}  valid score {score:.4f}{mark}  "
            f"{speed:,.0f} samples/s"
        )
        return {"train_loss": stats.loss, "selection_score": score, **flat}

    def save_checkpoint(self) -> None:
        """Keep the resumable state (rank 0 writes; every rank's random streams)."""
        s, device = self.s, self.s.device
        if s.checkpoint is None:
            return
        rng = {
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        }
        rngs = s.world.all_objects(rng)  # dropout streams differ between ranks
        self.state.wall_seconds = self.earlier_wall + time.perf_counter() - self.started
        if s.world.is_main:
            _save_checkpoint(
                s.checkpoint,
                {
                    "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "best": self.best,
                    "state": self.state.__dict__,
                    "generator": self.generator.get_state(),
                    "rng": rngs,
                    "balancer": self.balancer.state_dict(),  # --- loss balancing
                },
            )
        s.world.barrier()

    def finish(self) -> TrainResult:
        """Restore the best epoch's weights."""
        state = self.state
        if state.stopped_early:
            self.s.log(
                f"Early stop: no validation improvement for {state.bad_epochs} epochs; "
                f"restoring epoch {state.best_epoch}."
            )
        self.model.load_state_dict(self.best)
        return TrainResult(
            state=state, best_state_dict=self.best, earlier_wall_seconds=self.earlier_wall
        )


def fit(
    model: torch.nn.Module,
    schema: DatasetSchema,
    train: Split,
    valid: Split,
    settings: FitSettings | None = None,
    **options: Any,
) -> TrainResult:
    """Train with Adam, select the epoch with the best validation score, restore it.

    Args:
        model: The model, already on ``device``.
        schema: Dataset schema (tasks and scenarios for the metrics).
        train: Training split (resident; moved to ``device`` by the caller when it fits).
        valid: Validation split, the only data used for early stopping.
        settings: How to train (:class:`FitSettings`).
        **options: :class:`FitSettings` fields, given one by one (over ``settings``).

    Returns:
        The final training state and the best weights (already loaded into ``model``).
    """
    if settings is None:
        settings = FitSettings(**options)
    elif options:
        settings = dataclasses.replace(settings, **options)
    run = _Trainer(model, schema, train, valid, settings)
    run.resume()
    run.prepare()
    s = settings
    with retained_host_memory(enabled=s.retain_host_memory and s.device.type == "cpu"):
        while run.state.epoch < s.epochs and not run.state.stopped_early:
            epoch = run.state.epoch + 1
            stats = run.train_epoch(epoch)
            metrics = run.validate_and_select(epoch, stats)
            run.save_checkpoint()
            if s.on_epoch_end is not None:
                s.on_epoch_end(epoch, metrics)
    return run.finish()
