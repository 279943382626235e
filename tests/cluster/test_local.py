"""The local cluster: real scheduling onto fake GPU nodes, a simulator behind port-forward, clean stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from kubernetes import client

from tests.conftest import require
from vllm_gate.cluster.kube import api_client
from vllm_gate.cluster.local import GpuPool, LocalCluster, cluster_dir, component_pids, pid_alive
from vllm_gate.deploy import ensure_namespace, install_or_upgrade
from vllm_gate.errors import RolloutFailed
from vllm_gate.portforward import PortForward
from vllm_gate.ports import port_open
from vllm_gate.rollout import RolloutTarget, wait_ready
from vllm_gate.spec import load_spec
from vllm_gate.tools import MODELS_DIR, PROJECT_ROOT
from vllm_gate.values import release_fullname

TOOLS = ("kwokctl", "kwok", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "helm")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    for tool in TOOLS:
        require(tool)
    local = LocalCluster(name=f"test-{os.getpid()}", pool=GpuPool(nodes=2), progress=lambda _m: None)
    local.start()
    yield local
    local.stop()


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> client.ApiClient:
    return api_client(cluster.kubeconfig, cluster.context)


def gpu_deployment(name: str, gpu_type: str, *, tolerate: bool = True) -> dict:
    pod_spec = {
        "nodeSelector": {"gpu-type": gpu_type},
        "containers": [{"name": "c", "image": "example.invalid/gpu-job:v1",
                        "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}}],
    }
    if tolerate:
        pod_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec}}}


def test_gpu_deployment_is_scheduled_onto_a_gpu_node_and_becomes_ready(api):
    client.AppsV1Api(api).create_namespaced_deployment("default", gpu_deployment("gpu-ok", "rtx-6000-ada"))
    wait_ready(api, RolloutTarget("default", "gpu-ok", "app=gpu-ok"), 60, progress=lambda _m: None)
    pod = client.CoreV1Api(api).list_namespaced_pod("default", label_selector="app=gpu-ok").items[0]
    node = client.CoreV1Api(api).read_node(pod.spec.node_name)
    assert node.metadata.labels["gpu-type"] == "rtx-6000-ada"
    assert pod.status.phase == "Running"


@pytest.mark.parametrize(("name", "gpu_type", "tolerate"), [
    ("gpu-missing-type", "h100-sxm", True),
    ("gpu-no-toleration", "rtx-6000-ada", False),
])
def test_unsatisfiable_gpu_request_stays_pending_unschedulable(api, name, gpu_type, tolerate):
    client.AppsV1Api(api).create_namespaced_deployment("default", gpu_deployment(name, gpu_type, tolerate=tolerate))
    with pytest.raises(RolloutFailed) as info:
        wait_ready(api, RolloutTarget("default", name, f"app={name}"), 60, progress=lambda _m: None,
                   unschedulable_grace_s=2)
    assert "Unschedulable" in info.value.summary
    pod = client.CoreV1Api(api).list_namespaced_pod("default", label_selector=f"app={name}").items[0]
    assert pod.status.phase == "Pending"
    scheduled = next(c for c in pod.status.conditions if c.type == "PodScheduled")
    assert (scheduled.status, scheduled.reason) == ("False", "Unschedulable")


def test_port_forward_to_the_service_reaches_the_simulator(cluster, api):
    spec = load_spec("llama3", MODELS_DIR, ["engine=sim", "namespace=pf-test"])
    created = ensure_namespace(client.CoreV1Api(api), spec.namespace)
    install_or_upgrade(spec, cluster.kubeconfig, cluster.context, created_namespace=created)
    target = RolloutTarget(spec.namespace, release_fullname(spec.name), f"app.kubernetes.io/instance={spec.name}")
    wait_ready(api, target, 60, progress=lambda _m: None)
    with PortForward(spec.namespace, f"svc/{spec.service.name}", spec.service.port, kubeconfig=cluster.kubeconfig,
                     context=cluster.context) as forward:
        deadline = time.monotonic() + 30
        while True:  # the data plane starts the simulator once the pod is Ready
            try:
                models = httpx.get(f"{forward.url}/v1/models", timeout=5)
                if models.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "no answer through kubectl port-forward within 30 s"
            time.sleep(0.5)
    served = models.json()["data"][0]
    assert served["id"] == spec.served_name
    assert served["max_model_len"] == spec.vllm.max_model_len


def _listening_ports(pids: list[int]) -> set[int]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=False).stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines()
            if any(f"pid={p}," in line for p in pids)}


def test_stop_leaves_no_process_and_frees_the_ports():
    local = LocalCluster(name=f"stop-{os.getpid()}", pool=GpuPool(nodes=1), progress=lambda _m: None)
    local.start()
    pids = component_pids(local.name)
    ports = _listening_ports(pids)
    assert len(pids) == 5
    assert ports, "the components listen on no port?"
    local.stop()
    assert [p for p in pids if pid_alive(p)] == []
    assert [p for p in ports if port_open(p)] == []
    assert not cluster_dir(local.name).exists()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_cluster_is_cleaned_up_when_its_owner_dies(sig):
    name = f"crash-{os.getpid()}-{sig.name.lower()}"
    script = ("import time; from vllm_gate.cluster.local import LocalCluster, GpuPool; "
              f"c = LocalCluster(name={name!r}, pool=GpuPool(nodes=1)); c.start(); print('up', flush=True); "
              "time.sleep(300)")
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    try:
        assert owner.stdout.readline().strip() == "up"
        pids = component_pids(name)
        assert len(pids) == 5
        owner.send_signal(sig)
        owner.wait(30)
        deadline = time.monotonic() + 60
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert [p for p in pids if pid_alive(p)] == []
        while cluster_dir(name).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not cluster_dir(name).exists()
    finally:
        if owner.poll() is None:
            owner.kill()
