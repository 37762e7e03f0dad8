"""Keep freed host memory inside the process while a model trains on the CPU.

A training step allocates and frees the same large activation and gradient buffers every time
(MMoE at its published size: tens of buffers of 8 to 36 MB per step). glibc serves a request at
or above its mmap threshold (128 KiB at first, raised by freed buffers to at most 32 MiB) with a
fresh ``mmap`` and returns it with ``munmap`` when torch frees it, so every step pays the kernel
to map, zero and fault in the same pages again: ``torch.relu`` of a 32 MiB tensor takes 14-16 ms
into a new buffer and 2.3 ms into an existing one on a 2-core machine.
:func:`retained_host_memory` makes glibc serve those requests from its heap and keep what is
freed there for the next step, then restores glibc's documented defaults and hands the retained
memory back to the system when training ends (glibc's own adjustment of its mmap
threshold stays off from then on, as after any ``mallopt`` call).

Only allocation changes: every value computed is bit for bit what it was. Peak memory grows
while the heap settles (an aligned request needs slightly more than the hole a freed buffer of
the same size leaves, until holes merge): 1.36-1.44 GiB against 1.29-1.36 GiB for MMoE at its
published size; one 96 MiB buffer freed and requested again can fault in up to six more copies
before it is served from a hole, depending on the heap's layout at the start. Outside glibc
(macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
from typing import Iterator

# mallopt parameters (glibc <malloc.h>).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4

#: While training: never mmap (so freed buffers stay in the heap), never give the top of
#: the heap back, and grow it by 256 MiB at a time.
RETAIN = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1, M_TOP_PAD: 256 << 20}
#: glibc's defaults, restored afterwards (mallopt(3)).
GLIBC_DEFAULTS = {M_MMAP_MAX: 65536, M_TRIM_THRESHOLD: 128 * 1024, M_TOP_PAD: 128 * 1024}


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc and exposes ``mallopt`` and ``malloc_trim``."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    return libc


def _set(libc: ctypes.CDLL, params: dict[int, int]) -> bool:
    return all(libc.mallopt(ctypes.c_int(k), ctypes.c_int(v)) == 1 for k, v in params.items())


@contextlib.contextmanager
def retained_host_memory(enabled: bool = True) -> Iterator[bool]:
    """Within the block, freed host memory is kept for reuse instead of unmapped.

    Yields whether the setting took effect (``False`` when disabled or not on glibc). On leaving,
    glibc's defaults are restored and the retained memory is returned with ``malloc_trim``.
    """
    libc = _glibc() if enabled else None
    active = libc is not None and _set(libc, RETAIN)
    try:
        yield active
    finally:
        if libc is not None:
            _set(libc, GLIBC_DEFAULTS)
            libc.malloc_trim(ctypes.c_size_t(0))
