"""Migrations: ordered, recorded, idempotent, and safe from two processes at once."""

from __future__ import annotations

import psycopg

from tests.conftest import run_at_once
from vllm_gate.registry.migrate import available_migrations, migrate, pending


def test_migrations_are_numbered_without_gaps():
    versions = [m.version for m in available_migrations()]
    assert versions == list(range(1, len(versions) + 1))


def test_migrate_applies_everything_once_and_records_it(empty_dsn):
    with psycopg.connect(empty_dsn) as conn:
        first = migrate(conn)
        second = migrate(conn)
        recorded = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
        assert pending(conn) == []
    assert [m.version for m in first] == [m.version for m in available_migrations()]
    assert second == []
    assert recorded == [(m.version, m.name) for m in available_migrations()]


def _migrate_in_process(start, out, dsn: str) -> None:
    start.wait(30)
    with psycopg.connect(dsn) as conn:
        out.put(len(migrate(conn)))


def test_two_processes_migrating_at_once_apply_once(empty_dsn):
    counts = sorted(run_at_once(_migrate_in_process, [(empty_dsn,), (empty_dsn,)]))
    assert counts == [0, len(available_migrations())]
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(available_migrations())
