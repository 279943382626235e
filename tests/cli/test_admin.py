"""ias-admin: the runbook's commands verbatim, bad input, hostile strings, secrets."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.types.json import Jsonb

from tests.conftest import dump_tables
from tests.registry.test_redaction import FORMS, WRONG, leaks, server_dsn
from vllm_gate.cli.admin import main
from vllm_gate.registry.db import redact_dsn
from vllm_gate.registry.mappings import keep_previous
from vllm_gate.registry.migrate import available_migrations
from vllm_gate.registry.rehearsal import claim_for_rehearsals
from vllm_gate.registry.role import registry_role

RUNBOOK = """
ias-admin model add --name llama3 --display-name "Llama 3 8B Instruct" \\
  --backend-url http://llama-3-8b-inference.ias-production.svc.cluster.local:8000 \\
  --input-cost 0.0005 --output-cost 0.0015
"""
MISTRAL = ("ias-admin model add --name mistral-7b --display-name 'Mistral 7B Instruct' "
           "--backend-url http://mistral-7b-inference.ias-production.svc.cluster.local:8000 "
           "--input-cost 0.0003 --output-cost 0.0009")


def ias_admin_exe() -> str:
    return str(Path(sys.executable).with_name("ias-admin"))


def run_shell(command: str, dsn: str) -> subprocess.CompletedProcess[str]:
    """Run a runbook line through a real shell, with ias-admin from this environment first on PATH."""
    env = {**os.environ, "IAS_DATABASE_URL": dsn,
           "PATH": f"{Path(ias_admin_exe()).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=60, check=False)


def flags(values: dict[str, str]) -> list[str]:
    return [item for pair in values.items() for item in pair]


def invoke(dsn: str | None, *args: str):
    env = {"IAS_DATABASE_URL": dsn} if dsn else {"IAS_DATABASE_URL": ""}
    return CliRunner().invoke(main, list(args), env=env)


def test_runbook_commands_verbatim_then_list_json(dsn):
    for command in (RUNBOOK, MISTRAL):
        proc = run_shell(command, dsn)
        assert proc.returncode == 0, proc.stderr
    listed = run_shell("ias-admin model list --json", dsn)
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {"llama3", "mistral-7b"}
    assert rows["llama3"]["display_name"] == "Llama 3 8B Instruct"
    assert rows["llama3"]["backend_url"] == "http://llama-3-8b-inference.ias-production.svc.cluster.local:8000"
    assert (rows["llama3"]["input_cost_per_1k"], rows["llama3"]["output_cost_per_1k"]) == ("0.0005", "0.0015")
    assert (rows["mistral-7b"]["input_cost_per_1k"], rows["mistral-7b"]["output_cost_per_1k"]) == (
        "0.0003", "0.0009")
    assert rows["llama3"]["enabled"] is True


def test_show_update_disable_enable_remove(dsn):
    assert run_shell(RUNBOOK, dsn).returncode == 0
    assert invoke(dsn, "model", "update", "llama3", "--output-cost", "0.002").exit_code == 0
    assert json.loads(invoke(dsn, "model", "show", "llama3", "--json").output)["output_cost_per_1k"] == "0.002"
    assert invoke(dsn, "model", "disable", "llama3").exit_code == 0
    assert json.loads(invoke(dsn, "model", "show", "llama3", "--json").output)["enabled"] is False
    assert invoke(dsn, "model", "enable", "llama3").exit_code == 0
    assert "enabled" in invoke(dsn, "model", "list").output
    assert invoke(dsn, "model", "remove", "llama3").exit_code == 0
    gone = invoke(dsn, "model", "show", "llama3")
    assert (gone.exit_code, gone.output.strip()) == (1, "Error: model 'llama3' not found; see: ias-admin model list")


def test_add_existing_name_says_use_update(dsn):
    assert run_shell(RUNBOOK, dsn).returncode == 0
    before = dump_tables(dsn)
    again = run_shell(RUNBOOK, dsn)
    assert again.returncode == 1
    assert "already exists; use: ias-admin model update llama3" in again.stderr
    assert dump_tables(dsn) == before


GOOD = {"--name": "llama3", "--display-name": "Llama 3", "--backend-url": "http://svc.ns.svc:8000",
        "--input-cost": "0.0005", "--output-cost": "0.0015"}

BAD_INPUT = [
    ("uppercase-name", {"--name": "Llama3"}, "--name 'Llama3'"),
    ("name-with-space", {"--name": "llama 3"}, "--name 'llama 3'"),
    ("name-with-quote", {"--name": "x'; DROP TABLE model_mappings; --"}, "--name"),
    ("name-too-long", {"--name": "a" * 64}, "--name"),
    ("empty-display-name", {"--display-name": "   "}, "--display-name '   ': must not be empty"),
    ("ftp-url", {"--backend-url": "ftp://svc:8000"}, "--backend-url 'ftp://svc:8000': must start with http"),
    ("url-without-port", {"--backend-url": "http://svc.ns.svc"}, "has no port"),
    ("url-without-host", {"--backend-url": "http://:8000"}, "has no host"),
    ("url-bad-port", {"--backend-url": "http://svc:99999"}, "invalid port"),
    ("not-a-url", {"--backend-url": "llama-3-8b-inference"}, "--backend-url"),
    ("negative-input-cost", {"--input-cost": "-0.0005"}, "--input-cost"),
    ("negative-output-cost", {"--output-cost": "-1"}, "--output-cost"),
    ("cost-not-a-number", {"--input-cost": "cheap"}, "--input-cost 'cheap': not a decimal number"),
    ("cost-nan", {"--output-cost": "NaN"}, "--output-cost 'NaN': not a finite number"),
    ("cost-infinite", {"--input-cost": "Infinity"}, "--input-cost 'Infinity': not a finite number"),
    ("zero-max-tokens", {"--max-tokens": "0"}, "--max-tokens"),
    ("missing-backend-url", {"--backend-url": None}, "Missing option '--backend-url'"),
]


@pytest.mark.parametrize(("changes", "message"), [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(dsn, changes, message):
    assert run_shell(RUNBOOK.replace("llama3", "existing"), dsn).returncode == 0
    before = dump_tables(dsn)
    args = []
    for flag_, value in (GOOD | changes).items():
        if value is not None:
            args += [flag_, value]
    result = invoke(dsn, "model", "add", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert dump_tables(dsn) == before


def test_bad_update_is_refused_before_writing(dsn):
    assert run_shell(RUNBOOK, dsn).returncode == 0
    before = dump_tables(dsn)
    result = invoke(dsn, "model", "update", "llama3", "--backend-url", "http://no-port")
    assert result.exit_code == 2
    assert "--backend-url 'http://no-port'" in result.output
    assert dump_tables(dsn) == before


def test_hostile_strings_are_stored_and_shown_literally(dsn):
    hostile = "x'; DROP TABLE model_mappings; --"
    add = invoke(dsn, "model", "add", *flags(GOOD | {"--display-name": hostile}))
    assert add.exit_code == 0, add.output
    shown = json.loads(invoke(dsn, "model", "show", "llama3", "--json").output)
    assert shown["display_name"] == hostile
    assert hostile in invoke(dsn, "model", "list").output


def test_unmigrated_database_says_to_migrate(empty_dsn):
    result = invoke(empty_dsn, "model", "list")
    assert result.exit_code == 1
    assert "pending migration(s); run: ias-admin db migrate" in result.output
    migrate = invoke(empty_dsn, "db", "migrate")
    every = available_migrations()
    listed = ", ".join(f"{m.version:04d}_{m.name}" for m in every)
    assert listed.startswith("0001_model_mappings")
    assert (migrate.exit_code, migrate.output.strip()) == (
        0, f"applied {len(every)} migration(s): {listed}; marked as a production registry")
    again = invoke(empty_dsn, "db", "migrate").output.strip()
    assert again == "applied 0 migration(s); marked as a production registry"
    with psycopg.connect(empty_dsn) as conn:
        assert registry_role(conn) == "production"  # a gate rehearsal never takes it as its registry


def test_changing_the_rehearsal_registry_is_refused_and_changes_nothing(empty_dsn):
    with psycopg.connect(empty_dsn) as conn:
        claim_for_rehearsals(conn)
    before = dump_tables(empty_dsn)
    for command in (("db", "migrate"), ("model", "add", *flags(GOOD)), ("model", "update", "llama3", "--max-tokens",
                                                                          "9"), ("model", "disable", "llama3")):
        result = invoke(empty_dsn, *command)
        assert result.exit_code == 1, (command, result.output)
        assert "is marked as a rehearsal registry (the gate's, for rehearsals): ias-admin changes only production " \
               "registries" in result.output, command
        assert dump_tables(empty_dsn) == before
    assert invoke(empty_dsn, "model", "list").exit_code == 0  # reading it is fine


def test_missing_database_url_is_a_usage_error():
    result = invoke(None, "model", "list")
    assert result.exit_code == 2
    assert "no database: pass --database-url or set IAS_DATABASE_URL" in result.output


@pytest.mark.parametrize("form", FORMS)
def test_wrong_password_exits_3_without_the_password(postgres, dsn, form):
    wrong = server_dsn(postgres, form, WRONG)
    for proc in (run_shell("ias-admin model list", wrong),
                 run_shell(f"ias-admin --database-url {shlex.quote(wrong)} db migrate", "")):
        assert proc.returncode == 3, proc.stderr
        assert leaks(proc.stdout + proc.stderr) == []
        assert len(proc.stderr.strip().splitlines()) == 1
        assert f"Error: cannot reach the registry at {redact_dsn(wrong)}: " in proc.stderr
        assert "password authentication failed" in proc.stderr, "the server must have been reached and refused"


def test_unreachable_database_exits_3_without_the_password(postgres):
    secret = postgres.password
    dead = f"postgresql://gate:{secret}@127.0.0.1:1/registry"
    proc = run_shell(f"ias-admin --database-url {shlex.quote(dead)} model list", "")
    assert proc.returncode == 3
    assert secret not in proc.stdout + proc.stderr
    assert proc.stderr.startswith("Error: cannot reach the registry at postgresql://gate:***@127.0.0.1:1/registry")


def test_password_never_printed_by_any_command(postgres, dsn):
    outputs = [invoke(dsn, *args).output for args in (
        ("db", "migrate"), ("model", "list"), ("model", "list", "--json"), ("model", "show", "nope"),
        ("model", "add", *flags(GOOD)), ("model", "remove", "nope"),
    )]
    assert all(postgres.password not in out for out in outputs)


def test_history_lists_each_run_with_its_verdict_image_chart_and_slo_values(dsn):
    with psycopg.connect(dsn) as conn:
        for verdict, image, ttft in (("certified", "vllm/vllm-openai:v0.11.0", 71.5),
                                     ("not_certified", "vllm/vllm-openai:v0.12.0", 140.25)):
            summary = {"image": image, "chart": "vllm-0.1.0", "cluster_key": "existing:gpu-pool",
                       "slo_values": {"ttft p95": ttft, "min output tokens/s": 333.0},
                       "capacity": {"knee": 24, "complete": True} if verdict == "certified" else None}
            conn.execute("INSERT INTO certifications (model_name, cluster, started_at, finished_at, verdict, summary)"
                         " VALUES ('llama3', 'pool', now(), now(), %s, %s)", (verdict, Jsonb(summary)))
    shown = invoke(dsn, "model", "history", "llama3")
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert len(lines) == 2
    assert "#1  certified  vllm/vllm-openai:v0.11.0  vllm-0.1.0  existing:gpu-pool  ttft p95 71.5" in lines[0]
    assert "#2  not_certified  vllm/vllm-openai:v0.12.0" in lines[1]
    assert "ttft p95 140.2" in lines[1]
    assert lines[0].endswith(", capacity 24 users")
    assert "capacity" not in lines[1]
    rows = json.loads(invoke(dsn, "model", "history", "llama3", "--json").output)
    assert [(r["verdict"], r["slo"]["ttft p95"], r["capacity"]) for r in rows] == [
        ("certified", 71.5, 24), ("not_certified", 140.25, None)]
    assert invoke(dsn, "model", "history", "mistral-7b").output == "no certification of mistral-7b recorded\n"


def test_rollback_switches_to_the_kept_revision_and_back_only_while_it_is_kept(dsn):
    old, new = ("http://llama-3-8b-inference-aaaaaa.ias-production.svc.cluster.local:8000",
                "http://llama-3-8b-inference-bbbbbb.ias-production.svc.cluster.local:8000")
    assert run_shell(RUNBOOK.replace("http://llama-3-8b-inference.ias-production.svc.cluster.local:8000", new),
                     dsn).returncode == 0
    refused = invoke(dsn, "model", "rollback", "llama3")
    assert refused.exit_code == 1
    assert "keeps no previous revision" in refused.output
    with psycopg.connect(dsn) as conn, conn.transaction():  # what a promotion with keep_previous_s writes
        keep_previous(conn, "llama3", old, datetime.now(UTC) + timedelta(hours=1))
    back = invoke(dsn, "model", "rollback", "llama3")
    assert back.exit_code == 0, back.output
    assert back.output.startswith(f"rolled llama3 back: {old} (was {new}")
    shown = json.loads(invoke(dsn, "model", "show", "llama3", "--json").output)
    assert (shown["backend_url"], shown["previous_backend_url"]) == (old, new)
    assert invoke(dsn, "model", "rollback", "llama3").exit_code == 0  # and forward again
    with psycopg.connect(dsn) as conn, conn.transaction():  # the window has passed
        keep_previous(conn, "llama3", old, datetime.now(UTC) - timedelta(seconds=1))
    late = invoke(dsn, "model", "rollback", "llama3")
    assert late.exit_code == 1
    assert f"the previous revision {old} was kept until" in late.output
    assert json.loads(invoke(dsn, "model", "show", "llama3", "--json").output)["backend_url"] == new
