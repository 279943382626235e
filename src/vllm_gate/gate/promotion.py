"""Promotion: the candidate beside the live revision, the in-place choice, and the previous revision's retirement.

A run deploys its candidate as its own release and Service (``deploy/target.py``); the router's row keeps naming the
live revision until the decision switches it (``gate/decision.py``), after which the previous revision is drained
and uninstalled. Where the pool cannot hold both, the run fails in seconds unless ``--promotion in-place`` was
chosen: then the model is out of rotation (its row disabled) while the live release is upgraded, and the row is
restored on any outcome but a promotion.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from kubernetes import client

from vllm_gate.base.errors import GateError
from vllm_gate.base.kube import api_client
from vllm_gate.checks import router
from vllm_gate.checks.router import Expected
from vllm_gate.deploy.preflight import Decision, PreflightFailed, check_pool
from vllm_gate.deploy.release import uninstall
from vllm_gate.deploy.target import Target, candidate, in_place, revision_id, target_of_url
from vllm_gate.gate.run import GateRun, Live, Registry
from vllm_gate.registry import db, mappings
from vllm_gate.registry.certify import revise
from vllm_gate.registry.mappings import Mapping, MappingNotFound
from vllm_gate.spec import ModelSpec

MODES = ("candidate", "in-place")
DRAIN_PROGRESS_S = 5.0

Progress = Callable[[str], None]


def find_live(core: client.CoreV1Api, spec: ModelSpec, registry: Registry) -> Live:
    """The registry's row of the model and the release of this cluster its ``backend_url`` names."""
    if registry.dsn is None:
        return Live(None, None, f"no row to read: {registry.description}")
    try:
        conn = db.connect(registry.dsn)
        try:
            raw = mappings.get(conn, spec.name)
        finally:
            conn.close()
        row = Mapping.model_validate(mappings.from_row(raw))
    except MappingNotFound:
        return Live(None, None, f"no row of {spec.name} in {registry.description}")
    except psycopg.Error as exc:
        raise GateError(f"reading {spec.name}'s row from {registry.description}: {_first_line(exc, registry)}"
                        ) from None
    target = target_of_url(core, row.backend_url, spec.namespace)
    state = "" if row.enabled else " (disabled)"
    if target is None:
        return Live(row, None, f"row {spec.name}{state} -> {row.backend_url}, which names no release's Service in "
                               "this cluster", raw["certified_at"], raw["previous_backend_url"],
                    raw["previous_kept_until"])
    return Live(row, target, f"row {spec.name}{state} -> {row.backend_url}, served by release {target.release}",
                raw["certified_at"], raw["previous_backend_url"], raw["previous_kept_until"])


def plan_target(spec: ModelSpec, api: client.ApiClient, mode: str, live: Live) -> tuple[Target, Decision]:
    """What this run deploys, and the preflight's decision for it; PreflightFailed when the pool cannot hold it.

    A candidate needs room beside every pod already running (the live revision's included). When it has none
    and a live revision runs, the failure names the choice: ``--promotion in-place``.
    """
    if mode == "in-place":
        target = live.target if live.target is not None else in_place(spec)
        return target, check_pool(spec, api, target.release)
    target = candidate(spec, revision_id())
    try:
        return target, check_pool(spec, api, target.release)
    except PreflightFailed as exc:
        if live.target is None:
            raise
        raise PreflightFailed(f"{exc.summary}. The pool cannot hold a candidate beside the live revision "
                              f"{live.target.release}: run with --promotion in-place to upgrade it in place "
                              f"({spec.name} is then out of rotation during the run)") from None


def _set_enabled(registry: Registry, name: str, enabled: bool) -> None:
    assert registry.dsn is not None
    conn = db.connect(registry.dsn)
    try:
        mappings.set_enabled(conn, name, enabled)
    finally:
        conn.close()


def take_out_of_rotation(run: GateRun, progress: Progress) -> None:
    """In place: disable the model's row before its live release is touched (the router stops sending to it)."""
    live, registry = run.promotion.live, run.registry
    if live is None or live.row is None or not live.row.enabled or registry.dsn is None:
        return
    try:
        _set_enabled(registry, run.spec.name, False)
    except (psycopg.Error, GateError) as exc:
        raise GateError(f"taking {run.spec.name} out of rotation in {registry.description}: "
                        f"{_first_line(exc, registry)}") from None
    run.promotion.out_of_rotation = registry
    progress(f"vllm-gate: {run.spec.name} is out of rotation during this run (its row in {registry.description} "
             "is disabled until the decision)")


def restore_rotation(run: GateRun, undone: bool) -> None:
    """Put a row this run disabled back in rotation (any outcome but a promotion, which enables it itself), once the
    release is ``undone`` (rolled back and Ready, or nothing deployed); else it stays out and the run says so."""
    registry = run.promotion.out_of_rotation
    if registry is None or registry.dsn is None:
        return
    if not undone:
        run.decision.append(f"{run.spec.name} stays out of rotation (disabled in {registry.description}): its release "
                            f"was not confirmed rolled back; enable it once it serves the live revision: ias-admin "
                            f"model enable {run.spec.name}")
        return
    try:
        _set_enabled(registry, run.spec.name, True)
    except (psycopg.Error, GateError) as exc:
        run.fail_decision(f"ROTATION NOT RESTORED: {run.spec.name} stays disabled in {registry.description}: "
                          f"{_first_line(exc, registry)}; enable it with: ias-admin model enable {run.spec.name}")
        return
    run.promotion.out_of_rotation = None
    run.decision.append(f"{run.spec.name} back in rotation: its row in {registry.description} is enabled again")


