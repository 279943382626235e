"""A PostgreSQL server (the Debian package's binaries) on a loopback port: throwaway, or kept in a directory."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

from vllm_gate.base.errors import GateError
from vllm_gate.base.lifecycle import Started
from vllm_gate.base.ports import free_port, port_open
from vllm_gate.base.secret import REDACTED, Secret

START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30


class DataDirUnreachable(GateError):
    """The account PostgreSQL runs as cannot enter the directories above a kept data directory."""


def pg_bindir() -> Path:
    """Return the newest installed PostgreSQL server's bin directory."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if not candidates:
        found = shutil.which("initdb")
        if not found:
            raise GateError("PostgreSQL server binaries (initdb) not found; run scripts/setup.sh")
        return Path(found).resolve().parent
    return candidates[-1].parent


class PostgresServer(Started):
    """Start with ``with PostgresServer() as pg:``; ``pg.dsn`` carries a random password.

    By default everything lives in a temporary directory that ``stop`` removes. Given ``data_dir`` and the
    password its cluster is made with, the cluster is kept there: made on the first start, reused by later
    ones, shut down cleanly and never removed. The caller makes sure only one server uses ``data_dir`` at a
    time; a server found running there is taken to be left over from a run that died, and is stopped.
    """

    def __init__(self, user: str = "gate", database: str = "registry", *, data_dir: Path | None = None,
                 password: Secret | None = None, also_listen: str | None = None,
                 also_admit: str | None = None, port: int | None = None) -> None:
        """``also_listen``: one more address to listen on (besides loopback); ``also_admit``: the network whose
        clients may log in there (with the password), e.g. a local cluster's pods behind its node's address;
        ``port``: a fixed port (a free one by default)."""
        if (data_dir is None) != (password is None):
            raise ValueError("a kept data_dir needs the password its cluster is made with, and only it takes one")
        self.user = user
        self.database = database
        self.password = password.reveal() if password is not None else secrets.token_urlsafe(16)
        if port is not None and port_open(port):
            raise GateError(f"PostgreSQL: port {port} on 127.0.0.1 is taken by another program; the rehearsal "
                            "registry listens there for the local cluster's pods")
        self.port = port if port is not None else free_port()
        # The whole server when throwaway; only the socket, the log and initdb's password file when kept.
        self._dir = Path(tempfile.mkdtemp(prefix="vllm-gate-pg-"))
        self._kept = data_dir is not None
        self._data = data_dir if data_dir is not None else self._dir / "data"
        self._bindir = pg_bindir()
        # PostgreSQL refuses to run as root; use the package's postgres account then.
        self._run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.also_listen = also_listen
        self.also_admit = also_admit

    @property
    def dsn(self) -> str:
        return self.dsn_at("127.0.0.1")

    def dsn_at(self, host: str) -> str:
        """The DSN through ``host``: loopback, or ``also_listen`` for the clients ``also_admit`` names."""
        credentials = f"{self.user}:{self.password}"
        return f"postgresql://{credentials}@{host}:{self.port}/{self.database}"

    def _hba_file(self) -> Path:
        """initdb's rules (local trust, loopback with the password) plus the admitted network, with the password."""
        path = self._dir / "pg_hba.conf"
        path.write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
                        "host all all ::1/128 scram-sha-256\n"
                        f"host {self.database} {self.user} {self.also_admit} scram-sha-256\n")
        self._give_to_server_account(path)
        return path

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*self._run_as, *args], capture_output=True, text=True,
                              timeout=START_TIMEOUT_S, check=False)
        if proc.returncode != 0:
            raise GateError(f"{Path(args[0]).name} failed (exit {proc.returncode})",
                            (proc.stdout + proc.stderr).replace(self.password, REDACTED))
        return proc

    def _give_to_server_account(self, path: Path) -> None:
        if self._run_as:
            account = pwd.getpwnam("postgres")
            os.chown(path, account.pw_uid, account.pw_gid)

    def _check_reachable(self) -> None:
        """As root the server runs as 'postgres': that account must be able to enter every directory above the data."""
        if not self._run_as:
            return
        target = self._data.parent
        if self._can_enter(target):
            return
        blocker = next((p for p in [*reversed(target.parents), target] if not self._can_enter(p)), target)
        raise DataDirUnreachable(f"PostgreSQL runs as the 'postgres' account here (it refuses root), and that "
                                 f"account cannot enter {blocker} on the way to {self._data}")

    def _can_enter(self, path: Path) -> bool:
        return subprocess.run([*self._run_as, "test", "-x", str(path)], capture_output=True, timeout=30,
                              check=False).returncode == 0

    def _initdb(self) -> None:
        # A kept cluster is made beside its place and renamed in: an interrupted initdb leaves no half cluster.
        target = self._data.with_name(self._data.name + ".initdb") if self._kept else self._data
        if self._kept:
            if self._data.exists() and any(self._data.iterdir()):
                raise GateError(f"{self._data} is neither empty nor a PostgreSQL data directory; move it away")
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(mode=0o700)
            self._give_to_server_account(target)
        pwfile = self._dir / "pw"
        with os.fdopen(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(self.password + "\n")
        self._give_to_server_account(pwfile)
        # A throwaway cluster skips the final sync; a kept one must survive a crash of the machine.
        no_sync = [] if self._kept else ["--no-sync"]
        try:
            self._run(str(self._bindir / "initdb"), "-D", str(target), "-U", self.user, "--pwfile", str(pwfile),
                      "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", *no_sync)
        finally:
            pwfile.unlink()
        if self._kept:
            if self._data.exists():
                self._data.rmdir()  # empty, checked above
            target.rename(self._data)

    def _ensure_database(self) -> None:
        with psycopg.connect(host=str(self._dir), port=self.port, user=self.user, dbname="postgres",
                             autocommit=True, connect_timeout=START_TIMEOUT_S) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    def start(self) -> PostgresServer:
        self._give_to_server_account(self._dir)
        if self._kept:
            self._check_reachable()
            if (self._data / "postmaster.pid").exists():
                self._shut_down()
        if not (self._data / "PG_VERSION").exists():
            self._initdb()
        # fsync is off only for a throwaway server: a kept one holds what later runs compare with.
        listen = ",".join(["127.0.0.1", *([self.also_listen] if self.also_listen else [])])
        options = f"-p {self.port} -k {self._dir} -c listen_addresses={listen}"
        if self.also_admit:
            options += f" -c hba_file={self._hba_file()}"
        if not self._kept:
            options += " -c fsync=off"
        self._run(str(self._bindir / "pg_ctl"), "-D", str(self._data), "-l", str(self._dir / "log"), "-w",
                  "-t", str(START_TIMEOUT_S), "-o", options, "start")
        self._ensure_database()
        return self

    def _shut_down(self) -> None:
        """Stop the server on the data directory: a kept one cleanly (no recovery next time), else at once."""
        modes = ["fast", "immediate"] if self._kept else ["immediate"]
        for mode in modes:
            done = subprocess.run([*self._run_as, str(self._bindir / "pg_ctl"), "-D", str(self._data), "-m", mode,
                                   "-w", "-t", str(STOP_TIMEOUT_S), "stop"],
                                  capture_output=True, timeout=STOP_TIMEOUT_S * 2, check=False)
            if done.returncode == 0:
                return

    def stop(self) -> None:
        if (self._data / "postmaster.pid").exists():
            self._shut_down()
        shutil.rmtree(self._dir, ignore_errors=True)
