"""Identity baselines: the canary's prompt-token count and the answers a model gave at a run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.types.json import Jsonb

from vllm_gate.base.errors import GateError


class NoSuchCertification(GateError):
    """A baseline was recorded for a certification that does not exist or is another model's."""


@dataclass(frozen=True)
class Baseline:
    certification_id: int
    verdict: str  # the certification's kind (certifications.verdict): which runs this baseline stands for
    recorded_at: datetime
    fingerprint: str  # how the identity checks asked (identity.fingerprint): only equal ones compare
    canary_prompt_tokens: int | None
    answers: list[tuple[str, str]]  # (prompt, answer), in the order they were asked


def record_baseline(conn: psycopg.Connection, certification_id: int, model: str, canary_prompt_tokens: int | None,
                    answers: Sequence[tuple[str, str]], *, fingerprint: str) -> None:
    """Store what ``model`` answered at certification ``certification_id``."""
    stored = Jsonb([{"prompt": prompt, "answer": answer} for prompt, answer in answers])
    with conn.transaction():
        # Inserted from the certification row itself: a baseline can only belong to a run of the same model.
        cur = conn.execute(
            "INSERT INTO identity_baselines (certification_id, model_name, fingerprint, canary_prompt_tokens,"
            " answers) SELECT id, model_name, %s, %s, %s FROM certifications WHERE id = %s AND model_name = %s",
            (fingerprint, canary_prompt_tokens, stored, certification_id, model),
        )
        if cur.rowcount != 1:
            raise NoSuchCertification(f"no certification {certification_id} of model {model!r} to record a "
                                      "baseline for")


def last_baseline(conn: psycopg.Connection, model: str, verdicts: Sequence[str],
                  fingerprint: str | None) -> Baseline | None:
    """The newest baseline of ``model`` asked as ``fingerprint`` (None: asked any way) whose certification's verdict
    is in ``verdicts``."""
    with conn.transaction():
        row = conn.execute(
            "SELECT b.certification_id, c.verdict, b.recorded_at, b.fingerprint, b.canary_prompt_tokens, b.answers"
            " FROM identity_baselines b JOIN certifications c ON c.id = b.certification_id"
            " WHERE b.model_name = %s AND c.verdict = ANY(%s) AND (%s::text IS NULL OR b.fingerprint = %s)"
            " ORDER BY b.recorded_at DESC, b.id DESC LIMIT 1",
            (model, list(verdicts), fingerprint, fingerprint),
        ).fetchone()
    if row is None:
        return None
    cert_id, verdict, recorded_at, stored_fingerprint, canary, answers = row
    return Baseline(certification_id=int(cert_id), verdict=verdict, recorded_at=recorded_at,
                    fingerprint=stored_fingerprint, canary_prompt_tokens=canary,
                    answers=[(a["prompt"], a["answer"]) for a in answers])


def passed_runs(conn: psycopg.Connection, model: str, verdicts: Sequence[str]) -> int:
    """How many certifications of ``model`` with one of ``verdicts`` there are (with a baseline or not)."""
    with conn.transaction():
        row = conn.execute("SELECT count(*) FROM certifications WHERE model_name = %s AND verdict = ANY(%s)",
                           (model, list(verdicts))).fetchone()
    return int(row[0]) if row else 0
