"""helm install on a real API server picks the scrape wiring from what the cluster serves (its discovery).

The chart asks .Capabilities.APIVersions for monitoring.coreos.com/v1/ServiceMonitor and PodMonitor; these tests
install the release before and after those kinds exist, and read back what the API server holds.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.chart.strict_yaml import helm
from tests.cluster.hpa import evaluated_hpa
from tests.conftest import running_local_cluster
from vllm_gate.base.kube import api_client
from vllm_gate.base.tools import CHART_DIR, MODELS_DIR
from vllm_gate.checks.autoscaling import hpa_problems
from vllm_gate.cluster.local import LocalCluster
from vllm_gate.deploy.values import autoscaling_metric, chart_values, release_fullname
from vllm_gate.spec import ModelSpec, load_spec

GROUP, VERSION = "monitoring.coreos.com", "v1"
ESTABLISHED_TIMEOUT_S = 30
SCRAPE_ANNOTATIONS = {"prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path"}

_namespaces = itertools.count()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    yield from running_local_cluster("monwire", data_plane=False)


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> client.ApiClient:
    return api_client(cluster.kubeconfig, cluster.context)


def stand_in_crd(kind: str, plural: str) -> dict[str, Any]:
    """A stand-in for the Prometheus Operator's CRD of ``kind`` (its schema is not vendored here): same group,
    version, kind and plural, so discovery serves the kind; the schema keeps whatever fields it is given."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {"group": GROUP, "scope": "Namespaced",
                 "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                 "versions": [{"name": VERSION, "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
    }


def serve_kind(api: client.ApiClient, kind: str, plural: str) -> None:
    """Create the stand-in CRD and wait until the API server serves it."""
    extensions = client.ApiextensionsV1Api(api)
    extensions.create_custom_resource_definition(stand_in_crd(kind, plural), _request_timeout=15)
    deadline = time.monotonic() + ESTABLISHED_TIMEOUT_S
    while time.monotonic() < deadline:
        crd = extensions.read_custom_resource_definition(f"{plural}.{GROUP}", _request_timeout=15)
        if any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or []):
            return
        time.sleep(0.5)
    raise AssertionError(f"CRD {plural}.{GROUP} not Established within {ESTABLISHED_TIMEOUT_S} s")


def install(cluster: LocalCluster, spec: ModelSpec) -> tuple[str, str]:
    """helm install the spec into a fresh namespace (no --wait: nothing here runs the pods); (namespace, NOTES)."""
    namespace = f"mon-{next(_namespaces)}"
    proc = helm("install", spec.name, str(CHART_DIR), "--namespace", namespace, "--create-namespace",
                "--kubeconfig", str(cluster.kubeconfig), "--kube-context", str(cluster.context), "--values", "-",
                stdin=yaml.safe_dump(chart_values(spec)))
    assert proc.returncode == 0, proc.stderr
    return namespace, proc.stdout.split("NOTES:\n", 1)[1]


def monitors(api: client.ApiClient, namespace: str, plural: str) -> list[str]:
    try:
        found = client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, namespace, plural,
                                                                           _request_timeout=15)
    except ApiException as exc:
        if exc.status == 404:  # the kind is not served
            return []
        raise
    return [item["metadata"]["name"] for item in found["items"]]


def pod_annotations(api: client.ApiClient, namespace: str, spec: ModelSpec) -> dict[str, str]:
    deployment = client.AppsV1Api(api).read_namespaced_deployment(release_fullname(spec.name), namespace,
                                                                   _request_timeout=15)
    return deployment.spec.template.metadata.annotations or {}


def test_the_wiring_follows_the_kinds_the_cluster_serves(cluster, api):
    service_monitor = load_spec("llama3", MODELS_DIR)
    pod_monitor = load_spec("llama3", MODELS_DIR, ["monitoring.scrape=podmonitor"])
    name = release_fullname(service_monitor.name)

    # No Prometheus Operator: both choices fall back to the annotations, and NOTES say why.
    for spec, kind in ((service_monitor, "ServiceMonitor"), (pod_monitor, "PodMonitor")):
        namespace, notes = install(cluster, spec)
        assert set(pod_annotations(api, namespace, spec)) >= SCRAPE_ANNOTATIONS
        assert f"but the cluster has no monitoring.coreos.com/v1 {kind})" in notes

    serve_kind(api, "ServiceMonitor", "servicemonitors")
    namespace, notes = install(cluster, service_monitor)
    assert monitors(api, namespace, "servicemonitors") == [name]
    assert not SCRAPE_ANNOTATIONS & set(pod_annotations(api, namespace, service_monitor))
    assert f"through ServiceMonitor {name} (every 30s)" in notes
    # The PodMonitor kind is still missing: a PodMonitor choice keeps the annotations.
    namespace, _ = install(cluster, pod_monitor)
    assert set(pod_annotations(api, namespace, pod_monitor)) >= SCRAPE_ANNOTATIONS

    serve_kind(api, "PodMonitor", "podmonitors")
    namespace, notes = install(cluster, pod_monitor)
    assert monitors(api, namespace, "podmonitors") == [name]
    assert monitors(api, namespace, "servicemonitors") == []
    assert not SCRAPE_ANNOTATIONS & set(pod_annotations(api, namespace, pod_monitor))
    assert f"through PodMonitor {name} (every 30s)" in notes


def test_an_hpa_on_a_metric_the_cluster_does_not_serve_fails_naming_it(cluster, api):
    # Planted: the real kube-controller-manager's HPA controller, and no custom metrics API behind it.
    spec = load_spec("llama3", MODELS_DIR, ["autoscaling.enabled=true", "autoscaling.max_replicas=2"])
    namespace, _ = install(cluster, spec)
    hpa = evaluated_hpa(api, namespace, release_fullname(spec.name))
    (problem,) = hpa_problems(hpa, autoscaling_metric(spec))
    assert problem.startswith(f"HorizontalPodAutoscaler {namespace}/{release_fullname(spec.name)} cannot scale on "
                              "metric vllm_num_requests_waiting: ScalingActive False"), problem
