"""Images without a registry: the tarballs are deterministic OCI layouts, their programs run from their own root
filesystems (chroot, the container's view of its image), and a real containerd imports them under the names the
chart uses."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import py_compile
import shutil
import signal
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import require
from vllm_gate.base.errors import ClusterError
from vllm_gate.base.ports import free_port
from vllm_gate.base.tools import LOADTESTS_DIR, MODELS_DIR, find_tool
from vllm_gate.checks.probe_pod import Outcome, classify, curl_args
from vllm_gate.cluster.dataplane.sim import SimServer, stop_process, wait_listening
from vllm_gate.cluster.node.images import (
    ROUTER_STANDIN_IMAGE,
    SANDBOX_IMAGE,
    build_node_images,
    chart_images,
    import_image,
    import_node_images,
    list_images,
    static_binary_image,
)
from vllm_gate.cluster.node.locust_image import LOCUST_UID, default_image, locust_image, locust_version
from vllm_gate.cluster.node.oci import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
    Entry,
    ImageSpec,
    host_architecture,
    is_static,
    normalized_reference,
    spec_hash,
    write_image,
)
from vllm_gate.cluster.node.prometheus_image import prometheus_image_name
from vllm_gate.cluster.node.python_image import _is_copied as copied_into_image
from vllm_gate.cluster.node.python_image import unchecked_pyc
from vllm_gate.deploy.render import render_manifests
from vllm_gate.deploy.values import chart_values
from vllm_gate.load.samples import read_samples
from vllm_gate.spec import load_spec

NODE_TOOLS = ("vllm-sim-standin", "vg-pause")
LOCUST_IMAGE = normalized_reference(default_image())
CHROOT_TIMEOUT_S = 30
CONTAINERD_START_TIMEOUT_S = 30
TINY = ImageSpec("example.test/tiny:1", (Entry("hello.txt", 0o644, b"hello\n"), Entry("tmp", 0o1777)),
                 entrypoint=("/hello",), user="1:1")


# --- reading a layout back, every digest and size checked ----------------------------------------------------

@dataclass
class Layout:
    index: dict[str, Any]
    manifest: dict[str, Any]
    config: dict[str, Any]
    layer: bytes  # the uncompressed layer tar


def read_layout(tarball: Path) -> Layout:
    """Parse an OCI layout tarball index -> manifest -> config -> layer, checking each digest and size."""
    with tarfile.open(tarball) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}

    def blob(descriptor: dict[str, Any]) -> bytes:
        algorithm, _, hex_digest = descriptor["digest"].partition(":")
        data = files[f"blobs/{algorithm}/{hex_digest}"]
        assert hashlib.sha256(data).hexdigest() == hex_digest, f"blob {descriptor['digest']}: digest mismatch"
        assert len(data) == descriptor["size"], f"blob {descriptor['digest']}: size mismatch"
        return data

    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    (entry,) = index["manifests"]
    manifest = json.loads(blob(entry))
    assert manifest["mediaType"] == entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    config = json.loads(blob(manifest["config"]))
    (layer_descriptor,) = manifest["layers"]
    layer = gzip.decompress(blob(layer_descriptor))
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()], "diff_id mismatch"
    return Layout(index, manifest, config, layer)


def extract_rootfs(tarball: Path, into: Path) -> tuple[Path, dict[str, Any]]:
    """The image's root filesystem unpacked under ``into`` (owners kept), and its process config."""
    layout = read_layout(tarball)
    root = into / "rootfs"
    root.mkdir(parents=True)
    tar_path = into / "layer.tar"
    tar_path.write_bytes(layout.layer)
    with tarfile.open(tar_path) as tar:
        # Our own tarball, and the modes must survive as written (/tmp's sticky bit): no filter.
        tar.extractall(root, numeric_owner=True, filter="fully_trusted")  # noqa: S202
    return root, layout.config["config"]


def chroot(root: Path, process: dict[str, Any], args: list[str], user: str | None = None,
           **popen: Any) -> subprocess.Popen[str]:
    """Start ``args`` in ``root`` as the container would: the image's environment and user (or ``user``)."""
    require("chroot")
    env = dict(item.split("=", 1) for item in process["Env"])
    userspec = user or process.get("User", "0:0")
    return subprocess.Popen(["chroot", f"--userspec={userspec}", str(root), *args], env=env, text=True, **popen)


