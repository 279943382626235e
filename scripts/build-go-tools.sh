#!/usr/bin/env bash
# Build the local cluster's binaries from the Go module proxy, pinned, cached per version and
# per source hash under $VLLM_GATE_CACHE (default ~/.cache/vllm-gate/go-tools), then link them
# into .tools/bin. A binary already built for the same version and sources is reused.
set -euo pipefail

KUBE_VERSION=v1.35.4   # control plane, kubelet, kube-proxy; staging modules replaced by v0.35.4 in scripts/kube/go.mod
ETCD_VERSION=v3.6.5    # the etcd server k8s.io/kubernetes v1.35.4 pins
KWOK_VERSION=v0.8.0
SIM_VERSION=v0.9.2     # github.com/llm-d/llm-d-inference-sim
# The real node's container runtime. v2, not Debian's containerd 1.6: 1.x is end of life, Kubernetes
# 1.36 drops support for it, and with 1.6 the 1.35 kubelet already logs `RuntimeConfig ... Unimplemented`.
# v2.2.9: the newest patch of the 2.2 line (the feasibility run in the shared notes used v2.2.1).
CONTAINERD_VERSION=v2.2.9
# NetworkPolicy enforcer. v2.1.0 is the only version the proxy serves, and security advisories are
# published for it: it runs only inside the local cluster's node namespace, with --run-firewall alone
# (no BGP routing, no service proxy), i.e. only as the NetworkPolicy enforcer of a throwaway cluster.
KUBE_ROUTER_VERSION=v2.1.0
# Cluster DNS (pods resolve Service names); the proxy serves v1.14.3 and newer. v1.14.7 is built on
# client-go v0.35.4, like the control plane; its default plugin set includes kubernetes, errors,
# health, ready, cache, loop and forward.
COREDNS_VERSION=v1.14.7
# The local cluster's Prometheus (the host's where it has no real node, a pod on the real node otherwise), with
# Kubernetes service discovery: Debian's build (2.42) leaves that discovery out. Module v0.316.0 is Prometheus
# 3.16.0; only the Kubernetes, file and HTTP discoveries are built in (remove_all_sd + enable_kubernetes_sd).
PROMETHEUS_VERSION=v0.316.0
PROMETHEUS_RELEASE=3.16.0
# The custom metrics API (custom.metrics.k8s.io) the HPA controller reads the model's scaling metric from; pinned in
# scripts/prometheus-adapter/go.mod (v0.12.0).
PROMETHEUS_ADAPTER_VERSION=v0.12.0

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/.tools/bin"
cache="${VLLM_GATE_CACHE:-$HOME/.cache/vllm-gate}/go-tools"
mkdir -p "$tools" "$cache"
export GOFLAGS=-mod=readonly CGO_ENABLED=0

# Print a heartbeat every 30 s while a slow build runs, so CI logs show it is alive. Polls each
# second so that a quick build neither waits nor is timed to the next heartbeat.
with_progress() {
  local what=$1; shift
  local start=$SECONDS
  "$@" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if (( (SECONDS - start) % 30 == 0 )) && kill -0 "$pid" 2>/dev/null; then
      echo "    ... $what: $((SECONDS - start)) s"
    fi
  done
  wait "$pid"
  echo "    $what built in $((SECONDS - start)) s"
}

