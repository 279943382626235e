"""A throwaway PostgreSQL server (the Debian package's binaries) on a loopback port."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from vllm_gate.errors import GateError
from vllm_gate.lifecycle import Started
from vllm_gate.ports import free_port

START_TIMEOUT_S = 60


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
    """Start with ``with PostgresServer() as pg:``; ``pg.dsn`` carries a random password."""

    def __init__(self, user: str = "gate", database: str = "registry") -> None:
        self.user = user
        self.database = database
        self.password = secrets.token_urlsafe(16)
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="vllm-gate-pg-"))
        self._bindir = pg_bindir()
        # PostgreSQL refuses to run as root; use the package's postgres account then.
        self._run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def dsn(self) -> str:
        credentials = f"{self.user}:{self.password}"
        return f"postgresql://{credentials}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str) -> None:
        proc = subprocess.run([*self._run_as, *args], capture_output=True, text=True,
                              timeout=START_TIMEOUT_S, check=False)
        if proc.returncode != 0:
            raise GateError(f"{Path(args[0]).name} failed (exit {proc.returncode})",
                            (proc.stdout + proc.stderr).replace(self.password, "***"))

    def start(self) -> PostgresServer:
        data = self._dir / "data"
        pwfile = self._dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self._run_as:
            pg = pwd.getpwnam("postgres")
            os.chown(self._dir, pg.pw_uid, pg.pw_gid)
            os.chown(pwfile, pg.pw_uid, pg.pw_gid)
        pwfile.chmod(0o600)
        self._run(str(self._bindir / "initdb"), "-D", str(data), "-U", self.user, "--pwfile", str(pwfile),
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        pwfile.unlink()
        self._run(str(self._bindir / "pg_ctl"), "-D", str(data), "-l", str(self._dir / "log"), "-w",
                  "-t", str(START_TIMEOUT_S), "-o",
                  f"-p {self.port} -k {self._dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        self._run(str(self._bindir / "createdb"), "-h", str(self._dir), "-p", str(self.port),
                  "-U", self.user, self.database)
        return self

    def stop(self) -> None:
        data = self._dir / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run([*self._run_as, str(self._bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                            "-w", "-t", "30", "stop"], capture_output=True, timeout=60, check=False)
        shutil.rmtree(self._dir, ignore_errors=True)
