"""The local cluster's custom metrics API: a real prometheus-adapter (built from the Go module proxy) reading the
cluster's Prometheus with the rules the project ships for platforms (charts/prometheus-adapter-values.yaml), and
registered with the API server's aggregation layer as ``v1beta1.custom.metrics.k8s.io``, so the real HPA controller
in the real kube-controller-manager reads a model's scaling metric through it, as on a platform.

It runs on this machine beside the control plane (as kwokctl runs the API server), listening on the host end of the
real node's link; the APIService names a selectorless Service whose Endpoints are that address, and the API server
(``--enable-aggregator-routing``) dials it there. Its serving certificate is the cluster's own (kwokctl signs one
certificate for every component; the Service's name is among its SANs), so the APIService verifies it against the
cluster CA rather than skipping TLS verification.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from vllm_gate.base.errors import ClusterError
from vllm_gate.base.lifecycle import Started
from vllm_gate.base.ports import free_port
from vllm_gate.base.tools import PROJECT_ROOT, require_tool
from vllm_gate.base.waiting import wait_until
from vllm_gate.cluster.children import record_child
from vllm_gate.cluster.dataplane.sim import start_process, stop_process

ADAPTER_VALUES = PROJECT_ROOT / "charts" / "prometheus-adapter-values.yaml"
NAMESPACE, NAME = "custom-metrics", "prometheus-adapter"
SERVICE_DNS_NAME = f"{NAME}.{NAMESPACE}.svc"  # what the aggregator verifies the adapter's certificate for
GROUP, VERSION = "custom.metrics.k8s.io", "v1beta1"
APISERVICE = f"{VERSION}.{GROUP}"
# The adapter lists Prometheus' series at start and then this often: a model pod started after a listing has no
# custom metric until the next one (platform charts default to 1 minute; a local rehearsal cannot wait that long).
RELIST_S = 10
AVAILABLE_TIMEOUT_S = 60  # its first Prometheus listing and the aggregator's first probe, on a busy machine
REQUEST_TIMEOUT_S = 15
LOG_TAIL_LINES = 5
PROXY_CLIENT_NAME = "kwok-admin"  # the common name of kwokctl's admin certificate (pki.DefaultUser)

Progress = Callable[[str], None]


def adapter_rules() -> list[dict[str, Any]]:
    """The custom rules the project ships for platforms' prometheus-adapter."""
    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    return list(values["rules"]["custom"])


def apiserver_args(pki: Path) -> list[dict[str, str]]:
    """The API server's aggregation settings (kwokctl extraArgs): it dials an APIService's endpoints directly (this
    machine is outside the Service network) and vouches for the requesting user in request headers, signed with its
    proxy client certificate (kwokctl's admin certificate, issued by the cluster CA)."""
    return [{"key": "enable-aggregator-routing", "value": "true"},
            {"key": "requestheader-client-ca-file", "value": str(pki / "ca.crt")},
            # The same CA signs every client: only the proxy's certificate may assert a user in headers.
            {"key": "requestheader-allowed-names", "value": PROXY_CLIENT_NAME},
            {"key": "requestheader-username-headers", "value": "X-Remote-User"},
            {"key": "requestheader-group-headers", "value": "X-Remote-Group"},
            {"key": "requestheader-extra-headers-prefix", "value": "X-Remote-Extra-"}]