def run_chroot(root: Path, process: dict[str, Any], args: list[str], user: str | None = None
               ) -> subprocess.CompletedProcess[str]:
    proc = chroot(root, process, args, user, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=CHROOT_TIMEOUT_S)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


# --- deterministic tarballs ---------------------------------------------------------------------------------

def test_the_same_inputs_give_the_same_tarball(tmp_path):
    first, second = write_image(TINY, tmp_path / "a"), write_image(TINY, tmp_path / "b")
    assert first.name == second.name
    assert first.read_bytes() == second.read_bytes()
    assert read_layout(first).index == read_layout(second).index


def test_the_cache_returns_a_built_tarball_without_writing_it_again(tmp_path):
    path = write_image(TINY, tmp_path)
    written = path.stat().st_mtime_ns
    os.utime(path, ns=(written - 10**9, written - 10**9))
    assert write_image(TINY, tmp_path) == path
    assert path.stat().st_mtime_ns == written - 10**9, "a cached tarball was written again"


@pytest.mark.parametrize("change", [
    {"entries": (Entry("hello.txt", 0o644, b"hello!\n"), Entry("tmp", 0o1777))},
    {"entries": (Entry("hello.txt", 0o755, b"hello\n"), Entry("tmp", 0o1777))},
    {"entries": (Entry("hello.txt", 0o644, b"hello\n", uid=7), Entry("tmp", 0o1777))},
    {"user": "2:2"},
    {"entrypoint": ("/bye",)},
    {"name": "example.test/tiny:2"},
])
def test_any_changed_input_gives_another_image(tmp_path, change):
    base = read_layout(write_image(TINY, tmp_path / "a")).index["manifests"][0]
    changed = write_image(replace(TINY, **change), tmp_path / "b")
    assert read_layout(changed).index["manifests"][0] != base
    assert changed.name != write_image(TINY, tmp_path / "a").name


