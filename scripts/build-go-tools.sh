#!/usr/bin/env bash
# Build the local cluster's binaries from the Go module proxy, pinned, cached per version and
# per source hash under $VLLM_GATE_CACHE (default ~/.cache/vllm-gate/go-tools), then link them
# into .tools/bin. A binary already built for the same version and sources is reused.
set -euo pipefail

KUBE_VERSION=v1.35.4   # control plane; staging modules replaced by v0.35.4 in scripts/kube/go.mod
ETCD_VERSION=v3.6.5    # the etcd server k8s.io/kubernetes v1.35.4 pins
KWOK_VERSION=v0.8.0
SIM_VERSION=v0.9.2     # github.com/llm-d/llm-d-inference-sim

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/.tools/bin"
cache="${VLLM_GATE_CACHE:-$HOME/.cache/vllm-gate}/go-tools"
mkdir -p "$tools" "$cache"
export GOFLAGS=-mod=readonly CGO_ENABLED=0

# Print a heartbeat while a slow build runs, so CI logs show it is alive.
with_progress() {
  local what=$1; shift
  local start=$SECONDS
  "$@" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 30
    kill -0 "$pid" 2>/dev/null && echo "    ... $what: $((SECONDS - start)) s"
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
    echo "  kube-apiserver, kube-controller-manager, kube-scheduler $KUBE_VERSION (cold: ~25 min on 2 cores)"
    local v=k8s.io/component-base/version
    local ld="-s -w -X $v.gitVersion=$KUBE_VERSION -X $v.gitMajor=1 -X $v.gitMinor=35"
    ld+=" -X $v.gitTreeState=clean -X $v.buildDate=2026-01-01T00:00:00Z"
    (cd "$root/scripts/kube" && with_progress "control plane" go build -trimpath -ldflags "$ld" -o "$dir/" ./cmd/...)
    touch "$dir/.complete"
  fi
  link_all "$dir" kube-apiserver kube-controller-manager kube-scheduler
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
# accepts the same flags and serves the same endpoints and metric names. vllm_gate.sim reports
# which one ran.
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

  local standin="$cache/vllm-sim-standin-$(source_hash "$root/scripts/vllm-sim")"
  if [ ! -f "$standin/.complete" ]; then
    echo "  vllm-sim-standin (scripts/vllm-sim)"
    (cd "$root/scripts/vllm-sim" && with_progress "vllm-sim-standin" go build -trimpath -ldflags "-s -w" \
      -o "$standin/vllm-sim-standin" .)
    touch "$standin/.complete"
  fi
  link_all "$standin" vllm-sim-standin
}

build_sim
build_kwok
build_etcd
build_kube
echo "  tools in $tools: $(ls "$tools" | tr '\n' ' ')"
du -shL "$tools" | awk '{print "  size on disk: " $1}'
