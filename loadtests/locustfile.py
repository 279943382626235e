"""Streaming chat load for the vLLM gate: one raw JSONL record per request.

Run by ``vllm_gate.load`` as a separate headless Locust process; by hand it works too:

    locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:8000 -u 8 -r 8 -t 60s \\
        --served-model llama3 --prompt-tokens 256 --output-tokens 128 --samples-file samples.jsonl

Every streamed chunk is timestamped here: TTFT is the time to the first chunk that carries content
(vLLM sends a role-only chunk first), ITL every gap between content chunks, token counts come from
the usage chunk (``stream_options.include_usage``), and ``max_tokens`` + ``ignore_eos`` fix the output
length. Percentiles are computed later from these raw records, not from Locust's rounded stats.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import gevent
from gevent.lock import Semaphore
from gevent.pool import Group
from geventhttpclient import HTTPClient
from locust import LoadTestShape, User, constant, events, task

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
         "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor",
         "whiskey", "xray", "yankee", "zulu")
PROFILE = json.loads(os.environ.get("VLLM_GATE_PROFILE", '{"kind": "users"}'))


@events.init_command_line_parser.add_listener
def _options(parser: Any, **_kwargs: Any) -> None:
    parser.add_argument("--served-model", env_var="VLLM_GATE_SERVED_MODEL", default="", help="Model name to request")
    parser.add_argument("--prompt-tokens", env_var="VLLM_GATE_PROMPT_TOKENS", type=int, default=128)
    parser.add_argument("--output-tokens", env_var="VLLM_GATE_OUTPUT_TOKENS", type=int, default=64)
    parser.add_argument("--samples-file", env_var="VLLM_GATE_SAMPLES_FILE", default="samples.jsonl",
                        help="Where raw per-request records are appended (JSONL)")
    parser.add_argument("--request-timeout", env_var="VLLM_GATE_REQUEST_TIMEOUT", type=float, default=120.0)


class Recorder:
    """Appends one JSON line per request; shared by every user of this process."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", buffering=1)  # noqa: SIM115  (closed on quitting)
        self._lock = Semaphore()

    def write(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._file.close()


RECORDER: Recorder | None = None


@events.test_start.add_listener
def _open(environment: Any, **_kwargs: Any) -> None:
    global RECORDER
    RECORDER = Recorder(environment.parsed_options.samples_file)


@events.quitting.add_listener
def _close(**_kwargs: Any) -> None:
    if RECORDER is not None:
        RECORDER.close()


def prompt(n_tokens: int) -> str:
    # The server's count is what we report; this only sizes the prompt near n_tokens.
    return " ".join(random.choice(WORDS) for _ in range(max(1, n_tokens - 8)))


def stream_chat(http: HTTPClient, opts: Any, environment: Any) -> None:
    """Send one streaming chat completion, time every chunk, record it, report it to Locust."""
    body = json.dumps({
        "model": opts.served_model, "stream": True, "stream_options": {"include_usage": True},
        "max_tokens": opts.output_tokens, "ignore_eos": True,
        "messages": [{"role": "user", "content": prompt(opts.prompt_tokens)}],
    })
    record: dict[str, Any] = {"start": time.time(), "ttft_s": None, "itl_s": [], "e2e_s": None,
                              "prompt_tokens": None, "output_tokens": None, "chunks": 0, "error": None}
    t0 = time.perf_counter()
    last = None
    try:
        resp = http.post("/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        if resp.status_code != 200:
            record["error"] = f"HTTP {resp.status_code}: {resp.read()[:200].decode(errors='replace')}"
        else:
            while True:
                line = resp.readline(b"\n")
                if not line:
                    break
                now = time.perf_counter()
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    break
                chunk = json.loads(payload)
                record["chunks"] += 1
                if chunk.get("usage"):
                    record["prompt_tokens"] = chunk["usage"].get("prompt_tokens")
                    record["output_tokens"] = chunk["usage"].get("completion_tokens")
                if any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
                    if last is None:
                        record["ttft_s"] = now - t0
                    else:
                        record["itl_s"].append(now - last)
                    last = now
            if record["ttft_s"] is None:
                record["error"] = "stream ended without a content chunk"
    except Exception as exc:  # any transport failure is one failed request, recorded as such
        record["error"] = f"{type(exc).__name__}: {exc}"
    record["e2e_s"] = time.perf_counter() - t0
    if RECORDER is not None:
        RECORDER.write(record)
    environment.events.request.fire(
        request_type="POST", name="chat (stream)", response_time=record["e2e_s"] * 1000,
        response_length=record["output_tokens"] or 0, context={},
        exception=RuntimeError(record["error"]) if record["error"] else None)


class ChatUser(User):
    """Closed loop: each user sends its next request as soon as the last one finished."""

    wait_time = constant(0)
    abstract = PROFILE.get("kind") == "rate"

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.http = HTTPClient.from_url(self.host, concurrency=1, network_timeout=opts.request_timeout,
                                        connection_timeout=10)
        # Open the keep-alive connection now, so the first request's TTFT carries no TCP set-up.
        self.http.get("/health").read()

    def on_stop(self) -> None:
        self.http.close()

    @task
    def chat(self) -> None:
        stream_chat(self.http, self.environment.parsed_options, self.environment)


class PoissonArrivals(User):
    """Open loop: arrivals at ``requests_per_s`` with exponential gaps, at most ``max_users`` in flight."""

    fixed_count = 1
    wait_time = constant(0)
    abstract = PROFILE.get("kind") != "rate"

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.in_flight = Semaphore(int(PROFILE.get("max_users", 64)))
        self.requests = Group()
        self.http = HTTPClient.from_url(self.host, concurrency=int(PROFILE.get("max_users", 64)),
                                        network_timeout=opts.request_timeout, connection_timeout=10)

    def on_stop(self) -> None:
        # Arrivals stop at the end of the run; requests already sent finish and are recorded.
        self.requests.join(timeout=self.environment.parsed_options.request_timeout)
        self.http.close()

    def _one(self) -> None:
        try:
            stream_chat(self.http, self.environment.parsed_options, self.environment)
        finally:
            self.in_flight.release()

    @task
    def arrive(self) -> None:
        gevent.sleep(random.expovariate(float(PROFILE["requests_per_s"])))
        if self.in_flight.acquire(blocking=False):
            self.requests.spawn(self._one)
        else:
            self.environment.events.request.fire(
                request_type="POST", name="chat (stream)", response_time=0, response_length=0, context={},
                exception=RuntimeError("dropped: max_users requests already in flight"))
            if RECORDER is not None:
                RECORDER.write({"start": time.time(), "ttft_s": None, "itl_s": [], "e2e_s": 0.0,
                                "prompt_tokens": None, "output_tokens": None, "chunks": 0,
                                "error": "dropped: max_users requests already in flight"})


if PROFILE.get("kind") == "ramp":

    class Ramp(LoadTestShape):
        """Users grow linearly from start_users to end_users over duration_s, then the test stops."""

        def tick(self) -> tuple[int, float] | None:
            t = self.get_run_time()
            duration = float(PROFILE["duration_s"])
            if t >= duration:
                return None
            start, end = int(PROFILE["start_users"]), int(PROFILE["end_users"])
            users = round(start + (end - start) * t / duration)
            return max(users, 1), max(abs(end - start) / duration, 1.0) * 10
