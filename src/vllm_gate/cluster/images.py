"""Images without a registry: deterministic one-layer OCI image tarballs, and their import into a containerd.

The local cluster's real node runs the images the chart and the gate name, under those exact names, built here
from local binaries: the simulator stand-in as the llm-d simulator's image, the sandbox (pause) image, and a curl
image (Debian's own dash, curl and grep with their libraries) for `helm test` and the gate's probe pods, and
Locust's image (this machine's Python and Locust, cluster/locust_image.py) for the gate's in-cluster load test.
The same inputs give the same bytes, so an image is built once and found again by its content hash.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import re
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from vllm_gate.errors import ClusterError, ToolMissing
from vllm_gate.tools import CHART_DIR, require_tool

# The name containerd's CRI is configured with for sandboxes (sandbox_image); the kubelet never pulls it.
SANDBOX_IMAGE = "registry.k8s.io/pause:3.10.1"
# Bump when the layout this module writes changes, so that cached tarballs are rebuilt.
FORMAT_VERSION = "1"
CONTAINERD_NAMESPACE = "k8s.io"  # the CRI's namespace: images elsewhere are invisible to the kubelet
IMPORT_TIMEOUT_S = 120
LDD_TIMEOUT_S = 30
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The kubelet's image garbage collection leaves a pinned image alone (the CRI reports it as pinned).
PINNED_LABEL = "io.cri-containerd.pinned=pinned"
PT_INTERP = 3  # the ELF program header naming a dynamic loader
CURL_UID = 100  # curlimages/curl runs as curl_user, uid 100; the chart's test pod sets runAsUser 100

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# containerd names an imported image after this annotation (ctr images import); OCI's ref.name holds the tag.
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Entry:
    """One path of an image's filesystem: a regular file (``data``) or, with ``data`` None, a directory."""

    path: str  # relative to the image's root, no leading slash
    mode: int
    data: bytes | None = None
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class ImageSpec:
    """What an image holds: its full name, its one layer's entries and its process settings."""

    name: str
    entries: tuple[Entry, ...]
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    user: str = ""
    env: tuple[str, ...] = (f"PATH={DEFAULT_PATH}",)
    workdir: str = "/"


def cache_dir() -> Path:
    return Path(os.environ.get("VLLM_GATE_CACHE", Path.home() / ".cache" / "vllm-gate")) / "images"


def host_architecture() -> str:
    """The host's architecture as OCI names it (the node runs what this machine runs)."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    if arch is None:
        raise ClusterError(f"images: no OCI architecture for this machine ({machine}); amd64 and arm64 are known")
    return arch


def normalized_reference(name: str) -> str:
    """The full reference the CRI looks an image up by: curlimages/curl:8 is docker.io/curlimages/curl:8, and
    a one-part name is under docker.io/library (Docker's normalization, which containerd's CRI applies)."""
    first, slash, _ = name.partition("/")
    if not slash:
        return f"docker.io/library/{name}"
    if "." in first or ":" in first or first == "localhost":
        return name
    return f"docker.io/{name}"


def _tag(reference: str) -> str:
    last = reference.rsplit("/", 1)[-1]
    return last.partition(":")[2] or "latest"


# --- the tarball ------------------------------------------------------------------------------------------

def _canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(entries: Iterable[Entry]) -> bytes:
    """A tar of ``entries`` and their parent directories, sorted, with fixed times and owners."""
    by_path = {e.path.strip("/"): e for e in entries}
    for path in list(by_path):
        parent = os.path.dirname(path)
        while parent and parent not in by_path:
            by_path[parent] = Entry(parent, 0o755)
            parent = os.path.dirname(parent)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(by_path):
            entry = by_path[path]
            info = tarfile.TarInfo(path)
            info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, 0
            info.uname = info.gname = ""
            if entry.data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
    return out.getvalue()


def _image_config(spec: ImageSpec, arch: str, diff_id: str) -> dict[str, object]:
    process: dict[str, object] = {"Env": list(spec.env), "WorkingDir": spec.workdir}
    if spec.entrypoint:
        process["Entrypoint"] = list(spec.entrypoint)
    if spec.cmd:
        process["Cmd"] = list(spec.cmd)
    if spec.user:
        process["User"] = spec.user
    return {"architecture": arch, "os": "linux", "config": process,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "vllm-gate (vllm_gate.cluster.images)"}]}


def oci_layout(spec: ImageSpec, arch: str) -> bytes:
    """The image as an OCI image layout in one tar: oci-layout, index.json (naming it) and its three blobs."""
    layer_tar = _tar(spec.entries)
    layer = gzip.compress(layer_tar, compresslevel=6, mtime=0)
    config = _canonical_json(_image_config(spec, arch, _sha256(layer_tar)))
    manifest = _canonical_json({
        "schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": _sha256(config), "size": len(config)},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": _sha256(layer), "size": len(layer)}]})
    full = normalized_reference(spec.name)
    index = _canonical_json({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [{
        "mediaType": MEDIA_MANIFEST, "digest": _sha256(manifest), "size": len(manifest),
        "platform": {"architecture": arch, "os": "linux"},
        "annotations": {ANNOTATION_IMAGE_NAME: full, ANNOTATION_REF_NAME: _tag(full)}}]})
    files = [Entry("oci-layout", 0o644, _canonical_json({"imageLayoutVersion": "1.0.0"})),
             Entry("index.json", 0o644, index)]
    files += [Entry(f"blobs/sha256/{_sha256(blob).removeprefix('sha256:')}", 0o644, blob)
              for blob in (layer, config, manifest)]
    return _tar(files)


def spec_hash(spec: ImageSpec, arch: str) -> str:
    """A hash of everything that goes into the tarball: equal hashes, equal bytes."""
    digest = hashlib.sha256(_canonical_json({
        "format": FORMAT_VERSION, "arch": arch, "name": spec.name, "entrypoint": spec.entrypoint, "cmd": spec.cmd,
        "user": spec.user, "env": spec.env, "workdir": spec.workdir,
        "entries": sorted([e.path.strip("/"), e.mode, e.uid, e.gid,
                           None if e.data is None else hashlib.sha256(e.data).hexdigest()] for e in spec.entries)}))
    return digest.hexdigest()[:16]


def image_path(spec: ImageSpec, directory: Path | None = None) -> Path:
    """Where the image's tarball is (or will be) in the cache: named for its content hash."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.name)
    return (directory or cache_dir()) / f"{safe}-{spec_hash(spec, host_architecture())}.tar"


