"""Deploy a spec with Helm: namespace, HF token Secret, ``helm upgrade --install``, rollback."""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyhelm3
from kubernetes import client
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from vllm_gate.base.errors import GateError
from vllm_gate.base.kube import api_client
from vllm_gate.base.secret import Secret
from vllm_gate.base.tools import CHART_DIR, require_tool
from vllm_gate.deploy.render import helm_client, run_helm
from vllm_gate.deploy.rollout import RolloutTarget, wait_ready
from vllm_gate.deploy.target import Target
from vllm_gate.deploy.values import Strategy, chart_values, release_fullname
from vllm_gate.spec import ModelSpec

HF_SECRET_NAME = "hf-token"  # noqa: S105  (a Secret's name, not a secret)
HF_SECRET_KEY = "token"  # noqa: S105
HELM_TIMEOUT = "10m"
ROLLBACK_READY_TIMEOUT_S = 600.0  # the previous revision's pods start afresh
HELM_TEST_TIMEOUT_S = 300.0
NAMESPACE_GONE_TIMEOUT_S = 120.0
POLL_S = 1.0
PROGRESS_EVERY_S = 10  # a wait says what it waits for at least this often
UNCONFIRMED = "could not confirm"  # in what roll_back says when the previous revision was not seen Ready
INSTANCE_LABEL = "app.kubernetes.io/instance"
HASH_LABEL = "pod-template-hash"

Progress = Callable[[str], None]


def _quiet(_message: str) -> None:
    """Progress callback that says nothing."""


class DeployFailed(GateError):
    """helm could not install, upgrade, roll back or uninstall the release."""

    release: Release | None = None  # set when helm left a new revision behind that must be undone


def _helm_error(what: str, exc: pyhelm3.errors.Error) -> DeployFailed:
    stderr = exc.stderr.decode(errors="replace").strip()
    last = stderr.splitlines()[-1] if stderr else f"exit status {exc.returncode}"
    return DeployFailed(f"{what}: {last}", stderr)


@dataclass
class Release:
    """A release the gate installed or upgraded, and what to return to if it fails."""

    name: str
    namespace: str
    revision: int
    previous_revision: int | None  # None: a fresh install, so failure means uninstall
    chart_version: str
    created_namespace: bool


def ensure_namespace(core: client.CoreV1Api, name: str) -> bool:
    """Create namespace ``name`` unless it exists; return whether it was created."""
    try:
        core.read_namespace(name, _request_timeout=15)
        return False
    except ApiException as exc:
        if exc.status != 404:
            raise
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                          _request_timeout=15)
    return True


def _hf_secret_body(token: Secret) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": HF_SECRET_NAME, "labels": {"app.kubernetes.io/managed-by": "vllm-gate"}},
            "data": {HF_SECRET_KEY: base64.b64encode(token.reveal().encode()).decode()}}


def ensure_hf_secret(core: client.CoreV1Api, namespace: str, token: Secret | None, *, required: bool) -> str:
    """Create or update the HF token Secret from ``token``; return what was done (never the token).

    The chart only references this Secret (secretKeyRef), so the token is never a Helm value. The
    Secret's body is built inside each call, so no frame of this function holds the token's encoding.
    """
    if token:
        try:
            core.replace_namespaced_secret(HF_SECRET_NAME, namespace, _hf_secret_body(token), _request_timeout=15)
            return f"updated Secret {namespace}/{HF_SECRET_NAME} from $HF_TOKEN"
        except ApiException as exc:
            if exc.status != 404:
                raise GateError(f"Secret {namespace}/{HF_SECRET_NAME}: HTTP {exc.status} {exc.reason}") from None
        try:
            core.create_namespaced_secret(namespace, _hf_secret_body(token), _request_timeout=15)
        except ApiException as exc:
            raise GateError(f"Secret {namespace}/{HF_SECRET_NAME}: HTTP {exc.status} {exc.reason}") from None
        return f"created Secret {namespace}/{HF_SECRET_NAME} from $HF_TOKEN"
    try:
        core.read_namespaced_secret(HF_SECRET_NAME, namespace, _request_timeout=15)
        return f"using existing Secret {namespace}/{HF_SECRET_NAME}"
    except ApiException as exc:
        if exc.status != 404:
            raise GateError(f"Secret {namespace}/{HF_SECRET_NAME}: HTTP {exc.status} {exc.reason}") from None
    if required:
        raise GateError(f"no HF token: set $HF_TOKEN or create Secret {namespace}/{HF_SECRET_NAME} "
                        f"(key {HF_SECRET_KEY})")
    return "no HF token needed (engine: sim)"