def test_the_layer_has_fixed_times_owners_and_sorted_paths(tmp_path):
    layout = read_layout(write_image(replace(TINY, entries=(*TINY.entries, Entry("a/b/c", 0o600, b"x"))), tmp_path))
    (tmp_path / "layer.tar").write_bytes(layout.layer)
    with tarfile.open(tmp_path / "layer.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["a", "a/b", "a/b/c", "hello.txt", "tmp"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    assert layout.config["os"] == "linux"
    assert layout.config["architecture"] == host_architecture()
    assert layout.config["config"]["Entrypoint"] == ["/hello"]


def test_the_layout_reader_fails_on_a_corrupted_blob(tmp_path):
    # The reader the tests trust must be able to fail: one byte of the layer changed.
    good = write_image(TINY, tmp_path)
    bad = tmp_path / "bad.tar"
    with tarfile.open(good) as src, tarfile.open(bad, "w") as dst:
        layer = read_layout(good).manifest["layers"][0]["digest"].partition(":")[2]
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name.endswith(layer):
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.addfile(member, None if data is None else io.BytesIO(data))
    with pytest.raises(AssertionError, match="digest mismatch"):
        read_layout(bad)


@pytest.mark.parametrize(("name", "full"), [
    ("curlimages/curl:8.11.1", "docker.io/curlimages/curl:8.11.1"),
    ("busybox:1", "docker.io/library/busybox:1"),
    ("ghcr.io/llm-d/llm-d-inference-sim:v0.9.2", "ghcr.io/llm-d/llm-d-inference-sim:v0.9.2"),
    ("localhost/x:1", "localhost/x:1"),
    ("registry:5000/x:1", "registry:5000/x:1"),
])
def test_names_are_normalized_as_the_cri_looks_them_up(name, full):
    assert normalized_reference(name) == full


def test_a_dynamically_linked_binary_is_refused_for_an_image_without_libraries():
    require("vllm-sim-standin")
    assert is_static(find_tool("vllm-sim-standin").resolve())
    assert not is_static(Path("/usr/bin/curl"))
    with pytest.raises(ClusterError, match="dynamically linked"):
        static_binary_image("example.test/curl:1", "curl", user="1:1")


# --- the node's images ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def node_images() -> dict[str, Path]:
    """Every image of the node, built into (or found in) the real cache."""
    for tool in NODE_TOOLS:
        require(tool)
    lines: list[str] = []
    images = build_node_images(lines.append)
    assert len(lines) == len(images)
    return images


def rendered_images() -> dict[str, str]:
    """The images the chart renders for an engine: sim model: the model container's and the helm test pod's."""
    spec = load_spec("llama3", MODELS_DIR, ["engine=sim"])
    docs = render_manifests(spec, chart_values(spec))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    test_pod = next(d for d in docs if d["kind"] == "Pod")
    return {"sim": deployment["spec"]["template"]["spec"]["containers"][0]["image"],
            "tests": test_pod["spec"]["containers"][0]["image"]}


def test_node_images_carry_the_names_the_chart_renders(node_images):
    require("helm")
    rendered = rendered_images()
    assert rendered == chart_images()
    assert set(node_images) == {normalized_reference(rendered["sim"]), normalized_reference(rendered["tests"]),
                                SANDBOX_IMAGE, LOCUST_IMAGE, normalized_reference(ROUTER_STANDIN_IMAGE),
                                normalized_reference(prometheus_image_name())}


def test_every_node_image_is_a_valid_layout_named_for_containerd(node_images):
    for name, tarball in node_images.items():
        layout = read_layout(tarball)
        (entry,) = layout.index["manifests"]
        assert entry["annotations"][ANNOTATION_IMAGE_NAME] == name
        assert entry["annotations"][ANNOTATION_REF_NAME] == name.rsplit(":", 1)[1]
        assert entry["platform"] == {"architecture": host_architecture(), "os": "linux"}
        assert (layout.config["os"], layout.config["architecture"]) == ("linux", host_architecture())
        assert layout.config["config"]["User"], f"{name}: runs as root by default"


def test_node_images_are_built_once(node_images):
    again = build_node_images()
    assert again == node_images
    assert all(path.exists() for path in again.values())


@contextmanager
def sim_in_rootfs(root: Path, process: dict[str, Any], args: list[str], port: int) -> Iterator[str]:
    proc = chroot(root, process, [*process["Entrypoint"], *args, "--port", str(port)],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(f"http://127.0.0.1:{port}", 15, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def sim_pod() -> tuple[list[str], dict[str, str], str]:
    """An engine: sim pod's container args, annotations and the podinfo mount path, as the chart renders them."""
    spec = load_spec("llama3", MODELS_DIR, ["engine=sim", "rehearsal.chat_template=llama3",
                                            "rehearsal.eos_after_tokens=5"])
    docs = render_manifests(spec, chart_values(spec))
    template = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]
    container = template["spec"]["containers"][0]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "podinfo"]
    return container["args"], template["metadata"]["annotations"], mount["mountPath"]


def test_the_sim_images_entrypoint_serves_the_pods_model_from_its_annotations_file(node_images, tmp_path):
    # The container's view: the image's own root, its user, the chart's args and the downward API file where the
    # chart mounts it (written here as the kubelet writes it).
    require("helm")
    root, process = extract_rootfs(node_images[normalized_reference(chart_images()["sim"])], tmp_path)
    args, annotations, mount_path = sim_pod()
    podinfo = root / mount_path.lstrip("/")
    podinfo.mkdir(parents=True)
    (podinfo / "annotations").write_text(
        "\n".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(annotations.items())))
    with sim_in_rootfs(root, process, args, free_port()) as url:
        done = httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
            "model": args[args.index("--served-model-name") + 1], "max_tokens": 100,
            "messages": [{"role": "user", "content": "Hi there!"}]}).json()
    # The llama3 template counted (11 prompt tokens) and eos after 5: the annotations reached the stand-in.
    assert done["usage"] == {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}


def test_the_curl_image_runs_sh_curl_and_grep_from_its_own_libraries(node_images, tmp_path):
    root, process = extract_rootfs(node_images[normalized_reference(chart_images()["tests"])], tmp_path)
    assert "Entrypoint" not in process  # the chart's test pod sets its command
    done = run_chroot(root, process, ["/bin/sh", "-c", "curl --version && echo ok | grep ok && "
                                      "echo x > /tmp/written && echo tmp-ok"], user="100:100")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("curl ")
    assert "\nok\n" in done.stdout
    assert "tmp-ok" in done.stdout


