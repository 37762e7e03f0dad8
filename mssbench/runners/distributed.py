"""Data-parallel training with ``torch.distributed``, launched by ``torchrun``.

``mssbench run`` under ``torchrun --nproc-per-node N`` finds ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK`` in its environment and trains data-parallel: every rank draws the same global
batch order (same seed), takes its own contiguous shard of each global batch and reads only
those rows, and gradients are averaged by :class:`~torch.nn.parallel.DistributedDataParallel`.
The loss of a shard is scaled so that the averaged gradient is the gradient of the mean loss
over the whole global batch: ``--batch-size`` keeps its single-process meaning.

Validation and test predictions are made shard by shard and gathered, in row order, on every
rank before any metric is computed, so AUC and logloss are those of a single-process
evaluation of the same weights. Rank 0 alone logs, checkpoints and writes the run record.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from mssbench.errors import ConfigError

#: Environment variables ``torchrun`` sets for every process it starts.
TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """Where this process stands in a data-parallel run (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """More than one process takes part."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes."""
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """What the run record keeps about the process group."""
        return {"world_size": self.size, "backend": self.backend}

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of a global batch (sizes differ by at most one row)."""
        if not self.enabled:
            return rows
        return torch.tensor_split(rows, self.size)[self.rank]

    def shard_range(self, n_rows: int) -> tuple[int, int]:
        """``[start, stop)`` of this rank's contiguous part of ``n_rows`` rows."""
        start = n_rows * self.rank // self.size
        stop = n_rows * (self.rank + 1) // self.size
        return start, stop

    def gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's rows in rank order, on every rank.

        Ranks may hold different numbers of rows: each is padded to the largest before the
        all-gather and the padding is cut off again.
        """
        if not self.enabled:
            return local
        count = torch.tensor([local.shape[0]], device=local.device)
        counts = [torch.zeros_like(count) for _ in range(self.size)]
        dist.all_gather(counts, count)
        sizes = [int(c.item()) for c in counts]
        padded = local.new_zeros((max(sizes), *local.shape[1:]))
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    def all_true(self, flag: torch.Tensor) -> bool:
        """Whether a boolean holds on every rank."""
        if not self.enabled:
            return bool(flag)
        value = flag.to(torch.int32).reshape(1).clone()
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item())

    def all_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.enabled:
            dist.barrier()


#: The world of a run that is not distributed.
SINGLE = World()


def launched_by_torchrun() -> bool:
    """The environment of a ``torchrun`` worker with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(
            f"WORLD_SIZE is set but {name} is not: start distributed runs with torchrun, "
            f"e.g. torchrun --nproc-per-node 2 -m mssbench run ..."
        )
    try:
        return int(value)
    except ValueError:
        raise ConfigError(
            f"environment variable {name} must be an integer, got {value!r}"
        ) from None


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group ``torchrun`` prepared, or stay a single process.

    Args:
        device: The device resolved from ``--device`` (``cuda`` becomes ``cuda:LOCAL_RANK``).

    Returns:
        This process's place in the world and the device it computes on. The backend is NCCL
        on CUDA and gloo on CPU.
    """
    if not launched_by_torchrun():
        return World(), device
    size, rank, local_rank = _env_int("WORLD_SIZE"), _env_int("RANK"), _env_int("LOCAL_RANK")
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible; "
                "start at most one process per GPU (torchrun --nproc-per-node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(f"distributed training supports cpu and cuda devices, not {device}")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return World(rank=rank, size=size, local_rank=local_rank, backend=backend), device


def teardown(world: World) -> None:
    """Leave the process group (after the last collective)."""
    if world.enabled and dist.is_initialized():
        dist.destroy_process_group()
