"""Training rows larger than GPU memory: memory-mapped splits streamed to the device in chunks.

An epoch's batches (the runner's block-shuffled order for memory-mapped data,
:func:`mssbench.runners.trainer.batch_indices`) are cut into **chunks** of consecutive whole
batches of at most ``chunk_rows`` rows. For each chunk a background thread gathers its rows from
the memory map into one of two page-locked host buffers (the gather touches a few contiguous
block regions of the files, so reads stay sequential), and the chunk is copied with one
asynchronous transfer into a fixed device buffer, from which the training step gathers its
batches by index (:class:`~mssbench.runners.graph_step.StaticStep`; its CUDA graph keeps reading
the same buffer). While the device trains on chunk ``i`` the thread gathers chunk ``i + 1``; a
CUDA event per host buffer keeps the thread from overwriting a buffer whose transfer has not
finished.

The transfer itself runs on the compute stream, after the previous chunk's steps: at the
PCIe/NVLink rate it takes about 1% of the chunk's training time even at millions of samples/s
(277 bytes a row on the AliExpress twin), so overlapping it on a side stream would need a second
device buffer, and a second graph, for little. The gather on the host is the part worth hiding
and it is hidden.

Every row is trained once per epoch, in the same batches and order as without streaming:
the batches are the same index tensors, only where their rows are read from differs
(``tests/test_streaming.py``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

import torch

from mssbench.spec import Split

#: Rows per streamed chunk by default (about 0.3 GB of AliExpress-twin rows).
DEFAULT_CHUNK_ROWS = 1 << 20

_FIELDS = ("categorical", "numeric", "scenario", "labels")


def chunk_batches(batches: Sequence[torch.Tensor], chunk_rows: int) -> list[list[torch.Tensor]]:
    """Consecutive batches grouped so that each group holds at most ``chunk_rows`` rows.

    A batch larger than ``chunk_rows`` forms a group of its own. Order is kept.
    """
    groups: list[list[torch.Tensor]] = []
    rows = 0
    for b in batches:
        if groups and rows + len(b) <= chunk_rows:
            groups[-1].append(b)
            rows += len(b)
        else:
            groups.append([b])
            rows = len(b)
    return groups


def _empty_like_rows(split: Split, rows: int, device: torch.device, pin: bool) -> Split:
    def make(t: torch.Tensor) -> torch.Tensor:
        return torch.empty((rows, *t.shape[1:]), dtype=t.dtype, device=device, pin_memory=pin)

    return Split(*(make(getattr(split, f)) for f in _FIELDS))


class ChunkStream:
    """Streams the rows of a host-resident (memory-mapped) split to ``device`` in chunks.

    Args:
        split: Training rows on the host (memory-mapped tensors are fine).
        device: Where the training step runs.
        capacity: Rows of the device buffer (the largest chunk).
    """

    def __init__(self, split: Split, device: torch.device, capacity: int):
        self.split, self.device, self.capacity = split, device, capacity
        pin = device.type == "cuda"
        #: The device buffer every step reads (fixed addresses).
        self.current = _empty_like_rows(split, capacity, device, pin=False)
        self._host = [_empty_like_rows(split, capacity, torch.device("cpu"), pin) for _ in "ab"]
        self._copied: list[torch.cuda.Event | None] = [None, None]

    def _gather(self, slot: int, rows: torch.Tensor) -> int:
        """Fill host buffer ``slot`` with ``rows`` of the split (in the background thread)."""
        event = self._copied[slot]
        if event is not None:
            event.synchronize()  # its previous transfer to the device has finished
        host = self._host[slot]
        n = len(rows)
        for f in _FIELDS:
            torch.index_select(getattr(self.split, f), 0, rows, out=getattr(host, f)[:n])
        return n

    def _upload(self, slot: int, n: int) -> None:
        host = self._host[slot]
        for f in _FIELDS:
            getattr(self.current, f)[:n].copy_(getattr(host, f)[:n], non_blocking=True)
        if self.device.type == "cuda":
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
            self._copied[slot] = event

    def epoch(self, batches: Sequence[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
        """For each chunk, once its rows are in :attr:`current`: the batches' local row indices.

        The local indices (int64 on the device) index :attr:`current`; batch ``j`` of a chunk
        is ``current[local[j]]``, the rows of ``batches`` in order.
        """
        groups = chunk_batches(batches, self.capacity)
        if not groups:
            return
        if max(sum(len(b) for b in g) for g in groups) > self.capacity:
            raise ValueError(f"a batch is larger than the stream buffer ({self.capacity} rows)")
        with ThreadPoolExecutor(1, thread_name_prefix="mssbench-stream") as pool:
            pending = pool.submit(self._gather, 0, torch.cat(groups[0]))
            for i, group in enumerate(groups):
                n = pending.result()
                if i + 1 < len(groups):
                    pending = pool.submit(self._gather, (i + 1) % 2, torch.cat(groups[i + 1]))
                self._upload(i % 2, n)
                local = torch.arange(n, device=self.device)
                yield list(torch.split(local, [len(b) for b in group]))
