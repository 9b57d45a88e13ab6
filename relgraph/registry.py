"""A tiny name -> factory registry, shared by datasets, backbones and methods."""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry", "accepted_keywords"]


def _own_keywords(fn: Callable[..., Any]) -> tuple[set[str], bool]:
    """Keyword parameters of ``fn`` and whether it also takes ``**kwargs``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names - {"self"}, any(p.kind is p.VAR_KEYWORD for p in params)


def accepted_keywords(factory: Callable[..., Any]) -> set[str] | None:
    """The keyword arguments ``factory`` accepts, read from the signatures; ``None`` if open.

    Registry entries are classes, :class:`functools.partial` / variant objects with ``func``
    (their class is read), or functions. A ``**kwargs`` is followed: in a class, to the
    ``__init__`` of its bases; in a function, to the class its return annotation names
    (``def _build(roots, **kwargs) -> ImageFolderDataset``).
    """
    target = getattr(factory, "func", factory)
    if inspect.isclass(target):
        names: set[str] = set()
        for klass in target.__mro__:
            if klass is object or "__init__" not in vars(klass):
                continue
            own, more = _own_keywords(vars(klass)["__init__"])
            names |= own
            if not more:
                return names
        return None
    names, more = _own_keywords(target)
    if not more:
        return names
    try:
        returned = typing.get_type_hints(target).get("return")
    except Exception:  # an annotation that does not resolve: treat as open
        return None
    if inspect.isclass(returned):
        inner = accepted_keywords(returned)
        return None if inner is None else names | inner
    return None


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

    def check_keywords(self, name: str, keys: Iterable[str], where: str,
                       reserved: Iterable[str] = ()) -> None:
        """Raise ``ValueError`` if ``keys`` holds a keyword the factory ``name`` does not take.

        The message names ``where`` (e.g. ``"method_args"``), the unknown key, the closest
        allowed one and all allowed ones. ``reserved`` keywords are passed by the caller itself
        and so are not allowed in ``keys``. Factories taking any ``**kwargs`` pass.
        """
        accepted = accepted_keywords(self.get(name))
        if accepted is None:
            return
        allowed = sorted(accepted - set(reserved))
        for key in keys:
            if key in allowed:
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{where}: unknown key {key!r} for {self.kind} {name!r}{hint}; "
                             f"allowed keys: {', '.join(allowed) or '(none)'}")

    def list(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._factories
