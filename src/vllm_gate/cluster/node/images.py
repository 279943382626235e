"""The real node's images, built here without a registry (cluster/node/oci.py), and their import into containerd.

The local cluster's real node runs the images the chart and the gate name, under those exact names, built here
from local binaries: the simulator stand-in as the llm-d simulator's image, the API-router stand-in, the sandbox
(pause) image, a curl image (Debian's own dash, curl and grep with their libraries) for `helm test` and the gate's
probe pods, and Locust's image (this machine's Python and Locust, cluster/node/locust_image.py) for the gate's
in-cluster load test, the cluster's own Prometheus (this machine's Debian build, cluster/node/prometheus_image.py),
and where it is installed the real engine's (cluster/node/vllm_image.py).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from vllm_gate.base.errors import ClusterError, ToolMissing
from vllm_gate.base.tools import CHART_DIR, require_tool
from vllm_gate.cluster.node.locust_image import default_image, locust_image
from vllm_gate.cluster.node.oci import (
    Entry,
    ImageSpec,
    host_architecture,
    image_path,
    is_static,
    normalized_reference,
    shared_libraries,
    write_image,
)
from vllm_gate.cluster.node.prometheus_image import prometheus_image
from vllm_gate.cluster.node.vllm_image import ENGINE_IMAGE_REPOSITORY, engine_version, vllm_cpu_image

# The name containerd's CRI is configured with for sandboxes (sandbox_image); the kubelet never pulls it.
SANDBOX_IMAGE = "registry.k8s.io/pause:3.10.1"
CONTAINERD_NAMESPACE = "k8s.io"  # the CRI's namespace: images elsewhere are invisible to the kubelet
IMPORT_TIMEOUT_S = 120
# The kubelet's image garbage collection leaves a pinned image alone (the CRI reports it as pinned).
PINNED_LABEL = "io.cri-containerd.pinned=pinned"
# The API-router stand-in (scripts/router-standin, cluster/dataplane/router_standin.py): a name of this project's own,
# never pulled.
ROUTER_STANDIN_IMAGE = "vllm-gate/router-standin:0.1.0"
CURL_UID = 100  # curlimages/curl runs as curl_user, uid 100; the chart's test pod sets runAsUser 100

Progress = Callable[[str], None]


# --- the images of the local cluster's node --------------------------------------------------------------
def static_binary_image(name: str, tool: str, *, user: str, install_as: str | None = None) -> ImageSpec:
    """An image holding one static binary from .tools/bin, which is its entrypoint (container args follow)."""
    binary = require_tool(tool).resolve()
    if not is_static(binary):
        raise ClusterError(f"images: {binary} is dynamically linked; image {name} has no libraries to run it")
    target = install_as or f"/usr/local/bin/{tool}"
    return ImageSpec(name, (Entry(target, 0o755, binary.read_bytes()), Entry("tmp", 0o1777)),
                     entrypoint=(target,), user=user)


def chart_images() -> dict[str, str]:
    """The images the chart names, from charts/vllm/values.yaml: 'sim' and 'tests'."""
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    sim, tests = values["sim"]["image"], values["tests"]["image"]
    return {"sim": f"{sim['repository']}:{sim['tag']}", "tests": f"{tests['repository']}:{tests['tag']}"}

def curl_image(name: str) -> ImageSpec:
    """The helm test image: this host's dash as /bin/sh, curl and grep with every library they load, a curl_user
    (uid/gid 100) and a world-writable /tmp. No entrypoint: the chart's test pod sets its command."""
    programs = {"bin/sh": Path("/bin/dash"), "usr/bin/curl": Path("/usr/bin/curl"),
                "usr/bin/grep": Path("/usr/bin/grep")}
    for source in programs.values():
        if not source.exists():
            raise ToolMissing(f"images: {source} is missing; the curl image is built from this host's Debian packages")
    files = dict(programs)
    for source in programs.values():
        files.update({str(lib).lstrip("/"): lib for lib in shared_libraries(source)})
    entries = [Entry(target, 0o755, source.resolve().read_bytes()) for target, source in files.items()]
    entries += [
        Entry("etc/passwd", 0o644, f"root:x:0:0:root:/root:/bin/sh\ncurl_user:x:{CURL_UID}:{CURL_UID}:curl_user:"
                                   f"/home/curl_user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                                   .encode()),
        Entry("etc/group", 0o644, f"root:x:0:\ncurl_user:x:{CURL_UID}:\nnogroup:x:65534:\n".encode()),
        # /etc/hosts (the kubelet's) before DNS, as Debian does.
        Entry("etc/nsswitch.conf", 0o644, b"passwd: files\ngroup: files\nhosts: files dns\n"),
        Entry("home/curl_user", 0o755, uid=CURL_UID, gid=CURL_UID),
        Entry("root", 0o700),
        Entry("tmp", 0o1777),
    ]
    return ImageSpec(name, tuple(entries), user=f"{CURL_UID}:{CURL_UID}")


def node_image_specs(*, engine: bool = False) -> list[ImageSpec]:
    """Every image the local cluster's real node needs, under the names the chart and the gate use; ``engine``: the
    real engine's too (vllm_image.py)."""
    chart = chart_images()
    engine_images = [vllm_cpu_image(f"{ENGINE_IMAGE_REPOSITORY}:v{engine_version()}")] if engine else []
    return [*engine_images,
        # The chart sets no command for engine: sim, so its args (the simulator's flags) go to the entrypoint.
        static_binary_image(chart["sim"], "vllm-sim-standin", user="65532:65532"),  # distroless nonroot, as llm-d's
        static_binary_image(SANDBOX_IMAGE, "vg-pause", user="65535:65535", install_as="/pause"),
        curl_image(chart["tests"]),
        static_binary_image(ROUTER_STANDIN_IMAGE, "router-standin", user="65532:65532"),
        # The gate's in-cluster load test (vllm_gate.load.incluster): this machine's Python and Locust.
        locust_image(default_image()),
        # The cluster's own Prometheus (cluster/dataplane/cluster_prometheus.py): this machine's Debian build.
        prometheus_image(),
    ]


def build_node_images(progress: Progress = lambda _m: None, directory: Path | None = None, *,
                      engine: bool = False) -> dict[str, Path]:
    """Build (or find in the cache) every image of the node (``engine``: the real engine's too); returns full image
    name -> tarball. A build (not a cache hit) says how long it took and how big the tarball is."""
    built: dict[str, Path] = {}
    for spec in node_image_specs(engine=engine):
        full = normalized_reference(spec.name)
        path = image_path(spec, directory)
        how = "cached"
        if not path.exists():
            started = time.monotonic()
            path = write_image(spec, directory)
            how = f"built in {time.monotonic() - started:.1f} s, {path.stat().st_size / 2**20:.1f} MiB"
        progress(f"image {full}: {path} ({how})")
        built[full] = path
    return built


# --- containerd ------------------------------------------------------------------------------------------

def _ctr(address: Path, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    cmd = [str(require_tool("ctr")), "--address", str(address), "--namespace", CONTAINERD_NAMESPACE, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)


def _tail(output: str, limit: int = 300) -> str:
    return " | ".join(line.strip() for line in output.strip().splitlines() if line.strip())[-limit:]


def import_command(ctr: Path, address: Path, tarball: Path, *, pinned: bool = False,
                   snapshotter: str = "overlayfs") -> list[str]:
    """The ctr command that imports ``tarball`` into the containerd at ``address`` (the CRI's namespace), unpacked
    for this host's platform and ``snapshotter``, so that a pod with imagePullPolicy IfNotPresent or Never runs it
    (the image names itself: io.containerd.image.name). ``pinned`` keeps the kubelet's image GC off it."""
    command = [str(ctr), "--address", str(address), "--namespace", CONTAINERD_NAMESPACE, "images", "import",
               "--platform", f"linux/{host_architecture()}", "--snapshotter", snapshotter]
    if pinned:
        command += ["--label", PINNED_LABEL]
    return [*command, str(tarball)]


def import_image(tarball: Path, name: str, address: Path, *, pinned: bool = False, snapshotter: str = "overlayfs",
                 timeout_s: float = IMPORT_TIMEOUT_S, inside: Sequence[str] = ()) -> None:
    """Run import_command for image ``name``; a failure names the image and the tail of ctr's output.
    ``inside``: a prefix that runs it where the socket is (e.g. nsenter into the node's mount namespace)."""
    command = [*inside, *import_command(require_tool("ctr"), address, tarball, pinned=pinned,
                                        snapshotter=snapshotter)]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
        raise ClusterError(f"importing image {name} into containerd ({address}) took over {timeout_s:.0f} s") from e
    if out.returncode != 0:
        raise ClusterError(f"importing image {name} into containerd ({address}) failed: "
                           f"{_tail(out.stderr + out.stdout)}")


def import_node_images(images: dict[str, Path], address: Path, progress: Progress = lambda _m: None,
                       inside: Sequence[str] = ()) -> None:
    """Import every image of build_node_images; the sandbox image pinned against the kubelet's image GC."""
    for name, tarball in images.items():
        import_image(tarball, name, address, pinned=name == SANDBOX_IMAGE, inside=inside)
        progress(f"imported {name}")


def list_images(address: Path, timeout_s: float = IMPORT_TIMEOUT_S) -> list[str]:
    """The image names in the containerd at ``address`` (the CRI's namespace)."""
    try:
        out = _ctr(address, "images", "list", "--quiet", timeout_s=timeout_s)
    except subprocess.TimeoutExpired as e:
        raise ClusterError(f"listing images in containerd ({address}) took over {timeout_s:.0f} s") from e
    if out.returncode != 0:
        raise ClusterError(f"listing images in containerd ({address}) failed: {_tail(out.stderr)}")
    return out.stdout.split()
