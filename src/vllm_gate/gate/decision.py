"""The decision at the end of a gate run: undo anything not certified, then register it or record why not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vllm_gate.base.errors import GateError
from vllm_gate.deploy.release import (
    UNCONFIRMED,
    Release,
    current_revision,
    delete_cache_claims,
    remove_created_namespace,
    roll_back,
)
from vllm_gate.deploy.render import helm_client
from vllm_gate.gate.promotion import (
    drain,
    prove_through_router,
    record_previous,
    restore_rotation,
    retire_expired,
    retire_previous,
    switched,
    switching,
)
from vllm_gate.gate.run import NOTHING_DEPLOYED, GateRun
from vllm_gate.registry import db
from vllm_gate.registry.baselines import record_baseline
from vllm_gate.registry.certify import record_outcome, record_undone_pass, register_certified
from vllm_gate.registry.role import mark_role
from vllm_gate.verdict.contract import Kind, Mode


def _left_behind(run: GateRun) -> Release | None:
    """A revision helm made that the gate never heard of (interrupted or failed mid-install), else None.

    Raises GateError when helm cannot say: the undo must not then guess that nothing was deployed.
    """
    attempt = run.attempt
    if attempt is None:
        return None
    revision = current_revision(helm_client(run.kubeconfig, run.context), attempt.name, attempt.namespace)
    if revision is None or revision == attempt.previous_revision:
        return None
    return Release(attempt.name, attempt.namespace, revision, attempt.previous_revision, "",
                   attempt.created_namespace)


def _undo(run: GateRun, keep_on_failure: bool, kubeconfig: Path | None, context: str | None,
          progress: Callable[[str], None]) -> bool:
    """Undo a release that does not promote; return whether nothing of this run's is left serving (undone and
    confirmed, or nothing deployed)."""
    try:
        release = run.release or _left_behind(run)
    except GateError as exc:
        run.fail_decision(f"UNDO NOT CONFIRMED: could not ask helm what this run left behind: {exc.summary}")
        return False
    if release is None:
        attempt = run.attempt
        if attempt and attempt.created_namespace and not keep_on_failure:
            # Nothing deployed, but the namespace (and the HF token Secret in it) was the gate's doing.
            gone = remove_created_namespace(kubeconfig, context, attempt.namespace, progress=progress)
            run.decision.append(f"nothing deployed; {gone}")
        else:
            run.decision.append(NOTHING_DEPLOYED)
        return True
    if run.promotes():
        return False
    if keep_on_failure:
        run.decision.append(f"kept the release {release.namespace}/{release.name} (--keep-on-failure)")
        return False
    try:
        # The previous revision's pods start from scratch (download + load): give them the spec's budget.
        undone = roll_back(release, kubeconfig, context, timeout_s=run.spec.startup.timeout_s, progress=progress)
        if run.promotion.mode == "candidate" and release.previous_revision is None:  # its cache is never reused
            undone += delete_cache_claims(release.name, release.namespace, kubeconfig, context)
        run.decision.append(undone)
    except GateError as exc:
        run.fail_decision(f"ROLLBACK FAILED: {exc.summary}")
        return False
    return UNCONFIRMED not in undone


def _write_registry(run: GateRun) -> None:
    verdict, registry = run.settle(), run.registry
    if verdict.mode is Mode.ENDPOINT:
        run.decision.append("not registered: an --endpoint-url run never registers")
        return
    if run.selected == 0:
        run.decision.append(f"not registered, nothing recorded: no check of {run.spec.name} was selected")
        return
    if registry.untouched:
        run.decision.append(f"the registry you gave ({registry.untouched}) was not touched: a rehearsal "
                            "writes only the rehearsal registry")
    if verdict.mode is Mode.REHEARSAL and not registry.rehearsal and registry.dsn is not None:
        run.decision.append(f"not registered, nothing written to {registry.description}: a rehearsal "
                            "never writes the registry you gave")
        return
    if registry.dsn is None:
        run.decision.append(f"not registered: {registry.description}")
        return
    try:
        conn = db.connect(registry.dsn)
        try:
            cert = run.certification()
            if verdict.kind is Kind.PASSED:
                promotes, at = run.promotes(), switching(run)
                with conn.transaction():  # the mapping, the certification and its baseline: all or nothing
                    if not registry.rehearsal:
                        mark_role(conn, "production")  # refuses the rehearsal registry; marks an unmarked one
                    if promotes:
                        cert_id = register_certified(conn, run.mapping(), cert)
                        record_previous(conn, run)
                    else:  # a rehearsal no router reads this registry for: undone, so its row would name nothing
                        cert_id = record_undone_pass(conn, cert)
                    if run.identity is not None:
                        record_baseline(conn, cert_id, run.spec.name, run.identity.canary_prompt_tokens,
                                        run.identity.answers, fingerprint=run.identity.fingerprint)
                if promotes:
                    switched(run, at, cert_id)
                    run.decision.append(f"registered {run.spec.name} -> {run.deployed.url} in "
                                        f"{registry.description} ({cert.verdict} certification {cert_id})")
                else:
                    run.decision.append(f"not registered (undone: no API-router stand-in reads "
                                        f"{registry.description} here); {cert.verdict} certification {cert_id} "
                                        "recorded there")
                if run.identity is not None:
                    run.decision.append(f"identity baseline stored with certification {cert_id}: canary prompt "
                                        f"tokens {run.identity.canary_prompt_tokens}, "
                                        f"{len(run.identity.answers)} answers")
            else:
                with conn.transaction():
                    if not registry.rehearsal:
                        mark_role(conn, "production")
                    cert_id = record_outcome(conn, cert)
                run.decision.append(f"not registered; {cert.verdict} certification {cert_id} recorded in "
                                    f"{registry.description}")
                if run.identity is not None:
                    run.decision.append("no identity baseline stored: only a passed run's measurements become one")
        finally:
            conn.close()
    except Exception as exc:  # the release decision stands; the registry problem is reported, not hidden
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        run.fail_decision(f"REGISTRATION FAILED: {db.scrub(first, registry.dsn)}")


def finish(run: GateRun, *, keep_on_failure: bool, progress: Callable[[str], None] = lambda _line: None) -> None:
    """Settle the verdict, undo anything that does not promote (unless kept), then register or record; a
    certified run that cannot register is not certified after all (``GateRun.fail_decision``) and is undone then.
    A promotion then retires the previous revision (gate/promotion.py); anything else puts a model this run took
    out of rotation back in.

    The undo acts on the run's own cluster (``run.kubeconfig``/``run.context``). Appends what actually
    happened to ``run.decision``.
    """
    promotes = run.promotes()
    undone = _undo(run, keep_on_failure, run.kubeconfig, run.context, progress)
    _write_registry(run)
    if promotes and not run.promotes() and run.release is not None:  # it could not register: undone too
        undone = _undo(run, keep_on_failure, run.kubeconfig, run.context, progress)
    if run.promotes() and run.promotion.switched_at is not None and run.release is not None:
        if not prove_through_router(run, progress):
            return  # PROMOTION FAILED and the row still names the candidate: it is kept (said in the decision)
        if not run.promotes():  # PROMOTION FAILED: the row is switched back; the router may have sent to it
            drain(run.deployed, run.spec.promotion.drain_s, progress)
            undone = _undo(run, keep_on_failure, run.kubeconfig, run.context, progress)
    if run.promotes():
        retire_previous(run, run.kubeconfig, run.context, progress)
    else:
        restore_rotation(run, undone)
        if _wrote_registry(run):
            retire_expired(run, run.kubeconfig, run.context)


def _wrote_registry(run: GateRun) -> bool:
    """Whether the decision wrote this run's registry (never one a rehearsal was given, nor for --endpoint-url, nor
    when none of its checks was selected)."""
    verdict, registry = run.settle(), run.registry
    return (registry.dsn is not None and verdict.mode is not Mode.ENDPOINT and run.selected != 0
            and (verdict.mode is not Mode.REHEARSAL or registry.rehearsal))
