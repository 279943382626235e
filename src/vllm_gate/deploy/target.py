"""Which Helm release and Service a run deploys and checks: a candidate beside the live revision, or the live one.

A candidate is its own release and Service (``<model>-<revision id>``), so nothing the router uses points at it
until it is certified and the registry's row is switched to it. The live revision is the release whose Service
the row's ``backend_url`` names.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from kubernetes import client
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from vllm_gate.base.errors import GateError
from vllm_gate.deploy.values import release_fullname
from vllm_gate.spec import ModelSpec

INSTANCE_LABEL = "app.kubernetes.io/instance"
RELEASE_MAX = 53  # Helm's limit on a release name
SERVICE_MAX = 63  # a DNS-1035 label
REVISION_ID_BYTES = 3  # six hex digits: a revision's name stays short, and two runs of a model never meet


@dataclass(frozen=True)
class Target:
    """A release of the model: its Helm release, namespace and the Service the router would call."""

    release: str
    namespace: str
    service: str
    port: int

    @property
    def url(self) -> str:
        """The in-cluster URL a router calls, as ``model_mappings.backend_url`` holds it."""
        return f"http://{self.service}.{self.namespace}.svc.cluster.local:{self.port}"

    @property
    def selector(self) -> str:
        """Its pods (and Service, PDB, NetworkPolicy), by the release label the chart sets."""
        return f"{INSTANCE_LABEL}={self.release}"

    @property
    def fullname(self) -> str:
        """The chart's ``vllm.fullname``: Deployment, NetworkPolicy and PDB name."""
        return release_fullname(self.release)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.release} (Service {self.service})"


def in_place(spec: ModelSpec) -> Target:
    """The release the spec names itself (``name``, ``service.name``): what an in-place run upgrades."""
    return Target(spec.name, spec.namespace, spec.service.name, spec.service.port)


def revision_id() -> str:
    """A new candidate's short id (random: the same spec certified again is a new revision too)."""
    return secrets.token_hex(REVISION_ID_BYTES)


def candidate(spec: ModelSpec, revision: str) -> Target:
    """The candidate release ``<model>-<revision>`` and its Service ``<service.name>-<revision>``."""
    suffix = f"-{revision}"
    release = spec.name[:RELEASE_MAX - len(suffix)].rstrip("-") + suffix
    service = spec.service.name[:SERVICE_MAX - len(suffix)].rstrip("-") + suffix
    return Target(release, spec.namespace, service, spec.service.port)


def service_of_url(url: str, namespace: str) -> tuple[str, str, int] | None:
    """(Service, namespace, port) when ``url`` names a Service by its cluster DNS name, else None."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    labels = host.split(".")
    if parts.port is None or not labels[0] or (len(labels) > 2 and labels[2] != "svc"):
        return None
    return labels[0], labels[1] if len(labels) > 1 else namespace, parts.port


def target_of_url(core: client.CoreV1Api, url: str, namespace: str) -> Target | None:
    """The release behind ``url``: its Service's release label; None when the URL names no Service here."""
    found = service_of_url(url, namespace)
    if found is None:
        return None
    service, service_namespace, port = found
    try:
        svc = core.read_namespaced_service(service, service_namespace, _request_timeout=15)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise GateError(f"Service {service_namespace}/{service}: HTTP {exc.status} {exc.reason}") from None
    except HTTPError as exc:
        raise GateError(f"Service {service_namespace}/{service}: {' '.join(str(exc).split())[:200]}") from None
    release = (svc.metadata.labels or {}).get(INSTANCE_LABEL)
    if release is None:
        return None
    return Target(release, service_namespace, service, port)
