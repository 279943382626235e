"""How a spec's load profile becomes Locust's command line, the same for every runner."""

from __future__ import annotations

from vllm_gate.spec import Load, RampProfile, RateProfile, UsersProfile

# Locust's --stop-timeout: a request in flight at the end may finish (and is recorded) this long; one still in flight
# then is cut, and recorded as cut (loadtests/locustfile.py).
STOP_TIMEOUT_S = 30


def profile_args(load: Load) -> tuple[list[str], float]:
    """Locust CLI arguments for the profile, and the run time in seconds."""
    p = load.profile
    if isinstance(p, UsersProfile):
        users = ["--users", str(p.users), "--spawn-rate", str(p.users)]
        return [*users, "--run-time", f"{p.duration_s:.0f}s"], p.duration_s
    if isinstance(p, RampProfile):
        return [], p.duration_s  # the locustfile's Ramp shape drives users and stops the run
    assert isinstance(p, RateProfile)
    return ["--users", "1", "--spawn-rate", "1", "--run-time", f"{p.duration_s:.0f}s"], p.duration_s
