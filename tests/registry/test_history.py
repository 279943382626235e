"""The run a regression check compares with: the newest passed one of the model, on the same cluster, same load."""

from __future__ import annotations

import psycopg
from psycopg.types.json import Jsonb

from vllm_gate.registry.history import history, last_run, last_under_another_load, load_changes, recent_runs


def add(conn: psycopg.Connection, verdict: str, cluster_key: str, fingerprint: str, ttft: float,
        model: str = "llama3", at: str = "2026-11-26 02:00+00", load: dict[str, object] | None = None) -> int:
    summary = {"cluster_key": cluster_key, "load_fingerprint": fingerprint, "image": "img", "chart": "vllm-0.1.0",
               "slo_values": {"ttft p95": ttft}, **({"load": load} if load else {})}
    row = conn.execute("INSERT INTO certifications (model_name, cluster, started_at, finished_at, verdict, summary)"
                       " VALUES (%s, 'c', %s, %s, %s, %s) RETURNING id",
                       (model, at, at, verdict, Jsonb(summary))).fetchone()
    conn.commit()
    return int(row[0])


def test_only_the_newest_passed_run_on_this_cluster_under_this_load_is_compared(dsn):
    with psycopg.connect(dsn) as conn:
        wanted = add(conn, "certified", "existing:https://pool:6443", "L1", 70.0, at="2026-11-25 02:00+00")
        add(conn, "certified", "existing:https://other:6443", "L1", 10.0)  # another cluster
        add(conn, "not_certified", "existing:https://pool:6443", "L1", 500.0)  # a failed run
        add(conn, "rehearsal_passed", "existing:https://pool:6443", "L1", 20.0)  # a rehearsal
        add(conn, "certified", "existing:https://pool:6443", "L2", 30.0)  # another load profile
        add(conn, "certified", "existing:https://pool:6443", "L1", 40.0, model="mistral-7b")
        past = last_run(conn, "llama3", ("certified",), "existing:https://pool:6443", "L1")
        assert past is not None
        assert (past.certification_id, past.slo_values) == (wanted, {"ttft p95": 70.0})
        assert last_run(conn, "llama3", ("certified",), "existing:https://pool:6443", "L3") is None
        assert [r.verdict for r in history(conn, "llama3")] == ["certified", "certified", "not_certified",
                                                                 "rehearsal_passed", "certified"]


def test_the_last_n_runs_of_that_kind_come_oldest_first_and_only_those(dsn):
    pool = "existing:https://pool:6443"
    with psycopg.connect(dsn) as conn:
        ids = [add(conn, "certified", pool, "L1", 70.0 + day, at=f"2026-11-{day:02d} 02:00+00") for day in range(1, 6)]
        add(conn, "certified", "existing:https://other:6443", "L1", 10.0, at="2026-11-30 02:00+00")
        add(conn, "not_certified", pool, "L1", 500.0, at="2026-11-30 02:00+00")
        add(conn, "certified", pool, "L2", 30.0, at="2026-11-30 02:00+00")
        add(conn, "certified", pool, "L1", 40.0, model="mistral-7b", at="2026-11-30 02:00+00")
        newest = recent_runs(conn, "llama3", ("certified",), pool, "L1", 3)
        assert [r.certification_id for r in newest] == ids[2:]
        assert [r.slo_values["ttft p95"] for r in newest] == [73.0, 74.0, 75.0]
        assert [r.certification_id for r in recent_runs(conn, "llama3", ("certified",), pool, "L1", 10)] == ids
        assert recent_runs(conn, "llama3", ("rehearsal_passed",), pool, "L1", 10) == []


def test_when_nothing_compares_the_last_run_under_another_load_says_what_changed(dsn):
    pool = "existing:https://pool:6443"
    before = {"profile": {"kind": "users", "users": 8, "duration_s": 60}, "prompt_tokens": 256}
    now = {"profile": {"kind": "users", "users": 8, "duration_s": 61}, "prompt_tokens": 256}
    with psycopg.connect(dsn) as conn:
        add(conn, "certified", pool, "L0", 90.0, at="2026-11-24 02:00+00")  # recorded before runs kept their load
        newest = add(conn, "certified", pool, "L1", 70.0, at="2026-11-25 02:00+00", load=before)
        add(conn, "certified", pool, "L2", 70.0, at="2026-11-26 02:00+00")  # this run's own load: not "another"
        other = last_under_another_load(conn, "llama3", ("certified",), pool, "L2")
        assert other is not None
        assert other.certification_id == newest
        assert load_changes(other.load, now) == ["load.profile.duration_s 60 -> 61"]
        assert load_changes(None, now) == ["load: not recorded by that run"]
        assert last_under_another_load(conn, "llama3", ("certified",), "existing:https://other:6443", "L2") is None
