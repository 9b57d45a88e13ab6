"""A tiny name -> factory registry, shared by datasets, backbones and methods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories.

    Registering a name twice is an error; building an unknown name lists the valid choices.

    Args:
        kind: what the registry holds, used in error messages (``"dataset"``, ``"method"``).

    Example:
        >>> datasets = Registry("dataset")
        >>> @datasets.register("toy")
        ... def make_toy(**kw): return kw
        >>> datasets.build("toy", a=1)
        {'a': 1}
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name`` (lower case, unique)."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            key = name.lower()
            if key in self._factories:
                raise ValueError(f"a {self.kind} named {name!r} is already registered")
            self._factories[key] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name``; unknown names raise ``KeyError`` listing choices."""
        key = name.lower()
        if key not in self._factories:
            raise KeyError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.list())}"
            )
        return self._factories[key]

    def build(self, name: str, **kwargs: Any) -> T:
        """Call the factory registered under ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)

    def list(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._factories
