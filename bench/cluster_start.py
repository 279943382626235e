"""Start-up time, stop time and memory of a warm local cluster (binaries built), with and without its real node.

    .venv/bin/python bench/cluster_start.py [--runs 3] [--gpu-nodes 4] [--node real|kwok|both]

Memory: the resident set (VmRSS) of every process of the cluster right after start, summed per program:
the control plane, KWOK, Prometheus and, with the real node, containerd, its shims, kubelet, kube-proxy,
kube-router, CoreDNS and the sandbox processes (no model pod runs yet).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path

from vllm_gate.cluster.children import CHILD_PIDS_FILE
from vllm_gate.cluster.local import GpuPool, LocalCluster, component_pids
from vllm_gate.cluster.node import cgroups as node_cgroups
from vllm_gate.cluster.node.real_node import cgroup_root


def _rss_mib(pid: int) -> tuple[str, float]:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "", 0.0
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return fields["Name"].strip(), int(fields.get("VmRSS", "0 kB").split()[0]) / 1024


def _memory(cluster: LocalCluster) -> dict[str, float]:
    pids = set(component_pids(cluster.name))
    children = cluster.dir / CHILD_PIDS_FILE
    if children.exists():
        pids |= {int(line.partition(":")[0]) for line in children.read_text().split()}
    pids |= node_cgroups.pids(cgroup_root(cluster.name))
    per_program: dict[str, float] = defaultdict(float)
    for pid in pids:
        name, mib = _rss_mib(pid)
        if name:
            per_program[name] += mib
    return dict(per_program)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--gpu-nodes", type=int, default=4)
    parser.add_argument("--node", choices=("real", "kwok", "both"), default="both")
    args = parser.parse_args()
    for node in ("real", "kwok") if args.node == "both" else (args.node,):
        starts, stops, totals = [], [], []
        for i in range(args.runs):
            cluster = LocalCluster(name=f"bench-start-{node}-{i}", pool=GpuPool(nodes=args.gpu_nodes),
                                   real_node=node == "real", progress=lambda _m: None)
            t0 = time.perf_counter()
            try:
                cluster.start()
                starts.append(time.perf_counter() - t0)
                memory = _memory(cluster)
                totals.append(sum(memory.values()))
            finally:
                t1 = time.perf_counter()
                cluster.stop()
                stops.append(time.perf_counter() - t1)
            print(f"{node} run {i + 1}: start {starts[-1]:.2f} s, stop {stops[-1]:.2f} s, "
                  f"memory {totals[-1]:.0f} MiB")
            if i == 0:
                for name, mib in sorted(memory.items(), key=lambda kv: -kv[1]):
                    print(f"    {name:<28} {mib:7.1f} MiB")
        print(f"{node}: start median {statistics.median(starts):.2f} s (min {min(starts):.2f}, max {max(starts):.2f}), "
              f"stop median {statistics.median(stops):.2f} s, memory median {statistics.median(totals):.0f} MiB "
              f"over {args.runs} runs, {args.gpu_nodes} KWOK GPU nodes")


if __name__ == "__main__":
    main()
