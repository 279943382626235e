"""The rehearsal registry: where rehearsals record their runs and baselines, kept between runs, never production.

By default a local PostgreSQL whose cluster lives in ``default_directory()`` (made on first use,
its generated password kept there, mode 0600), started on a free loopback port for a run and stopped after
it; a lock file keeps two runs from using it at once. Or the database named by
``VLLM_GATE_REHEARSAL_DATABASE_URL`` (or given by the caller). Either way the database is migrated and
marked 'rehearsal'; one marked 'production', or holding certified runs, is refused before anything is
written to it.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import time
from pathlib import Path

import psycopg

from vllm_gate.base.errors import GateError
from vllm_gate.base.lifecycle import Started
from vllm_gate.base.secret import Secret
from vllm_gate.base.tools import STATE_ROOT
from vllm_gate.registry import db
from vllm_gate.registry.migrate import migrate
from vllm_gate.registry.pgserver import DataDirUnreachable, PostgresServer
from vllm_gate.registry.role import database_identity, database_name, mark_role, registry_role

DSN_ENV = "VLLM_GATE_REHEARSAL_DATABASE_URL"
DIR_NAME = "rehearsal-registry"
# As root the server runs as 'postgres', which cannot enter /root: root's registry lives where it can.
ROOT_DIRECTORY = Path("/var/lib/vllm-gate") / DIR_NAME
PASSWORD_FILE = "password"  # noqa: S105 - the file's name, not a password
LOCK_FILE = "lock"
LOCK_TIMEOUT_S = 120.0
LOCK_POLL_S = 0.2


WAY_OUT = (f"name a database of its own in {DSN_ENV}, or leave it unset for the local one the gate keeps "
           "(VLLM_GATE_STATE)")


class NotARehearsalRegistry(GateError):
    """The database named for rehearsals is a production registry."""


class IsTheRehearsalRegistry(GateError):
    """The database named for a certification is the rehearsal registry."""


class RehearsalRegistryInUse(GateError):
    """Another run holds the local rehearsal registry."""


def _production_reason(conn: psycopg.Connection) -> str | None:
    """Why the database is a production registry, or None; reads only, and works before it is migrated."""
    if registry_role(conn) == "production":
        return "it is marked as a production registry"
    with conn.transaction():
        mappings = conn.execute("SELECT to_regclass('model_mappings') IS NOT NULL").fetchone()
        certifications = conn.execute("SELECT to_regclass('certifications') IS NOT NULL").fetchone()
        # A passed rehearsal writes its row and its rehearsal_passed certification in one transaction: any other
        # row was written by someone else (ias-admin, the platform), and the router may read it. Marked or not.
        foreign = conn.execute(
            "SELECT count(*) FROM model_mappings m WHERE NOT EXISTS (SELECT 1 FROM certifications c WHERE "
            "c.model_name = m.name AND c.verdict = 'rehearsal_passed')" if certifications and certifications[0]
            else "SELECT count(*) FROM model_mappings").fetchone() if mappings and mappings[0] else None
    if foreign and foreign[0]:
        return (f"it holds {foreign[0]} model_mappings row(s) no rehearsal registered (a registry the platform's "
                "router may read)")
    with conn.transaction():
        exists = conn.execute("SELECT to_regclass('certifications') IS NOT NULL").fetchone()
        # Any run that was not a rehearsal (certified, failed, partial, interrupted) was a production one.
        row = conn.execute("SELECT count(*) FROM certifications WHERE verdict NOT LIKE 'rehearsal\\_%'").fetchone() \
            if exists and exists[0] else None
    production = int(row[0]) if row else 0
    return f"it holds {production} certification(s) of runs that were not rehearsals" if production else None


def claim_for_rehearsals(conn: psycopg.Connection, where: str | None = None) -> None:
    """Refuse a production database before touching it; else migrate it and mark it 'rehearsal'."""
    where = where or database_name(conn)
    if reason := _production_reason(conn):
        raise NotARehearsalRegistry(f"refusing {where} as the rehearsal registry: {reason}; {WAY_OUT}")
    migrate(conn)
    with conn.transaction():
        mark_role(conn, "rehearsal")
        # Again inside the marking transaction: a certification or a row written meanwhile undoes the mark.
        if reason := _production_reason(conn):
            raise NotARehearsalRegistry(f"refusing {where} as the rehearsal registry: {reason}; {WAY_OUT}")


def refuse_same_database(rehearsal: Secret, given: Secret, rehearsal_where: str, given_where: str) -> None:
    """Before a rehearsal claims ``rehearsal``: refuse it when it is the database ``given`` for certifications,
    decided by the server's identity (any address, port, alias or DSN form of one database is the same).

    A ``given`` registry that cannot be reached cannot be the one the rehearsal writes: nothing to refuse.
    """
    try:
        first = db.connect(rehearsal)
    except db.DatabaseUnreachable:
        return  # starting the rehearsal registry will say so
    try:
        try:
            second = db.connect(given)
        except db.DatabaseUnreachable:
            return
        try:
            same = database_identity(first) == database_identity(second)
        except psycopg.Error as exc:
            raise NotARehearsalRegistry(f"cannot tell whether the rehearsal registry {rehearsal_where} is the "
                                        f"registry you gave ({given_where}): {type(exc).__name__}; {WAY_OUT}"
                                        ) from None
        finally:
            second.close()
    finally:
        first.close()
    if same:
        raise NotARehearsalRegistry(f"the rehearsal registry {rehearsal_where} and the registry you gave "
                                    f"({given_where}) are the same database (or a physical copy of it): a "
                                    f"rehearsal never writes a production registry; {WAY_OUT}")


def refuse_rehearsal_registry(conn: psycopg.Connection, where: str | None = None) -> None:
    """For the production path: raise when ``conn`` is the rehearsal registry (no certification goes there)."""
    if registry_role(conn) == "rehearsal":
        raise IsTheRehearsalRegistry(f"{where or database_name(conn)} is marked as a rehearsal registry: a "
                                     "certification is never registered there; name the production registry")


def _shown(path: Path) -> str:
    """``path`` with the home directory written as ``~``."""
    home = Path.home()
    return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)


def _lock(path: Path, timeout_s: float, what: str) -> int:
    """Hold an exclusive lock on ``path`` (waiting up to ``timeout_s``); return its descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RehearsalRegistryInUse(f"{what} is in use by another run (pid {holder}); gave up after "
                                             f"waiting {timeout_s:g}s for {path}") from None
            time.sleep(LOCK_POLL_S)
            continue
        # The holder's pid, so that a run left waiting can say who it waited for.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd


