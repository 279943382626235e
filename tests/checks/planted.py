"""A planted bad server: a proxy in front of a real simulator that forwards everything but one fault.

Each fault is a way a server can look healthy to a lax check: /metrics that declares families without
samples, a stream without content or without ``[DONE]``, chat requests that all fail.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from vllm_gate.base.lifecycle import Started

UPSTREAM_TIMEOUT_S = 30
HOP_HEADERS = {"connection", "content-length", "transfer-encoding", "keep-alive", "host"}


class Fault(Enum):
    NONE = "none"  # a plain proxy: shows that the checks pass through it
    METRICS_TYPE_ONLY = "metrics-type-only"  # /metrics keeps its # HELP / # TYPE lines, drops every sample
    METRICS_404 = "metrics-404"
    STREAM_ROLE_USAGE_ONLY = "stream-role-usage-only"  # the stream loses every content chunk
    STREAM_NO_DONE = "stream-no-done"
    STREAM_USAGE_FIRST = "stream-usage-first"  # the usage chunk moves before the content
    CHAT_500 = "chat-500"  # every chat completion, streamed or not, answers 500
    VERSION_OTHER = "version-other"  # /version answers another vLLM release than the image's
    VERSION_404 = "version-404"  # no /version at all: not vLLM's OpenAI server
    ROOT_OTHER = "root-other"  # /v1/models says another model was loaded


PLANTED_VERSION = "0.10.2"  # another release than models/*.yaml's image, v0.11.0
PLANTED_ROOT = "meta-llama/Meta-Llama-3-8B"  # the base model, not the Instruct one the spec names
STREAM_FAULTS = {Fault.STREAM_ROLE_USAGE_ONLY, Fault.STREAM_NO_DONE, Fault.STREAM_USAGE_FIRST}


def _has_content(event: bytes) -> bool:
    data = event.removeprefix(b"data: ")
    if data == b"[DONE]":
        return False
    return any((c.get("delta") or {}).get("content") for c in json.loads(data).get("choices") or [])


def _is_usage(event: bytes) -> bool:
    data = event.removeprefix(b"data: ")
    return data != b"[DONE]" and bool(json.loads(data).get("usage"))


def plant_in_stream(fault: Fault, events: list[bytes]) -> list[bytes]:
    """Rewrite a complete list of SSE events (``data: ...`` without the blank line) to carry ``fault``."""
    if fault is Fault.STREAM_ROLE_USAGE_ONLY:
        return [e for e in events if not _has_content(e)]
    if fault is Fault.STREAM_NO_DONE:
        return [e for e in events if e != b"data: [DONE]"]
    if fault is Fault.STREAM_USAGE_FIRST:
        usage = [e for e in events if _is_usage(e)]
        rest = [e for e in events if not _is_usage(e)]
        first_content = next(i for i, e in enumerate(rest) if _has_content(e))
        return rest[:first_content] + usage + rest[first_content:]
    return events


def plant_in_metrics(text: str) -> str:
    """Keep only the comment lines of a Prometheus exposition: every family declared, none with a sample."""
    return "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))


class _Handler(BaseHTTPRequestHandler):
    server: _ProxyServer
    protocol_version = "HTTP/1.1"  # chunked streams; every answer still closes its connection

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read answers, not the proxy's access log."""

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _forward(self) -> None:
        fault = self.server.fault
        path = self.path.split("?", 1)[0]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chat = self.command == "POST" and path == "/v1/chat/completions"
        if (path, fault) in (("/metrics", Fault.METRICS_404), ("/version", Fault.VERSION_404)):
            self._send(404, "text/plain", b"404 page not found\n")
            return
        if path == "/version" and fault is Fault.VERSION_OTHER:
            self._send(200, "application/json", json.dumps({"version": PLANTED_VERSION}).encode())
            return
        if chat and fault is Fault.CHAT_500:
            error = {"error": {"message": "planted fault: every chat completion fails", "type": "InternalServerError",
                               "code": 500}}
            self._send(500, "application/json", json.dumps(error).encode())
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        with self.server.upstream.stream(self.command, self.path, headers=headers, content=body) as response:
            content_type = response.headers.get("content-type", "application/octet-stream")
            streamed = content_type.startswith("text/event-stream")
            if streamed and fault not in STREAM_FAULTS:
                self._pass_stream(response)
                return
            payload = response.read()
        if path == "/metrics" and fault is Fault.METRICS_TYPE_ONLY:
            payload = plant_in_metrics(payload.decode()).encode()
        if path == "/v1/models" and fault is Fault.ROOT_OTHER:
            listed = json.loads(payload)
            for model in listed["data"]:
                model["root"] = PLANTED_ROOT
            payload = json.dumps(listed).encode()
        if streamed:
            events = [e for e in payload.split(b"\n\n") if e.strip()]
            payload = b"".join(e + b"\n\n" for e in plant_in_stream(fault, events))
        self._send(response.status_code, content_type, payload)

    def _pass_stream(self, response: httpx.Response) -> None:
        """Forward a stream piece by piece as it arrives (chunked), so that timings pass through too."""
        self.send_response(response.status_code)
        self.send_header("Content-Type", response.headers["content-type"])
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        for piece in response.iter_bytes():
            if not piece:
                continue  # an empty chunk would end the body
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fault: Fault, upstream_url: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fault = fault
        self.upstream = httpx.Client(base_url=upstream_url, timeout=UPSTREAM_TIMEOUT_S)


@dataclass
class PlantedServer(Started):
    """A proxy on a loopback port in front of ``upstream_url`` that plants ``fault``; stop() closes it."""

    upstream_url: str
    fault: Fault
    _server: _ProxyServer | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        assert self._server is not None, "PlantedServer not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> PlantedServer:
        self._server = _ProxyServer(self.fault, self.upstream_url)
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"planted-{self.fault.value}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.upstream.close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
