"""The registration check that the row's backend URL reaches the model, on a real API server."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.conftest import running_local_cluster
from vllm_gate.base.kube import api_client
from vllm_gate.checks.backend import backend_problems, service_of

NS = "backend"
LABELS = {"app.kubernetes.io/instance": "llama3", "app.kubernetes.io/name": "vllm"}
URL = f"http://llama-3-8b-inference.{NS}.svc.cluster.local:8000"


@pytest.fixture(scope="module")
def api() -> Iterator[client.ApiClient]:
    for local in running_local_cluster("backend", data_plane=False):
        api = api_client(local.kubeconfig, local.context)
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": NS}})
        core.create_namespaced_pod(NS, {"metadata": {"name": "model-0", "labels": LABELS}, "spec": {
            "nodeName": "cpu-0", "containers": [{"name": "c", "image": "example.invalid/model:v1"}]}})
        service(core, "llama-3-8b-inference", 8000, LABELS)
        service(core, "other-selector", 8000, {"app.kubernetes.io/name": "something-else"})
        wait_ready_endpoint(api, "llama-3-8b-inference")
        yield api


def service(core: client.CoreV1Api, name: str, port: int, selector: dict[str, str]) -> None:
    core.create_namespaced_service(NS, {"metadata": {"name": name}, "spec": {
        "selector": selector, "ports": [{"name": "http", "port": port, "targetPort": port}]}})


def wait_ready_endpoint(api: client.ApiClient, name: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
            NS, label_selector=f"kubernetes.io/service-name={name}").items
        if any(e.conditions.ready for s in slices for e in s.endpoints or []):
            return
        time.sleep(0.5)
    raise AssertionError(f"Service {NS}/{name} got no ready endpoint within 60 s")


def test_the_url_of_a_service_that_reaches_the_pods_passes(api):
    assert backend_problems(api, URL, LABELS) == []


def test_a_url_naming_no_service_fails(api):
    assert backend_problems(api, URL.replace("llama-3-8b-inference", "llama3"), LABELS) == [
        f"{URL.replace('llama-3-8b-inference', 'llama3')}: no Service {NS}/llama3 in the cluster"]


def test_a_url_with_another_port_fails(api):
    url = URL.replace(":8000", ":8080")
    assert backend_problems(api, url, LABELS) == [
        f"{url}: Service {NS}/llama-3-8b-inference serves ports [8000], not 8080"]


def test_a_service_that_selects_other_pods_fails(api):
    url = URL.replace("llama-3-8b-inference", "other-selector")
    assert backend_problems(api, url, LABELS) == [
        f"{url}: Service {NS}/other-selector selects {{'app.kubernetes.io/name': 'something-else'}}, not the "
        "model's pods",
        f"{url}: Service {NS}/other-selector has no ready endpoint"]


def test_a_url_outside_the_cluster_is_named():
    assert service_of("http://llama.example.com:8000") is None
    assert service_of("http://svc.ns.svc.cluster.local") is None  # no port
    assert service_of("http://svc.ns.svc.cluster.local:8000") == ("ns", "svc", 8000)
    assert service_of("http://svc.ns.svc:80") == ("ns", "svc", 80)
