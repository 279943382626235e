"""How close and how fast the capacity search finds a known knee, against fixed steps given the same time.

    .venv/bin/python bench/capacity_search.py [--knees 6 12] [--step-s 4] [--warmup-s 1]

The stand-in (scripts/vllm-sim) runs ``--max-num-seqs K`` requests at once and queues the rest; with 20 ms to the
first token and 5 ms between the next 19, a queued request waits about a whole request (~115 ms), which breaks a
TTFT p95 of 60 ms as soon as more than 5 % of requests wait: at K + 1 closed-loop users one in K + 1 does. So the
true knee is K. Each step is a Locust process on this machine (``load/local.py``) against the stand-in.

For each knee it prints the search's steps, its knee and time, and then what ``vllm bench sweep``-style fixed steps
(1, 2, 4, 8, ... users, each as long as a search step) would have found in the same wall time: the highest step
that held among those it had time for.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vllm_gate.cluster.dataplane.sim import SimServer
from vllm_gate.load.capacity import Step, judge, search, start_users, step_load
from vllm_gate.load.local import run_load
from vllm_gate.spec import CapacitySearch, Load, Slos

SLOS = Slos(ttft_ms={"p95": 60}, min_output_tokens_per_s=1)
SHAPE = Load(profile={"kind": "users", "users": 2, "duration_s": 5}, prompt_tokens=16, output_tokens=20)


def _measure(url: str, settings: CapacitySearch, workdir: Path) -> Callable[[int], Step]:
    def measure(users: int) -> Step:
        run = run_load(url, "m", step_load(SHAPE, users, settings), workdir / f"{time.monotonic_ns()}",
                       lambda _m: None)
        return judge(users, run.samples, SLOS, settings.warmup_s, run.wall_s)
    return measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--knees", type=int, nargs="+", default=[6, 12])
    parser.add_argument("--step-s", type=float, default=4)
    parser.add_argument("--warmup-s", type=float, default=1)
    args = parser.parse_args()
    settings = CapacitySearch(max_users=64, resolution=0.1, step_duration_s=args.step_s, warmup_s=args.warmup_s,
                              budget_s=600)
    for knee in args.knees:
        with SimServer(model="m", max_model_len=512, max_num_seqs=knee, ttft_ms=20, itl_ms=5) as server, \
                tempfile.TemporaryDirectory() as scratch:
            measure = _measure(server.url, settings, Path(scratch))
            found = search(measure, settings, start_users(SHAPE, settings), print)
            error = abs((found.knee or 0) - knee) / knee
            print(f"knee {knee}: search found {found.knee} (error {error:.0%}), lowest failing "
                  f"{found.lowest_failing}, {len(found.steps)} steps in {found.elapsed_s:.1f} s ({found.ended})")
            started, held, fixed = time.monotonic(), 0, 1
            while time.monotonic() - started < found.elapsed_s and fixed <= settings.max_users:
                step = measure(fixed)
                held = fixed if step.passed else held
                fixed *= 2
            print(f"knee {knee}: fixed steps 1, 2, 4, ... in the same {found.elapsed_s:.1f} s reached {fixed // 2} "
                  f"users and found {held} (error {abs(held - knee) / knee:.0%})")


if __name__ == "__main__":
    main()
