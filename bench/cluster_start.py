"""Start-up and stop time of a warm local cluster (binaries built) with 4 GPU nodes.

    .venv/bin/python bench/cluster_start.py [--runs 3] [--gpu-nodes 4]
"""

from __future__ import annotations

import argparse
import statistics
import time

from vllm_gate.cluster.local import GpuPool, LocalCluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--gpu-nodes", type=int, default=4)
    args = parser.parse_args()
    starts, stops = [], []
    for i in range(args.runs):
        cluster = LocalCluster(name=f"bench-start-{i}", pool=GpuPool(nodes=args.gpu_nodes), progress=lambda _m: None)
        t0 = time.perf_counter()
        cluster.start()
        starts.append(time.perf_counter() - t0)
        t1 = time.perf_counter()
        cluster.stop()
        stops.append(time.perf_counter() - t1)
        print(f"run {i + 1}: start {starts[-1]:.2f} s (API ready, {args.gpu_nodes} GPU nodes Ready, data plane up), "
              f"stop {stops[-1]:.2f} s")
    print(f"start: median {statistics.median(starts):.2f} s, min {min(starts):.2f} s, max {max(starts):.2f} s "
          f"over {args.runs} runs; stop: median {statistics.median(stops):.2f} s")


if __name__ == "__main__":
    main()
