"""A stand-in dcgm-exporter for the local cluster: serves RECORDED H100 telemetry (test data) per model pod.

The local cluster has no GPU. So that a rehearsal still runs the GPU checks through Prometheus end to end,
this exporter serves, for every pod the data plane runs, the captured H100 readings in dcgm-exporter's
format: the load capture while the pod's simulator has requests in flight, the idle capture otherwise.
Everything it serves is named as recorded telemetry; the gpu suite never reports it as a live GPU.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from vllm_gate.base.errors import GateError
from vllm_gate.checks.metrics import parse
from vllm_gate.cluster.dataplane.served_pods import ServedPod
from vllm_gate.monitoring.recorded import PodGpus, RecordedGpu, dcgm_exposition

BUSY_FAMILIES = ("vllm:num_requests_running", "vllm:num_requests_waiting")


def simulator_busy(address: str) -> bool:
    """Whether the simulator at ``address`` (host:port) has requests running or waiting (its own /metrics says)."""
    try:
        response = httpx.get(f"http://{address}/metrics", timeout=0.5)
        scraped = parse(response.text)
    except (httpx.HTTPError, ValueError, GateError):
        return False  # an unreachable simulator is not serving load
    return any(s.value > 0 for name in BUSY_FAMILIES for s in scraped.family(name) or [])


class RecordedDcgmExporter:
    """An HTTP server answering GET /metrics with recorded DCGM series (on a loopback port unless told where)."""

    def __init__(self, served: Callable[[], Sequence[ServedPod]], *, recorded: RecordedGpu | None = None,
                 busy: Callable[[ServedPod], bool] = lambda pod: simulator_busy(pod.address),
                 listen: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        """``recorded``: the capture to serve (default: the packaged H100 one); ``busy``: whether a pod has load;
        ``listen``: (address, port) to serve on."""
        self._served = served
        self._recorded = recorded
        self._busy = busy
        self._ticks = itertools.count()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exporter.exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: Prometheus scrapes every second."""

        self._server = ThreadingHTTPServer(listen, Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="vllm-gate-recorded-dcgm",
                                        daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def exposition(self) -> str:
        served = {(p.namespace, p.pod): p for p in self._served()}
        pods = [PodGpus(p.namespace, p.pod, p.container, p.node, p.gpus) for p in served.values() if p.gpus > 0]
        return dcgm_exposition(pods, lambda ns, pod: self._busy(served[(ns, pod)]), next(self._ticks),
                               recorded=self._recorded)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
