"""The registry is reachable and migrated, accepts the row the gate will write, and the row reaches the model."""

from __future__ import annotations

import pytest
from kubernetes import client

from vllm_gate.checks.backend import backend_problems
from vllm_gate.registry import db
from vllm_gate.registry.mappings import upsert_problem
from vllm_gate.registry.migrate import pending
from vllm_gate.verdict.contract import Mode


@pytest.fixture(scope="module")
def registry_conn(gate_run, gate_registry):
    if gate_run.mode is Mode.ENDPOINT:
        pytest.skip("an --endpoint-url run never registers: there is no row to check")
    if gate_registry.dsn is None:
        pytest.fail(f"no registry to register in ({gate_registry.description}): give --database-url or "
                    "IAS_DATABASE_URL", pytrace=False)
    try:
        conn = db.connect(gate_registry.dsn)
    except db.DatabaseUnreachable as exc:
        pytest.fail(exc.summary, pytrace=False)
    yield conn
    conn.close()


def test_registry_is_migrated(registry_conn):
    todo = pending(registry_conn)
    registry_conn.rollback()
    assert not todo, f"{len(todo)} pending migration(s); run: ias-admin db migrate"


def test_registry_accepts_the_row(registry_conn, gate_release):
    problem = upsert_problem(registry_conn, gate_release.mapping())
    assert problem is None, problem


def test_backend_url_names_the_service(kube_api, gate_release, gate_target):
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(gate_target.namespace, label_selector=gate_target.selector,
                                                          _request_timeout=15).items
    assert pods, "the release has no pods"
    assert backend_problems(kube_api, gate_release.mapping().backend_url, pods[0].metadata.labels) == []
