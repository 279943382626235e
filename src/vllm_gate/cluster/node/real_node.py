"""One real node beside the local control plane: containerd + runc + CNI, kubelet, kube-proxy, kube-router, CoreDNS,
in network and mount namespaces of its own, so pods run for real and the host stays as it was."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kubernetes import client

from vllm_gate.base.errors import ClusterError
from vllm_gate.base.tools import find_tool, require_tool
from vllm_gate.cluster.children import process_start_time
from vllm_gate.cluster.gpu_nodes import advertise_gpus
from vllm_gate.cluster.node import cgroups as node_cgroups
from vllm_gate.cluster.node.config import (
    CNI_PLUGIN_DIR,
    RUNC,
    NodeNetwork,
    NodePaths,
    cni_conflist,
    containerd_config,
    corefile,
    kube_proxy_config,
    kubelet_config,
    node_kubeconfig,
)
from vllm_gate.cluster.node.host_state import restore_saved_sysctls, save_sysctls
from vllm_gate.cluster.node.images import SANDBOX_IMAGE, build_node_images, import_node_images
from vllm_gate.cluster.node.namespace import (
    HARD_CODED_DIRS,
    NodeNamespace,
    host_routes_overlap,
    remove_host_link,
)

NODE_NAME = "real-0"
NODES_DIR = "nodes"  # under the state root, beside (not inside) kwokctl's directory: a failed teardown keeps it
STATE_FILE = "state.json"
SYSCTLS_FILE = "kernel-sysctls.json"
CGROUP_PREFIX = "vllm-gate-"
# One real node per machine: the kernel-wide sysctls and the hard-coded host paths are shared. An abstract unix
# socket (no file to leave behind), bound in the host's network namespace and inherited by the node's namespace
# holder, so it is held exactly as long as the node lives, whatever happens to its owner.
LOCK_ADDRESS = "\0vllm-gate-real-node"
NODE_KIND_LABEL = "vllm-gate/node-kind"  # "real" here; KWOK nodes carry "kwok"
BINARIES = ("containerd", "containerd-shim-runc-v2", "ctr", "kubelet", "kube-proxy", "kube-router", "coredns")
TOOLS = ("vg-pause", "vg-http-probe", "vllm-sim-standin")  # built by scripts/build-go-tools.sh
HOST_COMMANDS = ("unshare", "nsenter", "ip", "iptables", "ipset", "mount", "ldd")
HOST_FILES = ("/bin/dash", "/usr/bin/curl", "/usr/bin/grep")  # the helm-test image is built from them
CONTAINERD_READY_TIMEOUT_S = 30
NODE_READY_TIMEOUT_S = 60
DAEMON_READY_TIMEOUT_S = 30
KUBE_ROUTER_HEALTH_PORT = 20244

Progress = Callable[[str], None]


def node_dir(state_root: Path, cluster_name: str) -> Path:
    return state_root / NODES_DIR / cluster_name


def cgroup_root(cluster_name: str) -> str:
    """The cgroup subtree (in every hierarchy) that holds the node's daemons and pods."""
    return f"{CGROUP_PREFIX}{cluster_name}"


def _lock() -> socket.socket | None:
    """The machine-wide real-node lock, or None when another node holds it."""
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lock.bind(LOCK_ADDRESS)
    except OSError:
        lock.close()
        return None
    return lock


def _kernel_refuses() -> str | None:
    """What the kernel or this container does not allow the node (one line), or None."""
    proc = subprocess.run(["unshare", "--mount", "--net", "true"], capture_output=True, text=True, timeout=15,
                          check=False)
    if proc.returncode != 0:
        return f"cannot create network and mount namespaces ({proc.stderr.strip()[:120]})"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "no overlay filesystem in this kernel (containerd's snapshotter)"
    hierarchies = node_cgroups.hierarchies()
    if not hierarchies:
        return "no cgroup hierarchy mounted"
    try:
        probe = Path(tempfile.mkdtemp(prefix=CGROUP_PREFIX + "probe-", dir=hierarchies[0]))
        probe.rmdir()
    except OSError as exc:
        return f"cgroups not writable ({hierarchies[0]}: {exc.strerror})"
    return None


