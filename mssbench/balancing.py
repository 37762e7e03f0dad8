"""Loss balancing: how a run combines its per-task losses into one update.

A balancer is registered by a plugin (hook ``mssbench_register_balancers``) as a
:class:`BalancerSpec` and chosen per run with ``--balancer NAME`` (``--balancer-param k=v``
sets its parameters). The trainer hands it the ``[T]`` per-task losses of each step, the model's
auxiliary loss and the parameters to update; the balancer runs the backward pass
(:meth:`Balancer.backward`), so that methods acting on per-task gradients (PCGrad, GradNorm)
fit the same interface as methods weighting losses (fixed weights, uncertainty weighting).

The default, :data:`DEFAULT_BALANCER` (``fixed``), is the weighted sum every run trained on
before balancers existed: records without a balancer are records of ``fixed``.

This module imports torch only when a balancer is built, so registering one stays cheap.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from mssbench.errors import ConfigError
from mssbench.spec import SpecError

if TYPE_CHECKING:
    import torch

#: The balancer of a run that names none: today's fixed task weights.
DEFAULT_BALANCER = "fixed"

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class BalancerSpec:
    """A loss-balancing method a plugin registers.

    Attributes:
        name: What ``--balancer`` takes; lowercase and unique (``"pcgrad"``).
        summary: One line for ``mssbench plugins``.
        factory: ``factory(n_tasks, task_weights, **params) -> Balancer``: ``task_weights``
            is the model's ``[T]`` fixed weights tensor (all ones for most models), ``params``
            every key of ``params`` (user values over the defaults).
        params: Every parameter with its default (JSON values); ``--balancer-param k=v``
            accepts these keys only, converted to the default's type.
        paper: The reference it implements.
        version: Bumped whenever a change alters the numbers of runs that use it.
        ddp_ok: Whether it can train under ``torchrun`` (data-parallel).
        ddp_reason: Why not, when ``ddp_ok`` is False (shown in the one-line refusal).
    """

    name: str
    summary: str
    factory: Callable[..., "Balancer"]
    params: Mapping[str, Any] = field(default_factory=dict)
    paper: str = ""
    version: int = 1
    ddp_ok: bool = True
    ddp_reason: str = ""

    def validate(self) -> None:
        """Raise :class:`SpecError` if the spec is malformed."""
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise SpecError(f"balancer name {self.name!r} must be lowercase letters, digits and _")
        if not callable(self.factory):
            raise SpecError(f"balancer {self.name!r}: factory is not callable")
        if not isinstance(self.summary, str) or not self.summary.strip():
            raise SpecError(f"balancer {self.name!r}: summary must be a non-empty string")
        if not isinstance(self.params, Mapping):
            raise SpecError(f"balancer {self.name!r}: params must be a dict of defaults")
        try:
            json.dumps(dict(self.params))
        except (TypeError, ValueError) as exc:
            raise SpecError(f"balancer {self.name!r}: params are not JSON values ({exc})") from None
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise SpecError(
                f"balancer {self.name!r}: version must be an integer >= 1, got {self.version!r}"
            )
        if not isinstance(self.ddp_ok, bool):
            raise SpecError(f"balancer {self.name!r}: ddp_ok must be True or False")
        if not self.ddp_ok and not str(self.ddp_reason).strip():
            raise SpecError(f"balancer {self.name!r}: ddp_ok=False needs a ddp_reason")


def check_distributed(spec: BalancerSpec, distributed: bool) -> None:
    """Raise :class:`ConfigError` (one line) when ``spec`` cannot train data-parallel."""
    if distributed and not spec.ddp_ok:
        raise ConfigError(f"--balancer {spec.name} cannot train under torchrun: {spec.ddp_reason}")


def balancer_label(config: Mapping[str, Any]) -> str:
    """The words a variant label gets for a run config's balancer ("" for the default)."""
    name = config.get("balancer") or DEFAULT_BALANCER
    params = config.get("balancer_params") or {}
    if name == DEFAULT_BALANCER and not params:
        return ""
    given = ", ".join(f"{k}={json.dumps(params[k], default=str)}" for k in sorted(params))
    return f"balancer={name}" + (f"({given})" if given else "")


def balancer_flags(config: Mapping[str, Any]) -> list[str]:
    """The ``--balancer``/``--balancer-param`` options of a record's config (none: default)."""
    name = config.get("balancer") or DEFAULT_BALANCER
    params = config.get("balancer_params") or {}
    flags = ["--balancer", str(name)] if name != DEFAULT_BALANCER or params else []
    for key in sorted(params):
        value = params[key]
        text = value if isinstance(value, str) else json.dumps(value)
        flags += ["--balancer-param", f"{key}={text}"]
    return flags


