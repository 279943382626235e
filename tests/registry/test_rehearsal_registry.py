"""The rehearsal registry: persistent between runs, one run at a time, never a production registry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import dump_tables
from tests.registry.test_baselines import ANSWERS, add_certification, migrate_to_2
from vllm_gate.base.ports import free_port, port_open
from vllm_gate.base.secret import Secret
from vllm_gate.registry import rehearsal
from vllm_gate.registry.baselines import last_baseline, record_baseline
from vllm_gate.registry.db import redact_dsn
from vllm_gate.registry.migrate import pending
from vllm_gate.registry.pgserver import DataDirUnreachable, PostgresServer
from vllm_gate.registry.rehearsal import (
    DSN_ENV,
    IsTheRehearsalRegistry,
    NotARehearsalRegistry,
    RehearsalRegistry,
    RehearsalRegistryInUse,
    claim_for_rehearsals,
    refuse_rehearsal_registry,
    refuse_same_database,
)
from vllm_gate.registry.role import database_identity, mark_role, registry_role


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A state directory the server's account can enter (as root PostgreSQL runs as 'postgres')."""
    path = Path(tempfile.mkdtemp(prefix="vllm-gate-state-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def local_registry(state_dir: Path, **kwargs: float) -> RehearsalRegistry:
    return RehearsalRegistry(directory=state_dir / rehearsal.DIR_NAME, **kwargs)


def password_of(dsn: str) -> str:
    return dsn.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]


# --- a database the user names for rehearsals ---

def test_a_named_database_is_migrated_and_marked_for_rehearsals(empty_dsn):
    with RehearsalRegistry(empty_dsn) as registry, psycopg.connect(registry.dsn.reveal()) as conn:
        assert registry_role(conn) == "rehearsal"
        assert pending(conn) == []
        assert password_of(empty_dsn) not in registry.description
        assert registry.description.endswith("(--rehearsal-database-url; never a production registry)")


def test_the_environment_names_the_rehearsal_database(monkeypatch, empty_dsn):
    monkeypatch.setenv(DSN_ENV, empty_dsn)
    with RehearsalRegistry() as registry:
        assert registry.dsn == Secret(empty_dsn)
        assert DSN_ENV in registry.description
        assert password_of(empty_dsn) not in registry.description


def test_a_production_marked_database_is_refused_and_left_as_it_was(dsn):
    with psycopg.connect(dsn) as conn:
        mark_role(conn, "production")
    with pytest.raises(NotARehearsalRegistry) as refused:
        RehearsalRegistry(dsn).start()
    message = str(refused.value)
    assert message.startswith(f"refusing {redact_dsn(dsn)} as the rehearsal registry: it is marked as a production "
                              "registry")
    assert dsn.rsplit("/", 1)[1] in message  # names the database
    assert password_of(dsn) not in message
    assert "\n" not in message
    with psycopg.connect(dsn) as conn:
        assert registry_role(conn) == "production"


def test_a_database_with_certified_runs_is_refused_before_anything_is_written(empty_dsn):
    # A production registry from before migration 3: refused unmigrated and unmarked, as it was found.
    with psycopg.connect(empty_dsn) as conn:
        migrate_to_2(conn)
        add_certification(conn, "certified")
    with pytest.raises(NotARehearsalRegistry, match=r"as the rehearsal registry: it holds 1 certification\(s\) of "
                                                     r"runs that were not rehearsals"):
        RehearsalRegistry(empty_dsn).start()
    with psycopg.connect(empty_dsn) as conn:
        assert [m.version for m in pending(conn)] == [3, 4]  # still pending: nothing migrated
        assert registry_role(conn) is None


def test_a_rehearsal_registry_with_rehearsal_runs_is_claimed_again(dsn):
    with psycopg.connect(dsn) as conn:
        claim_for_rehearsals(conn)
        add_certification(conn, "rehearsal_passed")
        add_certification(conn, "rehearsal_failed")
        claim_for_rehearsals(conn)
        assert registry_role(conn) == "rehearsal"


def _add_mapping(conn: psycopg.Connection, name: str = "llama3") -> None:
    """A row as ``ias-admin model add`` writes it (the router reads it)."""
    conn.execute("INSERT INTO model_mappings (name, display_name, backend_url, input_cost_per_1k, output_cost_per_1k) "
                 "VALUES (%s, 'Llama 3 (production)', 'http://old.ias-production.svc.cluster.local:8000', 1, 2)",
                 (name,))


def test_an_ias_admin_managed_registry_is_refused_and_left_as_it_was(dsn):
    # Migrated, unmarked, one row: a platform that manages its registry with ias-admin only (issue 19).
    with psycopg.connect(dsn) as conn:
        _add_mapping(conn)
    before = dump_tables(dsn)
    with pytest.raises(NotARehearsalRegistry) as refused:
        RehearsalRegistry(dsn).start()
    assert str(refused.value).startswith(
        f"refusing {redact_dsn(dsn)} as the rehearsal registry: it holds 1 model_mappings row(s) no rehearsal "
        "registered (a registry the platform's router may read); name a database of its own in "
        "VLLM_GATE_REHEARSAL_DATABASE_URL")
    assert password_of(dsn) not in str(refused.value)
    assert dump_tables(dsn) == before
    with psycopg.connect(dsn) as conn:
        assert registry_role(conn) is None


def test_a_rehearsal_registry_holding_the_rows_its_rehearsals_registered_is_claimed_again(dsn):
    with psycopg.connect(dsn) as conn:
        claim_for_rehearsals(conn)
        _add_mapping(conn)
        add_certification(conn, "rehearsal_passed")  # written with the row, as a passed rehearsal writes them
        claim_for_rehearsals(conn)
        assert registry_role(conn) == "rehearsal"


def test_a_registry_marked_rehearsal_once_and_since_holding_the_routers_rows_is_refused(dsn):
    # The state issue 19 found: a production registry an older gate claimed and marked, then ias-admin wrote to.
    with psycopg.connect(dsn) as conn:
        claim_for_rehearsals(conn)
        add_certification(conn, "rehearsal_passed", model="mistral-7b")  # a rehearsal's, for another model
        _add_mapping(conn)
        conn.commit()
    before = dump_tables(dsn)
    with pytest.raises(NotARehearsalRegistry, match=r"it holds 1 model_mappings row\(s\) no rehearsal registered"):
        RehearsalRegistry(dsn).start()
    assert dump_tables(dsn) == before


def _keyword_form(dsn: str, host: str) -> str:
    """The same database as the URL ``dsn``, written as libpq keywords and reached through ``host``."""
    user_password, location = dsn.split("://", 1)[1].split("@", 1)
    user, password = user_password.split(":", 1)
    port, dbname = location.split(":", 1)[1].split("/", 1)
    return f"host={host} port={port} dbname={dbname} user={user} password={password}"


def test_the_same_database_is_known_by_the_server_not_the_dsn_text(dsn, postgres):
    other_text = _keyword_form(dsn, "localhost")
    other_database = postgres.dsn  # the server's own database beside this test's
    assert other_text != dsn
    with psycopg.connect(dsn) as first, psycopg.connect(other_text) as second, psycopg.connect(other_database) as third:
        assert database_identity(first) == database_identity(second)
        assert database_identity(first) != database_identity(third)  # another database on the same server
    with pytest.raises(NotARehearsalRegistry) as refused:
        refuse_same_database(Secret(other_text), Secret(dsn), "R", redact_dsn(dsn))
    assert "are the same database (or a physical copy of it): a rehearsal never writes a production registry" in str(
        refused.value)
    assert password_of(dsn) not in str(refused.value)
    refuse_same_database(Secret(other_database), Secret(dsn), "R", "G")  # two databases: no refusal


def test_a_given_registry_that_cannot_be_reached_is_left_to_its_own_checks(dsn):
    unreachable = f"postgresql://gate:pw@127.0.0.1:{free_port()}/registry?connect_timeout=2"
    refuse_same_database(Secret(dsn), Secret(unreachable), "R", "G")


def test_the_production_path_refuses_the_rehearsal_registry(dsn):
    with psycopg.connect(dsn) as conn:
        refuse_rehearsal_registry(conn)  # unmarked: the production path may use it
        claim_for_rehearsals(conn)
        with pytest.raises(IsTheRehearsalRegistry) as refused:
            refuse_rehearsal_registry(conn)
    message = str(refused.value)
    assert "is marked as a rehearsal registry: a certification is never registered there" in message
    assert dsn.rsplit("/", 1)[1] in message
    assert password_of(dsn) not in message


def test_the_production_path_accepts_a_production_registry(dsn):
    with psycopg.connect(dsn) as conn:
        mark_role(conn, "production")
        refuse_rehearsal_registry(conn)


# --- the local persistent registry ---

def test_the_default_registry_lives_under_the_state_directory(tmp_path):
    shown = subprocess.run(
        [sys.executable, "-c", "from vllm_gate.registry.rehearsal import RehearsalRegistry as R; r = R(); "
                               "print(r.directory); print(r.description)"],
        env={**os.environ, "VLLM_GATE_STATE": str(tmp_path)} | {DSN_ENV: ""},
        capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    assert shown == [str(tmp_path / "rehearsal-registry"),
                     f"the rehearsal registry at {tmp_path / 'rehearsal-registry'} (persistent; never a production "
                     "registry)"]


def test_the_local_registry_keeps_a_baseline_across_runs(state_dir):
    first = local_registry(state_dir)
    with first, psycopg.connect(first.dsn.reveal()) as conn:
        assert registry_role(conn) == "rehearsal"
        cert_id = add_certification(conn, "rehearsal_passed")
        record_baseline(conn, cert_id, "llama3", 31, ANSWERS, fingerprint="fp")
    data = first.directory / "data"
    assert not (data / "postmaster.pid").exists()  # stopped, not just left behind
    second = local_registry(state_dir)
    with second, psycopg.connect(second.dsn.reveal()) as conn:
        found = last_baseline(conn, "llama3", ("rehearsal_passed",), "fp")
    assert (found.certification_id, found.canary_prompt_tokens, found.answers) == (cert_id, 31, ANSWERS)
    assert (data / "PG_VERSION").exists()


def test_the_local_password_is_kept_0600_and_never_shown(state_dir):
    registry = local_registry(state_dir)
    with registry:
        password_file = registry.directory / "password"
        password = password_file.read_text().strip()
        assert password_file.stat().st_mode & 0o777 == 0o600
        assert password_of(registry.dsn.reveal()) == password
        for shown in (registry.description, repr(registry), str(registry.dsn), repr(registry.dsn),
                      f"{registry.dsn}"):
            assert password not in shown
    again = local_registry(state_dir)
    with again:
        assert password_of(again.dsn.reveal()) == password  # generated once, then reused


def test_a_loose_password_file_is_refused(state_dir):
    registry = local_registry(state_dir)
    registry.directory.mkdir(parents=True)
    (registry.directory / "password").write_text("pw\n")
    (registry.directory / "password").chmod(0o644)
    with pytest.raises(rehearsal.GateError, match=r"can be read by others \(mode 644\); run: chmod 600"), registry:
        pass


def test_a_second_run_waits_for_the_first_then_fails_clearly(state_dir):
    with local_registry(state_dir) as first:
        second = local_registry(state_dir, lock_timeout_s=1.0)
        with pytest.raises(RehearsalRegistryInUse) as refused, second:
            pass
        message = str(refused.value)
        assert message.startswith(f"{first.description} is in use by another run (pid {os.getpid()})")
        assert "gave up after waiting 1s" in message
        assert "\n" not in message
        with psycopg.connect(first.dsn.reveal()) as conn:  # the first run's server was left alone
            assert registry_role(conn) == "rehearsal"
    third = local_registry(state_dir, lock_timeout_s=1.0)
    with third, psycopg.connect(third.dsn.reveal()) as conn:  # free again once the first run ends
        assert registry_role(conn) == "rehearsal"


def test_a_server_left_running_by_a_dead_run_is_stopped_first(state_dir):
    with local_registry(state_dir) as registry:
        password = Secret(password_of(registry.dsn.reveal()))
    # A run that died holding the server: it still runs, and its lock went with the run.
    orphan = PostgresServer(data_dir=registry.directory / "data", password=password)
    orphan.start()
    try:
        assert port_open(orphan.port)
        with local_registry(state_dir) as next_run, psycopg.connect(next_run.dsn.reveal()) as conn:
            assert not port_open(orphan.port)
            assert registry_role(conn) == "rehearsal"
    finally:
        orphan.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another account")
def test_a_directory_the_server_account_cannot_enter_is_refused_with_the_way_out():
    private = Path(tempfile.mkdtemp(prefix="vllm-gate-private-"))  # mode 0700, root's own
    try:
        with pytest.raises(DataDirUnreachable) as refused, local_registry(private / "state"):
            pass
        message = str(refused.value)
        assert f"cannot enter {private} on the way to" in message
        assert DSN_ENV in message
        assert "VLLM_GATE_STATE" in message
    finally:
        shutil.rmtree(private, ignore_errors=True)


def test_a_role_that_is_no_superuser_tells_databases_apart_too(dsn, postgres):
    # The role in an operator's DSN is rarely a superuser: pg_control_system() answers it all the same.
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS plain_reader")
        admin.execute("CREATE ROLE plain_reader LOGIN PASSWORD 'plain-pw' NOSUPERUSER")
    try:
        server = dsn.split("@", 1)[1]
        as_reader = f"postgresql://plain_reader:plain-pw@{server}"
        other = f"postgresql://plain_reader:plain-pw@{server.rsplit('/', 1)[0]}/{postgres.dsn.rsplit('/', 1)[1]}"
        with psycopg.connect(as_reader) as first, psycopg.connect(_keyword_form(as_reader, "localhost")) as second, \
                psycopg.connect(other) as third, psycopg.connect(dsn) as superuser:
            assert database_identity(first) == database_identity(second)
            assert database_identity(first) != database_identity(third)
            assert database_identity(first)[1] == database_identity(superuser)[1]
    finally:
        with psycopg.connect(postgres.dsn, autocommit=True) as admin:
            admin.execute("DROP OWNED BY plain_reader")
            admin.execute("DROP ROLE plain_reader")
