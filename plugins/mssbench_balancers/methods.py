"""The balancers: uncertainty weighting, GradNorm and PCGrad (``fixed`` is in the core)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist

from mssbench.balancing import Balancer

Grads = list[tuple[torch.Tensor | None, ...]]


def per_task_grads(losses: torch.Tensor, params: Sequence[torch.Tensor]) -> Grads:
    """Each task's gradient on ``params`` (``None`` where a task does not reach a parameter)."""
    return [
        torch.autograd.grad(losses[t], params, retain_graph=True, allow_unused=True)
        for t in range(losses.shape[0])
    ]


def _reached(grads: tuple[torch.Tensor | None, ...]) -> list[bool]:
    """Per parameter: whether the task's gradient on it is not zero (one sync per task)."""
    present = [g for g in grads if g is not None]
    if not present:
        return [False] * len(grads)
    nonzero = iter(torch.stack([g.detach().abs().sum().float() for g in present]).gt(0).tolist())
    return [next(nonzero) if g is not None else False for g in grads]


def shared_mask(grads: Grads) -> list[bool]:
    """Per parameter: reached by two tasks or more (shared), or by one (task-specific).

    A task reaches a parameter when its gradient there is not zero: the towers of the other
    tasks sit in the same graph (the logits are one ``[B, T]`` tensor) with zero gradients.
    Where no parameter is shared (a model of independent towers), every one counts as shared.
    """
    reached = [_reached(g) for g in grads]
    mask = [sum(r[k] for r in reached) >= 2 for k in range(len(grads[0]))]
    return mask if any(mask) else [True] * len(mask)


def _flat(
    grads: tuple[torch.Tensor | None, ...], params: Sequence[torch.Tensor], mask: list[bool]
) -> torch.Tensor:
    parts = [
        (g if g is not None else torch.zeros_like(p)).reshape(-1).float()
        for g, p, m in zip(grads, params, mask)
        if m
    ]
    return torch.cat(parts)


def _accumulate(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None]) -> None:
    """Add ``grads`` into ``p.grad`` (after the auxiliary loss's backward, if any)."""
    for p, g in zip(params, grads):
        if g is None:
            continue
        g = g.to(p.dtype)
        p.grad = g.clone() if p.grad is None else p.grad + g


def _aux_backward(aux: torch.Tensor | None) -> torch.Tensor:
    if aux is None:
        return torch.zeros(())
    if aux.requires_grad:
        aux.backward(retain_graph=True)
    return aux.detach()


class Uncertainty(Balancer):
    """Kendall et al.: ``sum_t exp(-s_t) L_t + s_t / 2`` with learned ``s_t = log sigma_t^2``.

    The classification form of the paper (eq. 10: ``L / sigma^2 + log sigma``); the model's
    fixed task weights are not used. Under DDP the log-variances' gradients are averaged over
    the processes like the model's.
    """

    def __init__(self, n_tasks: int, task_weights: torch.Tensor, init_log_var: float) -> None:
        super().__init__()
        self.module.log_vars = torch.nn.Parameter(torch.full((n_tasks,), float(init_log_var)))

    def task_weights(self) -> torch.Tensor:
        """``exp(-s_t)``."""
        return torch.exp(-self.module.log_vars.detach())

    def backward(self, losses, shared_params, aux=None):
        """One backward pass of the weighted objective."""
        s = self.module.log_vars
        loss = (torch.exp(-s) * losses + 0.5 * s).sum()
        if aux is not None:
            loss = loss + aux
        loss.backward()
        if dist.is_available() and dist.is_initialized() and s.grad is not None:
            dist.all_reduce(s.grad)
            s.grad /= dist.get_world_size()
        return loss.detach()