def drain(target: Target, seconds: float, progress: Progress) -> None:
    """Wait ``seconds`` for the router's connections and caches to leave ``target``, saying so every few seconds."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        progress(f"vllm-gate: draining {target.release} (promotion.drain_s): {left:.0f} s left before it is "
                 "uninstalled")
        time.sleep(min(DRAIN_PROGRESS_S, left))


def retire_previous(run: GateRun, kubeconfig: Path | None, context: str | None, progress: Progress) -> None:
    """After the row switched to the candidate: drain the previous revision, then uninstall it (or keep it for a
    rollback); a revision an earlier promotion kept is no longer tracked, so it goes now."""
    _retire_untracked(run, kubeconfig, context)
    live, deployed = run.promotion.live, run.deployed
    if live is None or live.target is None or live.target.release == deployed.release:
        return
    if run.promotion.switched_at is None:
        run.decision.append(f"kept the previous revision {live.target.release}: the row was not switched away "
                            "from it")
        return
    if run.promotion.kept_until is not None:
        until = f"{run.promotion.kept_until:%Y-%m-%d %H:%M} UTC"
        run.decision.append(f"kept the previous revision {live.target.release} until {until} (promotion."
                            f"keep_previous_s) for: ias-admin model rollback {run.spec.name}; a later gate run of "
                            f"{run.spec.name} uninstalls it once that time has passed")
        return
    drain(live.target, run.spec.promotion.drain_s, progress)
    if still := _rows_naming(run, live.target.url):
        run.decision.append(f"kept the previous revision {live.target.release}: model_mappings still routes "
                            f"{', '.join(still)} to it")
        return
    try:
        run.decision.append(uninstall(live.target.release, live.target.namespace, kubeconfig, context,
                                      why=f"drained {run.spec.promotion.drain_s} s after the switch",
                                      progress=progress))
    except GateError as exc:
        run.decision.append(f"PREVIOUS REVISION NOT RETIRED: {exc.summary}; uninstall it with: helm uninstall "
                            f"{live.target.release} -n {live.target.namespace}")


def _rows_naming(run: GateRun, url: str) -> list[str]:
    """The rows (of any model: an alias, say) whose backend_url is ``url``; on an error, say so as a row."""
    registry = run.registry
    assert registry.dsn is not None
    try:
        conn = db.connect(registry.dsn)
        try:
            return [name for (name,) in conn.execute(
                "SELECT name FROM model_mappings WHERE backend_url = %s ORDER BY name", (url,)).fetchall()]
        finally:
            conn.close()
    except (psycopg.Error, GateError) as exc:
        return [f"(the registry could not be asked: {_first_line(exc, registry)})"]


def _retire(run: GateRun, url: str, kubeconfig: Path | None, context: str | None, why: str) -> None:
    """Uninstall the release behind ``url`` (a revision kept for a rollback) unless it is this run's, the live one,
    or any row still names it; say what was done in the decision."""
    live = run.promotion.live
    try:
        kept = target_of_url(client.CoreV1Api(api_client(kubeconfig, context)), url, run.spec.namespace)
        if kept is None or kept.release in {run.deployed.release, live.target.release if live and live.target else ""}:
            return
        if still := _rows_naming(run, kept.url):
            run.decision.append(f"kept {kept.release}: model_mappings still routes {', '.join(still)} to it")
            return
        run.decision.append(uninstall(kept.release, kept.namespace, kubeconfig, context, why=why))
    except GateError as exc:
        run.decision.append(f"EARLIER REVISION NOT RETIRED: {exc.summary}; uninstall it with helm once nothing "
                            f"routes to {url}")


def _retire_untracked(run: GateRun, kubeconfig: Path | None, context: str | None) -> None:
    """Uninstall the revision an earlier promotion kept for a rollback (this switch replaced it in the row)."""
    live = run.promotion.live
    if live is not None and live.previous_url is not None and run.promotion.switched_at is not None:
        _retire(run, live.previous_url, kubeconfig, context, "kept for a rollback, now replaced by this promotion")


def record_previous(conn: psycopg.Connection, run: GateRun) -> None:
    """Inside the switch's transaction: the revision a rollback may go back to and until when (keep_previous_s), or
    none (so a revision retired earlier is never rolled back to)."""
    live, keep = run.promotion.live, run.spec.promotion.keep_previous_s
    kept = (keep > 0 and live is not None and live.row is not None and live.target is not None
            and live.target.release != run.deployed.release)
    run.promotion.kept_until = datetime.now(UTC) + timedelta(seconds=keep) if kept else None
    mappings.keep_previous(conn, run.spec.name, live.row.backend_url if kept and live and live.row else None,
                           run.promotion.kept_until)


def retire_expired(run: GateRun, kubeconfig: Path | None, context: str | None) -> None:
    """At a decision that did not promote: once the rollback window of the revision an earlier promotion kept has
    passed (by the registry's clock), clear it from the row (so no rollback can reach it) and then uninstall it."""
    live, registry = run.promotion.live, run.registry
    if live is None or live.previous_url is None or registry.dsn is None:
        return
    try:
        conn = db.connect(registry.dsn)
        try:
            with conn.transaction():
                cleared = conn.execute(
                    "UPDATE model_mappings SET previous_backend_url = NULL, previous_kept_until = NULL WHERE name = %s "
                    "AND previous_backend_url = %s AND previous_kept_until <= now() RETURNING name",
                    (run.spec.name, live.previous_url)).fetchone()
        finally:
            conn.close()
    except (psycopg.Error, GateError) as exc:
        run.decision.append(f"the revision kept for a rollback ({live.previous_url}) was not retired: "
                            f"{_first_line(exc, registry)}")
        return
    if cleared is not None:
        _retire(run, live.previous_url, kubeconfig, context, "its rollback window passed")


def switching(run: GateRun) -> datetime:
    """The moment just before the transaction that switches the row: no router can send to the candidate earlier."""
    return datetime.now(UTC)


def switched(run: GateRun, at: datetime, certification_id: int) -> None:
    """Note that the row now names this run's release (said in the report)."""
    run.promotion.switched_at = at
    run.promotion.live_after = run.deployed.url
    run.promotion.certification_id = certification_id


def _expected(run: GateRun) -> Expected | None:
    """What the router must answer: the candidate's own first drift answer (None: the identity checks did not run)."""
    if run.identity is None or not run.identity.answers:
        return None
    prompt, answer = run.identity.answers[0]
    return Expected(run.spec.name, run.deployed.url, prompt, answer, run.promotion.previous_answer)


def prove_through_router(run: GateRun, progress: Progress) -> bool:
    """Test via the API router after the switch. When it does not serve the candidate in time: PROMOTION FAILED and
    the row is switched back. Returns whether the caller may undo the candidate (False only while the row could not
    be switched back: the router may still send to it)."""
    promotion = run.promotion
    expected = _expected(run)
    if promotion.router_url is None:
        why = "no API router to test through: give --router-url (or VLLM_GATE_ROUTER_URL)"
    elif expected is None:
        why = "no answer of the candidate to compare the router's with (the identity checks did not run)"
    else:
        progress(f"vllm-gate: testing {run.spec.name} through {promotion.router_what or promotion.router_url}")
        try:
            promotion.router, shown = router.wait_serves_candidate(
                promotion.router_url, router.router_key(), expected, run.spec.identity.drift,
                run.spec.promotion.router_timeout_s, progress, promotion.router_what)
            if not shown:  # served by name, but which revision answered the router cannot say: not shown
                run.not_shown_after(promotion.router)
            return True
        except router.RouterFailed as exc:
            why = exc.summary
    promotion.router = f"not served from the candidate: {why}"
    run.fail_decision(f"PROMOTION FAILED: {why}")
    return switch_back(run)


def _first_line(exc: BaseException, registry: Registry) -> str:
    """An error's first line with the registry's password scrubbed."""
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    return db.scrub(first, registry.dsn) if registry.dsn else first


def switch_back(run: GateRun) -> bool:
    """Put the row back as it was before the switch (or remove it, if there was none) and record the certification
    as what the run now is (failed), in one transaction; return whether that was done. In place, the row stays
    disabled until the rollback is confirmed (``restore_rotation``)."""
    registry, live, promotion = run.registry, run.promotion.live, run.promotion
    assert registry.dsn is not None
    before = live.row if live is not None else None
    if before is not None and promotion.out_of_rotation is not None:
        before = before.model_copy(update={"enabled": False})
    try:
        conn = db.connect(registry.dsn)
        try:
            with conn.transaction():
                if before is not None and live is not None:
                    mappings.upsert(conn, before, certified_at=live.certified_at)
                    mappings.keep_previous(conn, run.spec.name, live.previous_url, live.previous_until)
                else:
                    conn.execute("DELETE FROM model_mappings WHERE name = %s", (run.spec.name,))
                if promotion.certification_id is not None:
                    revise(conn, promotion.certification_id, run.settle().record_as, run.summary())
        finally:
            conn.close()
    except (psycopg.Error, GateError) as exc:
        run.decision.append(f"ROW NOT SWITCHED BACK: {_first_line(exc, registry)}; the router may still send "
                            f"{run.spec.name} to {run.deployed.url}, so it is kept: switch the row back with "
                            f"ias-admin model update, then: helm uninstall {run.deployed.release} -n "
                            f"{run.deployed.namespace}")
        return False
    promotion.switched_at = None
    promotion.live_after = before.backend_url if before is not None and live and live.row.enabled else None
    run.decision.append(f"switched the row back: {run.spec.name} -> {before.backend_url}" if before is not None else
                        f"removed the row of {run.spec.name} this run had written (there was none before)")
    return True
