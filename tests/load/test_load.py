"""The Locust load test against the simulator: raw samples, profiles, and SLO verdicts that can fail."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import threading
from pathlib import Path

import pytest

from tests.conftest import require
from vllm_gate.cluster.dataplane.sim import SimServer
from vllm_gate.load.local import run_load
from vllm_gate.load.samples import LoadFailed, RequestSample, percentile, read_samples
from vllm_gate.load.slo import load_stats, slo_names, slo_verdict
from vllm_gate.spec import Load, Slos


def with_floor(limits: dict) -> Slos:
    """SLOs with ``limits``, and a throughput floor every run here clears (the spec requires one)."""
    return Slos.model_validate({"min_output_tokens_per_s": 0.001, **limits})


def short(profile: dict, prompt: int = 16, output: int = 8) -> Load:
    return Load.model_validate({"profile": profile, "prompt_tokens": prompt, "output_tokens": output})


@pytest.fixture(autouse=True)
def _sim_binary():
    require("vllm-sim-standin")


def test_users_profile_records_every_chunk_and_exact_output_length(tmp_path: Path):
    progress: list[str] = []
    with SimServer(model="m", ttft_ms=50, itl_ms=5) as sim:
        run = run_load(sim.url, "m", short({"kind": "users", "users": 3, "duration_s": 6}), tmp_path, progress.append)
    ok = [s for s in run.samples if s.ok]
    assert ok
    assert len(ok) == len(run.samples)
    assert all(s.output_tokens == 8 for s in ok), "max_tokens + ignore_eos must fix the output length"
    assert all(len(s.itl_s) == 7 for s in ok), "one gap between each pair of content chunks"
    assert all(s.prompt_tokens and s.prompt_tokens > 0 for s in ok)
    assert progress, "no progress line during the run"
    assert run.cpu_s > 0


def test_rate_profile_is_open_loop(tmp_path: Path):
    with SimServer(model="m", ttft_ms=10, itl_ms=1) as sim:
        run = run_load(sim.url, "m", short({"kind": "rate", "requests_per_s": 8, "duration_s": 5, "max_users": 8}),
                       tmp_path, lambda _m: None)
    assert len(run.samples) > 5
    starts = sorted(s.start for s in run.samples)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert max(gaps) > 2 * min(gaps), "Poisson arrivals have irregular gaps"


def test_ramp_profile_runs_and_stops(tmp_path: Path):
    with SimServer(model="m", ttft_ms=10, itl_ms=1) as sim:
        run = run_load(sim.url, "m", short({"kind": "ramp", "start_users": 1, "end_users": 4, "duration_s": 4}),
                       tmp_path, lambda _m: None)
    assert run.samples
    assert all(s.ok for s in run.samples)


def test_twenty_percent_failure_injection_fails_the_error_rate_slo(tmp_path: Path):
    with SimServer(model="m", failure_rate_pct=20, failure_types=["server_error"]) as sim:
        run = run_load(sim.url, "m", short({"kind": "users", "users": 4, "duration_s": 4}), tmp_path, lambda _m: None)
    verdict = {r.name: r for r in slo_verdict(run.samples, with_floor({"max_error_rate": 0.01}))}
    assert not verdict["error rate"].passed
    assert 0.05 < verdict["error rate"].measured < 0.5
    assert "HTTP 500" in next(s.error for s in run.samples if not s.ok)


def test_ttft_above_the_slo_fails_naming_it(tmp_path: Path):
    with SimServer(model="m", ttft_ms=300, itl_ms=1) as sim:
        run = run_load(sim.url, "m", short({"kind": "users", "users": 2, "duration_s": 3}), tmp_path, lambda _m: None)
    slos = with_floor({"ttft_ms": {"p95": 100}})
    failed = [r for r in slo_verdict(run.samples, slos) if not r.passed]
    assert [r.name for r in failed] == ["ttft p95"]
    assert failed[0].line().startswith("FAIL ttft p95: ")
    assert failed[0].measured >= 300


def sample(ttft: float, e2e: float, tokens: int = 10, error: str | None = None) -> RequestSample:
    return RequestSample(0.0, ttft, [0.01] * (tokens - 1), e2e, 5, tokens, error)


def test_percentile_interpolates_like_numpy():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10], 99) == 10
    assert math.isnan(percentile([], 50))


def test_goodput_counts_requests_within_every_p99_limit():
    slos = with_floor({"ttft_ms": {"p99": 200}, "e2e_ms": {"p99": 1000}, "min_goodput": 0.5})
    samples = [sample(0.1, 0.5), sample(0.3, 0.5), sample(0.1, 2.0), sample(0.1, 0.5, error="HTTP 500")]
    goodput = next(r for r in slo_verdict(samples, slos) if r.name == "goodput")
    assert goodput.measured == 0.25
    assert not goodput.passed


def test_slo_names_match_the_verdict_order():
    slos = with_floor({"ttft_ms": {"p50": 1, "p99": 2}, "e2e_ms": {"p95": 3}})
    assert slo_names(slos) == [r.name for r in slo_verdict([sample(0.1, 0.5)], slos)]


def test_stats_rates_use_the_sample_span():
    stats = load_stats([RequestSample(0.0, 0.1, [], 1.0, 5, 10, None), RequestSample(1.0, 0.1, [], 1.0, 5, 10, None)])
    assert stats.duration_s == 2.0
    assert stats.output_tokens_per_s == 10.0
    assert stats.request_rate == 1.0


def locust_children() -> dict[int, list[bytes]]:
    """The environment (NAME=value entries) of each Locust process this test process started, by pid."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == os.getpid() and b"locust" in (stat.parent / "cmdline").read_bytes():
                found[int(stat.parent.name)] = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue  # it exited while we looked
    return found


