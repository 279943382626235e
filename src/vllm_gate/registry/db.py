"""Connecting to the registry database without ever showing its password.

libpq takes a password in three places, and each is redacted: URL userinfo (``postgresql://u:pw@h/db``),
a URL query parameter (``postgresql://u@h/db?password=pw``, percent-encoded or not) and a key=value
conninfo (``host=h password='p w'``). ``sslpassword`` is treated the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

import psycopg

from vllm_gate.base.errors import GateError
from vllm_gate.base.secret import REDACTED, Secret

DSN_ENV = "IAS_DATABASE_URL"
CONNECT_TIMEOUT_S = 5
URL_PREFIXES = ("postgresql://", "postgres://")  # libpq's own test: a prefix, case-sensitive
SECRET_KEYS = frozenset({"password", "sslpassword"})
# libpq and psycopg quote every piece of the DSN they echo in an error ("host", 'host').
QUOTED = re.compile(r"\"([^\"]*)\"|'([^']*)'")


class DatabaseUnreachable(GateError):
    """The registry database could not be reached or refused the login."""


@dataclass(frozen=True)
class _Field:
    """One ``key=value`` of a DSN; ``key`` is None for a stray token libpq would reject."""

    key: str | None
    start: int  # the value's span in the DSN text
    end: int
    value: str  # as libpq decodes it


@dataclass(frozen=True)
class _SecretPart:
    """A span of the DSN text to hide, and the value libpq would read from it."""

    start: int
    end: int
    value: str
    is_password: bool


def _plain(dsn: str | Secret) -> str:
    return dsn.reveal() if isinstance(dsn, Secret) else dsn


def _url_fields(dsn: str) -> list[_Field]:
    """Fields of a libpq URL: the userinfo password, then each query parameter."""
    head_start = dsn.index("://") + 3
    query = dsn.find("?", head_start)
    head_end = query if query >= 0 else len(dsn)
    fields = []
    # The last '@' before the query: a password with a raw '@' or '/' is then still hidden whole.
    at = dsn.rfind("@", head_start, head_end)
    colon = dsn.find(":", head_start, at) if at >= 0 else -1
    if colon >= 0:
        fields.append(_Field("password", colon + 1, at, unquote(dsn[colon + 1:at])))
    if query >= 0:
        pos = query + 1
        for piece in dsn[pos:].split("&"):
            key, eq, value = piece.partition("=")
            if eq:
                fields.append(_Field(unquote(key), pos + len(key) + 1, pos + len(piece), unquote(value)))
            else:
                fields.append(_Field(None, pos, pos + len(piece), piece))
            pos += len(piece) + 1
    return fields


def _conninfo_fields(dsn: str) -> list[_Field]:
    """Fields of a key=value conninfo, read the way libpq's conninfo_parse reads them."""
    fields, i, n = [], 0, len(dsn)
    while i < n:
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n:
            break
        key_start = i
        while i < n and dsn[i] != "=" and not dsn[i].isspace():
            i += 1
        key_end = i
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n or dsn[i] != "=":
            fields.append(_Field(None, key_start, key_end, dsn[key_start:key_end]))
            continue
        i += 1
        while i < n and dsn[i].isspace():
            i += 1
        value_start, chars = i, []
        if i < n and dsn[i] == "'":
            i += 1
            while i < n and dsn[i] != "'":
                if dsn[i] == "\\" and i + 1 < n:
                    i += 1  # a backslash escapes the next character
                chars.append(dsn[i])
                i += 1
            i = min(i + 1, n)  # past the closing quote; an unterminated value runs to the end
        else:
            while i < n and not dsn[i].isspace():
                if dsn[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(dsn[i])
                i += 1
        fields.append(_Field(dsn[key_start:key_end], value_start, i, "".join(chars)))
    return fields


def _secret_parts(dsn: str) -> list[_SecretPart]:
    """Every part of ``dsn`` that holds a password.

    Stray tokens right after a password (``password=p w`` unquoted) count as part of it: libpq rejects them,
    and its error would otherwise echo that piece of the password.
    """
    fields = _url_fields(dsn) if dsn.startswith(URL_PREFIXES) else _conninfo_fields(dsn)
    parts: list[_SecretPart] = []
    in_secret = False
    for field in fields:
        if field.key is not None and field.key.lower() in SECRET_KEYS:
            parts.append(_SecretPart(field.start, field.end, field.value, field.key.lower() == "password"))
            in_secret = True
        elif field.key is None and in_secret:
            last = parts[-1]
            parts[-1] = _SecretPart(last.start, field.end, f"{last.value} {field.value}", last.is_password)
        else:
            in_secret = False
    return parts


def redact_dsn(dsn: str | Secret) -> str:
    """Return ``dsn`` with every password replaced by ``***``, in any of libpq's forms."""
    text = _plain(dsn)
    for part in reversed(_secret_parts(text)):
        text = text[:part.start] + REDACTED + text[part.end:]
    return text


def dsn_password(dsn: str | Secret) -> Secret | None:
    """The password libpq would use (the last one given wins, as in libpq), or None."""
    passwords = [part.value for part in _secret_parts(_plain(dsn)) if part.is_password]
    return Secret(passwords[-1]) if passwords else None


def _touches_secret(fragment: str, plain: str, parts: list[_SecretPart]) -> bool:
    """Whether ``fragment`` was cut from a password: it overlaps one in the DSN text, or lies inside one."""
    start = plain.find(fragment)
    while start >= 0:
        if any(start < part.end and part.start < start + len(fragment) for part in parts):
            return True
        start = plain.find(fragment, start + 1)
    return any(fragment in part.value for part in parts)


def scrub(text: str, dsn: str | Secret) -> str:
    """Remove the DSN's passwords from ``text``, whole or in pieces (errors echo DSNs and parts of them)."""
    plain = _plain(dsn)
    parts = _secret_parts(plain)
    if plain:
        text = text.replace(plain, redact_dsn(plain))
    fragments = {piece for part in parts for piece in (part.value, plain[part.start:part.end], quote(part.value),
                                                       quote(part.value, safe=""))} - {""}
    for fragment in sorted(fragments, key=len, reverse=True):
        text = text.replace(fragment, REDACTED)

    def mask(match: re.Match[str]) -> str:
        inner = match.group(1) if match.group(1) is not None else match.group(2)
        if inner and _touches_secret(inner, plain, parts):
            return match.group(0)[0] + REDACTED + match.group(0)[-1]
        return match.group(0)

    return QUOTED.sub(mask, text)


def connect(dsn: str | Secret) -> psycopg.Connection:
    """Open a connection or raise DatabaseUnreachable with a password-free one-line summary."""
    dsn = dsn if isinstance(dsn, Secret) else Secret(dsn)
    try:
        return psycopg.connect(dsn.reveal(), connect_timeout=CONNECT_TIMEOUT_S, autocommit=False)
    except Exception as exc:  # whatever psycopg raises, its frames hold the plain DSN
        # Scrub the whole line: a value equal to the password may sit in another field too.
        summary = scrub(f"cannot reach the registry at {redact_dsn(dsn)}: {' '.join(str(exc).split())}", dsn)
    # Raised outside the except block: no chained exception, no psycopg frame with the plain DSN in its locals.
    raise DatabaseUnreachable(summary)
