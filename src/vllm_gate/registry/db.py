"""Connecting to the registry database without ever showing its password."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

import psycopg

from vllm_gate.errors import GateError

DSN_ENV = "IAS_DATABASE_URL"
CONNECT_TIMEOUT_S = 5


class DatabaseUnreachable(GateError):
    """The registry database could not be reached or refused the login."""


def redact_dsn(dsn: str) -> str:
    """Return ``dsn`` with any password replaced by ``***`` (URL or key=value form)."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        if parts.password is not None:
            host = parts.hostname or ""
            netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
            return urlunsplit(parts._replace(netloc=netloc))
        return dsn
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn)


def dsn_password(dsn: str) -> str | None:
    if "://" in dsn:
        return urlsplit(dsn).password
    match = re.search(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn)
    return match.group(1).strip("'") if match else None


def scrub(text: str, dsn: str) -> str:
    """Remove the DSN's password from ``text`` (error messages may echo connection strings)."""
    password = dsn_password(dsn)
    text = text.replace(dsn, redact_dsn(dsn))
    return text.replace(password, "***") if password else text


def resolve_dsn(flag_value: str | None) -> str | None:
    return flag_value or os.environ.get(DSN_ENV) or None


def connect(dsn: str) -> psycopg.Connection:
    """Open a connection or raise DatabaseUnreachable with a password-free one-line summary."""
    try:
        return psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S, autocommit=False)
    except (psycopg.OperationalError, psycopg.ProgrammingError) as exc:
        reason = scrub(" ".join(str(exc).split()), dsn)
        raise DatabaseUnreachable(f"cannot reach the registry at {redact_dsn(dsn)}: {reason}") from None
