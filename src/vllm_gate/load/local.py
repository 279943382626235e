"""The load test from this machine: Locust as a separate headless process, its raw samples read back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vllm_gate.base.tools import LOADTESTS_DIR
from vllm_gate.load.profile import STOP_TIMEOUT_S, profile_args
from vllm_gate.load.samples import LoadFailed, LoadRun, read_samples
from vllm_gate.spec import Load

PROGRESS_EVERY_S = 5.0
GRACE_S = 30.0  # after its stop timeout: Locust records the requests it cut and writes its summary
KILL_WAIT_S = 10.0
# What the Locust child may inherit: enough to run Python and format text, nothing that can hold a secret.
INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
INHERITED_ENV_PREFIXES = ("LC_",)

# What the tunnel cost, measured (bench/incluster_load.py, README "Benchmarks"): quoted wherever a load test ran
# through port-forward, so that the warning carries a number.
TUNNEL_COST = ("measured 2026-11-27 on the local cluster at 256 streams: TTFT p95 +17 %, ITL p95 +39 %, "
               "throughput -7 % against the same load from in-cluster pods")


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
             progress: Callable[[str], None], *, stop_timeout_s: float = STOP_TIMEOUT_S) -> LoadRun:
    """Drive ``load`` against ``url`` with Locust in its own process; return the raw samples (a request still in
    flight ``stop_timeout_s`` after the run ends is cut: recorded as not completed)."""
    workdir.mkdir(parents=True, exist_ok=True)
    samples_path = workdir / "samples.jsonl"
    samples_path.unlink(missing_ok=True)
    log_path = workdir / "locust.log"
    args, duration = profile_args(load)
    command = [sys.executable, "-m", "locust", "-f", str(LOADTESTS_DIR / "locustfile.py"), "--headless",
               "--host", url, "--only-summary", "--stop-timeout", f"{stop_timeout_s:g}", "--exit-code-on-error", "0",
               *args]
    started = time.monotonic()
    cpu_before = os.times()
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=locust_env(served_model, load, samples_path))
        try:
            deadline = started + duration + stop_timeout_s + GRACE_S
            last = started
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    raise LoadFailed(f"locust did not finish within {duration + stop_timeout_s + GRACE_S:.0f} s; "
                                     f"see {log_path}")
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


@dataclass(frozen=True)
class LocalLoad:
    """A ``LoadRunner``: one Locust process on this machine against ``url``."""

    url: str
    served_model: str
    load: Load
    workdir: Path
    progress: Callable[[str], None]
    where: str  # one line: where this machine reaches the model from (directly, its pod, a port-forward)

    def describe(self) -> str:
        return self.where

    def run(self) -> LoadRun:
        return run_load(self.url, self.served_model, self.load, self.workdir, self.progress)