def _objects(address: str, port: int, ca_bundle: bytes) -> list[tuple[str, dict[str, Any]]]:
    meta = {"name": NAME, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/name": NAME}}
    return [
        ("Namespace", {"metadata": {"name": NAMESPACE}}),
        ("Service", {"metadata": meta, "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]}}),
        ("Endpoints", {"metadata": meta, "subsets": [{"addresses": [{"ip": address}],
                                                      "ports": [{"name": "https", "port": port}]}]}),
        ("APIService", {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                        "metadata": {"name": APISERVICE, "labels": meta["labels"]},
                        "spec": {"group": GROUP, "version": VERSION, "groupPriorityMinimum": 100,
                                 "versionPriority": 100, "caBundle": base64.b64encode(ca_bundle).decode(),
                                 "service": {"namespace": NAMESPACE, "name": NAME, "port": 443}}}),
    ]


def _create(api: client.ApiClient, kind: str, body: dict[str, Any]) -> None:
    core, timeout = client.CoreV1Api(api), {"_request_timeout": REQUEST_TIMEOUT_S}
    create = {
        "Namespace": lambda: core.create_namespace(body, **timeout),
        "Service": lambda: core.create_namespaced_service(NAMESPACE, body, **timeout),
        "Endpoints": lambda: core.create_namespaced_endpoints(NAMESPACE, body, **timeout),
        "APIService": lambda: client.ApiregistrationV1Api(api).create_api_service(body, **timeout),
    }[kind]
    try:
        create()
    except ApiException as exc:
        if not (kind == "Namespace" and exc.status == 409):
            raise ClusterError(f"custom metrics API: creating {kind} {body['metadata']['name']} failed: HTTP "
                               f"{exc.status} {exc.reason}") from None


def available(apiservice: Any) -> tuple[bool, str]:
    """Whether the aggregator reaches the adapter, and what its Available condition says."""
    for condition in (apiservice.status.conditions if apiservice.status else None) or []:
        if condition.type == "Available":
            return condition.status == "True", f"{condition.reason}: {condition.message or ''}".strip(": ")
    return False, "no Available condition yet"


class MetricsAdapter(Started):
    """prometheus-adapter on ``address``, reading ``prometheus_url``, registered as custom.metrics.k8s.io."""

    def __init__(self, api: client.ApiClient, cluster_dir: Path, *, kubeconfig: Path, address: str,
                 prometheus_url: str, progress: Progress) -> None:
        self._api = api
        self._dir = cluster_dir
        self._kubeconfig = kubeconfig
        self._address = address
        self._prometheus_url = prometheus_url
        self._progress = progress
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = cluster_dir / "prometheus-adapter.log"

    def start(self) -> MetricsAdapter:
        pki = self._dir / "pki"
        config = self._dir / "prometheus-adapter.yaml"
        config.write_text(yaml.safe_dump({"rules": adapter_rules()}))
        port = free_port()
        kubeconfig = str(self._kubeconfig)
        self._proc = start_process(require_tool("prometheus-adapter"), [
            f"--bind-address={self._address}", f"--secure-port={port}",
            f"--tls-cert-file={pki / 'admin.crt'}", f"--tls-private-key-file={pki / 'admin.key'}",
            f"--lister-kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--prometheus-url={self._prometheus_url}", f"--metrics-relist-interval={RELIST_S}s",
            f"--config={config}"], self._log)
        record_child(self._dir, self._proc.pid)
        for kind, body in _objects(self._address, port, (pki / "ca.crt").read_bytes()):
            _create(self._api, kind, body)
        self._wait_available()
        self._progress(f"local cluster: custom metrics API ({APISERVICE}) served by prometheus-adapter on "
                       f"{self._address}:{port}, reading {self._prometheus_url}")
        return self

    def _wait_available(self) -> None:
        registration = client.ApiregistrationV1Api(self._api)

        def state() -> str | None:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ClusterError(f"custom metrics API: prometheus-adapter exited with status "
                                   f"{self._proc.returncode} while starting", self._log_tail())
            try:
                ok, why = available(registration.read_api_service(APISERVICE, _request_timeout=REQUEST_TIMEOUT_S))
            except ApiException as exc:
                ok, why = False, f"HTTP {exc.status} {exc.reason}"
            return None if ok else why

        waiting = wait_until(state, AVAILABLE_TIMEOUT_S, lambda why, elapsed: self._progress(
            f"local cluster: waiting for APIService {APISERVICE} to be Available ({why}), "
            f"{elapsed:.0f}/{AVAILABLE_TIMEOUT_S} s"))
        if waiting is not None:
            raise ClusterError(f"custom metrics API: APIService {APISERVICE} not Available within "
                               f"{AVAILABLE_TIMEOUT_S} s ({waiting})", self._log_tail())

    def _log_tail(self) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").strip().splitlines()[-LOG_TAIL_LINES:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the adapter; its objects go with the cluster."""
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None
