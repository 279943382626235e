"""The certification contract: the required set, the verdict of every kind of run, and its exit code."""

from __future__ import annotations

import pytest

from vllm_gate.base.tools import MODELS_DIR, PROJECT_ROOT
from vllm_gate.gate.run import GateRun
from vllm_gate.spec import load_spec
from vllm_gate.verdict.contract import (
    CHECKS,
    NOT_BUILT,
    Kind,
    Mode,
    Outcome,
    check_id,
    decide,
    known_checks,
    required_checks,
)

SPEC = load_spec("llama3", MODELS_DIR)
REQUIRED = required_checks(SPEC.slo, deployed_by_gate=True, runs_containers=True, real_gpus=True)


def all_passed(required=REQUIRED) -> list[Outcome]:
    return [Outcome(cid, "passed") for cid in required]


def verdict(outcomes, *, mode=Mode.CERTIFICATION, interrupted=None, simulated=None, engine_observed=True,
            required=REQUIRED):
    return decide(required=required, outcomes=outcomes, mode=mode, interrupted=interrupted, stand_in=simulated,
                  engine_observed=engine_observed)


def test_every_check_passed_on_real_vllm_is_certified_and_exits_zero():
    v = verdict(all_passed())
    assert (v.kind, v.headline, v.exit_code, v.certified, v.record_as) == (
        Kind.PASSED, "CERTIFIED", 0, True, "certified")


def test_one_missing_required_check_is_partial_naming_it():
    outcomes = all_passed()[1:]
    v = verdict(outcomes)
    assert v.kind is Kind.PARTIAL
    assert not v.certified
    assert v.exit_code == 6
    assert v.headline == f"PARTIAL: not certified, 1 required check did not run: {REQUIRED[0]}"
    assert v.record_as == "partial"


def test_a_skipped_required_check_did_not_run():
    outcomes = [*all_passed()[1:], Outcome(REQUIRED[0], "skipped", "no registry")]
    v = verdict(outcomes)
    assert v.kind is Kind.PARTIAL
    assert f"DID NOT RUN {REQUIRED[0]} (skipped: no registry)" in v.reasons


def test_a_failed_check_is_not_certified_even_when_it_is_not_required():
    v = verdict([*all_passed(), Outcome("exposure/test_other", "failed", "admitted")])
    assert v.kind is Kind.FAILED
    assert v.headline == "NOT CERTIFIED: 1 check failed"
    assert v.exit_code == 1
    assert v.reasons == ("FAILED exposure/test_other: admitted",)


def test_checks_blocked_by_one_failure_are_counted_once_under_their_cause():
    blocked = [Outcome(cid, "blocked", "Unschedulable") for cid in REQUIRED]
    v = verdict([Outcome("setup", "failed", "Unschedulable"), *blocked])
    assert v.kind is Kind.FAILED
    assert f"NOT RUN {len(REQUIRED)} checks: Unschedulable" in v.reasons


def test_an_interrupt_wins_over_everything_and_exits_two():
    v = verdict(all_passed(), interrupted="SIGTERM")
    assert (v.kind, v.exit_code, v.certified, v.record_as) == (Kind.INTERRUPTED, 2, False, "interrupted")
    assert v.headline == "INTERRUPTED: not certified: SIGTERM"


def test_a_rehearsal_never_certifies_and_names_the_simulator():
    v = verdict(all_passed(), mode=Mode.REHEARSAL, simulated="simulator: vllm-sim-standin", engine_observed=False)
    assert v.kind is Kind.PASSED
    assert v.exit_code == 0
    assert not v.certified
    assert v.headline == "REHEARSAL PASSED (simulator: vllm-sim-standin) — not a certification"
    assert v.record_as == "rehearsal_passed"
    failed = verdict([Outcome(REQUIRED[0], "failed", "x")], mode=Mode.REHEARSAL, simulated="KWOK node gpu-0")
    assert failed.headline.startswith("REHEARSAL FAILED (KWOK node gpu-0) — not a certification")
    assert failed.exit_code == 1


