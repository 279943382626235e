"""The gate's registration: one transaction, concurrent-safe, failures touch no mapping."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest

from tests.conftest import dump_tables, run_at_once
from vllm_gate.registry.certify import Certification, certifications, record_outcome, register_certified
from vllm_gate.registry.mappings import Mapping, get
from vllm_gate.registry.migrate import available_migrations, migrate

LLAMA3 = Mapping(name="llama3", display_name="Llama 3 8B Instruct",
                 backend_url="http://llama-3-8b-inference.ias-production.svc.cluster.local:8000",
                 upstream_model_id="meta-llama/Meta-Llama-3-8B-Instruct", max_tokens=8192,
                 input_cost=Decimal("0.0005"), output_cost=Decimal("0.0015"),
                 chart_version="0.1.0", image="vllm/vllm-openai:v0.11.0")


def cert(verdict: str, cluster: str = "local") -> Certification:
    now = datetime.now(UTC)
    return Certification(model_name="llama3", cluster=cluster, started_at=now, finished_at=now,
                         verdict=verdict, summary={"suites": {"health": "passed"}}, report_path="reports/x.html")


def test_passed_run_upserts_mapping_and_records_certification(dsn):
    with psycopg.connect(dsn) as conn:
        cert_id = register_certified(conn, LLAMA3, cert("certified"))
        row = get(conn, "llama3")
        assert certifications(conn, "llama3")[0][0] == cert_id
    assert row["input_cost_per_1k"] == Decimal("0.0005")
    assert row["certified_at"] is not None


def test_failed_run_records_certification_and_touches_no_mapping(dsn):
    with psycopg.connect(dsn) as conn:
        register_certified(conn, LLAMA3, cert("certified"))
        before = get(conn, "llama3")
        record_outcome(conn, cert("not_certified"))
        assert get(conn, "llama3") == before
        assert [c[2] for c in certifications(conn, "llama3")] == ["certified", "not_certified"]


def test_failure_inside_registration_rolls_back_both(dsn):
    bad = Certification(model_name="llama3", cluster="local", started_at=datetime.now(UTC),
                        finished_at=datetime.now(UTC), verdict="certified", summary={"x": object()})
    before = dump_tables(dsn)
    with psycopg.connect(dsn) as conn, pytest.raises(TypeError):
        register_certified(conn, LLAMA3, bad)
    assert dump_tables(dsn) == before


def _register_in_process(start, out, dsn: str, i: int) -> None:
    start.wait(30)
    with psycopg.connect(dsn) as conn:
        mapping = LLAMA3.model_copy(update={"display_name": f"Llama 3 (run {i})"})
        out.put(register_certified(conn, mapping, cert("certified", cluster=f"run-{i}")))


def test_eight_concurrent_registrations_leave_one_row_and_eight_certifications(dsn):
    cert_ids = run_at_once(_register_in_process, [(dsn, i) for i in range(8)])
    assert len(set(cert_ids)) == 8
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM model_mappings").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM certifications WHERE model_name = 'llama3'").fetchone()[0] == 8
        assert get(conn, "llama3")["display_name"].startswith("Llama 3 (run ")


def test_every_verdict_kind_is_recorded_and_none_touches_a_mapping(dsn):
    kinds = ("not_certified", "partial", "interrupted", "rehearsal_failed", "rehearsal_partial",
             "rehearsal_interrupted")
    with psycopg.connect(dsn) as conn:
        for kind in kinds:
            record_outcome(conn, cert(kind))
        assert conn.execute("SELECT count(*) FROM model_mappings").fetchone()[0] == 0
        assert [c[2] for c in certifications(conn, "llama3")] == list(kinds)


def test_a_run_that_registers_nothing_cannot_register_and_vice_versa(dsn):
    with psycopg.connect(dsn) as conn:
        with pytest.raises(ValueError, match="use record_outcome"):
            register_certified(conn, LLAMA3, cert("partial"))
        with pytest.raises(ValueError, match="registers nothing"):
            record_outcome(conn, cert("certified"))


def test_an_unknown_verdict_is_refused_by_the_schema(dsn):
    with psycopg.connect(dsn) as conn, pytest.raises(psycopg.errors.CheckViolation):
        record_outcome(conn, cert("passed"))


def test_migration_2_renames_old_verdicts_and_old_simulator_runs_become_rehearsals(empty_dsn):
    with psycopg.connect(empty_dsn) as conn:
        conn.execute(available_migrations()[0].sql)
        conn.execute("INSERT INTO certifications (model_name, cluster, started_at, finished_at, verdict, summary) "
                     "VALUES ('llama3', 'c', now(), now(), 'passed', '{\"engine\": \"vllm\"}'), "
                     "('llama3', 'c', now(), now(), 'failed', '{\"engine\": \"vllm\"}'), "
                     "('llama3', 'c', now(), now(), 'passed', '{\"engine\": \"sim\"}'), "
                     "('llama3', 'c', now(), now(), 'failed', '{\"engine\": \"sim\"}')")
        conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                     " applied_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (1, 'model_mappings')")
        conn.commit()
        assert [m.version for m in migrate(conn)] == [m.version for m in available_migrations()[1:]]
        assert [c[2] for c in certifications(conn, "llama3")] == [
            "certified", "not_certified", "rehearsal_passed", "rehearsal_failed"]
