"""finish(): what each verdict may write, and where; a rehearsal never writes a registry the user gave."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.conftest import dump_tables
from vllm_gate.base.secret import Secret
from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.gate.decision import finish
from vllm_gate.gate.exit_code import model_exit_code
from vllm_gate.gate.run import GateRun, IdentityRecord, Registry
from vllm_gate.registry.baselines import last_baseline
from vllm_gate.registry.role import mark_role, registry_role
from vllm_gate.report.html import sign_off
from vllm_gate.report.summary import run_summary
from vllm_gate.spec import load_spec
from vllm_gate.verdict.contract import Kind, Mode, required_checks

SPEC = load_spec("llama3", MODELS_DIR)


def run_with(registry: Registry, *, mode: Mode = Mode.CERTIFICATION, passed_all: bool = True,
             interrupted: str | None = None) -> GateRun:
    run = GateRun(spec=SPEC, cluster="test", capabilities=None, report_path=Path("r.html"), mode=mode,
                  required=required_checks(SPEC.slo, deployed_by_gate=mode is not Mode.ENDPOINT, runs_containers=True,
                                           real_gpus=True),
                  registry=registry, interrupted=interrupted)
    if mode is Mode.REHEARSAL:
        run.simulated = "simulator: test"
    for check in run.required[: None if passed_all else 3]:
        run.record(check, "passed", "")
    return run


def finished(run: GateRun) -> GateRun:
    finish(run, keep_on_failure=False)
    return run


def test_a_rehearsal_writes_nothing_to_a_registry_the_user_gave(dsn):
    before = dump_tables(dsn)
    run = finished(run_with(Registry(Secret(dsn), "the user's registry"), mode=Mode.REHEARSAL))
    assert run.settle().headline.startswith("REHEARSAL PASSED")
    assert ("not registered, nothing written to the user's registry: a rehearsal never writes the registry you "
            "gave") in run.decision
    assert dump_tables(dsn) == before


@pytest.mark.parametrize("routed", [True, False], ids=["a router stand-in reads it", "no router reads it"])
def test_a_passed_rehearsal_registers_in_the_rehearsal_registry_only_where_a_router_reads_it(dsn, routed):
    run = run_with(Registry(Secret(dsn), "the rehearsal registry", rehearsal=True,
                            untouched="postgresql://u:***@h/db"), mode=Mode.REHEARSAL)
    run.rehearsal_promotes = routed
    finished(run)
    assert run.decision[1] == ("the registry you gave (postgresql://u:***@h/db) was not touched: a rehearsal "
                               "writes only the rehearsal registry")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT verdict FROM certifications").fetchall() == [("rehearsal_passed",)]
        assert conn.execute("SELECT name FROM model_mappings").fetchall() == ([("llama3",)] if routed else [])
    if not routed:  # undone: a row would name a Service that is gone
        assert run.decision[2] == ("not registered (undone: no API-router stand-in reads the rehearsal registry "
                                   "here); rehearsal_passed certification 1 recorded there")


def test_a_partial_certification_is_recorded_and_registers_nothing(dsn):
    run = finished(run_with(Registry(Secret(dsn), "the registry"), passed_all=False))
    assert run.settle().headline.startswith("PARTIAL: not certified, ")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT verdict FROM certifications").fetchall() == [("partial",)]
        assert conn.execute("SELECT count(*) FROM model_mappings").fetchone() == (0,)


def test_an_interrupted_run_is_recorded_and_registers_nothing(dsn):
    run = run_with(Registry(Secret(dsn), "the registry"), interrupted="SIGTERM")
    run.engine_observed = True
    finished(run)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT verdict FROM certifications").fetchall() == [("interrupted",)]
        assert conn.execute("SELECT count(*) FROM model_mappings").fetchone() == (0,)


def test_an_endpoint_run_never_writes(dsn):
    before = dump_tables(dsn)
    run = finished(run_with(Registry(Secret(dsn), "the registry"), mode=Mode.ENDPOINT))
    assert run.settle().exit_code == 0
    assert run.decision[-1] == "not registered: an --endpoint-url run never registers"
    assert dump_tables(dsn) == before


def test_a_certified_run_registers_once_in_the_users_registry(dsn):
    run = run_with(Registry(Secret(dsn), "the registry"))
    run.engine_observed = True
    finished(run)
    assert run.settle().headline == "CERTIFIED"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT verdict FROM certifications").fetchall() == [("certified",)]
        assert conn.execute("SELECT backend_url FROM model_mappings").fetchall() == [(SPEC.in_cluster_url,)]


def test_an_unreachable_registry_fails_the_decision_without_its_password(postgres):
    wrong = postgres.dsn.replace(postgres.password, "Wr0ng-pw")
    run = run_with(Registry(Secret(wrong), "the registry"), passed_all=False)
    finished(run)
    assert run.decision_failed
    assert run.decision[-1].startswith("REGISTRATION FAILED: cannot reach the registry at postgresql://gate:***@")
    assert run.settle().headline.startswith("PARTIAL: not certified, ")  # a verdict that did not pass stands
    assert "Wr0ng-pw" not in " ".join(run.decision)


IDENTITY = IdentityRecord(30, [("Say hello.", "hello there")], fingerprint="fp")


def test_a_certification_stores_its_identity_baseline_with_its_row_and_marks_the_registry_production(dsn):
    run = run_with(Registry(Secret(dsn), "the registry"))
    run.engine_observed = True
    run.identity = IDENTITY
    finished(run)
    assert run.settle().certified
    with psycopg.connect(dsn) as conn:
        baseline = last_baseline(conn, "llama3", ("certified",), "fp")
        assert baseline is not None
        assert (baseline.canary_prompt_tokens, baseline.answers) == (30, IDENTITY.answers)
        assert registry_role(conn) == "production"


def test_a_run_that_did_not_pass_stores_no_baseline_and_says_so(dsn):
    run = run_with(Registry(Secret(dsn), "the registry"), passed_all=False)
    run.identity = IDENTITY
    finished(run)
    assert "no identity baseline stored: only a passed run's measurements become one" in run.decision
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM identity_baselines").fetchone()[0] == 0


def test_a_certification_never_registers_in_the_rehearsal_registry(dsn):
    with psycopg.connect(dsn) as conn:
        mark_role(conn, "rehearsal")
    before = dump_tables(dsn)
    run = run_with(Registry(Secret(dsn), "the registry"))
    run.engine_observed = True
    run.identity = IDENTITY
    finished(run)
    assert run.decision_failed
    assert any(line.startswith("REGISTRATION FAILED: ") and "is marked as a rehearsal registry" in line
               for line in run.decision), run.decision
    assert dump_tables(dsn) == before


def test_checks_that_passed_but_did_not_register_are_not_certified_anywhere(postgres, tmp_path):
    # Every check passed, on real vLLM; the registry then refuses the write (unreachable here): one truth everywhere.
    wrong = postgres.dsn.replace(postgres.password, "Wr0ng-pw")
    run = run_with(Registry(Secret(wrong), "the registry"))
    run.engine_observed = True
    assert run.settle().certified  # before the decision
    finished(run)
    verdict = run.settle()
    assert not verdict.certified
    assert verdict.kind is Kind.FAILED
    assert verdict.headline == "NOT CERTIFIED: every required check passed, but registration failed"
    assert verdict.reasons[0].startswith("REGISTRATION FAILED: cannot reach the registry at postgresql://gate:***@")
    assert "Wr0ng-pw" not in " ".join(verdict.reasons)
    assert model_exit_code(run, pytest.ExitCode.OK, require_certification=False) == 1
    summary = run_summary([run])
    (model,) = summary["models"]
    assert (model["verdict"]["kind"], model["verdict"]["certified"], model["verdict"]["exit_code"]) == (
        "failed", False, 1)
    assert model["verdict"]["headline"] == verdict.headline
    run.finished_at = run.started_at
    report = sign_off(run, [], history=None)
    assert "every required check passed, but registration failed" in report
    assert 'class="verdict failed"' in report


def test_a_rehearsal_that_could_not_register_is_a_failed_rehearsal(postgres):
    wrong = postgres.dsn.replace(postgres.password, "Wr0ng-pw")
    run = finished(run_with(Registry(Secret(wrong), "the rehearsal registry", rehearsal=True), mode=Mode.REHEARSAL))
    assert run.settle().headline == ("REHEARSAL FAILED (simulator: test) — not a certification: every required check "
                                     "passed, but registration failed")
    assert model_exit_code(run, pytest.ExitCode.OK, require_certification=False) == 1


def test_a_run_that_selected_none_of_its_checks_records_nothing(dsn):
    before = dump_tables(dsn)
    run = run_with(Registry(Secret(dsn), "the registry"), passed_all=False)
    run.outcomes.clear()
    run.selected = 0  # -k nothing, --deselect of every check
    finished(run)
    assert run.settle().headline.startswith("PARTIAL")
    assert run.decision[-1] == "not registered, nothing recorded: no check of llama3 was selected"
    assert dump_tables(dsn) == before  # no partial row, and the registry not marked production
