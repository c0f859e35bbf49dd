"""A registry of small named classes: how modes and encoders are found by name.

Wagtail registers each image operation under the name a filter spec uses; here a family of
parts (resize modes, encoders) is a :class:`Registry`, and adding a member is one class with
the registry's ``register`` decorator. One instance per class is kept: members hold no state.
"""

from __future__ import annotations

from typing import Protocol, TypeVar


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)
C = TypeVar("C", bound=type)


class Registry(dict[str, T]):
    """Name (as written in ``PROCESSED_VARIANTS``) → the one instance of its class."""

    def register(self, cls: C) -> C:
        """Class decorator: make an instance of ``cls`` available as ``cls.name``."""
        if cls.name in self:
            raise ValueError(f"{cls.name!r} is registered twice")
        self[cls.name] = cls()
        return cls
