"""A stand-in dcgm-exporter for the local cluster: serves RECORDED H100 telemetry (test data) per model pod.

The local cluster has no GPU. So that a rehearsal still runs the GPU checks through Prometheus end to end,
this exporter serves, for every pod the data plane runs, the captured H100 readings in dcgm-exporter's
format: the load capture while the pod's simulator has requests in flight, the idle capture otherwise.
Everything it serves is named as recorded telemetry; the gpu suite never reports it as a live GPU.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from vllm_gate.base.errors import GateError
from vllm_gate.checks.metrics import parse
from vllm_gate.cluster.dataplane.served_pods import ServedPod
from vllm_gate.monitoring.recorded import PodGpus, RecordedGpu, dcgm_exposition

BUSY_FAMILIES = ("vllm:num_requests_running", "vllm:num_requests_waiting")


# A pod's load is read in the background, this often and with this long to answer: the real engine's /metrics through
# a kubectl port-forward, on two cores it saturates, can take longer than Prometheus waits for one scrape.
READ_EVERY_S = 1.0
# One kept-alive connection per pod: a new one through a port-forward is a new stream through the API server and the
# kubelet, which is what took longest on two saturated cores.
READ_TIMEOUT_S = 5.0
FRESH_S = 10.0  # a reading older than this is no reading: the pod counts as idle


def simulator_busy(address: str, http: httpx.Client | None = None) -> bool:
    """Whether the server at ``address`` (host:port) has requests running or waiting (its own /metrics says), read
    through ``http`` where given (a kept-alive connection); GateError when it cannot be read."""
    try:
        response = (http or httpx).get(f"http://{address}/metrics", timeout=READ_TIMEOUT_S)
        scraped = parse(response.text)
    except (httpx.HTTPError, ValueError) as exc:
        raise GateError(f"its /metrics at {address} unreadable ({type(exc).__name__})") from None
    return any(s.value > 0 for name in BUSY_FAMILIES for s in scraped.family(name) or [])


class RecordedDcgmExporter:
    """An HTTP server answering GET /metrics with recorded DCGM series (on a loopback port unless told where)."""

    def __init__(self, served: Callable[[], Sequence[ServedPod]], *, recorded: RecordedGpu | None = None,
                 busy: Callable[[ServedPod], bool] | None = None,
                 listen: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        """``recorded``: the capture to serve (default: the packaged H100 one); ``busy``: whether a pod has load
        (default: its own /metrics says, over a kept-alive connection); ``listen``: (address, port) to serve on."""
        self._served = served
        self._recorded = recorded
        self._busy = busy or self._read_own_metrics
        self._connections: dict[str, httpx.Client] = {}  # address -> its kept-alive connection
        self._ticks = itertools.count()
        self._readings: dict[tuple[str, str], tuple[bool, float]] = {}  # (namespace, pod) -> (busy, when read)
        self._unread: dict[tuple[str, str], tuple[int, str]] = {}  # (namespace, pod) -> (failed reads, last error)
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read_loads, name="vllm-gate-recorded-dcgm-load", daemon=True)
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

    def _read_own_metrics(self, pod: ServedPod) -> bool:
        http = self._connections.get(pod.address)
        if http is None:
            http = self._connections[pod.address] = httpx.Client()
        return simulator_busy(pod.address, http)

    def _read_loads(self) -> None:
        """Keep each served pod's latest load reading (and count the reads that failed, with the last error)."""
        while not self._stop.wait(READ_EVERY_S):
            for pod in list(self._served()):
                key = (pod.namespace, pod.pod)
                try:
                    self._readings[key] = (self._busy(pod), time.monotonic())
                except GateError as exc:
                    failed, _ = self._unread.get(key, (0, ""))
                    self._unread[key] = (failed + 1, exc.summary)

    def _pod_busy(self, pod: ServedPod) -> bool:
        """The latest fresh reading; before the first one, a read now."""
        reading = self._readings.get((pod.namespace, pod.pod))
        if reading is None:
            try:
                return self._busy(pod)
            except GateError:
                return False  # an unreadable server is not serving load
        busy, when = reading
        return busy and time.monotonic() - when < FRESH_S

    def unread(self) -> list[str]:
        """One line per pod whose load could not be read, for the data plane's failures."""
        return [f"recorded dcgm-exporter: the load of pod {ns}/{pod} could not be read {failed} times (last: {last})"
                for (ns, pod), (failed, last) in sorted(self._unread.items())]

    def exposition(self) -> str:
        served = {(p.namespace, p.pod): p for p in self._served()}
        pods = [PodGpus(p.namespace, p.pod, p.container, p.node, p.gpus) for p in served.values() if p.gpus > 0]
        return dcgm_exposition(pods, lambda ns, pod: self._pod_busy(served[(ns, pod)]), next(self._ticks),
                               recorded=self._recorded)

    def start(self) -> None:
        self._thread.start()
        self._reader.start()

    def stop(self) -> None:
        self._stop.set()
        if self._reader.is_alive():
            self._reader.join(READ_TIMEOUT_S + 2)
        for http in self._connections.values():
            http.close()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
