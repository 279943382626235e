"""Identity baselines and registry roles (migration 3): stored, found by verdict, newest first."""

from __future__ import annotations

import psycopg
import pytest

from vllm_gate.registry.baselines import NoSuchCertification, last_baseline, passed_runs, record_baseline
from vllm_gate.registry.migrate import available_migrations, migrate, pending
from vllm_gate.registry.role import RoleConflict, mark_role, registry_role

ANSWERS = [("What is 2+2?", "4"), ("Name a colour.", "Blue")]


def add_certification(conn: psycopg.Connection, verdict: str, model: str = "llama3") -> int:
    """Insert a certification row of ``verdict`` (a registry fixture, not the gate's write path)."""
    row = conn.execute("INSERT INTO certifications (model_name, cluster, started_at, finished_at, verdict)"
                       " VALUES (%s, 'local', now(), now(), %s) RETURNING id", (model, verdict)).fetchone()
    conn.commit()
    return int(row[0])


def migrate_to_2(conn: psycopg.Connection) -> None:
    """Make the database a registry as migrations 1 and 2 left it (before identity baselines)."""
    conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                 " applied_at timestamptz NOT NULL DEFAULT now())")
    for migration in available_migrations()[:2]:
        conn.execute(migration.sql)
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                     (migration.version, migration.name))
    conn.commit()


def test_migration_3_applies_to_a_registry_migrated_to_2_and_keeps_its_rows(empty_dsn):
    with psycopg.connect(empty_dsn) as conn:
        migrate_to_2(conn)
        old = add_certification(conn, "certified")
        assert [m.version for m in migrate(conn)] == [3, 4]  # 4: the previous revision kept for a rollback
        assert pending(conn) == []
        assert registry_role(conn) is None  # existing databases stay unmarked
        record_baseline(conn, old, "llama3", 17, ANSWERS, fingerprint="fp")
        assert last_baseline(conn, "llama3", ("certified",), "fp").certification_id == old


def test_migration_3_on_a_fresh_database_leaves_it_unmarked_and_empty(dsn):
    with psycopg.connect(dsn) as conn:
        assert registry_role(conn) is None
        assert conn.execute("SELECT count(*) FROM identity_baselines").fetchone()[0] == 0


def test_a_baseline_round_trips(dsn):
    with psycopg.connect(dsn) as conn:
        cert_id = add_certification(conn, "certified")
        record_baseline(conn, cert_id, "llama3", 23, ANSWERS, fingerprint="fp")
        found = last_baseline(conn, "llama3", ("certified",), "fp")
    assert found is not None
    assert (found.certification_id, found.verdict, found.canary_prompt_tokens, found.answers) == (
        cert_id, "certified", 23, ANSWERS)
    assert found.recorded_at.tzinfo is not None


def test_a_baseline_without_a_canary_count_is_kept(dsn):
    with psycopg.connect(dsn) as conn:
        cert_id = add_certification(conn, "rehearsal_passed")
        record_baseline(conn, cert_id, "llama3", None, [], fingerprint="fp")
        found = last_baseline(conn, "llama3", ("rehearsal_passed",), "fp")
    assert (found.canary_prompt_tokens, found.answers) == (None, [])


def test_only_baselines_of_the_asked_verdicts_count(dsn):
    with psycopg.connect(dsn) as conn:
        certified = add_certification(conn, "certified")
        record_baseline(conn, certified, "llama3", 10, [("p", "certified answer")], fingerprint="fp")
        failed = add_certification(conn, "rehearsal_failed")
        record_baseline(conn, failed, "llama3", 11, [("p", "failed answer")], fingerprint="fp")
        assert last_baseline(conn, "llama3", ("rehearsal_passed",), "fp") is None
        assert last_baseline(conn, "llama3", ("certified",), "fp").certification_id == certified
        assert last_baseline(conn, "llama3", ("rehearsal_failed",), "fp").answers == [("p", "failed answer")]
        assert last_baseline(conn, "mistral-7b", ("certified",), "fp") is None


def test_the_newest_baseline_wins(dsn):
    with psycopg.connect(dsn) as conn:
        first = add_certification(conn, "certified")
        record_baseline(conn, first, "llama3", 10, [("p", "old")], fingerprint="fp")
        second = add_certification(conn, "certified")
        record_baseline(conn, second, "llama3", 12, [("p", "new")], fingerprint="fp")
        found = last_baseline(conn, "llama3", ("certified",), "fp")
    assert (found.certification_id, found.canary_prompt_tokens, found.answers) == (second, 12, [("p", "new")])


def test_a_baseline_for_another_models_certification_is_refused(dsn):
    with psycopg.connect(dsn) as conn:
        mistral = add_certification(conn, "certified", model="mistral-7b")
        with pytest.raises(NoSuchCertification, match=rf"no certification {mistral} of model 'llama3'"):
            record_baseline(conn, mistral, "llama3", 10, ANSWERS, fingerprint="fp")
        assert conn.execute("SELECT count(*) FROM identity_baselines").fetchone()[0] == 0


def test_deleting_a_certification_deletes_its_baseline(dsn):
    with psycopg.connect(dsn) as conn:
        cert_id = add_certification(conn, "certified")
        record_baseline(conn, cert_id, "llama3", 10, ANSWERS, fingerprint="fp")
        conn.execute("DELETE FROM certifications WHERE id = %s", (cert_id,))
        conn.commit()
        assert last_baseline(conn, "llama3", ("certified",), "fp") is None


def test_a_role_is_marked_once_and_never_changed(dsn):
    with psycopg.connect(dsn) as conn:
        mark_role(conn, "rehearsal")
        mark_role(conn, "rehearsal")  # marking again with the same role is fine
        assert registry_role(conn) == "rehearsal"
        with pytest.raises(RoleConflict, match=r"is marked as a rehearsal registry; refusing to mark it production"):
            mark_role(conn, "production")
        assert registry_role(conn) == "rehearsal"


def test_the_role_table_holds_one_row_and_known_roles_only(dsn):
    with psycopg.connect(dsn) as conn:
        mark_role(conn, "production")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO registry_role (role) VALUES ('rehearsal')")
        conn.rollback()
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE registry_role SET role = 'staging'")
        conn.rollback()
        with pytest.raises(ValueError, match="staging"):
            mark_role(conn, "staging")


def test_only_a_baseline_asked_the_same_way_is_found_and_passed_runs_are_counted(dsn):
    with psycopg.connect(dsn) as conn:
        asked_before = add_certification(conn, "certified")
        record_baseline(conn, asked_before, "llama3", 23, ANSWERS, fingerprint="prompts-v1")
        add_certification(conn, "certified")  # certified before identity baselines existed: no row
        add_certification(conn, "not_certified")
        assert last_baseline(conn, "llama3", ("certified",), "prompts-v2") is None
        assert last_baseline(conn, "llama3", ("certified",), "prompts-v1").certification_id == asked_before
        assert passed_runs(conn, "llama3", ("certified",)) == 2
        assert passed_runs(conn, "mistral-7b", ("certified",)) == 0
