"""Run the Locust load test as a separate headless process and compute its statistics from raw samples."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vllm_gate.errors import GateError
from vllm_gate.spec import Load, RampProfile, RateProfile, UsersProfile
from vllm_gate.tools import LOADTESTS_DIR

PROGRESS_EVERY_S = 5.0
GRACE_S = 60.0  # in-flight requests finish and Locust writes its summary
STOP_TIMEOUT_S = 30  # Locust's --stop-timeout: a request in flight at the end finishes and is recorded
KILL_WAIT_S = 10.0
# What the Locust child may inherit: enough to run Python and format text, nothing that can hold a secret.
INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
INHERITED_ENV_PREFIXES = ("LC_",)

# What the tunnel cost, measured (bench/incluster_load.py, README "Benchmarks"): quoted wherever a load test ran
# through port-forward, so that the warning carries a number.
TUNNEL_COST = ("measured 2026-11-27 on the local cluster at 256 streams: TTFT p95 +17 %, ITL p95 +39 %, "
               "throughput -7 % against the same load from in-cluster pods")


class LoadFailed(GateError):
    """The load generator itself failed (not the server under test)."""


@dataclass(frozen=True)
class RequestSample:
    """One request as the load generator saw it."""

    start: float
    ttft_s: float | None
    itl_s: list[float]
    e2e_s: float
    prompt_tokens: int | None
    output_tokens: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def tpot_s(self) -> float | None:
        if not self.ok or self.ttft_s is None or not self.output_tokens or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


@dataclass
class LoadRun:
    samples: list[RequestSample]
    wall_s: float
    cpu_s: float  # CPU time the load generator used (user + system); NaN where it ran elsewhere (in-cluster)
    log_path: Path


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (numpy's default method); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def read_samples(path: Path, *, while_written: bool = False) -> list[RequestSample]:
    """The samples Locust wrote, one JSON object a line.

    ``while_written``: Locust is still appending, so a last line without its newline is being written and is
    left for the next read. Otherwise every line must be whole: a broken one fails naming it.
    """
    samples: list[RequestSample] = []
    if not path.exists():
        return samples
    text = path.read_text()
    if while_written:
        text = text[:text.rfind("\n") + 1]
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            samples.append(RequestSample(r["start"], r["ttft_s"], list(r["itl_s"]), r["e2e_s"],
                                         r["prompt_tokens"], r["output_tokens"], r["error"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise LoadFailed(f"{path} line {number} is not a whole sample ({type(exc).__name__}: {exc})") from None
    return samples


def profile_args(load: Load) -> tuple[list[str], float]:
    """Locust CLI arguments for the profile, and the run time in seconds."""
    p = load.profile
    if isinstance(p, UsersProfile):
        users = ["--users", str(p.users), "--spawn-rate", str(p.users)]
        return [*users, "--run-time", f"{p.duration_s:.0f}s"], p.duration_s
    if isinstance(p, RampProfile):
        return [], p.duration_s  # the locustfile's Ramp shape drives users and stops the run
    assert isinstance(p, RateProfile)
    return ["--users", "1", "--spawn-rate", "1", "--run-time", f"{p.duration_s:.0f}s"], p.duration_s


def locust_env(served_model: str, load: Load, samples_path: Path) -> dict[str, str]:
    """The Locust child's whole environment: an allow-list from ours plus its settings.

    Never all of ``os.environ``: it holds $HF_TOKEN and $IAS_DATABASE_URL, which the load generator has no use for.
    """
    env = {key: value for key, value in os.environ.items()
           if key in INHERITED_ENV or key.startswith(INHERITED_ENV_PREFIXES)}
    return {**env,
            "VLLM_GATE_PROFILE": load.profile.model_dump_json(), "VLLM_GATE_SERVED_MODEL": served_model,
            "VLLM_GATE_PROMPT_TOKENS": str(load.prompt_tokens),
            "VLLM_GATE_OUTPUT_TOKENS": str(load.output_tokens), "VLLM_GATE_SAMPLES_FILE": str(samples_path)}


def run_load(url: str, served_model: str, load: Load, workdir: Path,
             progress: Callable[[str], None]) -> LoadRun:
    """Drive ``load`` against ``url`` with Locust in its own process; return the raw samples."""
    workdir.mkdir(parents=True, exist_ok=True)
    samples_path = workdir / "samples.jsonl"
    samples_path.unlink(missing_ok=True)
    log_path = workdir / "locust.log"
    args, duration = profile_args(load)
    command = [sys.executable, "-m", "locust", "-f", str(LOADTESTS_DIR / "locustfile.py"), "--headless",
               "--host", url, "--only-summary", "--stop-timeout", str(STOP_TIMEOUT_S), "--exit-code-on-error", "0",
               *args]
    started = time.monotonic()
    cpu_before = os.times()
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=locust_env(served_model, load, samples_path))
        try:
            deadline = started + duration + GRACE_S
            last = started
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    raise LoadFailed(f"locust did not finish within {duration + GRACE_S:.0f} s; see {log_path}")
                time.sleep(0.2)
                if time.monotonic() - last >= PROGRESS_EVERY_S:
                    last = time.monotonic()
                    done = read_samples(samples_path, while_written=True)
                    errors = sum(1 for s in done if not s.ok)
                    progress(f"load {served_model}: {len(done)} requests, {errors} errors, "
                             f"{last - started:.0f}/{duration:.0f} s")
        finally:
            # Ctrl-C, a failing progress callback or the deadline: leave no Locust process behind.
            if proc.poll() is None:
                proc.kill()
                proc.wait(KILL_WAIT_S)
    cpu_after = os.times()
    cpu_s = (cpu_after.children_user - cpu_before.children_user +
             cpu_after.children_system - cpu_before.children_system)
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-20:])
        raise LoadFailed(f"locust exited with status {proc.returncode}; see {log_path}", tail)
    samples = read_samples(samples_path)
    if not samples:
        raise LoadFailed(f"locust recorded no requests; see {log_path}")
    return LoadRun(samples, time.monotonic() - started, cpu_s, log_path)
