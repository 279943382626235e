"""The registry is reachable and migrated, and the row the gate will write is valid."""

from __future__ import annotations

import pytest

from vllm_gate.registry import db
from vllm_gate.registry.mappings import Mapping
from vllm_gate.registry.migrate import pending


@pytest.fixture(scope="module")
def registry_conn(gate_registry):
    if gate_registry.dsn is None:
        pytest.skip(f"no registry to check: {gate_registry.description}")
    try:
        conn = db.connect(gate_registry.dsn)
    except db.DatabaseUnreachable as exc:
        pytest.fail(exc.summary, pytrace=False)
    yield conn
    conn.close()


def test_registry_is_migrated(registry_conn):
    todo = pending(registry_conn)
    assert not todo, f"{len(todo)} pending migration(s); run: ias-admin db migrate"


def test_the_row_the_gate_will_write_is_valid(gate_run):
    mapping = gate_run.mapping()
    assert Mapping.model_validate(mapping.model_dump()) == mapping
    assert mapping.backend_url == gate_run.spec.in_cluster_url