def test_an_endpoint_run_never_certifies():
    required = required_checks(SPEC.slo, deployed_by_gate=False, runs_containers=False, real_gpus=False)
    v = verdict(all_passed(required), mode=Mode.ENDPOINT, required=required, engine_observed=False)
    assert v.kind is Kind.PASSED
    assert v.exit_code == 0
    assert not v.certified
    assert "not a certification: the gate did not deploy this server" in v.headline
    assert not any(cid.startswith(("exposure/", "registration/")) for cid in required)


def test_all_passed_without_seeing_vllm_on_real_nodes_is_not_certified():
    v = verdict(all_passed(), engine_observed=False)
    assert v.kind is Kind.PARTIAL
    assert not v.certified
    assert any("never saw vLLM pods on real nodes" in r for r in v.reasons)


def test_every_slo_of_the_spec_is_a_required_check():
    slo_checks = [cid for cid in REQUIRED if cid.startswith("load/test_slo")]
    assert slo_checks == [f"load/test_slo[{name}]" for name in ("ttft p50", "ttft p95", "ttft p99", "itl p50",
                                                                  "itl p95", "itl p99", "e2e p95", "e2e p99",
                                                                  "error rate", "min output tokens/s", "goodput")]


def test_the_contract_lists_exactly_the_checks_in_suites(pytester: pytest.Pytester):
    """A check added to suites/ without a place in the contract (or a contract entry without a test) fails here."""
    result = pytester.runpytest_subprocess(str(PROJECT_ROOT / "suites"), "-p", "no:cacheprovider", "--rootdir",
                                           str(PROJECT_ROOT), "--collect-only", "-q", "--model", "llama3",
                                           "--endpoint-url", "http://127.0.0.1:9")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    collected = set()
    for line in result.outlines:
        if "::" in line:
            path, _, name = line.partition("::")
            collected.add(f"{path.rsplit('/', 1)[-1].removesuffix('.py').removeprefix('test_')}/{name}")
    assert collected == known_checks(SPEC.slo)
    # The autoscaling checks run last: the test adds and removes replicas the other checks must not see.
    order = [line.partition("::")[0].rsplit("/", 1)[-1] for line in result.outlines if "::" in line]
    assert order[-2:] == ["test_autoscaling.py"] * 2
    assert {c.suite for c in CHECKS} == {
        p.stem.removeprefix("test_") for p in (PROJECT_ROOT / "suites").glob("test_*.py")}


def test_with_several_models_each_model_has_exactly_the_contracts_checks(pytester: pytest.Pytester, tmp_path):
    """The same invariant in a run of every model: each check once per model, its id the contract's without [model]."""
    kubeconfig = tmp_path / "kubeconfig"  # read for its context only: collection reaches no cluster
    kubeconfig.write_text("apiVersion: v1\nkind: Config\ncurrent-context: pool\ncontexts:\n- name: pool\n"
                          "  context: {cluster: pool, user: u}\nclusters:\n- name: pool\n  cluster: "
                          "{server: 'https://127.0.0.1:9'}\nusers:\n- name: u\n  user: {}\n")
    result = pytester.runpytest_subprocess(str(PROJECT_ROOT / "suites"), "-p", "no:cacheprovider", "--rootdir",
                                           str(PROJECT_ROOT), "--collect-only", "-q", "--model", "all", "--cluster",
                                           "existing", "--kubeconfig", str(kubeconfig))
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    collected: dict[str, list[str]] = {}
    for line in result.outlines:
        if "::" in line:
            path, _, name = line.partition("::")
            model = name.partition("[")[2].removesuffix("]")
            model = next(m for m in ("llama3", "mistral-7b") if model == m or model.startswith(f"{m}-"))
            collected.setdefault(model, []).append(check_id(path, name, model))
    assert sorted(collected) == ["llama3", "mistral-7b"]
    for model, checks in collected.items():
        assert sorted(checks) == sorted(known_checks(load_spec(model, MODELS_DIR).slo)), model


