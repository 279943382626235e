"""The gate's registration: mapping upsert and certification insert in one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from vllm_gate.registry import mappings
from vllm_gate.registry.mappings import Mapping


@dataclass(frozen=True)
class Certification:
    model_name: str
    cluster: str
    started_at: datetime
    finished_at: datetime
    verdict: str  # a value of the certifications_verdict_check constraint (contract.Verdict.record_as)
    summary: dict[str, Any] = field(default_factory=dict)
    report_path: str | None = None


def _insert(conn: psycopg.Connection, cert: Certification) -> int:
    row = conn.execute(
        "INSERT INTO certifications (model_name, cluster, started_at, finished_at, verdict, summary,"
        " report_path) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (cert.model_name, cert.cluster, cert.started_at, cert.finished_at, cert.verdict,
         Jsonb(cert.summary), cert.report_path),
    ).fetchone()
    assert row is not None
    return int(row[0])


REGISTERING_VERDICTS = ("certified", "rehearsal_passed")  # the latter only ever in the rehearsal registry


def register_certified(conn: psycopg.Connection, mapping: Mapping, cert: Certification) -> int:
    """Upsert ``mapping`` and record the passed ``cert`` atomically; return the certification id."""
    if cert.verdict not in REGISTERING_VERDICTS:
        raise ValueError(f"register_certified takes a passed run, not {cert.verdict!r}; use record_outcome")
    with conn.transaction():
        mappings.upsert(conn, mapping, certified_at=cert.finished_at)
        return _insert(conn, cert)


def record_undone_pass(conn: psycopg.Connection, cert: Certification) -> int:
    """Inside the caller's transaction: a passed rehearsal that was undone (no router reads its registry there): its
    certification (and so its baselines and history), but no row: nothing serves what it would name."""
    if cert.verdict != "rehearsal_passed":
        raise ValueError(f"record_undone_pass takes a passed rehearsal, not {cert.verdict!r}")
    return _insert(conn, cert)


def record_outcome(conn: psycopg.Connection, cert: Certification) -> int:
    """Record a run that registers nothing (not certified, partial, interrupted); no mapping is touched."""
    if cert.verdict in REGISTERING_VERDICTS:
        raise ValueError(f"record_outcome takes a run that registers nothing, not {cert.verdict!r}")
    with conn.transaction():
        return _insert(conn, cert)


def revise(conn: psycopg.Connection, cert_id: int, verdict: str, summary: dict[str, Any]) -> None:
    """Inside the caller's transaction: certification ``cert_id`` is now ``verdict`` (a promotion that failed after
    it was written), with the run's final summary."""
    conn.execute("UPDATE certifications SET verdict = %s, summary = %s WHERE id = %s",
                 (verdict, Jsonb(summary), cert_id))


def certifications(conn: psycopg.Connection, model_name: str) -> list[tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT id, cluster, verdict, finished_at FROM certifications WHERE model_name = %s ORDER BY id",
        (model_name,),
    ).fetchall()
    conn.rollback()
    return rows
