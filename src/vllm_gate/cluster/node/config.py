"""The real node's configuration files: containerd, CNI, kubelet, kube-proxy, CoreDNS."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

CNI_PLUGIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
RUNC = "/usr/sbin/runc"  # Debian's runc
CLUSTER_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class NodeNetwork:
    """Addresses of the node's private network: a /30 veth link to the host and the pods' bridge range."""

    host_address: str = "10.250.0.1"  # the host end: the API server is reached here
    node_address: str = "10.250.0.2"  # the node end: kubelet, CoreDNS
    link_prefix: int = 30
    pod_cidr: str = "10.250.1.0/24"
    service_cidr: str = "10.0.0.0/24"  # given to the API server and kube-router alike
    supernet: str = "10.250.0.0/16"  # refused when the host already routes any of it
    # The rehearsal registry's port: besides the API server, the only place on this machine pods may reach (the
    # API-router stand-in reads model_mappings there). Below the ephemeral range, so no free_port() takes it.
    registry_port: int = 15432
    # The recorded dcgm-exporter's port on the host end, which the cluster's Prometheus pod scrapes (as the platform's
    # scrapes the GPU Operator's exporter): the only other place on this machine pods may reach.
    dcgm_port: int = 15433


@dataclass(frozen=True)
class NodePaths:
    """Where the node keeps its files. /run and /var/log are private tmpfs mounts inside its mount namespace."""

    dir: Path  # on disk, under the cluster's directory

    run: str = "/run/vllm-gate"
    containerd_socket: str = "/run/vllm-gate/containerd.sock"

    @property
    def containerd_root(self) -> Path:
        return self.dir / "containerd"

    @property
    def cni_conf_dir(self) -> Path:
        return self.dir / "cni" / "net.d"

    @property
    def kubelet_root(self) -> Path:
        return self.dir / "kubelet"  # bind-mounted on /var/lib/kubelet inside the node's mount namespace

    @property
    def cni_state(self) -> Path:
        return self.dir / "cni-state"  # bind-mounted on /var/lib/cni likewise

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "node.kubeconfig"


def containerd_config(paths: NodePaths, sandbox_image: str) -> str:
    """containerd 2.x (config version 3): CRI with runc, overlayfs, Debian's CNI plugins, our sandbox image."""
    cri_runtime = "plugins.'io.containerd.cri.v1.runtime'"
    return f"""version = 3
root = "{paths.containerd_root / 'root'}"
state = "{paths.run}/containerd"

[grpc]
  address = "{paths.containerd_socket}"

# Off the host's /opt: containerd's opt and image-verifier directories default there. NRI plugins: none.
[plugins.'io.containerd.internal.v1.opt']
  path = "{paths.dir / 'opt'}"

[plugins.'io.containerd.nri.v1.nri']
  disable = true

[plugins.'io.containerd.image-verifier.v1.bindir']
  bin_dir = "{paths.dir / 'image-verifier'}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "{sandbox_image}"

[{cri_runtime}]
  enable_selinux = false
  # Root here lacks CAP_SYS_RESOURCE: without it every sandbox fails with "can't get final child's PID from pipe".
  restrict_oom_score_adj = true

[{cri_runtime}.containerd]
  default_runtime_name = "runc"

[{cri_runtime}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri_runtime}.containerd.runtimes.runc.options]
  BinaryName = "{RUNC}"
  SystemdCgroup = false

[{cri_runtime}.cni]
  bin_dirs = ["{CNI_PLUGIN_DIR}"]
  conf_dir = "{paths.cni_conf_dir}"
"""


def cni_conflist(network: NodeNetwork) -> str:
    return json.dumps({
        "cniVersion": "1.0.0", "name": "vllm-gate",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": network.pod_cidr}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]}, indent=2)


def kubelet_config(paths: NodePaths, network: NodeNetwork, *, cgroup_root: str, client_ca: Path) -> str:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": network.node_address,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        # Only the API server (client certificate from the cluster's CA) may use the kubelet's API.
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(client_ca)}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root,  # every pod cgroup under one subtree of the cluster's own
        "failCgroupV1": False,  # 1.35 refuses cgroup v1 unless told; these machines have v1
        "failSwapOn": False,
        "protectKernelDefaults": False,
        "clusterDNS": [network.node_address],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(paths.dir / "resolv.conf"),
        "serializeImagePulls": False,
        # A shared build machine's disk: evict only when it is truly full, and never collect our imported images.
        "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%",
                         "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "maxPods": 110,
        # Off the host's /usr/libexec: the FlexVolume prober creates this directory.
        "volumePluginDir": str(paths.dir / "volume-plugins"),
    }
    return yaml.safe_dump(config, sort_keys=False)


def kube_proxy_config(paths: NodePaths, network: NodeNetwork, node_name: str) -> str:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(paths.kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": network.pod_cidr,
        "hostnameOverride": node_name,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # Zero: leave the conntrack table size and timeouts alone (nf_conntrack_max is kernel-wide).
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s",
                      "udpTimeout": "0s", "udpStreamTimeout": "0s"},
    }
    return yaml.safe_dump(config, sort_keys=False)


def corefile(paths: NodePaths, network: NodeNetwork) -> str:
    """CoreDNS answering cluster names on the node's address (the kubelet's clusterDNS)."""
    return f""".:53 {{
    bind {network.node_address}
    errors
    health 127.0.0.1:8080
    ready 127.0.0.1:8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {paths.kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"""


def node_kubeconfig(admin_kubeconfig: Path, api_server: str) -> str:
    """The cluster's admin kubeconfig, pointed at the API server's address as seen from the node's namespace."""
    config = yaml.safe_load(admin_kubeconfig.read_text())
    for cluster in config.get("clusters", []):
        cluster["cluster"]["server"] = api_server
    return yaml.safe_dump(config, sort_keys=False)