def test_locust_inherits_neither_the_hf_token_nor_the_dsn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_TOKEN", "hf_PlantedToken")
    monkeypatch.setenv("IAS_DATABASE_URL", "postgresql://gate:PlantedPassword@db:5432/registry")
    monkeypatch.setenv("UNRELATED_SETTING", "PlantedOther")
    monkeypatch.setenv("LC_PLANTED", "C.UTF-8")
    seen: dict[int, list[bytes]] = {}
    with SimServer(model="m", ttft_ms=10, itl_ms=1) as sim:
        run_load(sim.url, "m", short({"kind": "users", "users": 1, "duration_s": 6}), tmp_path,
                 lambda _m: seen.update(locust_children()))
    assert seen, "no Locust child process was found while the load ran"
    for env in seen.values():
        assert b"VLLM_GATE_SERVED_MODEL=m" in env, "this must be the Locust child's own environment"
        assert b"LC_PLANTED=C.UTF-8" in env, "locale settings are passed on"
        assert [entry for entry in env if b"Planted" in entry] == []


def test_interrupting_the_load_leaves_no_locust_process(tmp_path: Path):
    pids: list[int] = []

    def interrupt(_message: str) -> None:
        pids.extend(locust_children())
        raise KeyboardInterrupt  # what Ctrl-C raises in the waiting loop

    with SimServer(model="m", ttft_ms=10, itl_ms=1) as sim, pytest.raises(KeyboardInterrupt):
        run_load(sim.url, "m", short({"kind": "users", "users": 1, "duration_s": 60}), tmp_path, interrupt)
    assert pids, "no Locust child process was found while the load ran"
    assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []


def test_a_half_written_last_line_is_left_for_the_next_read_while_locust_writes(tmp_path: Path):
    path = tmp_path / "samples.jsonl"
    whole = json.dumps({"start": 1.0, "ttft_s": 0.1, "itl_s": [0.02], "e2e_s": 0.2, "prompt_tokens": 16,
                        "output_tokens": 2, "error": None})
    path.write_text(whole + "\n" + whole[:40])  # Locust is in the middle of its second line
    assert len(read_samples(path, while_written=True)) == 1
    with pytest.raises(LoadFailed, match=rf"^{re.escape(str(path))} line 2 is not a whole sample \(JSONDecodeError"):
        read_samples(path)  # after Locust exited, a broken line is an error that names it
    path.write_text(whole + "\n" + whole + "\n")
    assert len(read_samples(path, while_written=True)) == 2


def test_a_reader_polling_while_lines_are_appended_in_pieces_never_fails(tmp_path: Path):
    path = tmp_path / "samples.jsonl"
    line = json.dumps({"start": 1.0, "ttft_s": 0.1, "itl_s": [0.02] * 50, "e2e_s": 0.2, "prompt_tokens": 16,
                       "output_tokens": 51, "error": None}) + "\n"
    stop = threading.Event()

    def append_in_pieces() -> None:
        with path.open("a") as f:
            for _ in range(200):
                for piece in (line[:100], line[100:300], line[300:]):
                    f.write(piece)
                    f.flush()
            stop.set()

    path.touch()
    writer = threading.Thread(target=append_in_pieces)
    writer.start()
    seen = 0
    while not stop.is_set():
        counted = len(read_samples(path, while_written=True))
        assert counted >= seen
        seen = counted
    writer.join(10)
    assert len(read_samples(path)) == 200


def test_an_exception_inside_the_polling_loop_leaves_no_locust_process(tmp_path: Path):
    pids: list[int] = []

    def broken_progress(_message: str) -> None:
        pids.extend(locust_children())
        raise RuntimeError("the progress writer broke")  # e.g. a closed terminal

    with SimServer(model="m", ttft_ms=10, itl_ms=1) as sim, pytest.raises(RuntimeError):
        run_load(sim.url, "m", short({"kind": "users", "users": 1, "duration_s": 60}), tmp_path, broken_progress)
    assert pids, "no Locust child process was found while the load ran"
    assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []


@pytest.mark.parametrize("profile", [{"kind": "users", "users": 2, "duration_s": 2},
                                     {"kind": "rate", "requests_per_s": 4, "duration_s": 2, "max_users": 32}],
                         ids=["closed loop", "open loop"])
def test_requests_a_stalling_server_still_holds_at_the_end_are_counted_as_cut_not_dropped(tmp_path: Path, profile):
    # Each answer takes 128 x 0.5 s: every request started is still in flight when the run and its stop timeout end.
    with SimServer(model="m", ttft_ms=10, itl_ms=500) as sim:
        run = run_load(sim.url, "m", short(profile, output=128), tmp_path, lambda _m: None, stop_timeout_s=2)
    assert run.samples
    assert all(s.cut and not s.ok for s in run.samples)
    assert {s.error for s in run.samples} == {"cut: still in flight when the load test stopped"}
    (error_rate,) = [r for r in slo_verdict(run.samples, Slos(min_output_tokens_per_s=1)) if r.name == "error rate"]
    assert (error_rate.measured, error_rate.passed) == (1.0, False)
    assert error_rate.line().endswith(f"; {len(run.samples)} of {len(run.samples)} requests cut at the end of the "
                                      "load test, counted as not completed")
