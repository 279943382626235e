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
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from kubernetes import client

from vllm_gate.base.errors import GateError
from vllm_gate.deploy.preflight import Decision, PreflightFailed, check_pool
from vllm_gate.deploy.release import uninstall
from vllm_gate.deploy.target import Target, candidate, in_place, revision_id, target_of_url
from vllm_gate.gate.run import GateRun, Live, Registry
from vllm_gate.registry import db, mappings
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
            row = Mapping.model_validate(mappings.from_row(mappings.get(conn, spec.name)))
        finally:
            conn.close()
    except MappingNotFound:
        return Live(None, None, f"no row of {spec.name} in {registry.description}")
    except psycopg.Error as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise GateError(f"reading {spec.name}'s row from {registry.description}: {db.scrub(first, registry.dsn)}"
                        ) from None
    target = target_of_url(core, row.backend_url, spec.namespace)
    state = "" if row.enabled else " (disabled)"
    if target is None:
        return Live(row, None, f"row {spec.name}{state} -> {row.backend_url}, which names no release's Service in "
                               "this cluster")
    return Live(row, target, f"row {spec.name}{state} -> {row.backend_url}, served by release {target.release}")


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
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise GateError(f"taking {run.spec.name} out of rotation in {registry.description}: "
                        f"{db.scrub(first, registry.dsn)}") from None
    run.promotion.out_of_rotation = registry
    progress(f"vllm-gate: {run.spec.name} is out of rotation during this run (its row in {registry.description} "
             "is disabled until the decision)")


def restore_rotation(run: GateRun) -> None:
    """Put a row this run disabled back in rotation (any outcome but a promotion, which enables it itself)."""
    registry = run.promotion.out_of_rotation
    if registry is None or registry.dsn is None:
        return
    try:
        _set_enabled(registry, run.spec.name, True)
    except (psycopg.Error, GateError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        run.fail_decision(f"ROTATION NOT RESTORED: {run.spec.name} stays disabled in {registry.description}: "
                          f"{db.scrub(first, registry.dsn)}; enable it with: ias-admin model enable {run.spec.name}")
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
    """After the row switched to the candidate: drain the previous revision, then uninstall it."""
    live, deployed = run.promotion.live, run.deployed
    if live is None or live.target is None or live.target.release == deployed.release:
        return
    if run.promotion.switched_at is None:
        run.decision.append(f"kept the previous revision {live.target.release}: the row was not switched away "
                            "from it")
        return
    drain(live.target, run.spec.promotion.drain_s, progress)
    try:
        run.decision.append(uninstall(live.target.release, live.target.namespace, kubeconfig, context,
                                      why=f"drained {run.spec.promotion.drain_s} s after the switch"))
    except GateError as exc:
        run.decision.append(f"PREVIOUS REVISION NOT RETIRED: {exc.summary}; uninstall it with: helm uninstall "
                            f"{live.target.release} -n {live.target.namespace}")


def switched(run: GateRun) -> None:
    """Note that the row now names this run's release (said in the report)."""
    run.promotion.switched_at = datetime.now(UTC)
    run.promotion.live_after = run.deployed.url
