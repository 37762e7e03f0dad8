"""Counter-based dropout: the same masks on every CPU and GPU for a given (seed, step).

``torch.nn.Dropout`` draws its mask from the device's generator, so a CPU run and a GPU run with
the same seed drop different units, and even two CPUs can differ where a vectorised kernel
consumes the generator differently. Here the mask is a pure function of a seed, a step counter
and each element's index: a splitmix64 hash computed with 64-bit integer tensor ops (wrapping
multiplication, logical shifts) on the tensor's own device. Integer arithmetic is exact, so
Intel, AMD and CUDA give bit-identical masks.

Where the seed and the step come from: each :class:`Dropout` module draws its ``seed`` once,
at construction, from torch's default generator (as weight initialisation does, so a run seeded
with ``torch.manual_seed`` gets the same seeds), and keeps a ``step`` counter that every
training-mode call advances in place on the device. Both are buffers, so they are saved in the
``state_dict`` and restored with a checkpoint: a resumed run draws the masks the uninterrupted
run would have. The in-place counter also keeps working when the step is replayed as a CUDA
graph or compiled.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Dropout", "counter_dropout", "keep_mask"]

_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)
#: Uniform bits per element compared against the drop probability (2**-16 resolution); each
#: 64-bit hash serves four consecutive elements, which quarters the integer work.
_BITS = 16
_PER_WORD = 64 // _BITS
_LOW = (1 << _BITS) - 1


def _shr(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic on signed ints)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (multiplication wraps modulo 2**64)."""
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    return z ^ _shr(z, 31)


def _xor_shr_(z: torch.Tensor, k: int, tmp: torch.Tensor) -> None:
    """``z ^= z >>> k`` in place (``tmp`` is scratch of ``z``'s shape)."""
    torch.bitwise_right_shift(z, k, out=tmp)
    z.bitwise_xor_(tmp.bitwise_and_((1 << (64 - k)) - 1))


def _mix_(z: torch.Tensor) -> torch.Tensor:
    """:func:`_mix` in place, for the large per-element tensors (saves allocations)."""
    tmp = torch.empty_like(z)
    _xor_shr_(z, 30, tmp)
    z.mul_(_MIX1)
    _xor_shr_(z, 27, tmp)
    z.mul_(_MIX2)
    _xor_shr_(z, 31, tmp)
    return z


def keep_mask(
    shape: torch.Size | tuple[int, ...],
    p: float,
    seed: int | torch.Tensor,
    step: int | torch.Tensor,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean keep-mask of ``shape``: element ``i`` is kept iff its 16 hash bits are ``>= p``.

    Element ``i`` (row-major) takes bits ``48-16*(i % 4)`` upwards of the 64-bit hash of word
    ``i // 4 + 1`` under the key ``mix(seed ^ mix(golden * (step + 1)))``.

    Args:
        shape: Shape of the tensor to mask; elements are numbered in row-major order.
        p: Drop probability in ``[0, 1)``.
        seed: 64-bit seed (int or int64 scalar tensor).
        step: Step counter (int or int64 scalar tensor).
        device: Where to compute (default: the device of ``seed`` if a tensor, else CPU).

    Returns:
        ``bool`` tensor of ``shape``; each element is kept with probability
        ``1 - round(p * 2**16) / 2**16``.
    """
    if device is None:
        device = seed.device if isinstance(seed, torch.Tensor) else "cpu"
    seed = torch.as_tensor(seed, dtype=torch.int64, device=device)
    step = torch.as_tensor(step, dtype=torch.int64, device=device)
    base = _mix(seed ^ _mix(step * _GOLDEN + _GOLDEN))  # [] one key per (seed, step)
    numel = 1
    for n in shape:
        numel *= int(n)
    words = -(-numel // _PER_WORD)
    z = torch.arange(1, words + 1, dtype=torch.int64, device=device)
    z = _mix_(z.mul_(_GOLDEN).add_(base))  # [words]: one hash gives four 16-bit uniforms
    threshold = int(round(p * (1 << _BITS)))
    keep = torch.empty(words, _PER_WORD, dtype=torch.bool, device=device)
    slice_ = torch.empty_like(z)
    for j in range(_PER_WORD):  # element 4w + j takes bits 48 - 16j upwards of word w
        torch.bitwise_right_shift(z, 64 - _BITS * (j + 1), out=slice_)
        torch.ge(slice_.bitwise_and_(_LOW), threshold, out=keep[:, j])
    return keep.view(-1)[:numel].view(tuple(shape))


def counter_dropout(
    x: torch.Tensor, p: float, seed: int | torch.Tensor, step: int | torch.Tensor
) -> torch.Tensor:
    """Zero the elements :func:`keep_mask` drops and scale the rest by ``1 / (1 - p)``."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if p == 0.0:
        return x
    keep = keep_mask(x.shape, p, seed, step, x.device)
    return torch.where(keep, x * (1.0 / (1.0 - p)), 0.0)


class Dropout(nn.Module):
    """Drop-in for ``nn.Dropout`` with platform-independent masks (see the module docstring).

    Identity in eval mode and for ``p = 0``. In training mode every call uses the module's
    ``seed`` and current ``step``, then advances ``step`` by one.

    Args:
        p: Drop probability in ``[0, 1)``.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = float(p)
        # Drawn from the default generator only when it is used, so that p = 0 leaves the
        # initialisation of the rest of the model unchanged.
        seed = torch.randint(-(2**62), 2**62, ()) if self.p else torch.zeros((), dtype=torch.long)
        self.register_buffer("seed", seed)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with dropped elements zeroed and kept ones scaled by ``1 / (1 - p)``."""
        if not self.training or not self.p:
            return x
        out = counter_dropout(x, self.p, self.seed, self.step)
        self.step.add_(1)
        return out

    def extra_repr(self) -> str:
        """``p=...`` as ``nn.Dropout`` prints it."""
        return f"p={self.p}"
