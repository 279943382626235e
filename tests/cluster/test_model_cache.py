"""A fresh install with a chart-created model cache claim binds it, on a real API server and PV controller.

The local cluster has no storage provisioner, so the test provides the PersistentVolume itself (a hostPath
volume no kubelet ever mounts: KWOK nodes run no containers); binding is kube-controller-manager's own work.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client

from tests.chart.strict_yaml import helm
from tests.conftest import running_local_cluster
from vllm_gate.base.kube import api_client
from vllm_gate.base.tools import CHART_DIR, MODELS_DIR
from vllm_gate.cluster.local import LocalCluster
from vllm_gate.deploy.release import current_revision, ensure_namespace, install_or_upgrade, roll_back
from vllm_gate.deploy.render import helm_client
from vllm_gate.deploy.target import in_place
from vllm_gate.deploy.values import chart_values, release_fullname
from vllm_gate.spec import load_spec

STORAGE_CLASS = "vllm-gate-test-cache"  # no StorageClass object: the binder matches PVs by this name alone
BIND_TIMEOUT_S = 90
POLL_S = 1.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    yield from running_local_cluster("cache", data_plane=False)


@pytest.fixture(scope="module")
def core(cluster: LocalCluster) -> client.CoreV1Api:
    return client.CoreV1Api(api_client(cluster.kubeconfig, cluster.context))


def persistent_volume(name: str, size: str, mode: str) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": size}, "accessModes": [mode], "storageClassName": STORAGE_CLASS,
                     "persistentVolumeReclaimPolicy": "Delete", "hostPath": {"path": f"/tmp/{name}"}}}


def wait_for_phase(core: client.CoreV1Api, namespace: str, claim: str, phase: str) -> client.V1PersistentVolumeClaim:
    deadline = time.monotonic() + BIND_TIMEOUT_S
    while True:
        pvc = core.read_namespaced_persistent_volume_claim(claim, namespace, _request_timeout=15)
        if pvc.status.phase == phase or time.monotonic() > deadline:
            return pvc
        time.sleep(POLL_S)


def install(cluster: LocalCluster, values: dict, namespace: str, release: str) -> None:
    proc = helm("install", release, str(CHART_DIR), "--namespace", namespace, "--create-namespace",
                "--kubeconfig", str(cluster.kubeconfig), "--kube-context", str(cluster.context),
                "--values", "-", "--timeout", "60s", stdin=yaml.safe_dump(values))
    assert proc.returncode == 0, proc.stderr


def test_fresh_install_binds_the_chart_created_claim(cluster, core):
    spec = load_spec("llama3", MODELS_DIR, ["model_cache.kind=pvc", "model_cache.size=50Gi",
                                            f"model_cache.storage_class={STORAGE_CLASS}",
                                            "model_cache.access_mode=ReadWriteOnce"])
    core.create_persistent_volume(persistent_volume("cache-pv-small", "10Gi", "ReadWriteOnce"), _request_timeout=15)
    core.create_persistent_volume(persistent_volume("cache-pv", "60Gi", "ReadWriteOnce"), _request_timeout=15)
    install(cluster, chart_values(spec), "cache-ns", spec.name)
    claim = f"{release_fullname(spec.name)}-model-cache"
    pvc = wait_for_phase(core, "cache-ns", claim, "Bound")
    assert pvc.status.phase == "Bound", f"claim {claim} is {pvc.status.phase} after {BIND_TIMEOUT_S} s"
    assert pvc.spec.volume_name == "cache-pv", "bound to the volume too small for 50Gi"
    assert pvc.spec.storage_class_name == STORAGE_CLASS
    assert pvc.spec.access_modes == ["ReadWriteOnce"]
    deployment = client.AppsV1Api(core.api_client).read_namespaced_deployment(
        release_fullname(spec.name), "cache-ns", _request_timeout=15)
    volumes = {v.name: v for v in deployment.spec.template.spec.volumes}
    assert volumes["model-cache"].persistent_volume_claim.claim_name == claim


def test_undoing_a_fresh_install_keeps_the_cache_claim_and_the_namespace_holding_it(cluster, core):
    spec = load_spec("llama3", MODELS_DIR, ["model_cache.kind=pvc", "model_cache.size=5Gi",
                                            f"model_cache.storage_class={STORAGE_CLASS}", "namespace=cache-undo"])
    created = ensure_namespace(core, spec.namespace)
    release = install_or_upgrade(spec, in_place(spec), cluster.kubeconfig, cluster.context, created_namespace=created)
    line = roll_back(release, cluster.kubeconfig, cluster.context)
    claim = f"{release_fullname(spec.name)}-model-cache"
    assert line == (f"uninstalled cache-undo/llama3 (a fresh install); kept namespace cache-undo: it holds the "
                    f"model cache claim {claim} (helm.sh/resource-policy: keep)")
    assert core.read_namespaced_persistent_volume_claim(claim, "cache-undo", _request_timeout=15).metadata.name == claim
    assert current_revision(helm_client(cluster.kubeconfig, cluster.context), "llama3", "cache-undo") is None
