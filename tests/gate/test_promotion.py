"""Promotion: the candidate's names, the in-place rotation, and the test via the API router with its switch back.

The router here is the real API-router stand-in binary (scripts/router-standin) on this machine, reading a real
PostgreSQL registry and proxying to real simulator processes; the cluster side is covered by the real-node gate
runs (tests/test_gate_runs.py).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from vllm_gate.base.errors import GateError
from vllm_gate.base.secret import Secret
from vllm_gate.base.tools import MODELS_DIR, require_tool
from vllm_gate.checks import router
from vllm_gate.cluster.dataplane.sim import SimServer, stop_process
from vllm_gate.deploy.release import Release
from vllm_gate.deploy.target import RELEASE_MAX, SERVICE_MAX, candidate, in_place, revision_id, service_of_url
from vllm_gate.gate.decision import finish
from vllm_gate.gate.exit_code import model_exit_code
from vllm_gate.gate.promotion import prove_through_router, restore_rotation, switched, take_out_of_rotation
from vllm_gate.gate.run import GateRun, IdentityRecord, Live, Registry
from vllm_gate.registry import mappings
from vllm_gate.registry.certify import register_certified
from vllm_gate.registry.mappings import Mapping
from vllm_gate.spec import load_spec
from vllm_gate.verdict.contract import Kind, Mode, required_checks

SPEC = load_spec("llama3", MODELS_DIR, ["promotion.router_timeout_s=4"])
PROMPT = SPEC.identity.drift.prompts[0]


# --- names ---------------------------------------------------------------------------------------------------

def test_a_candidate_is_its_own_release_and_service_within_the_name_limits():
    long = load_spec("llama3", MODELS_DIR, [f"name={'m' * 53}", f"service.name=s{'v' * 62}"])
    names = {revision_id() for _ in range(50)}
    assert len(names) == 50
    assert all(len(n) == 6 for n in names)
    first, second = candidate(long, "a1b2c3"), candidate(long, "d4e5f6")
    assert (len(first.release), len(first.service)) == (RELEASE_MAX, SERVICE_MAX)
    assert first.release.endswith("-a1b2c3")
    assert first.service.endswith("-a1b2c3")
    assert first.release != second.release
    assert first.service != second.service
    ordinary = candidate(SPEC, "0d077d")
    assert (ordinary.release, ordinary.service) == ("llama3-0d077d", "llama-3-8b-inference-0d077d")
    assert ordinary.url == "http://llama-3-8b-inference-0d077d.ias-production.svc.cluster.local:8000"
    assert ordinary.selector == "app.kubernetes.io/instance=llama3-0d077d"
    assert in_place(SPEC).url == SPEC.in_cluster_url  # in place: the release and Service the spec names


@pytest.mark.parametrize(("url", "found"), [
    ("http://svc.ns.svc.cluster.local:8000", ("svc", "ns", 8000)),
    ("http://svc.ns:8000", ("svc", "ns", 8000)),
    ("http://svc:8000", ("svc", "ias-production", 8000)),
    ("http://svc.ns.svc.cluster.local", None),  # no port: not what the gate writes
    ("https://api.example.com:443", None),  # not a Service's name
])
def test_the_live_revision_is_found_from_the_service_the_row_names(url, found):
    assert service_of_url(url, "ias-production") == found


# --- a real router stand-in, real simulators, a real registry -------------------------------------------------

def _free_port_number() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_serving(url: str, log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"the router stand-in did not read the registry:\n{log.read_text()}"
        time.sleep(0.2)


class RouterProcess:
    """The API-router stand-in binary here, reading ``dsn`` every ``refresh`` (its files in ``directory``)."""

    def __init__(self, dsn: str, directory: Path, refresh: str, key: str | None = None) -> None:
        directory.mkdir(exist_ok=True)
        (directory / "dsn").write_text(dsn)
        args = ["--listen", f"127.0.0.1:{_free_port_number()}", "--dsn-file", str(directory / "dsn"),
                "--refresh", refresh]
        if key is not None:
            (directory / "key").write_text(key)
            args += ["--key-file", str(directory / "key")]
        self.url = f"http://{args[1]}"
        self.log = directory / "router.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([str(require_tool("router-standin")), *args],
                                         stdout=log, stderr=subprocess.STDOUT)
        _wait_serving(self.url, self.log)

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/stats", timeout=5).json()

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture
def sims() -> Iterator[tuple[SimServer, SimServer]]:
    """The live revision and the candidate: the same model, answering differently at temperature 0."""
    old = SimServer(model=SPEC.served_name, chat_template="llama3", answer_salt="old").start()
    new = SimServer(model=SPEC.served_name, chat_template="llama3", answer_salt="new").start()
    yield old, new
    old.stop()
    new.stop()


def _row(backend_url: str) -> Mapping:
    return Mapping(name="llama3", display_name="Llama 3", backend_url=backend_url, upstream_model_id=SPEC.served_name,
                   input_cost=Decimal("0.0005"), output_cost=Decimal("0.0015"))


def _write(dsn: str, row: Mapping, certified_at: datetime | None = None) -> None:
    with psycopg.connect(dsn) as conn, conn.transaction():
        mappings.upsert(conn, row, certified_at=certified_at)


def _answer(url: str) -> str:
    drift = SPEC.identity.drift
    response = httpx.post(f"{url}/v1/chat/completions", timeout=10, json={
        "model": SPEC.served_name, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": drift.max_tokens,
        "temperature": 0, "seed": drift.seed})
    return response.json()["choices"][0]["message"]["content"]


def test_the_router_check_sees_the_switch_through_the_router_and_a_stale_router_never_passes(dsn, sims, tmp_path):
    old, new = sims
    assert _answer(old.url) != _answer(new.url)  # what tells the revisions apart when a router names no backend
    _write(dsn, _row(old.url))
    live = RouterProcess(dsn, tmp_path / "live", "200ms")
    stale = RouterProcess(dsn, tmp_path / "stale", "1h")  # read the row once: a router that keeps the old backend
    try:
        expected = router.Expected("llama3", new.url, PROMPT, _answer(new.url))
        lines: list[str] = []
        with pytest.raises(router.RouterFailed) as before:  # the row still names the old revision
            router.wait_serves_candidate(live.url, None, expected, SPEC.identity.drift, 6, lines.append)
        assert f"it answered from {old.url}, not the candidate {new.url}" in before.value.summary
        assert any("waiting for the API router to serve llama3 from the candidate" in line for line in lines), lines
        _write(dsn, _row(new.url))
        line, shown = router.wait_serves_candidate(live.url, None, expected, SPEC.identity.drift, 10, lines.append)
        assert shown
        assert f"serves llama3 from the candidate {new.url}" in line
        assert "the router named the candidate's backend (x-router-backend)" in line
        with pytest.raises(router.RouterFailed) as kept:
            router.wait_serves_candidate(stale.url, None, expected, SPEC.identity.drift, 3, lines.append)
        assert f"it answered from {old.url}" in kept.value.summary
        backends = live.stats()["backends"]
        assert set(backends) == {old.url, new.url}, backends
        assert all(c["failures"] == 0 for c in backends.values()), backends
    finally:
        live.stop()
        stale.stop()
    assert "registry unreadable" not in live.log.read_text()


def test_a_router_key_is_required_and_sent(dsn, sims, tmp_path):
    old, _new = sims
    _write(dsn, _row(old.url))
    key = "router-" + "K3y" * 8
    keyed = RouterProcess(dsn, tmp_path, "1s", key=key)
    try:
        with pytest.raises(GateError, match="HTTP 401"):
            router.listed_models(keyed.url, None)
        assert router.listed_models(keyed.url, Secret(key)) == ["llama3"]
    finally:
        keyed.stop()


# --- the decision's side: PROMOTION FAILED switches the row back ------------------------------------------------

def _certified_run(dsn: str) -> GateRun:
    registry = Registry(Secret(dsn), "the test registry")
    run = GateRun(spec=SPEC, cluster="test", capabilities=None, report_path=Path("r.html"), registry=registry,
                  required=required_checks(SPEC.slo, deployed_by_gate=True, runs_containers=True, real_gpus=True))
    for check in run.required:
        run.record(check, "passed", "")
    run.engine_observed = True  # vLLM pods on real nodes: what a certification needs
    run.target = candidate(SPEC, "c0ffee")
    run.release = Release(run.target.release, SPEC.namespace, 1, None, "0.1.0", created_namespace=False)
    run.identity = IdentityRecord(30, [(PROMPT, "the candidate's own answer")], "fp")
    return run


def _switch(run: GateRun, dsn: str) -> int:
    """What the decision's registration does: the row names the candidate, the certification is written."""
    at = datetime.now(UTC)
    with psycopg.connect(dsn) as conn:
        cert = run.certification()
        cert_id = register_certified(conn, run.mapping(), cert)
    switched(run, at, cert_id)
    return cert_id


