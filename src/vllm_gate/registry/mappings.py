"""Rows of ``model_mappings``: validation before any write, and the queries."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field, field_validator

from vllm_gate.base.errors import GateError
from vllm_gate.registry.migrate import pending

SLUG = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
COLUMNS = ("name", "display_name", "backend_url", "upstream_model_id", "max_tokens", "input_cost_per_1k",
           "output_cost_per_1k", "enabled", "chart_version", "image", "certified_at", "created_at",
           "updated_at", "previous_backend_url", "previous_kept_until")


class NotMigrated(GateError):
    """The registry has pending migrations."""


class MappingExists(GateError):
    """``add`` on a name that is already registered."""


class MappingNotFound(GateError):
    """No row of that name."""


class NoRollback(GateError):
    """``rollback`` on a row with no previous revision kept, or one whose window has passed."""


class Mapping(BaseModel):
    """A row the router reads: where the model is served and what it costs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=SLUG, max_length=63, description="Lowercase slug the router's clients send.")
    display_name: str = Field(description="Human name; not empty.")
    backend_url: str = Field(description="http(s)://host:port of the model's Service.")
    upstream_model_id: str | None = Field(None, min_length=1, description="Model name sent upstream.")
    max_tokens: int | None = Field(None, gt=0, description="Context length the router enforces.")
    input_cost: Decimal = Field(ge=0, allow_inf_nan=False, description="Cost per 1K prompt tokens.")
    output_cost: Decimal = Field(ge=0, allow_inf_nan=False, description="Cost per 1K output tokens.")
    enabled: bool = True
    chart_version: str | None = None
    image: str | None = None

    @field_validator("display_name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("backend_url")
    @classmethod
    def _http_host_port(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https"):
            raise ValueError("must start with http:// or https://")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("has an invalid port") from None
        if not parts.hostname:
            raise ValueError("has no host")
        if port is None:
            raise ValueError("has no port (e.g. :8000)")
        return value


def require_migrated(conn: psycopg.Connection) -> None:
    todo = pending(conn)
    conn.rollback()
    if todo:
        raise NotMigrated(f"registry has {len(todo)} pending migration(s); run: ias-admin db migrate")


def _row_values(m: Mapping) -> dict[str, Any]:
    return {
        "name": m.name, "display_name": m.display_name, "backend_url": m.backend_url,
        "upstream_model_id": m.upstream_model_id, "max_tokens": m.max_tokens,
        "input_cost_per_1k": m.input_cost, "output_cost_per_1k": m.output_cost, "enabled": m.enabled,
        "chart_version": m.chart_version, "image": m.image,
    }


def add(conn: psycopg.Connection, mapping: Mapping) -> None:
    with conn.transaction():
        values = _row_values(mapping)
        cols = ", ".join(values)
        params = ", ".join(f"%({c})s" for c in values)
        cur = conn.execute(f"INSERT INTO model_mappings ({cols}) VALUES ({params}) "
                           "ON CONFLICT (name) DO NOTHING", values)
        if cur.rowcount == 0:
            raise MappingExists(f"model {mapping.name!r} already exists; use: ias-admin model update "
                                f"{mapping.name} ...")


def upsert(conn: psycopg.Connection, mapping: Mapping, *, certified_at: datetime | None = None) -> None:
    """Insert or replace ``mapping`` inside the caller's transaction."""
    values = _row_values(mapping) | {"certified_at": certified_at}
    cols = ", ".join(values)
    params = ", ".join(f"%({c})s" for c in values)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in values if c != "name")
    conn.execute(f"INSERT INTO model_mappings ({cols}) VALUES ({params}) "
                 f"ON CONFLICT (name) DO UPDATE SET {updates}, updated_at = now()", values)


def update(conn: psycopg.Connection, name: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Apply validated ``changes`` (Mapping field names) to row ``name``; return the new row."""
    current = get(conn, name)
    merged = Mapping.model_validate(from_row(current) | changes)
    values = _row_values(merged)
    sets = ", ".join(f"{c} = %({c})s" for c in values if c != "name")
    with conn.transaction():
        conn.execute(f"UPDATE model_mappings SET {sets}, updated_at = now() WHERE name = %(name)s", values)
    return get(conn, name)


def set_enabled(conn: psycopg.Connection, name: str, enabled: bool) -> None:
    with conn.transaction():
        cur = conn.execute("UPDATE model_mappings SET enabled = %s, updated_at = now() WHERE name = %s",
                           (enabled, name))
        if cur.rowcount == 0:
            raise MappingNotFound(f"model {name!r} not found; see: ias-admin model list")


def remove(conn: psycopg.Connection, name: str) -> None:
    with conn.transaction():
        cur = conn.execute("DELETE FROM model_mappings WHERE name = %s", (name,))
        if cur.rowcount == 0:
            raise MappingNotFound(f"model {name!r} not found; see: ias-admin model list")


def get(conn: psycopg.Connection, name: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {', '.join(COLUMNS)} FROM model_mappings WHERE name = %s", (name,)).fetchone()
    conn.rollback()
    if row is None:
        raise MappingNotFound(f"model {name!r} not found; see: ias-admin model list")
    return row


def list_all(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"SELECT {', '.join(COLUMNS)} FROM model_mappings ORDER BY name").fetchall()
    conn.rollback()
    return rows


def from_row(row: dict[str, Any]) -> dict[str, Any]:
    """Return the Mapping fields of a table row."""
    return {
        "name": row["name"], "display_name": row["display_name"], "backend_url": row["backend_url"],
        "upstream_model_id": row["upstream_model_id"], "max_tokens": row["max_tokens"],
        "input_cost": row["input_cost_per_1k"], "output_cost": row["output_cost_per_1k"],
        "enabled": row["enabled"], "chart_version": row["chart_version"], "image": row["image"],
    }


def upsert_problem(conn: psycopg.Connection, mapping: Mapping) -> str | None:
    """Write ``mapping`` in a transaction that is always rolled back: why the registry refuses it, or None.

    Proves the registry's own schema and constraints accept the row before a release depends on it.
    """
    try:
        with conn.transaction(force_rollback=True):
            upsert(conn, mapping, certified_at=None)
            with conn.cursor(row_factory=dict_row) as cur:
                row = cur.execute(f"SELECT {', '.join(COLUMNS)} FROM model_mappings WHERE name = %s",
                                  (mapping.name,)).fetchone()
    except psycopg.Error as exc:
        conn.rollback()
        return f"the registry refuses the row for {mapping.name!r}: {' '.join(str(exc).split())}"
    stored = Mapping.model_validate(from_row(row)) if row else None
    if stored != mapping:
        return f"the registry stored {stored} for {mapping.name!r}, not {mapping}"
    return None


def keep_previous(conn: psycopg.Connection, name: str, url: str | None, until: datetime | None) -> None:
    """Inside the caller's transaction: the revision row ``name`` was switched away from, kept until ``until``
    (None, None: none is kept, and an older one may no longer be rolled back to)."""
    conn.execute("UPDATE model_mappings SET previous_backend_url = %s, previous_kept_until = %s WHERE name = %s",
                 (url, until, name))


def rollback(conn: psycopg.Connection, name: str) -> tuple[str, str]:
    """Switch row ``name`` back to the revision its last promotion kept, in one statement that also checks the
    window by the registry's own clock (the gate clears an expired one the same way): (now serving, was).

    The two swap, so a rollback can itself be rolled back while the window lasts.
    """
    with conn.transaction():
        swapped = conn.execute(
            "UPDATE model_mappings SET backend_url = previous_backend_url, previous_backend_url = backend_url, "
            "updated_at = now() WHERE name = %s AND previous_backend_url IS NOT NULL AND previous_kept_until > now() "
            "RETURNING backend_url, previous_backend_url", (name,)).fetchone()
    if swapped is not None:
        return swapped[0], swapped[1]
    row = get(conn, name)
    if row["previous_backend_url"] is None:
        raise NoRollback(f"model {name!r} keeps no previous revision (promotion.keep_previous_s was 0, or it was "
                         "retired); nothing to roll back to")
    until = row["previous_kept_until"]
    when = f"{until:%Y-%m-%d %H:%M} UTC" if until is not None else "an unknown time"
    raise NoRollback(f"model {name!r}: the previous revision {row['previous_backend_url']} was kept until {when}; the "
                     "next gate run uninstalls it (or has): nothing to roll back to")
