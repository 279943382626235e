"""Decision and progress lines say what happened: rollbacks, namespace deletion, simulators, port-forwards."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.conftest import running_local_cluster
from vllm_gate.base.errors import RolloutFailed
from vllm_gate.base.kube import api_client
from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.cluster.dataplane.portforward import PortForward
from vllm_gate.cluster.local import GpuPool, LocalCluster
from vllm_gate.deploy.release import Release, ensure_namespace, install_or_upgrade, roll_back
from vllm_gate.deploy.rollout import RolloutTarget, wait_ready
from vllm_gate.deploy.target import in_place
from vllm_gate.deploy.values import release_fullname
from vllm_gate.spec import ModelSpec, load_spec

NO_SUCH_GPU = "resources.gpu_type=h100-sxm"  # no node has it: the pod stays Pending, Unschedulable
HOLD = "vllm-gate.test/hold"  # a finalizer nobody removes: keeps its object, and so its namespace


def quiet(_message: str) -> None:
    """Progress callback for waits whose progress the test does not read."""


@pytest.fixture(scope="module")
def messages() -> list[str]:
    return []


@pytest.fixture(scope="module")
def cluster(messages: list[str]) -> Iterator[LocalCluster]:
    yield from running_local_cluster("decide", GpuPool(nodes=2), progress=messages.append)


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> client.ApiClient:
    return api_client(cluster.kubeconfig, cluster.context)


def eventually(what: str, check: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(0.3)


def spec_in(namespace: str, *overrides: str) -> ModelSpec:
    return load_spec("llama3", MODELS_DIR, ["engine=sim", f"namespace={namespace}", *overrides])


def deploy(cluster: LocalCluster, api: client.ApiClient, spec: ModelSpec) -> Release:
    created = ensure_namespace(client.CoreV1Api(api), spec.namespace)
    return install_or_upgrade(spec, in_place(spec), cluster.kubeconfig, cluster.context, created_namespace=created)


def target(spec: ModelSpec) -> RolloutTarget:
    return RolloutTarget(spec.namespace, release_fullname(spec.name), f"app.kubernetes.io/instance={spec.name}")


def namespace_exists(api: client.ApiClient, name: str) -> bool:
    try:
        client.CoreV1Api(api).read_namespace(name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def test_rollback_says_ready_once_the_previous_revision_is_ready(cluster, api):
    good = spec_in("rb-ok")
    deploy(cluster, api, good)
    wait_ready(api, target(good), 60, quiet)
    bad = deploy(cluster, api, spec_in("rb-ok", NO_SUCH_GPU))
    with pytest.raises(RolloutFailed, match="Unschedulable"):  # as the gate sees it, then rolls back
        wait_ready(api, target(good), 60, quiet)
    line = roll_back(bad, cluster.kubeconfig, cluster.context, timeout_s=60)
    assert re.fullmatch(r"rolled rb-ok/llama3 back to revision 1; its pods are Ready again \(\d+ s\)", line), line
    pods = client.CoreV1Api(api).list_namespaced_pod("rb-ok", label_selector=target(good).selector).items
    assert [p.status.phase for p in pods] == ["Running"]
    assert pods[0].spec.node_selector["gpu-type"] == "rtx-6000-ada"


def test_rollback_to_a_revision_that_cannot_be_ready_says_it_could_not_confirm(cluster, api):
    bad = spec_in("rb-bad", NO_SUCH_GPU)
    deploy(cluster, api, bad)  # revision 1: no node fits it
    good = spec_in("rb-bad")
    second = deploy(cluster, api, good)
    wait_ready(api, target(good), 60, quiet)
    assert second.previous_revision == 1
    line = roll_back(second, cluster.kubeconfig, cluster.context, timeout_s=60)
    assert line.startswith("rolled rb-bad/llama3 back to revision 1, but could not confirm it is Ready: "), line
    assert "Unschedulable" in line
    assert "Ready again" not in line


def test_uninstall_waits_until_the_namespace_is_gone(cluster, api):
    release = deploy(cluster, api, spec_in("un-ok"))
    assert release.created_namespace
    line = roll_back(release, cluster.kubeconfig, cluster.context, timeout_s=60)
    assert re.fullmatch(r"uninstalled un-ok/llama3 \(a fresh install\); deleted namespace un-ok "
                        r"\(gone after \d+ s\)", line), line
    assert not namespace_exists(api, "un-ok")


def test_uninstall_reports_a_namespace_still_terminating(cluster, api):
    release = deploy(cluster, api, spec_in("un-stuck"))
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map("un-stuck", {"metadata": {"name": "held", "finalizers": [HOLD]}})
    try:
        line = roll_back(release, cluster.kubeconfig, cluster.context, timeout_s=10)
        assert line.startswith("uninstalled un-stuck/llama3 (a fresh install); namespace un-stuck still "
                               "Terminating after 10 s"), line
        assert HOLD in line, "the line should name what holds the namespace"
    finally:
        core.patch_namespaced_config_map("held", "un-stuck", {"metadata": {"finalizers": None}})
    eventually("namespace un-stuck gone once the finalizer is removed", lambda: not namespace_exists(api, "un-stuck"))


def test_uninstall_reports_the_http_error_of_a_namespace_it_may_not_delete(cluster, api):
    spec = spec_in("default")
    release = install_or_upgrade(spec, in_place(spec), cluster.kubeconfig, cluster.context, created_namespace=False)
    release.created_namespace = True  # planted: as if the gate had made "default", which cannot be deleted
    line = roll_back(release, cluster.kubeconfig, cluster.context, timeout_s=10)
    assert line == ("uninstalled default/llama3 (a fresh install); "
                    "could not delete namespace default: HTTP 403 Forbidden")
    assert namespace_exists(api, "default")


def bad_sim_deployment(name: str) -> dict:
    """A model pod whose args the simulator rejects: it exits at once, every time."""
    labels = {"app": name, "app.kubernetes.io/component": "serving-engine"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                         "name": "sim", "image": "example.invalid/sim:v1", "ports": [{"containerPort": 8000}],
                         "args": ["--model", "m", "--max-model-len", "abc"]}]}}}}


def test_simulator_that_cannot_start_is_reported_with_its_reason_and_backed_off(cluster, api, messages):
    ensure_namespace(client.CoreV1Api(api), "sim-bad")
    client.AppsV1Api(api).create_namespaced_deployment("sim-bad", bad_sim_deployment("sim-bad"))
    wait_ready(api, RolloutTarget("sim-bad", "sim-bad", "app=sim-bad"), 60, quiet)
    pod = client.CoreV1Api(api).list_namespaced_pod("sim-bad", label_selector="app=sim-bad").items[0].metadata.name
    about = f"simulator for pod sim-bad/{pod}"
    eventually("the repeated failure report", lambda: any(f"{about} failed 3 times" in m for m in messages))
    reports = [m for m in messages if about in m]
    reason = 'exited (status 2): vllm-sim-standin: invalid argument "abc" for "--max-model-len" flag'
    # Its start, its first failure and the count: not a line per retry.
    assert len(reports) == 3, reports
    assert reports[0].startswith(f"local cluster: {about} on 127.0.0.1:"), reports[0]
    assert reports[1].startswith(f"local cluster: {about} {reason}"), reports[1]
    assert reports[1].endswith("next try in 1 s")
    assert "next try in 4 s" in reports[2], "the retries should back off"
    failures = [f for f in cluster.data_plane_failures() if f.startswith(about)]
    assert len(failures) == 1
    assert re.match(rf"{re.escape(about)} failed \d+ times; last: {re.escape(reason)}", failures[0]), failures[0]


def answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v1/models", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def serve(cluster: LocalCluster, api: client.ApiClient, namespace: str) -> ModelSpec:
    spec = spec_in(namespace)
    deploy(cluster, api, spec)
    wait_ready(api, target(spec), 60, quiet)
    return spec


def test_port_forward_restart_is_reported(cluster, api):
    spec = serve(cluster, api, "pf-restart")
    said: list[str] = []
    with PortForward(spec.namespace, f"svc/{spec.service.name}", spec.service.port, kubeconfig=cluster.kubeconfig,
                     context=cluster.context, progress=said.append) as forward:
        # A request before the simulator listens can drop kubectl too (reported the same way): start from an answer.
        eventually("an answer through the port-forward", lambda: answers(forward.url))
        said.clear()
        before, first = forward.restarts, forward.pid
        os.kill(first, signal.SIGKILL)
        eventually("the restart report", lambda: bool(said))
        assert said == [f"port-forward svc/{spec.service.name} dropped (killed by SIGKILL); restarted (#{before + 1})"]
        assert forward.restarts == before + 1
        assert forward.pid != first
        eventually("an answer through the restarted port-forward", lambda: answers(forward.url))


def test_port_forward_failed_restart_is_reported(cluster, api):
    spec = serve(cluster, api, "pf-fail")
    core = client.CoreV1Api(api)
    svc = core.read_namespaced_service(spec.service.name, spec.namespace)
    said: list[str] = []
    with PortForward(spec.namespace, f"svc/{spec.service.name}", spec.service.port, kubeconfig=cluster.kubeconfig,
                     context=cluster.context, progress=said.append) as forward:
        eventually("an answer through the port-forward", lambda: answers(forward.url))
        said.clear()
        before = forward.restarts
        core.delete_namespaced_service(spec.service.name, spec.namespace)  # planted: nothing to forward to
        os.kill(forward.pid, signal.SIGKILL)
        eventually("the failed restart report", lambda: bool(said))
        assert said[0].startswith(f"port-forward svc/{spec.service.name} dropped (killed by SIGKILL); "
                                  "restart failed: "), said[0]
        assert f'services "{spec.service.name}" not found' in said[0]
        core.create_namespaced_service(spec.namespace, {
            "metadata": {"name": svc.metadata.name, "labels": svc.metadata.labels},
            "spec": {"selector": svc.spec.selector, "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol,
                                                               "targetPort": p.target_port} for p in svc.spec.ports]}})
        eventually("the restart report once the Service is back", lambda: len(said) == 2)
        assert re.fullmatch(rf"port-forward svc/{spec.service.name} dropped \(killed by SIGKILL\); "
                            rf"restarted \(#{before + 1}\) after \d+ failed tries", said[1]), said[1]
        assert forward.failed_restarts >= 1
        eventually("an answer through the restarted port-forward", lambda: answers(forward.url))