def write_image(spec: ImageSpec, directory: Path | None = None) -> Path:
    """The image's tarball under the cache (``directory``), written once per content hash."""
    path = image_path(spec, directory)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_bytes(oci_layout(spec, host_architecture()))
    partial.replace(path)  # atomic: a reader never sees half a tarball
    return path


# --- the images of the local cluster's node --------------------------------------------------------------

def is_static(binary: Path) -> bool:
    """Whether an ELF binary needs no dynamic loader (no PT_INTERP header): only such run in an empty image."""
    data = binary.read_bytes()
    if data[:4] != b"\x7fELF":
        raise ClusterError(f"images: {binary} is not an ELF binary")
    wide, order = data[4] == 2, "little" if data[5] == 1 else "big"
    phoff = int.from_bytes(data[32:40] if wide else data[28:32], order)
    entsize_at, count_at = (54, 56) if wide else (42, 44)
    entsize = int.from_bytes(data[entsize_at:entsize_at + 2], order)
    count = int.from_bytes(data[count_at:count_at + 2], order)
    return all(int.from_bytes(data[phoff + i * entsize:phoff + i * entsize + 4], order) != PT_INTERP
               for i in range(count))


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


def shared_libraries(binary: Path) -> list[Path]:
    """The libraries ``ldd`` lists for ``binary``, the dynamic loader included."""
    try:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=LDD_TIMEOUT_S, check=False)
    except FileNotFoundError as e:
        raise ToolMissing("images: ldd is not installed (Debian package libc-bin)") from e
    if out.returncode != 0:
        raise ClusterError(f"images: ldd {binary} failed: {out.stderr.strip()[-300:]}")
    libraries = []
    for line in out.stdout.splitlines():
        if "not found" in line:
            raise ClusterError(f"images: {binary} needs a library this host lacks: {line.strip()}")
        match = re.search(r"(/\S+)\s+\(0x", line)  # "libc.so.6 => /lib/.../libc.so.6 (0x...)" or the loader's
        if match:
            libraries.append(Path(match.group(1)))
    return libraries


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


def node_image_specs() -> list[ImageSpec]:
    """Every image the local cluster's real node needs, under the names the chart and the gate use."""
    # Here, not at the top: locust_image builds on this module's Entry and ImageSpec.
    from vllm_gate.cluster.locust_image import default_image, locust_image

    chart = chart_images()
    return [
        # The chart sets no command for engine: sim, so its args (the simulator's flags) go to the entrypoint.
        static_binary_image(chart["sim"], "vllm-sim-standin", user="65532:65532"),  # distroless nonroot, as llm-d's
        static_binary_image(SANDBOX_IMAGE, "vg-pause", user="65535:65535", install_as="/pause"),
        curl_image(chart["tests"]),
        # The gate's in-cluster load test (vllm_gate.incluster_load): this machine's Python and Locust.
        locust_image(default_image()),
    ]


def build_node_images(progress: Progress = lambda _m: None, directory: Path | None = None) -> dict[str, Path]:
    """Build (or find in the cache) every image of the node; returns full image name -> tarball. A build (not a
    cache hit) says how long it took and how big the tarball is."""
    built: dict[str, Path] = {}
    for spec in node_image_specs():
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