class Balancer:
    """Base of balancers: combines per-task losses and runs the backward pass.

    Subclasses implement :meth:`backward`; those with learnable weights hold them as
    ``torch.nn.Parameter`` in :attr:`module` (an ``nn.Module``) so that the trainer adds them
    to the optimizer and the checkpoint.
    """

    def __init__(self) -> None:
        import torch

        self.module = torch.nn.Module()

    def parameters(self) -> list["torch.nn.Parameter"]:
        """Learnable weights the optimizer updates (none for most balancers)."""
        return list(self.module.parameters())

    def to(self, device: "torch.device") -> "Balancer":
        """Move learnable weights and buffers to ``device``."""
        self.module.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps to resume (tensors and plain values only)."""
        return dict(self.module.state_dict())

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (an empty one, of a stateless balancer, is a no-op)."""
        if state:
            self.module.load_state_dict(dict(state))

    def task_weights(self) -> "torch.Tensor":
        """The ``[T]`` weights the last step applied to the task losses (for reports)."""
        raise NotImplementedError

    def backward(
        self,
        losses: "torch.Tensor",
        shared_params: Sequence["torch.Tensor"],
        aux: "torch.Tensor | None" = None,
    ) -> "torch.Tensor":
        """Set ``.grad`` of the parameters from the task losses (and of own weights).

        Args:
            losses: ``[T]`` float32 per-task losses of the step (one graph).
            shared_params: The model's trainable parameters; methods that act on per-task
                gradients compute them over these.
            aux: The model's scalar auxiliary loss, added unweighted (``None``: none).

        Returns:
            The combined loss, detached (what the run reports as its training loss).
        """
        raise NotImplementedError


def resolve_params(spec: BalancerSpec, given: Mapping[str, Any]) -> dict[str, Any]:
    """``spec.params`` with ``given`` over them; unknown keys and wrong types are errors."""
    from mssbench.config import resolve

    return resolve("balancer param", f"balancer {spec.name!r}", spec.params, given)


def build_balancer(
    spec: BalancerSpec, n_tasks: int, task_weights: "torch.Tensor", given: Mapping[str, Any]
) -> Balancer:
    """Build the balancer of a run; bad parameters raise :class:`ConfigError`."""
    params = resolve_params(spec, given)
    try:
        balancer = spec.factory(n_tasks, task_weights, **params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"balancer {spec.name!r}: {exc}") from None
    if not isinstance(balancer, Balancer):
        raise ConfigError(
            f"balancer {spec.name!r}: factory must return a mssbench.balancing.Balancer, "
            f"got {type(balancer).__name__}"
        )
    return balancer


def weighted_loss(
    losses: "torch.Tensor", weights: "torch.Tensor", aux: "torch.Tensor | None" = None
) -> "torch.Tensor":
    """``sum_t w_t L_t + aux``: what the ``fixed`` balancer, the graph step and FLOP count train on.

    Args:
        losses: ``[T]`` float32 per-task losses.
        weights: ``[T]`` task weights, resolved once per run
            (:func:`mssbench.runners.trainer.task_weights`).
        aux: The model's scalar auxiliary loss, added unweighted (``None``: none).
    """
    loss = (losses * weights).sum()
    return loss if aux is None else loss + aux


class WeightedSum(Balancer):
    """Fixed task weights: ``sum_t w_t L_t + aux``, one backward pass (the ``fixed`` balancer).

    Args:
        n_tasks: Number of tasks.
        task_weights: ``[T]`` weights (the model's ``task_weights``, else ones).
    """

    def __init__(self, n_tasks: int, task_weights: "torch.Tensor") -> None:
        super().__init__()
        if tuple(task_weights.shape) != (n_tasks,):
            raise ValueError(f"task_weights must have {n_tasks} entries")
        self.weights = task_weights

    def to(self, device: "torch.device") -> "WeightedSum":
        """Move the weights to ``device``."""
        self.weights = self.weights.to(device)
        return self

    def task_weights(self) -> "torch.Tensor":
        """The fixed weights."""
        return self.weights

    def backward(
        self,
        losses: "torch.Tensor",
        shared_params: Sequence["torch.Tensor"],
        aux: "torch.Tensor | None" = None,
    ) -> "torch.Tensor":
        """One backward pass of the weighted sum (the loss of runs without a balancer)."""
        loss = weighted_loss(losses, self.weights, aux)
        loss.backward()
        return loss.detach()


def resolve_balancer(
    registry: Any, name: str, given: Mapping[str, Any], *, distributed: bool, step: str
) -> tuple[BalancerSpec | None, dict[str, Any]]:
    """The spec and resolved parameters of a run's ``--balancer``, checked before training.

    Returns ``(None, {})`` for the default when no plugin registers it (plugins not loaded):
    the trainer then uses :class:`WeightedSum`, which is what ``fixed`` builds.

    Raises:
        ConfigError: Unknown name or parameter, or a balancer that cannot train with the
            other options (``torchrun``, ``--step graph``).
    """
    if name == DEFAULT_BALANCER and name not in registry.balancers and not given:
        return None, {}
    spec = registry.balancer(name)
    check_distributed(spec, distributed)
    if step == "graph" and name != DEFAULT_BALANCER:
        raise ConfigError(
            f"--step graph records one fixed weighted-sum step; --balancer {name} needs "
            "--step eager"
        )
    return spec, resolve_params(spec, given)