def test_a_router_that_keeps_the_old_backend_fails_the_promotion_and_the_row_is_switched_back(dsn, sims, tmp_path):
    old, _new = sims
    certified_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    _write(dsn, _row(old.url), certified_at)
    run = _certified_run(dsn)
    run.promotion.live = Live(_row(old.url), None, "row llama3 -> the old revision", certified_at)
    stale = RouterProcess(dsn, tmp_path, "1h")
    try:
        run.promotion.router_url = stale.url
        cert_id = _switch(run, dsn)
        lines: list[str] = []
        assert prove_through_router(run, lines.append)  # switched back: the caller may undo the candidate
    finally:
        stale.stop()
    verdict = run.settle()
    assert (verdict.kind, verdict.certified) == (Kind.FAILED, False)
    assert model_exit_code(run, pytest.ExitCode.OK, require_certification=False) == 1
    assert verdict.headline == "NOT CERTIFIED: every required check passed, but promotion failed"
    assert verdict.reasons[0].startswith("PROMOTION FAILED: the API router at ")
    assert "did not serve llama3 from the candidate within 4 s" in verdict.reasons[0]
    assert run.decision[-1] == f"switched the row back: llama3 -> {old.url}"
    with psycopg.connect(dsn) as conn:
        row = mappings.get(conn, "llama3")
        recorded = conn.execute("SELECT verdict, summary->>'verdict' FROM certifications WHERE id = %s",
                                (cert_id,)).fetchone()
    assert (row["backend_url"], row["certified_at"], row["enabled"]) == (old.url, certified_at, True)
    assert recorded == ("not_certified", verdict.headline)
    assert run.promotion.switched_at is None
    assert run.promotion.live_after == old.url
    assert not run.promotes()


