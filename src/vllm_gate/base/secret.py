"""A string that never shows itself: repr, str, f-strings, dataclass reprs and tracebacks print ``***``."""

from __future__ import annotations

REDACTED = "***"


class Secret:
    """Holds a secret value (an HF token, a DSN); only ``reveal()`` returns it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the value itself; call this only where it is handed to the thing that needs it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{REDACTED}')"

    def __str__(self) -> str:
        return REDACTED

    def __format__(self, spec: str) -> str:
        return format(REDACTED, spec)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def redact_url(url: str) -> str:
    """``url`` with any user-info (user:password, a token) replaced by ``***``.

    Not parsed: a password holding ``#``, ``/`` or ``?`` confuses URL parsers, so everything between the
    scheme and the last ``@`` goes.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
