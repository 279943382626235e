"""Start and stop the vLLM simulator: a GPU-free server with vLLM's API, metrics and latency knobs."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from vllm_gate.base.errors import EndpointError, ToolMissing
from vllm_gate.base.lifecycle import Started
from vllm_gate.base.ports import free_port
from vllm_gate.base.tools import find_tool, tools_dir

# The llm-d simulator when it could be built; else our stand-in with the same flags (scripts/vllm-sim).
SIM_BINARIES = ("llm-d-inference-sim", "vllm-sim-standin")
# Flags both simulators accept; anything else from a vLLM pod's args is dropped (they reject it).
SIM_FLAGS_WITH_VALUE = {"--model", "--served-model-name", "--port", "--max-model-len", "--max-num-seqs",
                        "--time-to-first-token", "--inter-token-latency", "--time-to-first-token-std-dev",
                        "--inter-token-latency-std-dev", "--failure-injection-rate", "--failure-types",
                        "--startup-duration", "--seed", "--mode", "--tensor-parallel-size"}
# The stand-in's defaults for its own flags (the simulated model the identity checks need): they are passed
# only when they differ, so that the llm-d simulator, which refuses them, still starts with the defaults.
STANDIN_DEFAULTS = {"--chat-template": "none", "--eos-after": "24", "--answer-salt": "", "--vllm-version": ""}
# A model pod carries the stand-in's own settings as annotations (charts/vllm), never as container args: the
# llm-d image, which a real cluster runs, refuses flags it does not know.
STANDIN_ANNOTATIONS = {"vllm-gate/sim-chat-template": "--chat-template", "vllm-gate/sim-eos-after": "--eos-after",
                       "vllm-gate/sim-answer-salt": "--answer-salt"}
STOP_TIMEOUT_S = 10


def sim_binary() -> Path:
    """Return the simulator binary (the llm-d one when installed)."""
    for name in SIM_BINARIES:
        path = find_tool(name)
        if path is not None:
            return path
    raise ToolMissing(f"no vLLM simulator ({' or '.join(SIM_BINARIES)}) in {tools_dir()}; run scripts/setup.sh")


def sim_name() -> str:
    """Which simulator this machine runs, for reports (the stand-in is named as such)."""
    found = next((name for name in SIM_BINARIES if find_tool(name) is not None), None)
    return found or "no simulator installed"


def sim_args_from_pod(args: list[str], port: int, annotations: Mapping[str, str] | None = None) -> list[str]:
    """Translate a model pod's container args (vLLM's or the simulator's) and its annotations (the stand-in's
    simulated model, STANDIN_ANNOTATIONS) into simulator args on ``port``."""
    out: list[str] = []
    rest = list(args)
    if rest and not rest[0].startswith("-"):
        out += ["--model", rest.pop(0)]  # vllm serve MODEL
    i = 0
    while i < len(rest):
        name, eq, inline = rest[i].partition("=")
        has_value = not eq and i + 1 < len(rest) and not rest[i + 1].startswith("--")
        value = inline if eq else (rest[i + 1] if has_value else None)
        if name in SIM_FLAGS_WITH_VALUE and name != "--port" and value is not None:
            out += [name, value]
        i += 1 if eq or not has_value else 2
    for annotation, name in STANDIN_ANNOTATIONS.items():
        value = (annotations or {}).get(annotation)
        if value is not None and value != STANDIN_DEFAULTS[name]:
            out += [name, value]
    return [*out, "--port", str(port)]


@dataclass
class SimServer(Started):
    """A simulator process on a loopback port; use as a context manager or start()/stop()."""

    model: str
    served_name: str | None = None
    max_model_len: int = 4096
    ttft_ms: float = 0
    itl_ms: float = 0
    ttft_std_ms: float = 0
    itl_std_ms: float = 0
    failure_rate_pct: float = 0
    failure_types: list[str] = field(default_factory=list)
    startup_s: float = 0
    max_num_seqs: int = 256
    # The simulated model (the stand-in only): chat template counted in usage.prompt_tokens, tokens before
    # end-of-sequence (0: never), and a salt that changes every temperature-0 answer.
    chat_template: str = "none"
    eos_after: int = 24
    answer_salt: str = ""
    vllm_version: str = ""  # what GET /version answers (the stand-in only); empty: not served
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def binary(self) -> Path:
        return sim_binary()

    def args(self) -> list[str]:
        args = ["--model", self.model, "--served-model-name", self.served_name or self.model,
                "--port", str(self.port), "--max-model-len", str(self.max_model_len),
                "--max-num-seqs", str(self.max_num_seqs),
                "--time-to-first-token", f"{self.ttft_ms}ms", "--inter-token-latency", f"{self.itl_ms}ms"]
        if self.ttft_std_ms:
            args += ["--time-to-first-token-std-dev", f"{self.ttft_std_ms}ms"]
        if self.itl_std_ms:
            args += ["--inter-token-latency-std-dev", f"{self.itl_std_ms}ms"]
        if self.failure_rate_pct:
            args += ["--failure-injection-rate", str(self.failure_rate_pct)]
        if self.failure_types:
            args += ["--failure-types", ",".join(self.failure_types)]
        if self.startup_s:
            args += ["--startup-duration", f"{self.startup_s}s"]
        own = {"--chat-template": self.chat_template, "--eos-after": str(self.eos_after),
               "--answer-salt": self.answer_salt, "--vllm-version": self.vllm_version}
        args += [part for flag, value in own.items() if value != STANDIN_DEFAULTS[flag] for part in (flag, value)]
        return args

    def start(self, wait_s: float = 15) -> SimServer:
        self._proc = start_process(self.binary, self.args(), self.log_path)
        if wait_s:
            wait_listening(self.url, wait_s, self._proc)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None



def start_process(binary: Path, args: list[str], log_path: Path | None) -> subprocess.Popen[bytes]:
    """Start the simulator; its output goes to ``log_path`` (or is discarded)."""
    log = log_path.open("ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen([str(binary), *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    finally:
        if log_path:
            log.close()  # the child holds its own descriptor


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)


def wait_listening(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``url/health`` answers at all (any status); fail at once if the process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise EndpointError(f"simulator exited with status {proc.returncode} before listening on {url}")
        try:
            httpx.get(f"{url}/health", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise EndpointError(f"simulator did not listen on {url} within {timeout_s:.0f} s")
