"""Deterministic one-layer OCI image tarballs, written without a registry or a Docker engine.

The same inputs give the same bytes (sorted entries, fixed times and owners), so an image is built once and found
again in the cache by its content hash. Also the ELF facts an image builder needs: whether a binary is static, and
which shared libraries a dynamic one loads.
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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vllm_gate.base.errors import ClusterError, ToolMissing

# Bump when the layout this module writes changes, so that cached tarballs are rebuilt.
FORMAT_VERSION = "1"
LDD_TIMEOUT_S = 30
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PT_INTERP = 3  # the ELF program header naming a dynamic loader

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# containerd names an imported image after this annotation (ctr images import); OCI's ref.name holds the tag.
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"


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
            # As first written (the module has moved since): these bytes are in every image's digest.
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
