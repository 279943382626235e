"""Deploy a spec with Helm: namespace, HF token Secret, ``helm upgrade --install``, rollback."""

from __future__ import annotations

import base64
import contextlib
from dataclasses import dataclass
from pathlib import Path

import pyhelm3
from kubernetes import client
from kubernetes.client.rest import ApiException

from vllm_gate.cluster.kube import api_client
from vllm_gate.errors import GateError
from vllm_gate.render import helm_client, run_helm
from vllm_gate.spec import ModelSpec
from vllm_gate.tools import CHART_DIR
from vllm_gate.values import chart_values

HF_SECRET_NAME = "hf-token"  # noqa: S105  (a Secret's name, not a secret)
HF_SECRET_KEY = "token"  # noqa: S105
HELM_TIMEOUT = "10m"

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


def ensure_hf_secret(core: client.CoreV1Api, namespace: str, token: str | None, *, required: bool) -> str:
    """Create or update the HF token Secret from ``token``; return what was done (never the token).

    The chart only references this Secret (secretKeyRef), so the token is never a Helm value.
    """
    if token:
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": HF_SECRET_NAME, "labels": {"app.kubernetes.io/managed-by": "vllm-gate"}},
                "data": {HF_SECRET_KEY: base64.b64encode(token.encode()).decode()}}
        try:
            core.replace_namespaced_secret(HF_SECRET_NAME, namespace, body, _request_timeout=15)
            return f"updated Secret {namespace}/{HF_SECRET_NAME} from $HF_TOKEN"
        except ApiException as exc:
            if exc.status != 404:
                raise GateError(f"Secret {namespace}/{HF_SECRET_NAME}: HTTP {exc.status} {exc.reason}") from None
        core.create_namespaced_secret(namespace, body, _request_timeout=15)
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
    try:
        return run_helm(helm.get_current_revision(name, namespace=namespace), f"helm status {name}").revision
    except pyhelm3.errors.ReleaseNotFoundError:
        return None


def install_or_upgrade(spec: ModelSpec, kubeconfig: Path | None, context: str | None, *,
                       created_namespace: bool) -> Release:
    """``helm upgrade --install`` without --wait: the gate watches the rollout itself (rollout.py)."""
    helm = helm_client(kubeconfig, context)
    previous = current_revision(helm, spec.name, spec.namespace)

    async def run() -> tuple[int, str]:
        chart = await helm.get_chart(CHART_DIR)
        rev = await helm.install_or_upgrade_release(
            spec.name, chart, chart_values(spec), namespace=spec.namespace, create_namespace=False,
            timeout=HELM_TIMEOUT, wait=False)
        return rev.revision, chart.metadata.version

    try:
        revision, chart_version = run_helm(run(), f"helm upgrade --install {spec.name}")
    except pyhelm3.errors.Error as exc:
        failure = _helm_error(f"helm upgrade --install {spec.name} -n {spec.namespace}", exc)
        after = current_revision(helm, spec.name, spec.namespace)
        if after is not None and after != previous:
            failure.release = Release(spec.name, spec.namespace, after, previous, "", created_namespace)
        raise failure from None
    return Release(spec.name, spec.namespace, revision, previous, chart_version, created_namespace)


def roll_back(release: Release, kubeconfig: Path | None, context: str | None) -> str:
    """Undo the gate's change: uninstall a fresh install, roll an upgrade back; return what was done."""
    helm = helm_client(kubeconfig, context)
    try:
        if release.previous_revision is None:
            run_helm(helm.uninstall_release(release.name, namespace=release.namespace, wait=True,
                                            timeout=HELM_TIMEOUT), f"helm uninstall {release.name}")
            if release.created_namespace:  # the gate made it (with the HF token Secret): leave nothing behind
                delete_namespace(client.CoreV1Api(api_client(kubeconfig, context)), release.namespace)
                return f"uninstalled {release.namespace}/{release.name} and its namespace (a fresh install)"
            return f"uninstalled {release.namespace}/{release.name} (it was a fresh install)"
        what = f"helm rollback {release.name}"
        current = run_helm(helm.get_current_revision(release.name, namespace=release.namespace), what)
        run_helm(current.release.rollback(release.previous_revision, wait=False), what)
        return f"rolled {release.namespace}/{release.name} back to revision {release.previous_revision}"
    except pyhelm3.errors.Error as exc:
        raise _helm_error(f"rollback of {release.namespace}/{release.name}", exc) from None


def delete_namespace(core: client.CoreV1Api, name: str) -> None:
    with contextlib.suppress(ApiException):
        core.delete_namespace(name, _request_timeout=15)
