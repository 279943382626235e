"""How `pytest tests/ -n 2` (pytest-xdist) shares the tests between its workers.

Three rules, from what the tests start:
- every test that starts the local cluster's real node runs on one worker, one after another: the node holds a
  machine-wide lock, and a test that finds it taken would skip;
- every other test file runs whole on one worker, so a module-scoped cluster or server starts once;
- each end-to-end gate run (tests/test_gate_runs.py, a minute or more each) is a unit of its own, spread.
The real node's tests come first and the gate runs next (the longest chains start early); the rest fills in.
"""

from __future__ import annotations

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadScopeScheduling

# Test id prefixes of every test marked ``real_node``; collection fails when the two disagree (check_marks).
REAL_NODE_TESTS = (
    "tests/cluster/test_real_node.py::",
    "tests/cluster/test_real_node_fallback.py::",
    "tests/cluster/test_real_node_teardown.py::",
    "tests/cluster/test_network_policy_probe.py::",
    "tests/load/test_incluster_load.py::",
    "tests/test_gate_runs.py::test_a_rehearsal_on_the_real_node_runs_its_pod_probes_service_helm_test_and_autoscaler_for_real",
    "tests/test_gate_runs.py::test_rehearsals_on_a_standing_cluster_switch_the_router_only_to_a_candidate_that_passed",
)
GATE_RUNS = "tests/test_gate_runs.py"
REAL_NODE_SCOPE = "real-node"


def scope_of(nodeid: str) -> str:
    """The unit one worker runs whole: the real node's tests, one gate run, or one test file."""
    if nodeid.startswith(REAL_NODE_TESTS):
        return REAL_NODE_SCOPE
    path = nodeid.split("::", 1)[0]
    return nodeid if path == GATE_RUNS else path


def order(item: pytest.Item) -> int:
    """Where an item runs in the collection: the real node's first, then the gate runs, then the rest."""
    if item.get_closest_marker("real_node"):
        return 0
    return 1 if item.nodeid.startswith(f"{GATE_RUNS}::") else 2


def check_marks(items: list[pytest.Item]) -> None:
    """Fail the collection when the ``real_node`` marks and REAL_NODE_TESTS name different tests."""
    wrong = [item.nodeid for item in items
             if bool(item.get_closest_marker("real_node")) != item.nodeid.startswith(REAL_NODE_TESTS)]
    if wrong:
        raise pytest.UsageError(f"tests/scheduling.py: REAL_NODE_TESTS and the real_node mark disagree on "
                                f"{', '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''}")


class GateTestScheduling(LoadScopeScheduling):
    """pytest-xdist's scope scheduling with the scopes above, taken in collection order (see ``order``)."""

    def __init__(self, config: pytest.Config, log: Producer | None = None) -> None:
        super().__init__(config, log)
        config.option.loadscopereorder = False  # keep ``order``: xdist would put the biggest scopes first

    def _split_scope(self, nodeid: str) -> str:
        return scope_of(nodeid)