@pytest.mark.parametrize(("router_url", "identity", "why"), [
    (None, True, "no API router to test through: give --router-url"),
    ("http://127.0.0.1:9", False, "no answer of the candidate to compare the router's with"),
])
def test_a_promotion_nothing_can_prove_fails_and_removes_the_row_it_wrote(dsn, router_url, identity, why):
    run = _certified_run(dsn)
    run.promotion.live = Live(None, None, "no row of llama3")
    run.promotion.router_url = router_url
    if not identity:
        run.identity = None
    _switch(run, dsn)
    assert prove_through_router(run, lambda _line: None)
    assert run.settle().reasons[0].startswith(f"PROMOTION FAILED: {why}")
    assert run.decision[-1] == "removed the row of llama3 this run had written (there was none before)"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM model_mappings").fetchone() == (0,)


# --- in place: out of rotation during the run ---------------------------------------------------------------

def test_in_place_the_model_is_out_of_rotation_during_the_run_and_back_unless_promoted(dsn):
    _write(dsn, _row("http://llama-3-8b-inference.ias-production.svc.cluster.local:8000"))
    run = _certified_run(dsn)
    run.target, run.release = None, None
    run.outcomes.clear()  # it will not pass
    run.promotion.mode = "in-place"
    run.promotion.live = Live(_row("http://llama-3-8b-inference.ias-production.svc.cluster.local:8000"), None, "")
    lines: list[str] = []
    take_out_of_rotation(run, lines.append)
    assert lines == ["vllm-gate: llama3 is out of rotation during this run (its row in the test registry is disabled "
                     "until the decision)"]
    with psycopg.connect(dsn) as conn:
        assert mappings.get(conn, "llama3")["enabled"] is False
    assert "out of rotation during this run" in "\n".join(run.promotion.lines(run.deployed))
    finish(run, keep_on_failure=False)
    assert run.settle().kind is not Kind.PASSED
    assert "llama3 back in rotation: its row in the test registry is enabled again" in run.decision
    with psycopg.connect(dsn) as conn:
        assert mappings.get(conn, "llama3")["enabled"] is True
    restore_rotation(run, undone=True)  # once is enough: nothing left to restore
    assert run.decision.count("llama3 back in rotation: its row in the test registry is enabled again") == 1