def test_checks_that_run_pods_are_required_only_where_the_cluster_runs_containers():
    on_kwok = required_checks(SPEC.slo, deployed_by_gate=True, runs_containers=False, real_gpus=True)
    pods = {"health/test_helm_test_passes", "exposure/test_network_policy_is_enforced"}
    assert pods <= set(REQUIRED)
    assert set(REQUIRED) - set(on_kwok) == pods


def test_the_network_policy_probe_is_required_wherever_the_gate_deployed_onto_containers():
    probe = "exposure/test_network_policy_is_enforced"
    assert probe in required_checks(SPEC.slo, deployed_by_gate=True, runs_containers=True, real_gpus=False)
    assert probe not in required_checks(SPEC.slo, deployed_by_gate=False, runs_containers=True, real_gpus=True)
    # Built: no verdict lists enforcement as not built any more (the check's own outcome says what was shown).
    assert not [line for line in NOT_BUILT if "NetworkPolicy" in line]


def test_gpu_checks_are_required_only_on_real_gpus_and_monitoring_wherever_the_gate_deployed():
    without_gpus = required_checks(SPEC.slo, deployed_by_gate=True, runs_containers=True, real_gpus=False)
    assert set(REQUIRED) - set(without_gpus) == {c for c in REQUIRED if c.startswith("gpu/")}
    assert len(set(REQUIRED) - set(without_gpus)) == 4
    assert {c for c in without_gpus if c.startswith("monitoring/")} == {
        c for c in REQUIRED if c.startswith("monitoring/")} != set()
    endpoint = required_checks(SPEC.slo, deployed_by_gate=False, runs_containers=True, real_gpus=True)
    assert not [c for c in endpoint if c.startswith(("gpu/", "monitoring/"))]
    # An --endpoint-url run has no registry of its own to hold identity baselines; stopping needs none.
    assert [c for c in endpoint if c.startswith("identity/")] == ["identity/test_answers_stop_within_the_bound"]


def test_a_first_run_that_records_identity_baselines_can_certify_and_is_shown_as_baseline():
    # The first certification of a model has nothing to compare its canary and answers with: it records them.
    baseline = {"identity/test_canary_prompt_tokens_match_the_model", "identity/test_answers_have_not_drifted"}
    assert baseline <= set(REQUIRED)
    outcomes = [Outcome(c, "baseline" if c in baseline else "passed", "baseline recorded") for c in REQUIRED]
    assert verdict(outcomes).certified
    run = GateRun(spec=SPEC, cluster="test", capabilities=None, report_path=PROJECT_ROOT / "r.html")
    for outcome in outcomes:
        run.record(outcome.check, outcome.outcome, outcome.message)
    assert run.suites()["identity"] == "baseline"
    assert run.suites()["health"] == "passed"


def test_the_regression_check_is_required_unless_the_user_says_no_compare_last():
    check = "load/test_no_regression_against_the_last_passed_run"
    assert check in REQUIRED
    without = required_checks(SPEC.slo, deployed_by_gate=True, runs_containers=True, real_gpus=True,
                              compare_last=False)
    assert set(REQUIRED) - set(without) == {check}
    assert check not in required_checks(SPEC.slo, deployed_by_gate=False, runs_containers=True, real_gpus=True)


def test_a_passed_run_whose_comparisons_only_recorded_baselines_says_so_in_its_headline():
    outcomes = all_passed()
    compared = [cid for cid in REQUIRED if cid.startswith(("identity/test_canary", "identity/test_answers_have",
                                                           "load/test_no_regression"))]
    assert len(compared) == 3
    for cid in compared:
        outcomes = [o for o in outcomes if o.check != cid] + [Outcome(cid, "baseline", "nothing to compare with")]
    assert verdict(outcomes).headline == "CERTIFIED (first of its kind: 3 comparisons recorded baselines)"
    assert verdict(outcomes).certified
    assert verdict(all_passed()).headline == "CERTIFIED"
