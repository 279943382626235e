"""The local cluster's Prometheus: the binary scripts/build-go-tools.sh builds from the Go module proxy (with
Kubernetes service discovery, which Debian's build leaves out), and the image it runs in on the real node, as the
upstream image runs it (``quay.io/prometheus/prometheus``: entrypoint ``/bin/prometheus``, user nobody, data in
``/prometheus``)."""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

from vllm_gate.base.errors import ClusterError
from vllm_gate.base.tools import require_tool
from vllm_gate.cluster.node.oci import Entry, ImageSpec, is_static

PROMETHEUS_IMAGE_REPOSITORY = "vllm-gate/prometheus"
NOBODY = 65534  # the upstream image's user
DATA_DIR = "prometheus"
VERSION_TIMEOUT_S = 15


def prometheus_binary() -> Path:
    """The Prometheus scripts/build-go-tools.sh built (.tools/bin first, then PATH)."""
    return require_tool("prometheus")


@functools.cache
def prometheus_version() -> str:
    """``3.16.0`` from ``prometheus, version 3.16.0 (branch: ...)``: the image is tagged with it."""
    binary = prometheus_binary()
    proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT_S,
                          check=False)
    said = proc.stdout + proc.stderr
    match = re.search(r"version (\d+)\.(\d+)\.(\d+)", said)
    if match is None:
        raise ClusterError(f"images: {binary} --version did not say its version: {said.strip()[:200]}")
    tags = re.search(r"tags:\s*(\S+)", said)
    # Debian's 2.x build drops Kubernetes discovery by a patch; scripts/build-go-tools.sh builds 3.x with it.
    if int(match.group(1)) < 3 or (tags and "remove_all_sd" in tags.group(1)
                                   and "enable_kubernetes_sd" not in tags.group(1)):
        raise ClusterError(f"images: {binary} ({match.group(0)}) has no Kubernetes service discovery; run "
                           "scripts/setup.sh, which builds Prometheus 3 with it into .tools/bin")
    return ".".join(match.groups())


def prometheus_image_name() -> str:
    return f"{PROMETHEUS_IMAGE_REPOSITORY}:v{prometheus_version()}"


def prometheus_image() -> ImageSpec:
    """``/bin/prometheus`` (static), nobody's account, its data directory and /tmp."""
    binary = prometheus_binary().resolve()
    if not is_static(binary):
        raise ClusterError(f"images: {binary} is dynamically linked; scripts/build-go-tools.sh builds it static")
    entries = [
        Entry("bin/prometheus", 0o755, binary.read_bytes()),
        Entry("etc/passwd", 0o644, f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
                                   f"nobody:x:{NOBODY}:{NOBODY}:nobody:/nonexistent:/usr/sbin/nologin\n".encode()),
        Entry("etc/group", 0o644, f"root:x:0:\nnogroup:x:{NOBODY}:\n".encode()),
        Entry(DATA_DIR, 0o755, uid=NOBODY, gid=NOBODY),
        Entry("tmp", 0o1777),
    ]
    return ImageSpec(prometheus_image_name(), tuple(entries), entrypoint=("/bin/prometheus",),
                     user=f"{NOBODY}:{NOBODY}", workdir=f"/{DATA_DIR}")