def test_in_place_a_release_not_confirmed_rolled_back_stays_out_of_rotation(dsn):
    _write(dsn, _row("http://llama-3-8b-inference.ias-production.svc.cluster.local:8000"))
    run = _certified_run(dsn)
    run.promotion.mode = "in-place"
    run.promotion.live = Live(_row("http://llama-3-8b-inference.ias-production.svc.cluster.local:8000"), None, "")
    take_out_of_rotation(run, lambda _line: None)
    restore_rotation(run, undone=False)  # --keep-on-failure, or a rollback not seen Ready
    assert run.decision[-1].startswith("llama3 stays out of rotation (disabled in the test registry): its release was "
                                       "not confirmed rolled back")
    with psycopg.connect(dsn) as conn:
        assert mappings.get(conn, "llama3")["enabled"] is False


def test_in_place_a_failed_promotion_switches_the_row_back_still_out_of_rotation(dsn):
    live_url = "http://llama-3-8b-inference.ias-production.svc.cluster.local:8000"
    _write(dsn, _row(live_url))
    run = _certified_run(dsn)
    run.promotion.mode = "in-place"
    run.promotion.live = Live(_row(live_url), None, "")
    take_out_of_rotation(run, lambda _line: None)
    _switch(run, dsn)  # the registration enabled it, naming this run's release
    assert prove_through_router(run, lambda _line: None)  # no router: PROMOTION FAILED, switched back
    with psycopg.connect(dsn) as conn:
        row = mappings.get(conn, "llama3")
    assert (row["backend_url"], row["enabled"]) == (live_url, False)  # enabled only once the rollback is confirmed


def test_a_row_that_cannot_be_switched_back_keeps_the_candidate(dsn, postgres):
    run = _certified_run(dsn)
    run.promotion.live = Live(None, None, "no row of llama3")
    _switch(run, dsn)
    # The registry is gone by the time the router check fails: the row still names the candidate, so it stays.
    run.registry = Registry(Secret(f"postgresql://gate:pw@127.0.0.1:{_free_port_number()}/gone?connect_timeout=2"),
                            "the vanished registry")
    assert not prove_through_router(run, lambda _line: None)
    assert run.decision[-1].startswith("ROW NOT SWITCHED BACK: ")
    assert "so it is kept: switch the row back with ias-admin model update" in run.decision[-1]


def test_without_a_backend_header_the_answer_shows_the_candidate_only_when_the_previous_differs(sims):
    old, new = sims
    # The candidate's own server stands in for a router that names no backend; its models list its served name.
    candidate_answer, previous_answer = _answer(new.url), _answer(old.url)
    drift = SPEC.identity.drift
    same = router.Expected(SPEC.served_name, new.url, PROMPT, candidate_answer, candidate_answer)
    line, shown = router.wait_serves_candidate(new.url, None, same, drift, 5, lambda _line: None)
    assert not shown
    assert "which revision answered is not shown" in line
    differs = router.Expected(SPEC.served_name, new.url, PROMPT, candidate_answer, previous_answer)
    line, shown = router.wait_serves_candidate(new.url, None, differs, drift, 5, lambda _line: None)
    assert shown
    assert "the previous revision answers differently" in line


