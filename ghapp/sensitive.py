"""A value that must never be printed: tokens, keys, JIT configs."""

from __future__ import annotations

from typing import Final

_MASK: Final = "**********"


class Secret:
    """Wraps a secret string so that `repr`, `str` and f-strings never show it; `.reveal()` does."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("a secret must be a non-empty string")
        self._value = value

    def reveal(self) -> str:
        """The secret value, for the one place that must send it (an HTTP header, a Kubernetes Secret)."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    def __str__(self) -> str:
        return _MASK

    def __format__(self, format_spec: str) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)