def current_revision(helm: pyhelm3.Client, name: str, namespace: str) -> int | None:
    """The release's current revision, None when there is no such release; DeployFailed when helm cannot say."""
    try:
        return run_helm(helm.get_current_revision(name, namespace=namespace), f"helm status {name}").revision
    except pyhelm3.errors.ReleaseNotFoundError:
        return None
    except pyhelm3.errors.Error as exc:
        raise _helm_error(f"helm status {name} -n {namespace}", exc) from None


def install_or_upgrade(spec: ModelSpec, target: Target, kubeconfig: Path | None, context: str | None, *,
                       created_namespace: bool, strategy: Strategy = "Recreate",
                       engine: Mapping[str, Any] | None = None) -> Release:
    """``helm upgrade --install`` of ``target`` without --wait: the gate watches the rollout itself (rollout.py).

    ``strategy`` is the Deployment strategy the preflight decided (vllm_gate.deploy.preflight); ``engine`` the local
    real engine's values (chart_values).
    """
    helm = helm_client(kubeconfig, context)
    name, namespace = target.release, target.namespace
    previous = current_revision(helm, name, namespace)

    async def run() -> tuple[int, str]:
        chart = await helm.get_chart(CHART_DIR)
        rev = await helm.install_or_upgrade_release(
            name, chart, chart_values(spec, strategy, target.service, engine=engine), namespace=namespace,
            create_namespace=False,
            timeout=HELM_TIMEOUT, wait=False)
        return rev.revision, chart.metadata.version

    try:
        revision, chart_version = run_helm(run(), f"helm upgrade --install {name}")
    except pyhelm3.errors.Error as exc:
        failure = _helm_error(f"helm upgrade --install {name} -n {namespace}", exc)
        after = current_revision(helm, name, namespace)
        if after is not None and after != previous:
            failure.release = Release(name, namespace, after, previous, "", created_namespace)
        raise failure from None
    return Release(name, namespace, revision, previous, chart_version, created_namespace)


