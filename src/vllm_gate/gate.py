"""One gate run: what was deployed, what each check said, and the decision at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from vllm_gate.cluster.base import Capabilities
from vllm_gate.deploy import Release, roll_back
from vllm_gate.errors import GateError
from vllm_gate.registry import db
from vllm_gate.registry.certify import Certification, record_failed, register_certified
from vllm_gate.registry.mappings import Mapping
from vllm_gate.slo import SloResult, slo_names
from vllm_gate.spec import ModelSpec

OUTCOME_ORDER = ("failed", "passed", "skipped")  # worst first
NOTHING_DEPLOYED = "the gate deployed nothing in this run: nothing registered, nothing rolled back"


def worse(outcome: str, than: str | None) -> bool:
    return than is None or OUTCOME_ORDER.index(outcome) < OUTCOME_ORDER.index(than)


@dataclass
class CheckOutcome:
    nodeid: str
    outcome: str  # passed, failed, skipped
    message: str = ""  # failure summary or skip reason

    @property
    def suite(self) -> str:
        path = self.nodeid.split("::", 1)[0]
        return Path(path).stem.removeprefix("test_")


@dataclass
class GateRun:
    spec: ModelSpec
    cluster: str  # one line: provider, name, version
    capabilities: Capabilities | None
    report_path: Path
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    release: Release | None = None
    endpoint: str | None = None
    registry: str | None = None  # redacted DSN, or why there is none
    checks_by_id: dict[str, CheckOutcome] = field(default_factory=dict)
    slo_results: list[SloResult] = field(default_factory=list)
    decision: list[str] = field(default_factory=list)
    decision_failed: bool = False

    def record(self, nodeid: str, outcome: str, message: str) -> None:
        """Record one phase of a check; the worst phase (failed > passed > skipped) decides."""
        current = self.checks_by_id.get(nodeid)
        if worse(outcome, current.outcome if current else None):
            self.checks_by_id[nodeid] = CheckOutcome(nodeid, outcome, message)

    @property
    def checks(self) -> list[CheckOutcome]:
        return list(self.checks_by_id.values())

    def suites(self) -> dict[str, str]:
        """Each suite's outcome: failed if any check failed, skipped if all skipped, else passed."""
        result: dict[str, str] = {}
        for check in self.checks:
            if worse(check.outcome, result.get(check.suite)):
                result[check.suite] = check.outcome
        return result

    def slo_names(self) -> list[str]:
        return slo_names(self.spec.slo)

    @property
    def failed_checks(self) -> list[CheckOutcome]:
        return [c for c in self.checks if c.outcome == "failed"]

    @property
    def passed(self) -> bool:
        """Certified only when checks ran, none failed, and at least one passed."""
        return bool(self.checks) and not self.failed_checks and any(c.outcome == "passed" for c in self.checks)

    def summary(self) -> dict[str, object]:
        return {
            "cluster": self.cluster, "engine": self.spec.engine, "endpoint": self.endpoint,
            "suites": self.suites(),
            "failed": [f"{c.nodeid}: {c.message}" for c in self.failed_checks],
            "skipped": [f"{c.nodeid}: {c.message}" for c in self.checks if c.outcome == "skipped"],
            "slo": [r.line() for r in self.slo_results],
        }

    def mapping(self) -> Mapping:
        spec = self.spec
        return Mapping(name=spec.name, display_name=spec.display_name, backend_url=spec.in_cluster_url,
                       upstream_model_id=spec.served_name, max_tokens=spec.vllm.max_model_len,
                       input_cost=spec.costs.input_per_1k, output_cost=spec.costs.output_per_1k,
                       chart_version=self.release.chart_version if self.release else None,
                       image=f"{spec.image.repository}:{spec.image.tag}")

    def certification(self) -> Certification:
        return Certification(model_name=self.spec.name, cluster=self.cluster, started_at=self.started_at,
                             finished_at=datetime.now(UTC), verdict="passed" if self.passed else "failed",
                             summary=self.summary(), report_path=str(self.report_path))


def finish(run: GateRun, *, dsn: str | None, keep_on_failure: bool, kubeconfig: Path | None,
           context: str | None) -> None:
    """Register a passed run; roll back a failed one (unless kept). Appends what it did to ``run.decision``."""
    if run.release is None:
        run.decision.append(NOTHING_DEPLOYED)
        return
    if not run.passed:
        if keep_on_failure:
            run.decision.append(f"kept the failed release {run.release.namespace}/{run.release.name} "
                                "(--keep-on-failure)")
        else:
            try:
                run.decision.append(roll_back(run.release, kubeconfig, context))
            except GateError as exc:
                run.decision_failed = True
                run.decision.append(f"ROLLBACK FAILED: {exc.summary}")
    if dsn is None:
        run.decision.append(f"not registered: {run.registry or 'no registry'}")
        return
    try:
        conn = db.connect(dsn)
        try:
            cert = run.certification()
            if run.passed:
                cert_id = register_certified(conn, run.mapping(), cert)
                run.decision.append(f"registered {run.spec.name} -> {run.spec.in_cluster_url} in "
                                    f"{run.registry} (certification {cert_id})")
            else:
                cert_id = record_failed(conn, cert)
                run.decision.append(f"not registered; failed certification {cert_id} recorded in {run.registry}")
        finally:
            conn.close()
    except Exception as exc:  # the release decision stands; the registry problem is reported, not hidden
        run.decision_failed = True
        run.decision.append(f"REGISTRATION FAILED: {db.scrub(str(exc).splitlines()[0], dsn)}")
