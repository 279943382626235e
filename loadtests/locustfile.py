"""Streaming chat load for the vLLM gate: one raw JSONL record per request.

Run by ``vllm_gate.load.local`` as a separate headless Locust process; by hand it works too:

    locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:8000 -u 8 -r 8 -t 60s \\
        --served-model llama3 --prompt-tokens 256 --output-tokens 128 --samples-file samples.jsonl

Distributed (``vllm_gate.load.incluster``: a master and workers as pods), the workers send their records to the
master in batches (a Locust custom message) and the master alone writes the samples file; it prints a progress
line every few seconds, and with ``--run-seconds`` it ends the run itself: it stops the workers and waits for
their last records before it quits (Locust's ``--run-time`` makes a master quit 0.5 s after telling the workers,
losing what requests still in flight would record).

Every streamed chunk is timestamped here: TTFT is the time to the first chunk that carries content
(vLLM sends a role-only chunk first), ITL every gap between content chunks, token counts come from
the usage chunk (``stream_options.include_usage``), and ``max_tokens`` + ``ignore_eos`` fix the output
length. Percentiles are computed later from these raw records, not from Locust's rounded stats.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections import Counter
from typing import Any

import gevent
from gevent import GreenletExit
from gevent.lock import Semaphore
from gevent.pool import Group
from geventhttpclient import HTTPClient
from locust import LoadTestShape, User, constant, events, task
from locust.runners import MasterRunner, WorkerRunner

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
         "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor",
         "whiskey", "xray", "yankee", "zulu")
PROFILE = json.loads(os.environ.get("VLLM_GATE_PROFILE", '{"kind": "users"}'))
# Rate profile: this many arrival users share the rate (one per worker when distributed).
ARRIVAL_USERS = max(1, int(os.environ.get("VLLM_GATE_ARRIVAL_USERS", "1")))
SAMPLES_MESSAGE = "vllm_gate_samples"
# A request still in flight when the run stops its users (after Locust's --stop-timeout): not completed, and
# recorded as such, never dropped (it would flatter e2e p99 and the error rate exactly when the server is overloaded).
CUT = "cut: still in flight when the load test stopped"
FORWARD_EVERY_S = 1.0
PROGRESS_EVERY_S = 5.0
PROGRESS_MARK = "vllm-gate-progress "  # a progress line: this, then a JSON object (vllm_gate.load.incluster)
WORKERS_MARK = "vllm-gate-workers "  # at the end: records received per worker, a JSON object
CONNECT_RETRY_S = 0.5
# Exit status when users died on an exception (their share of the load was never offered): the run is not the
# profile, whatever the requests that were made say.
USERS_FAILED_EXIT = 3


@events.init_command_line_parser.add_listener
def _options(parser: Any, **_kwargs: Any) -> None:
    parser.add_argument("--served-model", env_var="VLLM_GATE_SERVED_MODEL", default="", help="Model name to request")
    parser.add_argument("--prompt-tokens", env_var="VLLM_GATE_PROMPT_TOKENS", type=int, default=128)
    parser.add_argument("--output-tokens", env_var="VLLM_GATE_OUTPUT_TOKENS", type=int, default=64)
    parser.add_argument("--samples-file", env_var="VLLM_GATE_SAMPLES_FILE", default="samples.jsonl",
                        help="Where raw per-request records are appended (JSONL)")
    parser.add_argument("--request-timeout", env_var="VLLM_GATE_REQUEST_TIMEOUT", type=float, default=120.0)
    # A new pod's address may be admitted by a NetworkPolicy enforcer (kube-router, Cilium) a moment after it
    # starts: a user tries its first connection this long before it gives up.
    parser.add_argument("--connect-within", env_var="VLLM_GATE_CONNECT_WITHIN_S", type=float, default=30.0,
                        help="Seconds a user keeps trying its first connection (a refused one included)")
    parser.add_argument("--run-seconds", env_var="VLLM_GATE_RUN_SECONDS", type=float, default=0.0,
                        help="Master only: stop the workers after this long, wait for their last records, quit")


class Recorder:
    """Appends one JSON line per request; shared by every user of this process (and, on a master, every worker's
    records as they arrive)."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", buffering=1)  # noqa: SIM115  (closed on quitting)
        self._lock = Semaphore()
        self.written = 0
        self.errors = 0
        self.by_worker: Counter[str] = Counter()

    def write(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._file.write(json.dumps(record) + "\n")
            self.written += 1
            self.errors += record["error"] is not None

    def received(self, environment: Any, msg: Any, **_kwargs: Any) -> None:
        """A worker's batch (master)."""
        for record in msg.data:
            self.write(record)
        self.by_worker[msg.node_id] += len(msg.data)

    def flush(self) -> None:
        """Nothing is held back here: every write is a whole line, line-buffered."""

    def close(self) -> None:
        self._file.close()


class Forwarder:
    """A worker's recorder: records go to the master in batches, and the last batch when the worker stops."""

    def __init__(self, runner: Any) -> None:
        self._runner = runner
        self._batch: list[dict[str, Any]] = []
        gevent.spawn(self._forward_every)

    def write(self, record: dict[str, Any]) -> None:
        self._batch.append(record)

    def flush(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            self._runner.send_message(SAMPLES_MESSAGE, batch)

    def _forward_every(self) -> None:
        while True:
            gevent.sleep(FORWARD_EVERY_S)
            self.flush()

    def close(self) -> None:
        self.flush()


RECORDER: Recorder | Forwarder | None = None


@events.init.add_listener
def _open(environment: Any, **_kwargs: Any) -> None:
    global RECORDER
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        RECORDER = Forwarder(runner)
        return
    recorder = Recorder(environment.parsed_options.samples_file)
    RECORDER = recorder
    if isinstance(runner, MasterRunner):
        runner.register_message(SAMPLES_MESSAGE, recorder.received)
        gevent.spawn(_print_progress, environment, recorder)


@events.test_start.add_listener
def _started(environment: Any, **_kwargs: Any) -> None:
    seconds = getattr(environment.parsed_options, "run_seconds", 0.0)
    if isinstance(environment.runner, MasterRunner) and seconds > 0:
        gevent.spawn(_end_after, environment, seconds)


@events.test_stop.add_listener
def _stopped(**_kwargs: Any) -> None:
    # On a worker, after its users finished their requests and before it tells the master it stopped: the master
    # has every record before it counts the worker as stopped.
    if RECORDER is not None:
        RECORDER.flush()


@events.quitting.add_listener
def _close(environment: Any, **_kwargs: Any) -> None:
    runner = environment.runner
    if RECORDER is not None:
        RECORDER.close()
    if isinstance(RECORDER, Recorder) and isinstance(runner, MasterRunner):
        print(WORKERS_MARK + json.dumps(dict(sorted(RECORDER.by_worker.items()))), flush=True)
    if not isinstance(runner, WorkerRunner) and runner.exceptions:  # a master has its workers' too
        for error in runner.exceptions.values():
            print(f"vllm-gate: {error['count']} user(s) on {', '.join(sorted(error['nodes']))} stopped on an "
                  f"exception: {error['msg']}", flush=True)
        environment.process_exit_code = USERS_FAILED_EXIT


def _end_after(environment: Any, seconds: float) -> None:
    """Master: after ``seconds``, stop the workers (each sends its last records, then says it stopped), then quit."""
    gevent.sleep(seconds)
    environment.runner.stop()
    environment.runner.quit()


def _print_progress(environment: Any, recorder: Recorder) -> None:
    started = time.monotonic()
    while True:
        gevent.sleep(PROGRESS_EVERY_S)
        runner = environment.runner
        print(PROGRESS_MARK + json.dumps({
            "elapsed_s": round(time.monotonic() - started, 1), "state": runner.state, "requests": recorder.written,
            "errors": recorder.errors, "workers": len(runner.clients.ready) + len(runner.clients.running) +
            len(runner.clients.spawning), "missing": sorted(c.id for c in runner.clients.missing)}), flush=True)


def reach(http: HTTPClient, within_s: float) -> None:
    """Open the keep-alive connection with a /health request, so the first request's TTFT carries no TCP set-up;
    a refused or timed-out connection is tried again for ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            http.get("/health").read()
            return
        except OSError:  # refused, unreachable, timed out
            if time.monotonic() >= deadline:
                raise
            gevent.sleep(CONNECT_RETRY_S)


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
    except GreenletExit:  # the run stopped this user with its request in flight: recorded, then the stop goes on
        record.update(error=CUT, cut=True, e2e_s=time.perf_counter() - t0)
        if RECORDER is not None:
            RECORDER.write(record)
        raise
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
        reach(self.http, opts.connect_within)

    def on_stop(self) -> None:
        self.http.close()

    @task
    def chat(self) -> None:
        stream_chat(self.http, self.environment.parsed_options, self.environment)


class PoissonArrivals(User):
    """Open loop: arrivals at ``requests_per_s`` with exponential gaps, at most ``max_users`` in flight.

    Shared by ARRIVAL_USERS users (one per worker): each draws arrivals at its share of the rate, and Poisson
    streams add up to one at the whole rate; each holds its share of the cap on requests in flight.
    """

    fixed_count = ARRIVAL_USERS
    wait_time = constant(0)
    abstract = PROFILE.get("kind") != "rate"

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        cap = math.ceil(int(PROFILE.get("max_users", 64)) / ARRIVAL_USERS)
        self.in_flight = Semaphore(cap)
        self.requests = Group()
        self.http = HTTPClient.from_url(self.host, concurrency=cap, network_timeout=opts.request_timeout,
                                        connection_timeout=10)
        reach(self.http, opts.connect_within)

    def on_stop(self) -> None:
        # Arrivals stop at the end of the run; requests already sent finish and are recorded, or are cut (and
        # recorded as cut) when the stop timeout ends this user first.
        try:
            self.requests.join(timeout=self.environment.parsed_options.request_timeout)
        finally:
            self.requests.kill()
            self.http.close()

    def _one(self) -> None:
        try:
            stream_chat(self.http, self.environment.parsed_options, self.environment)
        finally:
            self.in_flight.release()

    @task
    def arrive(self) -> None:
        gevent.sleep(random.expovariate(float(PROFILE["requests_per_s"]) / ARRIVAL_USERS))
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
        """Users grow linearly from start_users to end_users over duration_s, then the test stops (a master with
        --run-seconds stops it itself, waiting for the workers' last records: the shape holds end_users)."""

        def tick(self) -> tuple[int, float] | None:
            t = self.get_run_time()
            duration = float(PROFILE["duration_s"])
            if t >= duration:
                if self.runner is not None and self.runner.environment.parsed_options.run_seconds > 0:
                    return int(PROFILE["end_users"]), 1.0
                return None
            start, end = int(PROFILE["start_users"]), int(PROFILE["end_users"])
            users = round(start + (end - start) * t / duration)
            return max(users, 1), max(abs(end - start) / duration, 1.0) * 10
