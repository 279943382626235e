"""The ``ias-admin`` console script: manage the router's model registry."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC
from decimal import Decimal, InvalidOperation
from typing import Any

import click
import psycopg
from pydantic import ValidationError

from vllm_gate.base.errors import GateError
from vllm_gate.base.secret import Secret
from vllm_gate.cli.errors import ActionFailed, InvalidInput
from vllm_gate.registry import db, mappings
from vllm_gate.registry.history import history
from vllm_gate.registry.mappings import Mapping
from vllm_gate.registry.migrate import migrate
from vllm_gate.registry.role import database_name, mark_role, registry_role

__all__ = ["main"]

# Click re-flows help text into paragraphs; a paragraph that starts with a line holding only \b keeps its lines.
HELP = """Manage the platform's model registry: the model_mappings rows the API router reads.

\b
Examples (the platform runbook's commands):
  ias-admin db migrate
  ias-admin model add --name llama3 --display-name "Llama 3 8B Instruct" \\
    --backend-url http://llama-3-8b-inference.ias-production.svc.cluster.local:8000 \\
    --input-cost 0.0005 --output-cost 0.0015
  ias-admin model list --json
  ias-admin model history llama3
  ias-admin model rollback llama3   # back to the revision its last promotion kept

The database comes from --database-url or IAS_DATABASE_URL.

\b
Exit codes:
  0 ok, 1 failed, 2 bad input, 3 database unreachable
"""

EXIT_DB_UNREACHABLE = 3
FLAG_OF_FIELD = {"name": "--name", "display_name": "--display-name", "backend_url": "--backend-url",
                 "input_cost": "--input-cost", "output_cost": "--output-cost",
                 "upstream_model_id": "--upstream-model-id", "max_tokens": "--max-tokens"}


class Unreachable(click.ClickException):
    exit_code = EXIT_DB_UNREACHABLE

    def show(self, file: object = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


def _decimal(ctx: click.Context, param: click.Parameter, value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise InvalidInput(f"--{param.name.replace('_', '-')} {value!r}: not a decimal number") from None
    if not number.is_finite():
        raise InvalidInput(f"--{param.name.replace('_', '-')} {value!r}: not a finite number")
    return number


def _secret(ctx: click.Context, param: click.Parameter, value: str | None) -> Secret | None:
    """Wrap the DSN at once, so no frame, repr or traceback after this point can show its password."""
    return Secret(value) if value else None


def _invalid(exc: ValidationError) -> InvalidInput:
    """Name the flag, the value given and the reason, from the first validation error."""
    err = exc.errors()[0]
    field = str(err["loc"][0]) if err["loc"] else ""
    flag = FLAG_OF_FIELD.get(field, field)
    return InvalidInput(f"{flag} {err.get('input')!r}: {err['msg'].removeprefix('Value error, ')}")


def _validated(fields: dict[str, Any]) -> Mapping:
    try:
        return Mapping.model_validate(fields)
    except ValidationError as exc:
        raise _invalid(exc) from None


@contextlib.contextmanager
def _registry(ctx: click.Context, *, check_migrated: bool = True, writes: bool = False
              ) -> Iterator[psycopg.Connection]:
    """The registry connection for one command; one that ``writes`` refuses a rehearsal registry first."""
    dsn = ctx.obj["dsn"]
    if not dsn:
        raise InvalidInput(f"no database: pass --database-url or set {db.DSN_ENV}")
    try:
        conn = db.connect(dsn)
    except db.DatabaseUnreachable as exc:
        raise Unreachable(exc.summary) from None
    try:
        if writes and registry_role(conn) == "rehearsal":
            raise ActionFailed(f"{database_name(conn)} is marked as a rehearsal registry (the gate's, for "
                               "rehearsals): ias-admin changes only production registries; name the registry the "
                               "router reads")
        if check_migrated:
            mappings.require_migrated(conn)
        yield conn
    except ValidationError as exc:
        raise _invalid(exc) from None
    except (mappings.MappingExists, mappings.MappingNotFound, mappings.NotMigrated) as exc:
        raise ActionFailed(exc.summary) from None
    except GateError as exc:
        raise ActionFailed(db.scrub(exc.summary, dsn)) from None
    except psycopg.Error as exc:
        raise ActionFailed(f"registry error: {db.scrub(' '.join(str(exc).split()), dsn)}") from None
    finally:
        conn.close()


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if isinstance(value, Decimal):
            out[key] = _cost(value)
        elif hasattr(value, "isoformat"):
            out[key] = value.isoformat()
        else:
            out[key] = value
    return out


def _cost(value: Decimal) -> str:
    return format(value.normalize(), "f")


@click.group(help=HELP)
@click.option("--database-url", envvar=db.DSN_ENV, show_envvar=True, metavar="URL",
              callback=_secret, help="PostgreSQL URL of the registry.")
@click.pass_context
def main(ctx: click.Context, database_url: Secret | None) -> None:
    ctx.obj = {"dsn": database_url}


@main.group()
def model() -> None:
    """Add, show, change and remove model mappings."""


@main.group(name="db")
def db_group() -> None:
    """Database schema."""


@db_group.command(name="migrate")
@click.pass_context
def db_migrate(ctx: click.Context) -> None:
    """Apply pending migrations and mark the database a production registry (safe to repeat, and from several
    processes at once); a rehearsal registry is refused before anything is applied."""
    with _registry(ctx, check_migrated=False, writes=True) as conn:
        applied = migrate(conn)
        # Marked, a gate rehearsal never takes it as its own registry (even while it holds no mapping yet).
        mark_role(conn, "production")
    click.echo(f"applied {len(applied)} migration(s)" +
               (": " + ", ".join(f"{m.version:04d}_{m.name}" for m in applied) if applied else "") +
               "; marked as a production registry")


_cost_opt = {"callback": _decimal, "metavar": "DECIMAL"}


@model.command()
@click.option("--name", required=True, help="Lowercase slug, e.g. llama3.")
@click.option("--display-name", required=True)
@click.option("--backend-url", required=True, help="http(s)://host:port")
@click.option("--input-cost", required=True, help="Per 1K prompt tokens.", **_cost_opt)
@click.option("--output-cost", required=True, help="Per 1K output tokens.", **_cost_opt)
@click.option("--upstream-model-id", default=None, help="Model name sent to the backend.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=None)
@click.option("--disabled", is_flag=True, help="Register without routing traffic yet.")
@click.pass_context
def add(ctx: click.Context, disabled: bool, **fields: Any) -> None:
    """Register a model (fails if the name exists: use update)."""
    mapping = _validated({**fields, "enabled": not disabled})
    with _registry(ctx, writes=True) as conn:
        mappings.add(conn, mapping)
    click.echo(f"added {mapping.name}")


@model.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """List every mapping."""
    with _registry(ctx) as conn:
        rows = mappings.list_all(conn)
    if as_json:
        click.echo(json.dumps([_jsonable(r) for r in rows], indent=2))
        return
    for r in rows:
        state = "enabled " if r["enabled"] else "disabled"
        click.echo(f"{r['name']:<20} {state} {r['backend_url']}  in {_cost(r['input_cost_per_1k'])} "
                   f"out {_cost(r['output_cost_per_1k'])}  {r['display_name']}")


@model.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show one mapping."""
    with _registry(ctx) as conn:
        row = mappings.get(conn, name)
    if as_json:
        click.echo(json.dumps(_jsonable(row), indent=2))
        return
    for key, value in _jsonable(row).items():
        click.echo(f"{key}: {value}")


HISTORY_METRICS = ("ttft p95", "itl p95", "e2e p95", "min output tokens/s")


@model.command(name="history")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, oldest first.")
@click.pass_context
def history_(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show a model's certification history: date, verdict, image, chart, key SLO values, capacity."""
    with _registry(ctx) as conn:
        runs = history(conn, name)
    if as_json:
        click.echo(json.dumps([{"certification": r.certification_id, "finished_at": r.finished_at.isoformat(),
                                "verdict": r.verdict, "image": r.image, "chart": r.chart, "cluster": r.cluster_key,
                                "slo": r.slo_values, "capacity": r.knee} for r in runs], indent=2))
        return
    if not runs:
        click.echo(f"no certification of {name} recorded")
        return
    for r in runs:
        values = ", ".join(f"{m} {r.slo_values[m]:.4g}" for m in HISTORY_METRICS if m in r.slo_values)
        if r.knee is not None:
            values += f", capacity {r.knee} users"
        when = r.finished_at.astimezone(UTC)
        click.echo(f"{when:%Y-%m-%d %H:%M} UTC  #{r.certification_id}  {r.verdict}  {r.image or '-'}  "
                   f"{r.chart or '-'}  {r.cluster_key or '-'}  {values or 'no SLO values'}")


@model.command(name="update")
@click.argument("name")
@click.option("--display-name", default=None)
@click.option("--backend-url", default=None)
@click.option("--input-cost", default=None, **_cost_opt)
@click.option("--output-cost", default=None, **_cost_opt)
@click.option("--upstream-model-id", default=None)
@click.option("--max-tokens", type=click.IntRange(min=1), default=None)
@click.pass_context
def update_(ctx: click.Context, name: str, **fields: Any) -> None:
    """Change fields of an existing mapping."""
    changes = {k: v for k, v in fields.items() if v is not None}
    if not changes:
        raise InvalidInput("nothing to update: give at least one of --display-name, --backend-url, "
                           "--input-cost, --output-cost, --upstream-model-id, --max-tokens")
    with _registry(ctx, writes=True) as conn:
        mappings.update(conn, name, changes)
    click.echo(f"updated {name}")


@model.command(name="rollback")
@click.argument("name")
@click.pass_context
def rollback_(ctx: click.Context, name: str) -> None:
    """Switch NAME's row back to the revision its last promotion kept (promotion.keep_previous_s), while it runs."""
    with _registry(ctx, writes=True) as conn:  # NoRollback, a GateError, fails the command in one line
        now, was = mappings.rollback(conn, name)
    click.echo(f"rolled {name} back: {now} (was {was}; run it again to switch forward while both are kept)")


def _name_command(verb: str, doc: str, action: Callable[[psycopg.Connection, str], None]) -> None:
    """Register ``model VERB NAME``: one registry action on one mapping, then one line saying so."""

    @click.pass_context
    def command(ctx: click.Context, name: str) -> None:
        with _registry(ctx, writes=True) as conn:
            action(conn, name)
        click.echo(f"{verb}d {name}" if verb.endswith("e") else f"{verb}ed {name}")

    command.__doc__ = doc
    model.command(name=verb)(click.argument("name")(command))


_name_command("remove", "Delete a mapping (the router stops offering it).", mappings.remove)
_name_command("enable", "Route traffic to a mapping again.", lambda conn, name: mappings.set_enabled(conn, name, True))
_name_command("disable", "Keep a mapping but stop routing to it.",
              lambda conn, name: mappings.set_enabled(conn, name, False))