def why_not_here(ndir: Path, network: NodeNetwork) -> str | None:
    """Why a real node cannot run on this machine now (one line), or None when it can."""
    if os.geteuid() != 0:
        return "not root (a kubelet and containerd need root)"
    missing = [name for name in (*BINARIES, *TOOLS) if find_tool(name) is None]
    missing += [name for name in HOST_COMMANDS if shutil.which(name) is None]
    missing += [path for path in (RUNC, *HOST_FILES) if not Path(path).exists()]
    if not (Path(CNI_PLUGIN_DIR) / "bridge").exists():
        missing.append(f"CNI plugins in {CNI_PLUGIN_DIR}")
    if missing:
        return f"missing {', '.join(missing)} (run scripts/setup.sh)"
    if str(ndir.resolve()).startswith(("/run/", "/var/log/")):
        return f"its directory {ndir} is under /run or /var/log, which the node mounts over"
    refused = _kernel_refuses()
    if refused:
        return refused
    overlap = host_routes_overlap(network)
    if overlap is not None:
        return f"the host already routes part of {network.supernet} ({overlap})"
    lock = _lock()
    if lock is None:
        return "another local cluster on this machine runs the real node"
    lock.close()
    return None


def _read_state(ndir: Path) -> dict[str, object]:
    try:
        state = json.loads((ndir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    # A kill-everything-under-it path read back from disk: only ever one of ours.
    root = state.get("cgroup_root")
    if not isinstance(root, str) or not root.startswith(CGROUP_PREFIX) or "/" in root or ".." in root:
        state.pop("cgroup_root", None)
    return state


def teardown(ndir: Path) -> list[str]:
    """Remove every trace of the node whose files are in ``ndir``, also after a crash of its owner; safe to call
    twice. Returns one line per thing that could not be undone (then ``ndir`` is kept for the next try)."""
    if not ndir.exists():
        return []
    state = _read_state(ndir)
    problems = []
    root = state.get("cgroup_root")
    if isinstance(root, str):
        # Every process of the node (daemons, shims, containers, the namespace holder): the namespaces, the veth
        # and every mount made inside them end with the last of them.
        alive = node_cgroups.kill_all(root)
        if alive:
            problems.append(f"real node: processes {sorted(alive)} would not die")
    if isinstance(link := state.get("host_link"), str):
        remove_host_link(link)
    if isinstance(root, str):
        problems += [f"real node: cgroup {path} not removed" for path in node_cgroups.remove(root)]
    problems += restore_saved_sysctls(ndir / SYSCTLS_FILE)
    for path in state.get("created_dirs", []):  # type: ignore[union-attr]
        with contextlib.suppress(OSError):
            Path(str(path)).rmdir()  # made empty by us; only bind mounts inside the node's namespace wrote there
    if not problems:
        shutil.rmtree(ndir, ignore_errors=True)
    return problems


def owner_gone(ndir: Path) -> bool:
    """Whether the process that started the node in ``ndir`` has ended (a reused PID does not count as it)."""
    owner = _read_state(ndir).get("owner")
    if not isinstance(owner, str):
        return True
    pid, _, started = owner.partition(":")
    return process_start_time(int(pid)) != started


def reap_orphan_nodes(state_root: Path) -> list[str]:
    """Tear down nodes whose owner is gone; returns one line per node reaped or per trace left."""
    said = []
    for ndir in sorted((state_root / NODES_DIR).glob("*")):
        if owner_gone(ndir):
            problems = teardown(ndir)
            said += problems or [f"real node of {ndir.name}: removed, left behind by a process that is gone"]
    return said


class RealNode:
    """The node: start() after the control plane is up, stop() before it goes."""

    name = NODE_NAME

    def __init__(self, ndir: Path, cluster_name: str, admin_kubeconfig: Path, api_port: int,
                 client_ca: Path, *, gpu_type: str, gpus: int, cpus: int, memory_bytes: int, progress: Progress,
                 network: NodeNetwork | None = None, engine_image: bool = False) -> None:
        self.network = network or NodeNetwork()
        self._engine_image = engine_image  # import the real engine's image (vllm_image.py) too
        self.paths = NodePaths(ndir)
        self.cgroup_root = cgroup_root(cluster_name)
        self.namespace = NodeNamespace(cluster_name, self.cgroup_root, self.network)
        self._admin_kubeconfig = admin_kubeconfig
        self._api_port = api_port
        self._client_ca = client_ca
        self._gpu_type = gpu_type
        self._gpus = gpus
        self._cpus = cpus
        self._memory_bytes = memory_bytes
        self._progress = progress
        self._lock: socket.socket | None = None
        self._daemons: dict[str, subprocess.Popen[bytes]] = {}

    # -- start ------------------------------------------------------------------------------------------------

    def start(self, api: client.ApiClient) -> None:
        """Start the node; on any failure, remove what was started (stop()) and raise."""
        try:
            self._start(api)
        except BaseException:
            self.stop()
            raise

    def _start(self, api: client.ApiClient) -> None:
        started = time.monotonic()
        self._lock = _lock()
        if self._lock is None:
            raise ClusterError("real node: another local cluster on this machine runs one")
        self.paths.dir.mkdir(parents=True, exist_ok=True)
        save_sysctls(self.paths.dir / SYSCTLS_FILE)
        # Recorded before anything is made, so that a crash at any later step is undone by the next start.
        missing = [d for d in HARD_CODED_DIRS if not Path(d).exists()]
        (self.paths.dir / STATE_FILE).write_text(json.dumps({
            "owner": f"{os.getpid()}:{process_start_time(os.getpid())}", "cgroup_root": self.cgroup_root,
            "host_link": self.namespace.host_link, "created_dirs": missing}))
        node_cgroups.create(self.cgroup_root)
        for path in missing:  # the hard-coded paths need a directory to mount the cluster's own on
            Path(path).mkdir(parents=True, exist_ok=True)
        self._write_configs()
        # The pool's machine, not this one: the spec's CPU and memory requests must fit as on a GPU node
        # (the simulator itself needs little of either).
        self.namespace.start(self.paths.kubelet_root, self.paths.cni_state, self.paths.dir / "machine",
                             cpus=self._cpus, memory_bytes=self._memory_bytes, api_port=self._api_port,
                             keep_fds=(self._lock.fileno(),))
        self._progress(f"real node {NODE_NAME}: namespaces up, veth {self.namespace.host_link} "
                       f"{self.network.host_address} <-> {self.network.node_address}; starting containerd")
        self._start_daemon("containerd", [str(require_tool("containerd")), "--config",
                                          str(self.paths.dir / "containerd.toml")])
        ctr = str(require_tool("ctr"))
        self._wait(lambda: self._inside_ok(ctr, "--address", self.paths.containerd_socket, "version"),
                   CONTAINERD_READY_TIMEOUT_S, "containerd not answering on its socket", "containerd")
        self._import_images()
        self._start_daemon("kubelet", [
            str(require_tool("kubelet")), "--config", str(self.paths.dir / "kubelet.yaml"),
            "--kubeconfig", str(self.paths.kubeconfig), "--hostname-override", NODE_NAME,
            "--node-ip", self.network.node_address,
            "--node-labels", f"gpu-type={self._gpu_type},nvidia.com/gpu.present=true,{NODE_KIND_LABEL}=real"])
        core = client.CoreV1Api(api)
        self._wait(lambda: self._node_ready(core), NODE_READY_TIMEOUT_S, f"node {NODE_NAME} not Ready", "kubelet")
        # Untainted: one kubelet is both the pool's real GPU node and the CPU node where helm test, probe and
        # load pods run (the KWOK GPU nodes carry the taint).
        advertise_gpus(api, [NODE_NAME], gpu_type=self._gpu_type, gpus_per_node=self._gpus, taint=False)
        # After the node is registered: kube-router exits when it cannot find its Node object.
        self._start_daemon("kube-proxy", [str(require_tool("kube-proxy")), "--config",
                                          str(self.paths.dir / "kube-proxy.yaml")])
        self._start_daemon("kube-router", [
            str(require_tool("kube-router")), "--kubeconfig", str(self.paths.kubeconfig),
            "--hostname-override", NODE_NAME, "--run-firewall=true", "--run-router=false",
            "--run-service-proxy=false", "--enable-cni=false", "--metrics-port=0",
            f"--service-cluster-ip-range={self.network.service_cidr}", f"--health-port={KUBE_ROUTER_HEALTH_PORT}"])
        self._start_daemon("coredns", [str(require_tool("coredns")), "-conf", str(self.paths.dir / "Corefile")])
        probe = str(require_tool("vg-http-probe"))
        for daemon, url in (("kube-proxy", "http://127.0.0.1:10256/healthz"),
                            ("kube-router", f"http://127.0.0.1:{KUBE_ROUTER_HEALTH_PORT}/healthz"),
                            ("coredns", "http://127.0.0.1:8181/ready")):
            self._wait(lambda url=url: self._inside_ok(probe, "--timeout", "1s", url), DAEMON_READY_TIMEOUT_S,
                       f"{daemon} not healthy ({url})", daemon)
        self._progress(f"real node {NODE_NAME}: Ready with {self._gpus} fake nvidia.com/gpu ({self._gpu_type}) "
                       f"in {time.monotonic() - started:.1f} s")

    def _write_configs(self) -> None:
        paths, net = self.paths, self.network
        paths.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        (paths.dir / "logs").mkdir(exist_ok=True)
        (paths.dir / "containerd.toml").write_text(containerd_config(paths, SANDBOX_IMAGE))
        (paths.cni_conf_dir / "10-vllm-gate.conflist").write_text(cni_conflist(net))
        (paths.dir / "kubelet.yaml").write_text(kubelet_config(paths, net, cgroup_root=f"/{self.cgroup_root}",
                                                               client_ca=self._client_ca))
        (paths.dir / "kube-proxy.yaml").write_text(kube_proxy_config(paths, net, NODE_NAME))
        (paths.dir / "Corefile").write_text(corefile(paths, net))
        # Pods with dnsPolicy Default get this: no upstream resolver exists here.
        (paths.dir / "resolv.conf").write_text(f"nameserver {net.node_address}\n")
        # The cluster's admin credentials: readable by root only from the moment the file exists.
        fd = os.open(paths.kubeconfig, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(node_kubeconfig(self._admin_kubeconfig, f"https://{net.host_address}:{self._api_port}"))

    def _start_daemon(self, name: str, command: list[str]) -> None:
        log = (self.paths.dir / "logs" / f"{name}.log").open("ab")
        try:
            proc = subprocess.Popen(self.namespace.enter(*command), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=self.namespace.preexec())  # it only writes cgroup.procs before exec
        finally:
            log.close()
        self._daemons[name] = proc  # found again by its cgroup after a crash

    def _inside_ok(self, *command: str) -> bool:
        proc = subprocess.run(self.namespace.enter(*command), capture_output=True, timeout=15, check=False)
        return proc.returncode == 0

    def _wait(self, ready: Callable[[], bool], timeout_s: float, what: str, daemon: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            proc = self._daemons.get(daemon)
            if proc is not None and proc.poll() is not None:
                raise ClusterError(f"real node: {daemon} exited ({proc.returncode}) while starting",
                                   self.log_tail(daemon))
            if ready():
                return
            time.sleep(0.3)
        raise ClusterError(f"real node: {what} within {timeout_s:g} s", self.log_tail(daemon))

    def log_tail(self, daemon: str, lines: int = 15) -> str:
        path = self.paths.dir / "logs" / f"{daemon}.log"
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _import_images(self) -> None:
        images = build_node_images(engine=self._engine_image)
        import_node_images(images, Path(self.paths.containerd_socket), inside=self.namespace.enter())
        self._progress(f"real node {NODE_NAME}: {len(images)} locally built images imported into containerd")

    @staticmethod
    def _node_ready(core: client.CoreV1Api) -> bool:
        try:
            node = core.read_node(NODE_NAME, _request_timeout=5)
        except client.ApiException:
            return False
        return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])

    # -- stop -------------------------------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Kill the node and its pods, remove its namespaces, cgroups and files, restore the kernel sysctls."""
        problems = teardown(self.paths.dir)
        for proc in [*self._daemons.values(), *([self.namespace.proc] if self.namespace.proc else [])]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)  # killed by teardown: reap them
        self._daemons.clear()
        self.namespace.proc = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        return problems