def test_the_chroot_check_fails_when_a_library_is_missing(node_images, tmp_path):
    root, process = extract_rootfs(node_images[normalized_reference(chart_images()["tests"])], tmp_path)
    (pcre,) = (root / "lib").rglob("libpcre2-8.so*")
    pcre.unlink()
    done = run_chroot(root, process, ["/bin/sh", "-c", "echo ok | grep ok"], user="100:100")
    assert done.returncode != 0
    assert "libpcre2-8.so" in done.stderr


def helm_test_script(port: int) -> list[str]:
    """The chart's helm test pod's command, pointed at 127.0.0.1:``port`` in place of its Service."""
    spec = load_spec("llama3", MODELS_DIR, ["engine=sim"])
    docs = render_manifests(spec, chart_values(spec))
    service = next(d for d in docs if d["kind"] == "Service")
    container = next(d for d in docs if d["kind"] == "Pod")["spec"]["containers"][0]
    address = f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/"
    (script,) = container["args"]
    assert script.count(address) == 2, script
    return [*container["command"], script.replace(address, f"http://127.0.0.1:{port}/")]


@pytest.mark.parametrize(("served", "passes"), [(None, True), ("another-model", False)])
def test_the_helm_test_pods_script_runs_in_the_curl_image(node_images, tmp_path, served, passes):
    # The test pod's exact command, as uid 100, against a simulator serving the model (passes) or another one
    # (the grep for the served name fails): the image can run the check and the check can fail.
    require("helm")
    require("vllm-sim-standin")
    sim_root, sim_process = extract_rootfs(node_images[normalized_reference(chart_images()["sim"])], tmp_path / "s")
    curl_root, curl_process = extract_rootfs(node_images[normalized_reference(chart_images()["tests"])],
                                             tmp_path / "c")
    args, _, _ = sim_pod()
    if served:
        args[args.index("--served-model-name") + 1] = served
    port = free_port()
    with sim_in_rootfs(sim_root, sim_process, args, port):
        done = run_chroot(curl_root, curl_process, helm_test_script(port), user="100:100")
    assert (done.returncode == 0) is passes, done.stderr


