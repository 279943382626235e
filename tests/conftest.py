"""Shared fixtures for the library tests: real helm, real PostgreSQL, real simulator."""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterator

import psycopg
import psycopg.sql
import pytest
from xdist.remote import Producer

from tests.scheduling import GateTestScheduling, check_marks, order
from vllm_gate.base.tools import MODELS_DIR, STATE_ROOT, find_tool
from vllm_gate.cluster.local import LOCAL_ENGINE_ENV, LOCAL_NODE_ENV, GpuPool, LocalCluster
from vllm_gate.cluster.node.config import NodeNetwork
from vllm_gate.cluster.node.real_node import node_dir, why_not_here
from vllm_gate.registry.migrate import migrate
from vllm_gate.registry.pgserver import PostgresServer
from vllm_gate.spec import ModelSpec, load_spec

_db_counter = itertools.count()
pytest_plugins = ["pytester"]

ALL_MODELS = sorted(p.stem for p in MODELS_DIR.glob("*.yaml"))

# Gate runs and `vllm-gate cluster up` started by these tests use KWOK nodes only unless a test asks for the real
# node: on it every undo waits out the pods' graceful shutdown and the namespace controller (about a minute). The
# real node has tests of its own (tests/cluster/test_real_node*.py, the real-node gate run in test_gate_runs.py),
# and `.ci/run`'s `pytest suites/` rehearses on it.
os.environ.setdefault(LOCAL_NODE_ENV, "kwok")
# Where a test does ask for the real node, the simulator answers on it (latencies it is told, planted faults) unless
# the test asks for the real engine: tests/checks/test_real_engine.py runs vLLM itself, and `.ci/run`'s
# `pytest suites/` rehearses on it.
os.environ.setdefault(LOCAL_ENGINE_ENV, "sim")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    check_marks(items)
    items.sort(key=order)  # stable: each file keeps its own order


def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> GateTestScheduling:
    """Return the scheduler that keeps the real node's tests on one worker (tests/scheduling.py)."""
    return GateTestScheduling(config, log)


def require(tool: str) -> None:
    if find_tool(tool) is None:
        pytest.fail(f"{tool} is not installed; run scripts/setup.sh (tests never skip a missing tool)")


LOCAL_CLUSTER_TOOLS = ("kwokctl", "kwok", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                       "kubectl")


def running_local_cluster(prefix: str, pool: GpuPool | None = None, *, data_plane: bool = True,
                          real_node: bool | None = False,
                          progress: Callable[[str], None] = lambda _m: None) -> Iterator[LocalCluster]:
    """Yield a started local cluster named for this test process, stopped afterwards (``yield from`` it).
    KWOK-only unless ``real_node`` (the KWOK behaviours these tests plant need KWOK nodes; the real node has
    tests of its own in tests/cluster/test_real_node.py and the gate runs use it)."""
    for tool in LOCAL_CLUSTER_TOOLS:
        require(tool)
    local = LocalCluster(name=f"{prefix}-{os.getpid()}", pool=pool or GpuPool(nodes=1), data_plane=data_plane,
                         real_node=real_node, progress=progress)
    local.start()
    try:
        yield local
    finally:
        local.stop()


def skip_without_real_node(what: str) -> None:
    """Skip, naming ``what`` was not exercised, where the local cluster's real node cannot run on this machine."""
    reason = why_not_here(node_dir(STATE_ROOT, "probe"), NodeNetwork())
    if reason:
        pytest.skip(f"no real node on this machine ({reason}): {what} not exercised")


@pytest.fixture(params=ALL_MODELS)
def spec(request: pytest.FixtureRequest) -> ModelSpec:
    """Return each spec in models/, one test per model."""
    return load_spec(request.param, MODELS_DIR)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """Return a throwaway PostgreSQL server for this test session, stopped at the end."""
    with PostgresServer() as server:
        yield server



def _new_database(postgres: PostgresServer) -> Iterator[str]:
    name = f"t{next(_db_counter)}"
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def empty_dsn(postgres: PostgresServer) -> Iterator[str]:
    """Return the DSN of a new, unmigrated database (dropped afterwards)."""
    yield from _new_database(postgres)


@pytest.fixture
def rehearsal_registry(postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Give the gate runs this test starts a rehearsal registry of their own (a new database), by environment."""
    for dsn in _new_database(postgres):
        monkeypatch.setenv("VLLM_GATE_REHEARSAL_DATABASE_URL", dsn)
        yield dsn


@pytest.fixture
def dsn(empty_dsn: str) -> str:
    """Return the DSN of a new, migrated registry database."""
    with psycopg.connect(empty_dsn) as conn:
        migrate(conn)
    return empty_dsn


def dump_tables(dsn: str) -> str:
    """Return every row of every table in the registry's schema as text, for byte-for-byte comparisons: whatever
    table a migration adds (registry_role, identity_baselines, ...) is covered without a list to keep."""
    with psycopg.connect(dsn) as conn:
        tables = [name for (name,) in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
            "AND table_type = 'BASE TABLE' ORDER BY table_name").fetchall()]
        parts = []
        for table in tables:
            rows = conn.execute(psycopg.sql.SQL("SELECT * FROM {} ORDER BY 1").format(
                psycopg.sql.Identifier(table))).fetchall()
            parts.append(f"{table}: {rows!r}")
    return "\n".join(parts)


def run_at_once(target, arg_sets: list[tuple]) -> list:
    """Run ``target(start_event, queue, *args)`` in one spawned process per arg set, released together.

    Returns what the processes put on the queue; fails if any process fails.
    """
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(start, out, *args)) for args in arg_sets]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    return [out.get(timeout=5) for _ in procs]