def test_a_rehearsal_promotes_only_where_a_router_reads_the_rehearsal_registry():
    run = GateRun(spec=SPEC, cluster="test", capabilities=None, report_path=Path("r.html"), mode=Mode.REHEARSAL,
                  registry=Registry(Secret("postgresql://x@127.0.0.1:1/r"), "rehearsal", rehearsal=True),
                  required=["health/x"])
    run.simulated = "simulator: test"
    run.record("health/x", "passed", "")
    assert run.settle().kind is Kind.PASSED
    assert not run.promotes()  # no router stand-in reads it: undone like any rehearsal
    run.rehearsal_promotes = True
    assert run.promotes()


def test_a_certified_candidate_with_no_registry_to_switch_is_undone_but_in_place_stays(dsn):
    run = _certified_run(dsn)
    assert run.settle().certified
    assert run.promotes()
    run.registry = Registry(None, "no --database-url given")
    assert not run.promotes()  # nothing would ever route to it
    run.promotion.mode = "in-place"
    assert run.promotes()  # the live release itself, upgraded and certified


def test_a_promotion_that_keeps_the_previous_revision_records_it_for_a_rollback(dsn):
    live_url = "http://llama-3-8b-inference-aaaaaa.ias-production.svc.cluster.local:8000"
    _write(dsn, _row(live_url))
    run = _certified_run(dsn)
    run.spec = load_spec("llama3", MODELS_DIR, ["promotion.keep_previous_s=3600"])
    run.release = None  # the decision's registry side only (the cluster side runs on the standing cluster)
    run.promotion.live = Live(_row(live_url), candidate(SPEC, "aaaaaa"), "the live release")
    finish(run, keep_on_failure=False)
    assert run.settle().certified
    kept = [line for line in run.decision if line.startswith("kept the previous revision llama3-aaaaaa until ")]
    assert kept, run.decision
    assert kept[0].endswith("(promotion.keep_previous_s) for: ias-admin model rollback llama3; a later gate run of "
                            "llama3 uninstalls it once that time has passed")
    with psycopg.connect(dsn) as conn:
        row = mappings.get(conn, "llama3")
    assert (row["backend_url"], row["previous_backend_url"]) == (run.deployed.url, live_url)
    assert row["previous_kept_until"] == run.promotion.kept_until
    # Without keep_previous_s a later promotion clears it: a retired revision is never rolled back to.
    later = _certified_run(dsn)
    later.release = None
    later.promotion.live = Live(_row(run.deployed.url), candidate(SPEC, "bbbbbb"), "")  # a revision it could keep
    finish(later, keep_on_failure=False)
    with psycopg.connect(dsn) as conn:
        row = mappings.get(conn, "llama3")
    assert (row["previous_backend_url"], row["previous_kept_until"]) == (None, None)


@pytest.mark.parametrize(("window", "cleared"), [("-1 second", True), ("1 hour", False)])
def test_a_kept_revision_is_cleared_by_the_registrys_clock_once_its_window_passed(dsn, window, cleared):
    kept_url = "http://127.0.0.1:1"  # names no Service: nothing to uninstall, only the row to clear
    _write(dsn, _row("http://llama-3-8b-inference-aaaaaa.ias-production.svc.cluster.local:8000"))
    with psycopg.connect(dsn) as conn:
        with conn.transaction():
            conn.execute("UPDATE model_mappings SET previous_backend_url = %s, previous_kept_until = now() + "
                         "%s::interval", (kept_url, window))
        until = mappings.get(conn, "llama3")["previous_kept_until"]
    run = _certified_run(dsn)
    run.release = None
    run.outcomes.clear()  # a run that does not promote
    run.promotion.live = Live(_row("http://llama-3-8b-inference-aaaaaa.ias-production.svc.cluster.local:8000"),
                              None, "", None, kept_url, until)
    finish(run, keep_on_failure=False)
    with psycopg.connect(dsn) as conn:
        row = mappings.get(conn, "llama3")
    assert (row["previous_backend_url"] is None) is cleared
    assert row["backend_url"] == "http://llama-3-8b-inference-aaaaaa.ias-production.svc.cluster.local:8000"