def test_the_probe_pods_curl_command_runs_in_the_curl_image(node_images, tmp_path):
    # The gate's probe pods run this image with probe_pod's command, as uid 100: an answer is read with its status,
    # a closed port as no connection.
    require("helm")
    root, process = extract_rootfs(node_images[normalized_reference(chart_images()["tests"])], tmp_path / "c")
    sim_root, sim_process = extract_rootfs(node_images[normalized_reference(chart_images()["sim"])], tmp_path / "s")
    args, _, _ = sim_pod()
    # curl writes the body to /dev/null, which the container runtime provides: here, as it does.
    (root / "dev").mkdir()
    os.mknod(root / "dev" / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (root / "dev" / "null").chmod(0o666)

    def probe(url: str) -> tuple[Outcome, int | None]:
        done = run_chroot(root, process, curl_args(url, request_timeout_s=5, retries=1), user="100:100")
        outcome, status, detail = classify(done.returncode, done.stdout + done.stderr)
        assert outcome is not Outcome.FAILED, detail
        return outcome, status

    port = free_port()
    with sim_in_rootfs(sim_root, sim_process, args, port) as url:
        assert probe(f"{url}/health") == (Outcome.ANSWERED, 200)
        assert probe(f"{url}/no-such-path") == (Outcome.ANSWERED, 404)
    assert probe(f"http://127.0.0.1:{free_port()}/health") == (Outcome.NO_CONNECTION, None)


def test_the_locust_image_is_named_for_the_pinned_locust_and_built_as_upstream_runs(node_images):
    assert f"docker.io/locustio/locust:{locust_version()}" == LOCUST_IMAGE
    config = read_layout(node_images[LOCUST_IMAGE]).config["config"]
    # upstream: ENTRYPOINT ["locust"], USER locust (uid 1000), WORKDIR /home/locust, PYTHONUNBUFFERED=1
    assert config["Entrypoint"] == ["locust"]
    assert config["User"] == f"{LOCUST_UID}:{LOCUST_UID}"
    assert config["WorkingDir"] == "/home/locust"
    assert "PYTHONUNBUFFERED=1" in config["Env"]


def test_the_locust_image_spec_is_the_same_from_the_same_environment():
    # Its content hash names its tarball: two builds from one environment must agree, or the cache never hits.
    assert spec_hash(locust_image(default_image()), host_architecture()) == \
        spec_hash(locust_image(default_image()), host_architecture())


def test_a_pyc_is_kept_only_for_its_own_source(tmp_path):
    # The image's files carry mtime 0: a module's timestamp pyc becomes an unchecked hash-based one, and only when it
    # was compiled from that very source (Python's own rule: the source's mtime and size as the pyc recorded them); a
    # stale one is dropped (Python then compiles the source).
    source = tmp_path / "mod.py"
    source.write_text("VALUE = 1\n")
    compiled = Path(py_compile.compile(str(source), doraise=True)).read_bytes()
    converted = unchecked_pyc(compiled, source.read_bytes(), source.stat())
    assert converted is not None
    assert converted[4:8] == (1).to_bytes(4, "little")  # hash-based, source never checked
    assert converted[8:16] == importlib.util.source_hash(source.read_bytes())
    assert converted[16:] == compiled[16:]
    source.write_text("VALUE = 22\n")  # edited after compiling: the pyc is stale
    assert unchecked_pyc(compiled, source.read_bytes(), source.stat()) is None
    assert unchecked_pyc(converted, source.read_bytes(), source.stat()) is None


def locust_rootfs(node_images: dict[str, Path], into: Path) -> tuple[Path, dict[str, Any]]:
    root, process = extract_rootfs(node_images[LOCUST_IMAGE], into)
    (root / "dev").mkdir()  # the runtime provides /dev/null and /proc; Locust's gevent and psutil use them
    os.mknod(root / "dev" / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (root / "dev" / "null").chmod(0o666)
    (root / "proc").mkdir()
    shutil.copyfile(LOADTESTS_DIR / "locustfile.py", root / "home" / "locust" / "locustfile.py")
    return root, process


def run_locust(root: Path, process: dict[str, Any], args: list[str]) -> subprocess.CompletedProcess[str]:
    """The image's entrypoint with ``args`` in its root as its user, with a /proc of its own (a PID namespace and a
    mount namespace that go with the process, as a container's do)."""
    require("unshare")
    env = dict(item.split("=", 1) for item in process["Env"])
    command = ["unshare", "--mount", "--pid", "--fork", f"--mount-proc={root / 'proc'}", "chroot",
               f"--userspec={process['User']}", str(root), *process["Entrypoint"], *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=CHROOT_TIMEOUT_S, check=False)


def test_the_locust_image_runs_locust_headless_against_a_simulator(node_images, tmp_path):
    # As the container would: the image's own root, user, environment and entrypoint; the simulator on the host.
    require("vllm-sim-standin")
    root, process = locust_rootfs(node_images, tmp_path)
    done = run_locust(root, process, ["--version"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"locust {locust_version()} from /usr/local/lib/python3"), done.stdout
    with SimServer(model="m", ttft_ms=20, itl_ms=2) as sim:
        done = run_locust(root, process, [
            "-f", "/home/locust/locustfile.py", "--headless", "--host", sim.url, "-u", "2", "-r", "2", "-t", "3s",
            "--served-model", "m", "--prompt-tokens", "8", "--output-tokens", "4", "--samples-file",
            "/tmp/samples.jsonl", "--only-summary", "--exit-code-on-error", "0"])
    assert done.returncode == 0, done.stderr[-2000:]
    samples = read_samples(root / "tmp" / "samples.jsonl")
    completed = [s for s in samples if not s.cut]  # a request still in flight when the run stopped is cut, recorded
    assert completed
    assert all(s.ok and s.output_tokens == 4 for s in completed), completed[0]
    assert all(not s.ok for s in samples if s.cut)


def test_the_locust_image_check_fails_when_a_library_is_missing(node_images, tmp_path):
    # The chroot check can fail: without libstdc++ (which pyzmq's bundled libzmq needs) Locust cannot import zmq.
    root, process = locust_rootfs(node_images, tmp_path)
    (library,) = (root / "lib").rglob("libstdc++.so.6")
    library.unlink()
    done = run_locust(root, process, ["-f", "/home/locust/locustfile.py", "--headless", "-t", "1s", "--host",
                                      "http://127.0.0.1:9"])
    assert done.returncode != 0
    assert "libstdc++.so.6" in done.stderr


def test_the_sandbox_image_sleeps_until_terminated(node_images, tmp_path):
    root, process = extract_rootfs(node_images[SANDBOX_IMAGE], tmp_path)
    assert process["Entrypoint"] == ["/pause"]
    proc = chroot(root, process, process["Entrypoint"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(CHROOT_TIMEOUT_S) == 0
    finally:
        stop_process(proc)


# --- a real containerd ------------------------------------------------------------------------------------

# Only what an import needs: the content store and the overlayfs snapshotter, everything under the test's
# directories; the CRI (which wants CNI and more of the host) stays off.
CONTAINERD_CONFIG = """version = 3
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images",
                    "io.containerd.nri.v1.nri"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
"""


def mounts_under(*dirs: Path) -> list[str]:
    """Mount points below ``dirs``, deepest first."""
    points = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    return sorted((p for p in points if any(p.startswith(f"{d}/") for d in dirs)), key=len, reverse=True)


def shims_of(socket: Path) -> list[int]:
    """Pids of containerd shims serving the containerd at ``socket`` (they outlive it)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and b"containerd-shim" in cmdline[0] and str(socket).encode() in b" ".join(cmdline):
            pids.append(int(proc.name))
    return pids


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[Path]:
    """A throwaway containerd (its own root, state and socket, all under tmp); yields its socket."""
    require("containerd")
    require("ctr")
    binary = find_tool("containerd")
    assert binary is not None
    base = Path("/tmp") / f"vg-ctrd-{os.getpid()}"  # a socket path must stay under 108 bytes
    base.mkdir()
    socket = base / "containerd.sock"
    config = tmp_path / "config.toml"
    config.write_text(CONTAINERD_CONFIG.format(root=tmp_path / "root", state=base / "state", socket=socket))
    log_path = tmp_path / "containerd.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(binary), "--config", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + CONTAINERD_START_TIMEOUT_S
        while not socket.exists():
            assert proc.poll() is None, log_path.read_text()[-2000:]
            assert time.monotonic() < deadline, "containerd did not open its socket"
            time.sleep(0.1)
        yield socket
    finally:
        stop_process(proc)
        for pid in shims_of(socket):
            os.kill(pid, signal.SIGKILL)
        for point in mounts_under(base, tmp_path):
            subprocess.run(["umount", point], capture_output=True, timeout=30, check=False)
        shutil.rmtree(base)


def test_containerd_imports_every_node_image_under_its_name_unpacked(node_images, containerd):
    import_node_images(node_images, containerd)
    assert set(node_images) <= set(list_images(containerd))
    # Unpacked for overlayfs, the CRI's snapshotter: a one-layer image's snapshot key is its layer's diff_id.
    snapshots = subprocess.run([str(find_tool("ctr")), "--address", str(containerd), "--namespace", "k8s.io",
                                "snapshots", "--snapshotter", "overlayfs", "list"],
                               capture_output=True, text=True, timeout=60, check=True).stdout
    for name, tarball in node_images.items():
        (diff_id,) = read_layout(tarball).config["rootfs"]["diff_ids"]
        assert diff_id in snapshots, f"{name} was not unpacked for overlayfs"


def test_a_failed_import_names_the_image_and_ctrs_output(containerd, tmp_path):
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"not a tarball")
    with pytest.raises(ClusterError, match=r"importing image example.test/broken:1 into containerd .* failed: .+"):
        import_image(broken, "example.test/broken:1", containerd)


def test_the_locust_image_leaves_this_hosts_startup_hooks_and_provenance_out():
    # They would run this host's code at every interpreter start in the pods, or name a private package index.
    for name in ("sitecustomize.py", "usercustomize.py", "site-packages/distutils-precedence.pth",
                 "locust-2.47.0.dist-info/direct_url.json", "EXTERNALLY-MANAGED"):
        assert not copied_into_image(Path(name)), name
    assert copied_into_image(Path("locust/main.py"))