def helm_test(release: Release, kubeconfig: Path | None, context: str | None,
              timeout_s: float = HELM_TEST_TIMEOUT_S) -> str:
    """Run the chart's ``helm test`` hook (its pod calls the Service); raise DeployFailed with helm's reason."""
    # No --logs: with the hook-succeeded delete policy some helm versions fail fetching a deleted pod's log
    # (helm/helm#9098); a failed test pod is kept, and its log is read here instead.
    cmd = [str(require_tool("helm")), "test", release.name, "-n", release.namespace, "--timeout", f"{timeout_s:.0f}s"]
    cmd += ["--kubeconfig", str(kubeconfig)] if kubeconfig else []
    cmd += ["--kube-context", context] if context else []
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s + 60, check=False)
    except subprocess.TimeoutExpired:
        raise DeployFailed(f"helm test {release.name}: no answer within {timeout_s + 60:.0f} s") from None
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        lines = [ln for ln in output.splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit status {proc.returncode}"
        raise DeployFailed(f"helm test {release.name} -n {release.namespace}: {last}",
                           f"{output}\n{_test_pod_log(release, kubeconfig, context)}")
    return f"helm test {release.name}: passed"


def _test_pod_log(release: Release, kubeconfig: Path | None, context: str | None) -> str:
    pod = f"{release_fullname(release.name)}-test-health"
    try:
        log = client.CoreV1Api(api_client(kubeconfig, context)).read_namespaced_pod_log(
            pod, release.namespace, tail_lines=40, _request_timeout=10)
    except (ApiException, HTTPError) as exc:
        return f"test pod {pod}: no log ({_api_reason(exc)})"
    return f"test pod {pod} log tail:\n{log}"


def roll_back(release: Release, kubeconfig: Path | None, context: str | None, *,
              timeout_s: float = ROLLBACK_READY_TIMEOUT_S, progress: Progress = _quiet) -> str:
    """Undo the gate's change and return what happened: uninstall a fresh install, roll an upgrade back.

    A rollback waits up to ``timeout_s`` for the previous revision's pods to be Ready again; an
    uninstall waits up to min(``timeout_s``, NAMESPACE_GONE_TIMEOUT_S) for a namespace it deletes.
    """
    helm = helm_client(kubeconfig, context)
    where = f"{release.namespace}/{release.name}"
    try:
        if release.previous_revision is None:
            run_helm(helm.uninstall_release(release.name, namespace=release.namespace, wait=True,
                                            timeout=HELM_TIMEOUT), f"helm uninstall {release.name}", progress)
            if not release.created_namespace:
                return f"uninstalled {where} (it was a fresh install)"
            # The gate made the namespace (with the HF token Secret): leave nothing behind, but the weights.
            gone = remove_created_namespace(kubeconfig, context, release.namespace,
                                            min(timeout_s, NAMESPACE_GONE_TIMEOUT_S), progress)
            return f"uninstalled {where} (a fresh install); {gone}"
        what = f"helm rollback {release.name}"
        current = run_helm(helm.get_current_revision(release.name, namespace=release.namespace), what)
        run_helm(current.release.rollback(release.previous_revision, wait=False), what)
    except pyhelm3.errors.Error as exc:
        raise _helm_error(f"rollback of {where}", exc) from None
    rolled = f"rolled {where} back to revision {release.previous_revision}"
    started = time.monotonic()
    try:
        api = api_client(kubeconfig, context)
        deployment = release_fullname(release.name)
        selector = revision_selector(api, release.namespace, deployment, release.name, timeout_s)
        remaining = max(1.0, timeout_s - (time.monotonic() - started))
        wait_ready(api, RolloutTarget(release.namespace, deployment, selector), remaining, progress)
    except GateError as exc:
        return f"{rolled}, but {UNCONFIRMED} it is Ready: {exc.summary}"
    except (ApiException, HTTPError) as exc:
        return f"{rolled}, but {UNCONFIRMED} it is Ready: {_api_reason(exc)}"
    return f"{rolled}; its pods are Ready again ({time.monotonic() - started:.0f} s)"


def uninstall(name: str, namespace: str, kubeconfig: Path | None, context: str | None, *, why: str,
              progress: Progress = _quiet) -> str:
    """Uninstall release ``name`` (a retired revision) and the model cache claim Helm keeps for it; say so."""
    helm = helm_client(kubeconfig, context)
    try:
        run_helm(helm.uninstall_release(name, namespace=namespace, wait=True, timeout=HELM_TIMEOUT),
                 f"helm uninstall {name}", progress)
    except pyhelm3.errors.Error as exc:
        raise _helm_error(f"helm uninstall {name} -n {namespace}", exc) from None
    claims = delete_cache_claims(name, namespace, kubeconfig, context)
    return f"uninstalled the previous revision {namespace}/{name} ({why}){claims}"


def delete_cache_claims(name: str, namespace: str, kubeconfig: Path | None, context: str | None) -> str:
    """Delete the model cache claim Helm kept for release ``name``; return what was done ("" when it had none).

    Each revision is its own release with its own claim (charts/vllm ``vllm.cacheClaimName``): an uninstalled
    revision's weights are never mounted again. An existing claim the user named is never the release's.
    """
    core = client.CoreV1Api(api_client(kubeconfig, context))
    done = ""
    try:
        claims = core.list_namespaced_persistent_volume_claim(
            namespace, label_selector=f"{INSTANCE_LABEL}={name}", _request_timeout=15).items
        for claim in claims:
            core.delete_namespaced_persistent_volume_claim(claim.metadata.name, namespace, _request_timeout=15)
            done += f"; deleted its model cache claim {claim.metadata.name}"
    except (ApiException, HTTPError) as exc:
        done += f"; its model cache claim may remain: {_api_reason(exc)}"
    return done


def revision_selector(api: client.ApiClient, namespace: str, deployment: str, release: str,
                      timeout_s: float) -> str:
    """Select the pods of the Deployment's current pod template only.

    Right after a rollback the failed revision's pods (Unschedulable, crashing) still exist for a
    moment; judged by the release selector alone they would fail the wait for the revision that
    replaces them. The current template's ReplicaSet is found the way the deployment controller
    finds it: its template equals the Deployment's, the pod-template-hash label aside.
    """
    apps = client.AppsV1Api(api)
    deadline = time.monotonic() + timeout_s
    while True:
        dep = apps.read_namespaced_deployment(deployment, namespace, _request_timeout=15)
        if (dep.status.observed_generation or 0) >= (dep.metadata.generation or 0):
            wanted = _template(api, dep.spec.template)
            for rs in apps.list_namespaced_replica_set(namespace, label_selector=f"{INSTANCE_LABEL}={release}",
                                                       _request_timeout=15).items:
                owned = any(ref.uid == dep.metadata.uid for ref in rs.metadata.owner_references or [])
                if owned and _template(api, rs.spec.template) == wanted:
                    return f"{INSTANCE_LABEL}={release},{HASH_LABEL}={rs.metadata.labels[HASH_LABEL]}"
        if time.monotonic() >= deadline:
            raise GateError(f"deployment {namespace}/{deployment}: no ReplicaSet for its pod template "
                            f"within {timeout_s:.0f} s")
        time.sleep(POLL_S)


def _template(api: client.ApiClient, template: client.V1PodTemplateSpec) -> dict[str, Any]:
    data: dict[str, Any] = api.sanitize_for_serialization(template)
    data.get("metadata", {}).get("labels", {}).pop(HASH_LABEL, None)
    return data


def remove_created_namespace(kubeconfig: Path | None, context: str | None, namespace: str,
                             timeout_s: float = NAMESPACE_GONE_TIMEOUT_S, progress: Progress = _quiet) -> str:
    """Delete a namespace the gate created, unless it holds a model cache claim Helm keeps; say what happened."""
    core = client.CoreV1Api(api_client(kubeconfig, context))
    try:
        claims = core.list_namespaced_persistent_volume_claim(namespace, _request_timeout=15).items
    except (ApiException, HTTPError) as exc:
        return f"kept namespace {namespace}: could not list its claims ({_api_reason(exc)})"
    kept = sorted(c.metadata.name for c in claims
                  if (c.metadata.annotations or {}).get("helm.sh/resource-policy") == "keep")
    if kept:
        return (f"kept namespace {namespace}: it holds the model cache claim {', '.join(kept)} "
                "(helm.sh/resource-policy: keep)")
    return delete_namespace(core, namespace, timeout_s, progress)


def delete_namespace(core: client.CoreV1Api, name: str, timeout_s: float = NAMESPACE_GONE_TIMEOUT_S,
                     progress: Progress = _quiet) -> str:
    """Delete namespace ``name``, wait up to ``timeout_s`` until it is gone, saying every PROGRESS_EVERY_S what it
    waits for; return what happened."""
    started = time.monotonic()
    # Pods still shutting down (preStop, drain) first: the namespace controller, finding one, re-checks only after
    # the pods' whole grace period (130 s for the chart), long after they are gone.
    _wait_pods_gone(core, name, started + timeout_s / 2, progress)
    try:
        core.delete_namespace(name, _request_timeout=15)
    except (ApiException, HTTPError) as exc:
        if getattr(exc, "status", None) == 404:
            return f"namespace {name} was already gone"
        return f"could not delete namespace {name}: {_api_reason(exc)}"
    said = time.monotonic()
    while True:
        try:
            namespace = core.read_namespace(name, _request_timeout=15)
        except (ApiException, HTTPError) as exc:
            if getattr(exc, "status", None) == 404:
                return f"deleted namespace {name} (gone after {time.monotonic() - started:.0f} s)"
            return f"deleted namespace {name}, but could not confirm it is gone: {_api_reason(exc)}"
        if time.monotonic() - started >= timeout_s:
            # The namespace controller says what holds it (content left, finalizers remaining).
            holding = [c.message for c in namespace.status.conditions or [] if c.status == "True" and c.message]
            why = f": {'; '.join(holding)}" if holding else ""
            return f"namespace {name} still {namespace.status.phase} after {timeout_s:.0f} s{why}"
        if time.monotonic() - said >= PROGRESS_EVERY_S:
            said = time.monotonic()
            progress(f"waiting for namespace {name} to be gone ({said - started:.0f} of {timeout_s:.0f} s)")
        time.sleep(POLL_S)


def _wait_pods_gone(core: client.CoreV1Api, namespace: str, deadline: float, progress: Progress) -> None:
    """Wait until ``namespace`` holds no pod, or ``deadline``; a pod that stays is the namespace controller's."""
    started = said = time.monotonic()
    while time.monotonic() < deadline:
        try:
            pods = core.list_namespaced_pod(namespace, _request_timeout=15).items
        except (ApiException, HTTPError):
            return  # delete_namespace says what the API answers
        if not pods:
            return
        if time.monotonic() - said >= PROGRESS_EVERY_S:
            said = time.monotonic()
            progress(f"waiting for {len(pods)} pod(s) in {namespace} to finish shutting down "
                     f"({said - started:.0f} s; they drain first)")
        time.sleep(POLL_S)


def _api_reason(exc: ApiException | HTTPError) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return " ".join(str(exc).split())[:200]