def _password(directory: Path) -> Secret:
    """The local registry's password: generated on first use and kept (mode 0600) in ``directory``."""
    path = directory / PASSWORD_FILE
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise GateError(f"{path} can be read by others (mode {mode:o}); run: chmod 600 {path}")
        return Secret(path.read_text().strip())
    if (directory / "data" / "PG_VERSION").exists():
        raise GateError(f"{directory} holds a registry but not its password file; remove {directory} to start "
                        "a fresh rehearsal registry")
    # Written whole and renamed in: an interrupted run never leaves an empty password behind.
    fresh = directory / f".{PASSWORD_FILE}.new"
    fresh.unlink(missing_ok=True)
    with os.fdopen(os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(secrets.token_urlsafe(24) + "\n")
        out.flush()
        os.fsync(out.fileno())
    fresh.rename(path)
    return Secret(path.read_text().strip())


def default_directory() -> Path:
    """``$VLLM_GATE_STATE/rehearsal-registry`` when set; else /var/lib/vllm-gate/... as root, ~/.local/state/..."""
    if os.environ.get("VLLM_GATE_STATE") or os.geteuid() != 0:
        return STATE_ROOT / DIR_NAME
    return ROOT_DIRECTORY


class RehearsalRegistry(Started):
    """Start with ``with RehearsalRegistry() as registry:``; write rehearsals to ``registry.dsn``."""

    def __init__(self, dsn: str | Secret | None = None, *, directory: Path | None = None,
                 lock_timeout_s: float = LOCK_TIMEOUT_S, pods_reach: tuple[str, str, int] | None = None) -> None:
        """``pods_reach``: (the host's address on a local cluster's node link, the network its pods come from, the
        port they may reach): the local server listens there too, on that port, so the cluster's API-router
        stand-in reads it (``pods_dsn``)."""
        given = dsn if dsn is not None else os.environ.get(DSN_ENV) or None
        self._given = Secret(given) if isinstance(given, str) else given
        self._source = "--rehearsal-database-url" if dsn is not None else DSN_ENV
        self.directory = directory if directory is not None else default_directory()
        self.lock_timeout_s = lock_timeout_s
        self._lock_fd: int | None = None
        self._server: PostgresServer | None = None
        self._pods_reach = pods_reach

    @property
    def location(self) -> str:
        """Where the registry is: its database URL (password hidden) or its directory."""
        return db.redact_dsn(self._given) if self._given is not None else _shown(self.directory)

    @property
    def description(self) -> str:
        kind = self._source if self._given is not None else "persistent"
        return f"the rehearsal registry at {self.location} ({kind}; never a production registry)"

    @property
    def dsn(self) -> Secret:
        if self._given is not None:
            return self._given
        if self._server is None:
            raise GateError(f"{self.description} is not started")
        return Secret(self._server.dsn)

    @property
    def pods_dsn(self) -> Secret | None:
        """The DSN a local cluster's pods use: through the node link's host address; None for a database given by
        its DSN (the gate cannot tell whether pods reach it) or without ``pods_reach``."""
        if self._given is not None or self._server is None or self._pods_reach is None:
            return None
        return Secret(self._server.dsn_at(self._pods_reach[0]))

    def __repr__(self) -> str:
        return f"RehearsalRegistry({self.description!r})"

    def _start_local(self) -> None:
        # Others may enter (not list) the directory: as root the server runs as 'postgres' and needs data/.
        self.directory.mkdir(mode=0o711, parents=True, exist_ok=True)
        self._lock_fd = _lock(self.directory / LOCK_FILE, self.lock_timeout_s, self.description)
        listen, admit, port = self._pods_reach or (None, None, None)
        self._server = PostgresServer(data_dir=self.directory / "data", password=_password(self.directory),
                                      also_listen=listen, also_admit=admit, port=port)
        try:
            self._server.start()
        except DataDirUnreachable as exc:
            raise DataDirUnreachable(f"cannot start {self.description}: {exc.summary}; set {DSN_ENV} to a "
                                     "database for rehearsals, or VLLM_GATE_STATE to a directory it can enter"
                                     ) from None

    def start(self) -> RehearsalRegistry:
        if self._given is None:
            self._start_local()
        conn = db.connect(self.dsn)
        try:
            claim_for_rehearsals(conn, self.location)
        finally:
            conn.close()
        return self

    def stop(self) -> None:
        try:
            if self._server is not None:
                self._server.stop()
        finally:
            self._server = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the lock
                self._lock_fd = None
