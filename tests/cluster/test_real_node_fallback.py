"""When the real node cannot run or will not start, the local cluster says why and goes on KWOK-only (auto),
or refuses in one line (required)."""

from __future__ import annotations

import os

import pytest
from kubernetes import client

from tests.cluster.test_real_node import skip_unless_node_can_run
from tests.conftest import running_local_cluster
from vllm_gate.base.errors import ClusterError
from vllm_gate.base.kube import api_client
from vllm_gate.base.tools import STATE_ROOT
from vllm_gate.cluster.local import GpuPool, LocalCluster
from vllm_gate.cluster.node.config import NodeNetwork
from vllm_gate.cluster.node.real_node import RealNode, node_dir, why_not_here

pytestmark = pytest.mark.real_node


def test_a_range_the_host_already_routes_is_refused_naming_the_route():
    if os.geteuid() != 0:
        pytest.skip("not root: the route check comes after the root check, which answers first")
    # The host's own default route's subnet: every machine routes its interface's network.
    reason = why_not_here(node_dir(STATE_ROOT, "fallback"), NodeNetwork(supernet="0.0.0.0/1"))
    assert reason is not None
    assert "already routes part of 0.0.0.0/1" in reason


def test_kwok_only_when_not_wanted_says_so():
    cluster = LocalCluster(name=f"kwokonly-{os.getpid()}", real_node=False, progress=lambda _m: None)
    assert not cluster.capabilities.runs_containers
    assert "not wanted" in cluster.capabilities.limits


def test_a_node_that_will_not_start_leaves_a_kwok_only_cluster_that_says_why(monkeypatch):
    skip_unless_node_can_run()

    def broken(self: RealNode, api: client.ApiClient) -> None:  # a planted failure after the lock and namespaces
        raise ClusterError("real node: planted failure")

    monkeypatch.setattr(RealNode, "_start", broken)
    messages: list[str] = []
    for cluster in running_local_cluster("fallback", GpuPool(nodes=1), real_node=None, progress=messages.append):
        assert not cluster.has_real_node
        assert not cluster.capabilities.runs_containers
        assert "it would not start: real node: planted failure" in cluster.capabilities.limits
        assert any("going on with KWOK nodes only" in m for m in messages)
        nodes = {n.metadata.name for n in client.CoreV1Api(api_client(cluster.kubeconfig, cluster.context))
                 .list_node().items}
        assert nodes == {"gpu-0", "cpu-0"}  # the CPU node the real node would have been


def test_a_required_node_that_will_not_start_is_one_error(monkeypatch):
    skip_unless_node_can_run()
    monkeypatch.setattr(RealNode, "_start", lambda self, api: (_ for _ in ()).throw(ClusterError("real node: x")))
    cluster = LocalCluster(name=f"required-{os.getpid()}", pool=GpuPool(nodes=1), real_node=True,
                           progress=lambda _m: None)
    with pytest.raises(ClusterError, match="the real node would not start: real node: x"):
        cluster.start()
    assert not cluster.dir.exists()  # the whole cluster was stopped
