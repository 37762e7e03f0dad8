"""Callables imported on first use, so that registering a plugin imports no torch.

A plugin's ``__init__.py`` is imported by every command, ``mssbench --help`` and ``mssbench
plugins`` included. Handing the spec ``lazy("my_plugin.model:MyModel")`` instead of the class
keeps the model module (and torch) out of that import; the target is imported when the spec's
``build``, ``load``, ``prepare`` or ``compute`` is first called.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

__all__ = ["LazyCallable", "lazy"]


class LazyCallable:
    """A ``"module:attribute"`` reference that behaves as the callable it names.

    Calling it imports ``module`` once and calls ``attribute``. ``__module__`` and
    ``__name__`` are known without the import (``__module__`` is the target module's name).
    """

    def __init__(self, target: str) -> None:
        module, sep, attribute = target.partition(":")
        if not sep or not module or not attribute:
            raise ValueError(f"lazy: expected 'package.module:attribute', got {target!r}")
        self._target = target
        self.__module__ = module
        self.__name__ = self.__qualname__ = attribute.rsplit(".", 1)[-1]
        self._resolved: Callable[..., Any] | None = None

    def resolve(self) -> Callable[..., Any]:
        """The callable itself (imported on the first call)."""
        if self._resolved is None:
            module, _, attribute = self._target.partition(":")
            obj: Any = importlib.import_module(module)
            for part in attribute.split("."):
                obj = getattr(obj, part)
            self._resolved = obj
        return self._resolved

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the target (importing it first if needed)."""
        return self.resolve()(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        """The target's signature (``inspect.signature`` reads it; imports the target)."""
        return inspect.signature(self.resolve())

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (LazyCallable, (self._target,))

    def __repr__(self) -> str:
        return f"lazy({self._target!r})"


def lazy(target: str) -> LazyCallable:
    """A callable that imports ``target`` (``"package.module:attribute"``) when first called.

    Args:
        target: Module and attribute, e.g. ``"mssbench_mmoe.model:MMoE"``.

    Returns:
        A :class:`LazyCallable`; use it as a spec's ``build``, ``load``, ``prepare``,
        ``compute`` or ``factory``.

    Raises:
        ValueError: ``target`` is not ``module:attribute``.
    """
    return LazyCallable(target)
