"""What a registry database is for: a production registry, or the registry rehearsals write."""

from __future__ import annotations

import psycopg

from vllm_gate.base.errors import GateError

ROLES = ("production", "rehearsal")


class RoleConflict(GateError):
    """A database already marked for one role was asked to take the other."""


def database_name(conn: psycopg.Connection) -> str:
    """The database ``conn`` is connected to, as a URL without any password."""
    info = conn.info
    return f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"


def database_identity(conn: psycopg.Connection) -> tuple[str, int]:
    """Which database ``conn`` reaches, whatever the DSN's text: its server's system identifier (pg_control_system,
    the same for every address, port and alias of one server; readable by any role) and the database's OID there."""
    with conn.transaction():
        row = conn.execute("SELECT system_identifier::text, (SELECT oid FROM pg_database WHERE datname = "
                           "current_database())::bigint FROM pg_control_system()").fetchone()
    assert row is not None
    return str(row[0]), int(row[1])


def registry_role(conn: psycopg.Connection) -> str | None:
    """The database's mark, or None when it is unmarked (or not yet migrated to have one)."""
    with conn.transaction():
        exists = conn.execute("SELECT to_regclass('registry_role') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return None
        row = conn.execute("SELECT role FROM registry_role").fetchone()
    return str(row[0]) if row else None


def mark_role(conn: psycopg.Connection, role: str) -> None:
    """Mark the database for ``role``; a database already marked for the other role is never changed."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    with conn.transaction():
        # One statement: two runs marking at once cannot both win, and the loser sees the winner's mark.
        conn.execute("INSERT INTO registry_role (role) VALUES (%s) ON CONFLICT (singleton) DO NOTHING", (role,))
        row = conn.execute("SELECT role FROM registry_role").fetchone()
    marked = str(row[0]) if row else None
    if marked != role:
        raise RoleConflict(f"{database_name(conn)} is marked as a {marked} registry; refusing to mark it {role}")
