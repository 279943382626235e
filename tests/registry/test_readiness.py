"""The registration check: the registry must accept the gate's row, and checking it writes nothing."""

from __future__ import annotations

import psycopg

from tests.conftest import dump_tables
from tests.registry.test_certify import LLAMA3
from vllm_gate.registry.mappings import upsert_problem


def test_a_registry_that_accepts_the_row_keeps_nothing_of_it(dsn):
    before = dump_tables(dsn)
    with psycopg.connect(dsn) as conn:
        assert upsert_problem(conn, LLAMA3) is None
    assert dump_tables(dsn) == before


def test_a_registry_whose_schema_refuses_the_row_is_named(dsn):
    with psycopg.connect(dsn, autocommit=True) as admin:  # planted: a platform rule the gate's row breaks
        admin.execute("ALTER TABLE model_mappings ADD CONSTRAINT small_context CHECK (max_tokens <= 4096)")
    before = dump_tables(dsn)
    with psycopg.connect(dsn) as conn:
        problem = upsert_problem(conn, LLAMA3)
        assert conn.execute("SELECT 1").fetchone() == (1,), "the connection must stay usable"
    assert problem is not None
    assert problem.startswith("the registry refuses the row for 'llama3': ")
    assert "small_context" in problem
    assert dump_tables(dsn) == before


def test_a_registry_that_stores_something_else_is_named(dsn):
    with psycopg.connect(dsn, autocommit=True) as admin:  # planted: a trigger that rewrites the URL
        admin.execute("CREATE FUNCTION rewrite() RETURNS trigger AS $$ BEGIN NEW.backend_url := 'http://x:1'; "
                      "RETURN NEW; END $$ LANGUAGE plpgsql")
        admin.execute("CREATE TRIGGER rewrite BEFORE INSERT OR UPDATE ON model_mappings FOR EACH ROW "
                      "EXECUTE FUNCTION rewrite()")
    with psycopg.connect(dsn) as conn:
        problem = upsert_problem(conn, LLAMA3)
    assert problem is not None
    assert "the registry stored" in problem
    assert "http://x:1" in problem
