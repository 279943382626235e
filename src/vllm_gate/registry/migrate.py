"""Versioned SQL migrations, applied in order in one transaction under an advisory lock."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import psycopg

# Any constant works; it only has to be the same for every process migrating this database.
MIGRATION_LOCK_ID = 0x7661_6C6C_6D67  # "vallmg"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """Return the packaged migrations (``NNNN_name.sql``) in version order."""
    found = []
    for entry in resources.files("vllm_gate.registry").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            version, _, rest = entry.name.partition("_")
            found.append(Migration(int(version), rest.removesuffix(".sql"), entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def applied_versions(conn: psycopg.Connection) -> set[int]:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return set()
    return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def pending(conn: psycopg.Connection) -> list[Migration]:
    done = applied_versions(conn)
    return [m for m in available_migrations() if m.version not in done]


def migrate(conn: psycopg.Connection) -> list[Migration]:
    """Apply every pending migration; return those applied. Safe concurrently and when repeated."""
    with conn.transaction():
        # Serialises concurrent migrators: the second one waits, then finds nothing pending.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        todo = pending(conn)
        for migration in todo:
            conn.execute(migration.sql)
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                         (migration.version, migration.name))
    return todo
