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

import sys

import torch
from torch import nn

__all__ = ["Dropout", "counter_dropout", "keep_mask", "relu_dropout"]

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
_SIGN = 1 << (_BITS - 1)  # the top bit of a 16-bit slice


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
    return _mask(shape, p, seed, step, device, kept=True)


def _mask(
    shape: torch.Size | tuple[int, ...],
    p: float,
    seed: int | torch.Tensor,
    step: int | torch.Tensor,
    device: torch.device | str | None,
    kept: bool,
) -> torch.Tensor:
    """:func:`keep_mask`, or its complement (the dropped elements) with ``kept=False``."""
    if device is None:
        device = seed.device if isinstance(seed, torch.Tensor) else "cpu"
    # The 16-bit slices are compared as int16 after flipping their top bit (below), so the
    # threshold moves down by the same 2**15.
    threshold = int(round(p * (1 << _BITS))) - _SIGN
    if threshold >= _SIGN:  # p rounds to 1 (above 1 - 2**-17): every element dropped
        return torch.full(tuple(shape), not kept, dtype=torch.bool, device=device)
    seed = torch.as_tensor(seed, dtype=torch.int64, device=device)
    step = torch.as_tensor(step, dtype=torch.int64, device=device)
    base = _mix(seed ^ _mix(step * _GOLDEN + _GOLDEN))  # [] one key per (seed, step)
    numel = 1
    for n in shape:
        numel *= int(n)
    words = -(-numel // _PER_WORD)
    z = torch.arange(1, words + 1, dtype=torch.int64, device=device)
    z = _mix_(z.mul_(_GOLDEN).add_(base))  # [words]: one hash gives four 16-bit uniforms
    # Each 16-bit slice of a word compared as unsigned: flipping its top bit maps unsigned order
    # onto int16 order, so the slices are compared in place, without shifting them down.
    slices = z.view(torch.int16).view(words, _PER_WORD).bitwise_xor_(-_SIGN)
    out = torch.empty(words, _PER_WORD, dtype=torch.bool, device=device)
    compare = torch.ge if kept else torch.lt
    for j in range(_PER_WORD):  # element 4w + j takes bits 48 - 16j upwards of word w
        compare(slices[:, _slice_index(j)], threshold, out=out[:, j])
    return out.view(-1)[:numel].view(tuple(shape))


def _slice_index(j: int) -> int:
    """Which int16 of a word's memory holds its bits ``48 - 16j`` upwards."""
    return _PER_WORD - 1 - j if sys.byteorder == "little" else j


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


def relu_dropout(x: torch.Tensor, dropout: nn.Module) -> torch.Tensor:
    """``dropout(relu(x))``, in one fused step where ``dropout`` is a :class:`Dropout`.

    Any other module (e.g. ``nn.Identity``) is applied after a plain ``relu``.
    """
    if isinstance(dropout, Dropout):
        return dropout.after_relu(x)
    return dropout(torch.relu(x))


class _ReLUDropout(torch.autograd.Function):
    """``counter_dropout(relu(x))`` in place on one buffer, with a one-pass-shorter backward.

    The result has the bits of the unfused ``relu`` then ``counter_dropout`` (the same products
    ``relu(x) * scale``, zero where dropped); only the kept output is saved: an element's
    gradient flows iff its output is positive, which is exactly "kept and ``x > 0``".
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, drop: torch.Tensor, scale: float) -> torch.Tensor:  # noqa: D102
        y = torch.relu(x).mul_(scale).masked_fill_(drop, 0.0)
        ctx.save_for_backward(y)
        ctx.scale = scale
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: D102
        (y,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, y, 0).mul_(ctx.scale), None, None


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

    def after_relu(self, x: torch.Tensor) -> torch.Tensor:
        """``self(torch.relu(x))`` with the same bits and step, in fewer passes and buffers."""
        if not self.training or not self.p:
            return torch.relu(x)
        drop = _mask(x.shape, self.p, self.seed, self.step, x.device, kept=False)
        out = _ReLUDropout.apply(x, drop, 1.0 / (1.0 - self.p))
        self.step.add_(1)
        return out

    def extra_repr(self) -> str:
        """``p=...`` as ``nn.Dropout`` prints it."""
        return f"p={self.p}"