source_hash() { (cd "$1" && find . -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' \) -print0 \
  | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12); }

# link NAME... from DIR into .tools/bin
link_all() { local dir=$1; shift; for n in "$@"; do ln -sf "$dir/$n" "$tools/$n"; done; }

build_kube() {
  local dir="$cache/kube-$KUBE_VERSION-$(source_hash "$root/scripts/kube")"
  if [ ! -f "$dir/.complete" ]; then
    echo "  kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy $KUBE_VERSION (cold: most of the 13.5 min all Go builds took, last measured)"
    local v=k8s.io/component-base/version
    local ld="-s -w -X $v.gitVersion=$KUBE_VERSION -X $v.gitMajor=1 -X $v.gitMinor=35"
    ld+=" -X $v.gitTreeState=clean -X $v.buildDate=2026-01-01T00:00:00Z"
    (cd "$root/scripts/kube" && with_progress "kube" go build -trimpath -ldflags "$ld" -o "$dir/" ./cmd/...)
    touch "$dir/.complete"
  fi
  link_all "$dir" kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy
}

build_etcd() {
  local dir="$cache/etcd-$ETCD_VERSION-$(source_hash "$root/scripts/etcd")"
  if [ ! -f "$dir/.complete" ]; then
    echo "  etcd $ETCD_VERSION"
    (cd "$root/scripts/etcd" && with_progress etcd go build -trimpath -ldflags "-s -w" -o "$dir/etcd" .)
    touch "$dir/.complete"
  fi
  link_all "$dir" etcd
}

build_kwok() {
  local dir="$cache/kwok-$KWOK_VERSION"
  if [ ! -f "$dir/.complete" ]; then
    echo "  kwok, kwokctl $KWOK_VERSION"
    local c=sigs.k8s.io/kwok/pkg/consts
    GOBIN="$dir" GOFLAGS= with_progress kwok go install -trimpath \
      -ldflags "-s -w -X $c.Version=$KWOK_VERSION -X $c.KubeVersion=$KUBE_VERSION" \
      "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
    touch "$dir/.complete"
  fi
  link_all "$dir" kwok kwokctl
}

# The llm-d simulator when the proxy serves it; otherwise our stand-in (scripts/vllm-sim), which
# accepts the same flags and serves the same endpoints and metric names. vllm_gate.cluster.dataplane.sim reports
# which one ran.
# One of this project's own Go programs (scripts/<dir>), cached by a hash of its source, linked into .tools/bin.
build_own() {
  local name=$1 src=$2 what=$3
  local dir="$cache/$name-$(source_hash "$root/scripts/$src")"
  if [ ! -f "$dir/.complete" ]; then
    echo "  $name ($what)"
    (cd "$root/scripts/$src" && with_progress "$name" go build -trimpath -ldflags "-s -w" -o "$dir/$name" .)
    touch "$dir/.complete"
  fi
  link_all "$dir" "$name"
}

build_sim() {
  local dir="$cache/llm-d-inference-sim-$SIM_VERSION"
  if [ ! -f "$dir/.complete" ] && [ ! -f "$dir/.unavailable" ]; then
    echo "  llm-d-inference-sim $SIM_VERSION"
    mkdir -p "$dir"
    if GOBIN="$dir" GOFLAGS= go install -trimpath -ldflags "-s -w" \
         "github.com/llm-d/llm-d-inference-sim/cmd@$SIM_VERSION" 2>"$dir/error.log"; then
      mv "$dir/cmd" "$dir/llm-d-inference-sim"
      touch "$dir/.complete"
    else
      echo "    not available from the Go module proxy ($(head -c 200 "$dir/error.log" | tr '\n' ' '))"
      touch "$dir/.unavailable"
    fi
  fi
  if [ -f "$dir/.complete" ]; then link_all "$dir" llm-d-inference-sim; fi

  build_own vllm-sim-standin vllm-sim "scripts/vllm-sim"
  build_own router-standin router-standin "scripts/router-standin: the API-router stand-in"
}

# Static (CGO_ENABLED=0): the btrfs, devmapper and ZFS snapshotters need cgo and are not used (overlayfs
# is). Tags as upstream's static release; the shim, like upstream's, also drops gRPC (it speaks ttrpc).
build_containerd() {
  local dir="$cache/containerd-$CONTAINERD_VERSION"
  if [ ! -f "$dir/.complete" ]; then
    echo "  containerd, containerd-shim-runc-v2, ctr $CONTAINERD_VERSION"
    local p=github.com/containerd/containerd/v2
    local ld="-s -w -X $p/version.Version=$CONTAINERD_VERSION -X $p/version.Package=$p"
    local tags="urfave_cli_no_docs osusergo netgo static_build no_btrfs no_devmapper no_zfs"
    GOBIN="$dir" GOFLAGS= with_progress containerd go install -trimpath -tags "$tags" -ldflags "$ld" \
      "$p/cmd/containerd@$CONTAINERD_VERSION" "$p/cmd/ctr@$CONTAINERD_VERSION"
    GOBIN="$dir" GOFLAGS= with_progress containerd-shim-runc-v2 go install -trimpath -tags "$tags no_grpc" \
      -ldflags "$ld" "$p/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"
    touch "$dir/.complete"
  fi
  link_all "$dir" containerd containerd-shim-runc-v2 ctr
}

build_kube_router() {
  local dir="$cache/kube-router-$KUBE_ROUTER_VERSION"
  if [ ! -f "$dir/.complete" ]; then
    echo "  kube-router $KUBE_ROUTER_VERSION"
    local v=github.com/cloudnativelabs/kube-router/v2/pkg/version
    GOBIN="$dir" GOFLAGS= with_progress kube-router go install -trimpath \
      -ldflags "-s -w -X $v.Version=$KUBE_ROUTER_VERSION -X $v.BuildDate=2026-01-01T00:00:00Z" \
      "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION"
    touch "$dir/.complete"
  fi
  link_all "$dir" kube-router
}

build_coredns() {
  local dir="$cache/coredns-$COREDNS_VERSION"
  if [ ! -f "$dir/.complete" ]; then
    echo "  coredns $COREDNS_VERSION"
    GOBIN="$dir" GOFLAGS= with_progress coredns go install -trimpath -ldflags "-s -w" \
      "github.com/coredns/coredns@$COREDNS_VERSION"
    touch "$dir/.complete"
  fi
  link_all "$dir" coredns
}

build_prometheus() {
  local dir="$cache/prometheus-$PROMETHEUS_VERSION"
  if [ ! -f "$dir/.complete" ]; then
    echo "  prometheus $PROMETHEUS_RELEASE (module $PROMETHEUS_VERSION, Kubernetes service discovery)"
    local v=github.com/prometheus/common/version
    GOBIN="$dir" GOFLAGS= with_progress prometheus go install -trimpath -tags remove_all_sd,enable_kubernetes_sd \
      -ldflags "-s -w -X $v.Version=$PROMETHEUS_RELEASE -X $v.Branch=HEAD -X $v.Revision=$PROMETHEUS_VERSION" \
      "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION"
    touch "$dir/.complete"
  fi
  link_all "$dir" prometheus
}

build_prometheus_adapter() {
  local dir="$cache/prometheus-adapter-$PROMETHEUS_ADAPTER_VERSION-$(source_hash "$root/scripts/prometheus-adapter")"
  if [ ! -f "$dir/.complete" ]; then
    echo "  prometheus-adapter $PROMETHEUS_ADAPTER_VERSION (the custom metrics API)"
    (cd "$root/scripts/prometheus-adapter" && with_progress prometheus-adapter go build -trimpath -ldflags "-s -w" \
      -o "$dir/prometheus-adapter" sigs.k8s.io/prometheus-adapter/cmd/adapter)
    touch "$dir/.complete"
  fi
  link_all "$dir" prometheus-adapter
}

# The node images' own programs (scripts/node-tools): the sandbox process and the probe pods' client.
build_node_tools() {
  local dir="$cache/node-tools-$(source_hash "$root/scripts/node-tools")"
  if [ ! -f "$dir/.complete" ]; then
    echo "  vg-pause, vg-http-probe (scripts/node-tools)"
    for n in pause http-probe; do
      (cd "$root/scripts/node-tools" && with_progress "vg-$n" go build -trimpath -ldflags "-s -w" \
        -o "$dir/vg-$n" "./cmd/$n")
    done
    touch "$dir/.complete"
  fi
  link_all "$dir" vg-pause vg-http-probe
}

build_sim
build_node_tools
build_kwok
build_etcd
build_kube
build_containerd
build_kube_router
build_coredns
build_prometheus
build_prometheus_adapter
echo "  tools in $tools: $(ls "$tools" | tr '\n' ' ')"
du -shL "$tools" | awk '{print "  size on disk: " $1}'
