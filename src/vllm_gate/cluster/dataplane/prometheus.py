"""A real Prometheus (the Debian package) beside the local cluster, scraping what its data plane serves.

Targets come from file-based service discovery that the data plane rewrites as simulators come and go,
labelled ``namespace``/``pod``/``container`` as Kubernetes pod discovery relabelled by the Prometheus
Operator (or the community chart's ``kubernetes-pods`` job) labels them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
import yaml

from vllm_gate.base.errors import ClusterError
from vllm_gate.base.lifecycle import Started
from vllm_gate.base.ports import free_port
from vllm_gate.cluster.children import record_child
from vllm_gate.cluster.dataplane.sim import stop_process
from vllm_gate.cluster.node.prometheus_image import prometheus_binary

# One second: a rehearsal's load test lasts a minute, and the rate checks wait for a scrape at each edge.
SCRAPE_INTERVAL_S = 1
START_TIMEOUT_S = 30
MODEL_JOB = "kubernetes-pods"
DCGM_JOB = "dcgm-exporter"
JOBS = (MODEL_JOB, DCGM_JOB)

Target = tuple[str, Mapping[str, str]]  # (host:port, target labels)


class LocalPrometheus(Started):
    """Prometheus on a loopback port, its files under the cluster's directory; ``set_targets`` feeds discovery."""

    def __init__(self, cluster_dir: Path) -> None:
        self._cluster_dir = cluster_dir
        self.dir = cluster_dir / "prometheus"
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _targets_file(self, job: str) -> Path:
        return self.dir / f"targets-{job}.json"

    def set_targets(self, job: str, targets: Sequence[Target]) -> None:
        """Replace the job's targets; written whole then renamed, so Prometheus never reads half a file."""
        groups = [{"targets": [address], "labels": dict(labels)} for address, labels in targets]
        path = self._targets_file(job)
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(groups))
        os.replace(partial, path)

    def _config(self) -> Path:
        interval = f"{SCRAPE_INTERVAL_S}s"
        jobs = []
        for job in JOBS:
            self.set_targets(job, [])
            # honor_labels false (the default), as dcgm-exporter is usually scraped: its pod/namespace labels
            # clash with the target's and arrive as exported_pod/exported_namespace.
            jobs.append({"job_name": job, "honor_labels": False,
                         "file_sd_configs": [{"files": [str(self._targets_file(job))], "refresh_interval": interval}]})
        config = {"global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
                  "scrape_configs": jobs}
        path = self.dir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def start(self) -> LocalPrometheus:
        self.dir.mkdir(parents=True, exist_ok=True)
        log = (self.dir / "prometheus.log").open("ab")
        try:
            self._proc = subprocess.Popen(
                [str(prometheus_binary()), f"--config.file={self._config()}",
                 f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                 "--storage.tsdb.retention.time=1d", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        record_child(self._cluster_dir, self._proc.pid)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ClusterError(f"Prometheus exited with status {self._proc.returncode} while starting",
                                   self._log_tail())
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise ClusterError(f"Prometheus on {self.url} not ready within {START_TIMEOUT_S} s", self._log_tail())

    def _log_tail(self) -> str:
        path = self.dir / "prometheus.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-10:]) if path.exists() else ""

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None
