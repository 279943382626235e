"""The earlier passed runs of a model the report plots each SLO over: read once, never failing a check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from vllm_gate.gate.run import GateRun, Registry
from vllm_gate.load.slo import SloResult
from vllm_gate.registry import db
from vllm_gate.registry.db import DatabaseUnreachable
from vllm_gate.registry.history import PastRun, recent_runs
from vllm_gate.report.svg import RunPoint

DEFAULT_RUNS = 10  # --history: how many earlier runs each SLO is plotted over


@dataclass(frozen=True)
class RunHistory:
    """A model's last passed runs of this run's kind, cluster and load, oldest first, or why none were read."""

    what: str  # the kind of run, as a reader says it: "certification", "passed rehearsal"
    runs: tuple[PastRun, ...] = ()
    note: str = ""  # why nothing was read (no registry, no cluster, a registry error): one line, no password


def read_history(registry: Registry, model: str, verdicts: Sequence[str], what: str, cluster_key: str | None,
                 load_fingerprint: str, limit: int) -> RunHistory:
    """The last ``limit`` runs the regression check would pick from; a registry error is the note, never raised."""
    if registry.dsn is None:
        return RunHistory(what, note=f"no registry holding earlier runs: {registry.description}")
    if cluster_key is None:
        return RunHistory(what, note="no earlier runs on the same cluster: this run's cluster is not known "
                                     "(a server the gate did not deploy)")
    try:
        conn = db.connect(registry.dsn)
        try:
            runs = recent_runs(conn, model, verdicts, cluster_key, load_fingerprint, limit)
        finally:
            conn.close()
    except DatabaseUnreachable as exc:  # its message is one line, password scrubbed
        return RunHistory(what, note=f"earlier runs not read: {exc}")
    except psycopg.Error as exc:  # e.g. a registry not migrated to the latest version yet
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        return RunHistory(what, note=f"earlier runs not read from {registry.description}: "
                                     f"{db.scrub(first, registry.dsn)}")
    return RunHistory(what, tuple(runs))


def slo_points(result: SloResult, history: RunHistory, run: GateRun) -> list[RunPoint]:
    """One SLO's value in each earlier run that measured it, oldest first, then this run's (NaN: no data)."""
    past = [RunPoint(r.finished_at, r.slo_values[result.name], r.image or "unknown",
                     f"{history.what} {r.certification_id}") for r in history.runs if result.name in r.slo_values]
    return [*past, RunPoint(run.finished_at or run.started_at, result.measured, run.image(), "this run",
                            this_run=True)]