class GradNorm(Balancer):
    """Chen et al.: learned weights ``w_t`` pulled towards equal gradient norms.

    Each step: ``G_t = w_t ||grad_W L_t||`` over the shared parameters ``W`` (those two tasks
    or more reach; the paper takes the last shared layer), the target
    ``mean(G) * r_t ** alpha`` with ``r_t`` the task's loss ratio ``L_t / L_t(0)`` over its
    mean, and ``w`` gets the gradient of ``sum_t |G_t - target_t|``. The weights are
    renormalised to sum to the number of tasks before every step. The model is updated with
    ``sum_t w_t L_t`` (+ aux); the first step's losses are ``L(0)``.
    """

    def __init__(self, n_tasks: int, task_weights: torch.Tensor, alpha: float) -> None:
        super().__init__()
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        self.n_tasks = n_tasks
        self.module.weights = torch.nn.Parameter(torch.ones(n_tasks))
        self.module.register_buffer("initial_losses", torch.zeros(n_tasks))

    def task_weights(self) -> torch.Tensor:
        """The weights as the next step uses them (sum = number of tasks)."""
        w = self.module.weights.detach().clamp(min=1e-6)
        return w * (self.n_tasks / w.sum())

    def backward(self, losses, shared_params, aux=None):
        """Per-task gradients, the weights' GradNorm gradient, the model's weighted gradient."""
        w = self.module.weights
        with torch.no_grad():
            w.copy_(self.task_weights())
            if not bool((self.module.initial_losses > 0).all()):
                self.module.initial_losses.copy_(losses.detach().clamp(min=1e-12))
        grads = per_task_grads(losses, shared_params)
        mask = shared_mask(grads)
        norms = torch.stack([_flat(g, shared_params, mask).norm() for g in grads]).to(w.device)
        g_w = w * norms
        ratio = losses.detach() / self.module.initial_losses
        target = (g_w.mean() * (ratio / ratio.mean()) ** self.alpha).detach()
        w.grad = torch.autograd.grad((g_w - target).abs().sum(), w)[0]
        weights = w.detach()
        aux_value = _aux_backward(aux)
        combined = [
            _sum_or_none([weights[t] * g[k] for t, g in enumerate(grads) if g[k] is not None])
            for k in range(len(shared_params))
        ]
        _accumulate(shared_params, combined)
        return ((weights * losses.detach()).sum() + aux_value.to(losses.device)).detach()


def _sum_or_none(items: list[torch.Tensor]) -> torch.Tensor | None:
    return torch.stack(items).sum(0) if items else None


def project_conflicting(grads: torch.Tensor, orders: Sequence[Sequence[int]]) -> torch.Tensor:
    """PCGrad's surgery on ``[T, D]`` task gradients.

    Task ``i``'s gradient, in turn for each ``j`` in ``orders[i]``, loses its component along
    ``g_j`` when the two conflict (negative inner product).

    Returns:
        ``[T, D]`` projected gradients.
    """
    out = grads.clone()
    for i in range(grads.shape[0]):
        for j in orders[i]:
            if j == i:
                continue
            dot = out[i] @ grads[j]
            norm2 = grads[j] @ grads[j]
            if dot < 0 and norm2 > 0:
                out[i] -= dot / norm2 * grads[j]
    return out


class PCGrad(Balancer):
    """Yu et al.: per-task gradients on the shared parameters, conflicting parts projected away.

    Shared parameters are those two tasks or more reach; each task's (weighted) gradient on them
    is projected (:func:`project_conflicting`, the other tasks in a random order per step) and
    the results summed. Task-specific parameters get their task's gradient unchanged.
    """

    def __init__(self, n_tasks: int, task_weights: torch.Tensor) -> None:
        super().__init__()
        self.weights = task_weights

    def to(self, device: torch.device) -> "PCGrad":
        """Move the fixed weights to ``device``."""
        self.weights = self.weights.to(device)
        return self

    def task_weights(self) -> torch.Tensor:
        """The fixed weights applied before the surgery."""
        return self.weights

    def backward(self, losses, shared_params, aux=None):
        """Per-task gradients, surgery on the shared part, sum."""
        weighted = losses * self.weights
        grads = per_task_grads(weighted, shared_params)
        mask = shared_mask(grads)
        n = len(grads)
        flat = torch.stack([_flat(g, shared_params, mask) for g in grads])
        orders = [torch.randperm(n).tolist() for _ in range(n)]
        merged = project_conflicting(flat, orders).sum(0)
        aux_value = _aux_backward(aux)
        combined: list[torch.Tensor | None] = []
        offset = 0
        for k, p in enumerate(shared_params):
            if mask[k]:
                combined.append(merged[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
            else:
                combined.append(_sum_or_none([g[k] for g in grads if g[k] is not None]))
            if all(g[k] is None for g in grads):
                combined[-1] = None  # no task reaches it: no gradient, as in a plain backward
        _accumulate(shared_params, combined)
        return (weighted.detach().sum() + aux_value.to(losses.device)).detach()
