"""Registries: one per concept (priors, noise models, posterior families, Λ-steps, methods).

A registry maps a name to an entry that says how to build the thing. The command line's
choices, the settings' validation, model files and the estimators all read the same
registry, so adding a prior, a noise model or a posterior family is one module plus one
``register`` line: no other list has to agree with it. Entries keep their registration
order (the order of ``--help`` and of the demo's table).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["Registry"]

Entry = TypeVar("Entry")


class Registry(Generic[Entry]):
    """Named entries of one ``concept`` (e.g. ``"prior"``), in registration order.

    ``registry[name]`` raises a one-line ``ValueError`` naming the choices for an unknown
    name, so that a user's typo reaches them as a clear message.
    """

    def __init__(self, concept: str):
        self.concept = concept
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, entry: Entry) -> Entry:
        """Add ``entry`` under ``name`` (new names only); returns the entry."""
        if name in self._entries:
            raise ValueError(f"a {self.concept} named {name!r} is registered already")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> Entry:
        """Remove and return the entry ``name`` (e.g. a test's own)."""
        self[name]
        return self._entries.pop(name)

    def __getitem__(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.concept} {name!r}; choose one of {', '.join(self._entries)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, Entry]]:
        return list(self._entries.items())

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def find(self, predicate, what: str) -> str:
        """The first name whose entry satisfies ``predicate``; a ``ValueError`` naming ``what``
        (e.g. the object looked up) if none does."""
        for name, entry in self._entries.items():
            if predicate(entry):
                return name
        raise ValueError(f"no registered {self.concept} is {what}")
