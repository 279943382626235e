"""The certification contract: which checks a run requires, and what its verdict is.

CERTIFIED means: every check required for this cluster's capabilities was collected, selected and
ran; none failed or errored; the session ended normally; and real vLLM served on real nodes. Every
other run is named for what it is, exits non-zero unless it is a passed rehearsal or a passed
``--endpoint-url`` check, and registers nothing in a user's registry. Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePath

from vllm_gate.load.slo import slo_names
from vllm_gate.spec import Slos


class Mode(StrEnum):
    """What a run can prove: only a certification can register in a user's registry."""

    CERTIFICATION = "certification"  # real vLLM on real nodes, deployed by the gate
    REHEARSAL = "rehearsal"  # the full flow, but a simulator answered (or the nodes are KWOK's)
    ENDPOINT = "endpoint"  # --endpoint-url: a server the gate did not deploy


class Kind(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    PARTIAL = "partial"
    INTERRUPTED = "interrupted"


HEADLINE_NAMES = 5  # missing checks named in the headline; the reasons list every one
# Exit status per verdict kind: 0, 1 and 2 keep pytest's meanings; 6 is pytest's first unused code.
EXIT_CODES = {Kind.PASSED: 0, Kind.FAILED: 1, Kind.INTERRUPTED: 2, Kind.PARTIAL: 6}
# A passed rehearsal or endpoint run under --require-certification (a nightly certification job).
NOT_A_CERTIFICATION_EXIT = 7


@dataclass(frozen=True)
class Check:
    """One check of the gate: ``suite`` is the suite file's stem without ``test_``, ``test`` the function."""

    suite: str
    test: str
    needs_cluster: bool = False  # exercised only when the gate deployed the model itself
    needs_containers: bool = False  # exercised only where the cluster runs containers (not KWOK's fake pods)
    needs_gpu: bool = False  # required only where real GPUs serve real vLLM (a rehearsal's are recorded or absent)
    needs_baseline: bool = False  # compares with a baseline in the run's registry: an --endpoint-url run has none
    compares_last: bool = False  # against the last passed run: not required when the user says --no-compare-last
    needs_trained_weights: bool = False  # not required where the model's weights are noise (the real engine's tiny one)
    needs_capacity_search: bool = False  # required only where the spec or --find-capacity asks for the search
    needs_autoscaling: bool = False  # required only where the spec has a scaling policy
    per_slo: bool = False  # one check per SLO of the spec (the test is parametrized by SLO name)

    def ids(self, slos: Slos) -> list[str]:
        if self.per_slo:
            return [f"{self.suite}/{self.test}[{name}]" for name in slo_names(slos)]
        return [f"{self.suite}/{self.test}"]


# Every check in suites/, and which runs require it. tests/verdict/test_contract.py keeps this list and the
# collected suites identical, so a new check cannot be left out of the contract.
CHECKS: tuple[Check, ...] = (
    Check("health", "test_health_endpoint_answers_200"),
    Check("health", "test_models_lists_the_served_name"),
    Check("health", "test_max_model_len_matches_the_spec"),
    Check("health", "test_server_is_the_specs_vllm_and_model"),
    Check("health", "test_chat_completion"),
    Check("health", "test_streamed_chat_completion"),
    Check("health", "test_helm_test_passes", needs_cluster=True, needs_containers=True),
    Check("exposure", "test_every_service_is_cluster_ip", needs_cluster=True),
    Check("exposure", "test_no_ingress_or_route_reaches_the_service", needs_cluster=True),
    Check("exposure", "test_no_host_network_or_host_port", needs_cluster=True),
    Check("exposure", "test_network_policy_admits_only_router_and_monitoring", needs_cluster=True),
    Check("exposure", "test_network_policy_is_enforced", needs_cluster=True, needs_containers=True),
    Check("metrics", "test_required_vllm_metric_families_are_exposed"),
    Check("metrics", "test_server_counters_grew_by_what_the_client_measured"),
    Check("identity", "test_canary_prompt_tokens_match_the_model", needs_baseline=True),
    Check("identity", "test_answers_stop_within_the_bound", needs_trained_weights=True),
    Check("identity", "test_answers_have_not_drifted", needs_baseline=True),
    Check("monitoring", "test_model_pods_are_scrape_targets_and_up", needs_cluster=True),
    Check("monitoring", "test_vllm_series_carry_pod_labels_and_model_name", needs_cluster=True),
    Check("monitoring", "test_prometheus_rates_agree_with_the_load_client", needs_cluster=True),
    Check("gpu", "test_pod_has_the_gpus_it_asked_for", needs_cluster=True, needs_gpu=True),
    Check("gpu", "test_gpu_memory_matches_vllm_preallocation", needs_cluster=True, needs_gpu=True),
    Check("gpu", "test_gpu_busy_under_load", needs_cluster=True, needs_gpu=True),
    Check("gpu", "test_no_xid_errors_during_the_run", needs_cluster=True, needs_gpu=True),
    Check("load", "test_slo", per_slo=True),
    Check("load", "test_capacity_search", needs_capacity_search=True),
    Check("load", "test_no_regression_against_the_last_passed_run", needs_baseline=True, compares_last=True),
    Check("autoscaling", "test_hpa_reads_its_metric", needs_cluster=True, needs_autoscaling=True),
    Check("autoscaling", "test_scales_out_under_load_and_back_in", needs_cluster=True, needs_autoscaling=True),
    Check("registration", "test_registry_is_migrated", needs_cluster=True),
    Check("registration", "test_registry_accepts_the_row", needs_cluster=True),
    Check("registration", "test_backend_url_names_the_service", needs_cluster=True),
)
# What no run of the gate shows yet: every verdict lists it as not shown, never as passed.
NOT_BUILT: tuple[str, ...] = ()


def model_param_id(model: str, param: str | None = None) -> str:
    """A test's id in a run of several models: ``llama3``, or ``llama3-ttft p95`` beside another parameter."""
    return model if param is None else f"{model}-{param}"


def check_id(path: str | PurePath, name: str, model: str | None = None) -> str:
    """The contract's id of a collected test: ``health/test_chat_completion``, ``load/test_slo[ttft p95]``.

    ``model``: the test's model in a run of several models, dropped from its id (``test_chat_completion[llama3]``,
    ``test_slo[llama3-ttft p95]``, see model_param_id): every model has the same checks.
    """
    if model is not None:
        alone, first = f"[{model_param_id(model)}]", f"[{model_param_id(model, '')}"
        name = name.removesuffix(alone) if name.endswith(alone) else name.replace(first, "[", 1)
    return f"{PurePath(path).stem.removeprefix('test_')}/{name}"


def required_checks(slos: Slos, *, deployed_by_gate: bool, runs_containers: bool, real_gpus: bool,
                    compare_last: bool = True, trained_weights: bool = True,
                    capacity_search: bool = False, autoscaling: bool = False) -> list[str]:
    """Every check a run must pass to pass, known before collection and selection."""
    return [cid for check in CHECKS
            if (deployed_by_gate or not (check.needs_cluster or check.needs_baseline))
            and (runs_containers or not check.needs_containers)
            and (real_gpus or not check.needs_gpu)
            and (compare_last or not check.compares_last)
            and (trained_weights or not check.needs_trained_weights)
            and (capacity_search or not check.needs_capacity_search)
            and (autoscaling or not check.needs_autoscaling)
            for cid in check.ids(slos)]


def known_checks(slos: Slos) -> set[str]:
    """Every check id the contract knows."""
    return {cid for check in CHECKS for cid in check.ids(slos)}


@dataclass(frozen=True)
class Outcome:
    """What one check did: passed, failed, skipped, or blocked (not run because something it needs failed)."""

    check: str
    outcome: str
    message: str = ""


@dataclass(frozen=True)
class Verdict:
    mode: Mode
    kind: Kind
    headline: str  # the one line a person acts on
    reasons: tuple[str, ...]  # one line per failed, blocked or missing check, and why
    not_shown: tuple[str, ...]  # what this run could not show (never counted as passed)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.kind]

    @property
    def certified(self) -> bool:
        return self.mode is Mode.CERTIFICATION and self.kind is Kind.PASSED

    @property
    def record_as(self) -> str:
        """The ``certifications.verdict`` value; endpoint runs are never recorded."""
        if self.mode is Mode.REHEARSAL:
            return f"rehearsal_{self.kind.value}"
        return {Kind.PASSED: "certified", Kind.FAILED: "not_certified"}.get(self.kind, self.kind.value)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _headline(mode: Mode, kind: Kind, detail: str, stand_in: str | None) -> str:
    if mode is Mode.REHEARSAL:
        name = {Kind.PASSED: "REHEARSAL PASSED", Kind.FAILED: "REHEARSAL FAILED",
                Kind.PARTIAL: "REHEARSAL PARTIAL", Kind.INTERRUPTED: "REHEARSAL INTERRUPTED"}[kind]
        head = f"{name} ({stand_in}) — not a certification"
    elif mode is Mode.ENDPOINT:
        name = {Kind.PASSED: "ENDPOINT CHECKS PASSED", Kind.FAILED: "ENDPOINT CHECKS FAILED",
                Kind.PARTIAL: "ENDPOINT CHECKS PARTIAL", Kind.INTERRUPTED: "ENDPOINT CHECKS INTERRUPTED"}[kind]
        head = f"{name} — not a certification: the gate did not deploy this server"
    else:
        head = {Kind.PASSED: "CERTIFIED", Kind.FAILED: "NOT CERTIFIED", Kind.PARTIAL: "PARTIAL: not certified,",
                Kind.INTERRUPTED: "INTERRUPTED: not certified"}[kind]
        if head.endswith(","):
            return f"{head} {detail}"
    return f"{head}: {detail}" if detail else head


def decision_failed(verdict: Verdict, line: str, stand_in: str | None) -> Verdict:
    """The verdict of a run whose checks passed but whose decision failed (``line``, e.g. "REGISTRATION FAILED: ..."):
    FAILED, so that the headline, the report, summary.json and the exit status all say it; any other verdict
    stands. The headline names what failed; the line, with its detail, leads the reasons."""
    if verdict.kind is not Kind.PASSED:
        return verdict
    what = line.split(":", 1)[0].lower()
    return Verdict(verdict.mode, Kind.FAILED,
                   _headline(verdict.mode, Kind.FAILED, f"every required check passed, but {what}", stand_in),
                   (line, *verdict.reasons), verdict.not_shown)


def decide(*, required: Iterable[str], outcomes: Iterable[Outcome], mode: Mode, interrupted: str | None,
           stand_in: str | None, engine_observed: bool, not_shown: Iterable[str] = ()) -> Verdict:
    """The verdict of a run.

    ``interrupted`` says how the session did not end normally (None when it did). ``stand_in`` names
    what answered in place of the spec's model on GPUs (a rehearsal: the simulator, KWOK nodes, or the real engine's
    CPU build with a tiny model). ``engine_observed`` is True once the gate
    saw real vLLM pods on real nodes; a certification needs it.
    """
    by_id = {o.check: o for o in outcomes}
    failed = [o for o in by_id.values() if o.outcome == "failed"]
    blocked = [o for o in by_id.values() if o.outcome == "blocked"]
    missing = [cid for cid in required if by_id.get(cid) is None or by_id[cid].outcome == "skipped"]
    reasons = [f"FAILED {o.check}: {o.message}" for o in failed]
    if blocked:
        causes = sorted({o.message for o in blocked})
        reasons += [f"NOT RUN {_plural(sum(o.message == c for o in blocked), 'check')}: {c}" for c in causes]
    for cid in missing:
        skipped = by_id.get(cid)
        reasons.append(f"DID NOT RUN {cid}" + (f" (skipped: {skipped.message})" if skipped else ""))
    if mode is Mode.CERTIFICATION and not engine_observed and not (failed or blocked):
        reasons.append("DID NOT RUN the engine check: the gate never saw vLLM pods on real nodes")
        missing.append("engine")
    if interrupted:
        kind, detail = Kind.INTERRUPTED, interrupted
    elif failed or blocked:
        kind = Kind.FAILED
        parts = [_plural(len(failed), "check") + " failed"] if failed else []
        parts += [_plural(len(blocked), "check") + " not run because something they need failed"] if blocked else []
        detail = "; ".join(parts)
    elif missing:
        named = ", ".join(missing[:HEADLINE_NAMES]) + (", ..." if len(missing) > HEADLINE_NAMES else "")
        kind, detail = Kind.PARTIAL, f"{_plural(len(missing), 'required check')} did not run: {named}"
    else:
        kind, detail = Kind.PASSED, ""
    if interrupted and missing:
        detail += f"; {_plural(len(missing), 'required check')} did not run"
    headline = _headline(mode, kind, detail, stand_in)
    recorded = sum(by_id[cid].outcome == "baseline" for cid in required if cid in by_id)
    if kind is Kind.PASSED and recorded:  # passed, but these compared with nothing: said where it is read first
        headline += f" (first of its kind: {_plural(recorded, 'comparison')} recorded baselines)"
    return Verdict(mode, kind, headline, tuple(reasons), tuple(not_shown))
