"""`cached_property` without the lock Python 3.11's takes at every first read.

functools.cached_property in 3.11 takes an RLock each time a value is first computed (3.12 dropped
it as useless: it serialised every instance of a class, not one). The text of every item is read
through a dozen of them (a field's folded words, its words, ...), and the lock was a few percent
of filing. Values are computed once per instance, as there, and a race between threads at worst
computes one twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

_T = TypeVar("_T")


class cached_property(Generic[_T]):  # noqa: N801 (a drop-in for functools')
    def __init__(self, func: Callable[[Any], _T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> cached_property[_T]: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> _T: ...
    def __get__(self, instance: object | None, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.func(instance)
        return value
