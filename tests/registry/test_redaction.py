"""DSN passwords in every libpq form never reach output, exceptions or tracebacks; Secret never shows itself."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from psycopg.conninfo import conninfo_to_dict

from vllm_gate.base.secret import Secret
from vllm_gate.registry import db
from vllm_gate.registry.pgserver import PostgresServer

# A space, '@', '/', a quote, ':' and '%': each needs encoding in one form or another.
WRONG = "Wr0ng-Sesame p@ss/'w:rd%"
FORMS = ["url-userinfo", "url-query", "key-value"]


def leaks(text: str, password: str = WRONG) -> list[str]:
    """The forms and distinctive pieces of ``password`` that appear in ``text``."""
    pieces = {password, quote(password, safe=""), quote(password), *(p for p in password.split() if len(p) >= 5)}
    return sorted(p for p in pieces if p in text)


def dsn_in_form(form: str, password: str, host: str = "127.0.0.1", port: int = 5432,
                user: str = "gate", dbname: str = "registry") -> str:
    """A DSN carrying ``password`` the way libpq's docs show for each form."""
    if form == "url-userinfo":
        return f"postgresql://{user}:{quote(password, safe='')}@{host}:{port}/{dbname}"
    if form == "url-query":
        return f"postgres://{user}@{host}:{port}/{dbname}?password={quote(password, safe='')}&sslmode=disable"
    escaped = password.replace("\\", "\\\\").replace("'", "\\'")
    return f"host={host} port={port} user={user} dbname={dbname} password = '{escaped}'"


def server_dsn(postgres: PostgresServer, form: str, password: str) -> str:
    return dsn_in_form(form, password, port=postgres.port, user=postgres.user, dbname=postgres.database)


REDACTED = [
    ("postgresql://u:pw-Sesame@h:5432/db", "postgresql://u:***@h:5432/db", "pw-Sesame"),
    ("postgres://u:p%40ss-Sesame@h/db", "postgres://u:***@h/db", "p@ss-Sesame"),
    ("postgresql://u@h/db?password=pw-Sesame&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require",
     "pw-Sesame"),
    ("postgresql://u@h/db?sslmode=require&password=p%26w%20Sesame", "postgresql://u@h/db?sslmode=require&password=***",
     "p&w Sesame"),
    ("postgresql://u@h1:1,h2:2/db?password=pw-Sesame", "postgresql://u@h1:1,h2:2/db?password=***", "pw-Sesame"),
    ("postgresql://u:old-Sesame@h/db?password=new-Sesame", "postgresql://u:***@h/db?password=***", "new-Sesame"),
    ("host=h password=pw-Sesame dbname=d", "host=h password=*** dbname=d", "pw-Sesame"),
    ("host=h password = 'p w\\'x-Sesame' dbname=d", "host=h password = *** dbname=d", "p w'x-Sesame"),
    ("host=h password=p\\ w-Sesame dbname=d", "host=h password=*** dbname=d", "p w-Sesame"),
    ("host=h sslpassword=key-Sesame password=pw-Sesame", "host=h sslpassword=*** password=***", "pw-Sesame"),
]


@pytest.mark.parametrize(("dsn", "redacted", "password"), REDACTED, ids=[r[1] for r in REDACTED])
def test_redact_dsn_hides_the_password_in_every_libpq_form(dsn, redacted, password):
    assert db.redact_dsn(dsn) == redacted
    assert db.redact_dsn(Secret(dsn)) == redacted
    assert conninfo_to_dict(dsn)["password"] == password, "libpq itself reads this password from the DSN"
    found = db.dsn_password(dsn)
    assert found is not None
    assert found.reveal() == password


@pytest.mark.parametrize(("dsn", "redacted", "password"), REDACTED, ids=[r[1] for r in REDACTED])
def test_scrub_removes_the_dsn_and_the_password_in_every_form(dsn, redacted, password):
    text = f"failed: {dsn} | decoded {password} | encoded {quote(password, safe='')}"
    for given in (dsn, Secret(dsn)):
        scrubbed = db.scrub(text, given)
        assert redacted in scrubbed
        assert password not in scrubbed
        assert "Sesame" not in scrubbed


def test_a_dsn_without_a_password_is_unchanged():
    for dsn in ("postgresql://u@h:5432/db?sslmode=require", "host=h port=5432 user=u dbname=d", ""):
        assert db.redact_dsn(dsn) == dsn
        assert db.dsn_password(dsn) is None
        assert db.scrub(f"x {dsn} y", dsn) == f"x {dsn} y"


def test_scrub_masks_pieces_of_a_malformed_password_that_libpq_echoes():
    # Unquoted space: libpq reads password=Sesame9 and rejects the stray token, naming it.
    assert db.scrub('missing "=" after "Tail9x" in connection info string',
                    "host=h password=Sesame9 Tail9x") == 'missing "=" after "***" in connection info string'
    # A raw '@' in the userinfo: psycopg resolves the rest of the password as a host name.
    assert db.scrub("failed to resolve host 'me9@h': Name or service not known",
                    "postgresql://u:Sesa@me9@h/db") == "failed to resolve host '***': Name or service not known"
    assert db.scrub('no such host "h"', "postgresql://u:Sesa@me9@h/db") == 'no such host "h"'


@pytest.mark.parametrize("form", FORMS)
def test_connect_with_each_form_and_the_right_password_works(postgres, form):
    conn = db.connect(Secret(server_dsn(postgres, form, postgres.password)))
    try:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert postgres.password not in repr(conn)
    finally:
        conn.close()


@pytest.mark.parametrize("form", FORMS)
def test_wrong_password_in_each_form_raises_unreachable_without_it(postgres, form):
    dsn = server_dsn(postgres, form, WRONG)
    with pytest.raises(db.DatabaseUnreachable) as caught:
        db.connect(dsn)
    exc = caught.value
    assert "password authentication failed" in exc.summary, "the server must have been reached and refused"
    assert db.redact_dsn(dsn) in exc.summary
    assert leaks(f"{exc} {exc!r} {exc.summary} {exc.detail}") == []
    assert exc.__cause__ is None
    assert exc.__context__ is None, "a chained psycopg error would carry the unscrubbed message"


@pytest.mark.parametrize("form", FORMS)
def test_connect_failure_traceback_with_locals_shows_no_password(postgres, form):
    """What ``pytest --showlocals`` prints for the frames of db.connect."""
    with pytest.raises(db.DatabaseUnreachable) as caught:
        db.connect(server_dsn(postgres, form, WRONG))
    frames = traceback.TracebackException.from_exception(caught.value, capture_locals=True).stack
    ours = [f for f in frames if f.filename == db.__file__]
    assert ours, "the traceback must include db.connect's frame"
    assert leaks("\n".join(f"{k}={v}" for f in ours for k, v in (f.locals or {}).items())) == []


@pytest.mark.parametrize("dsn", [
    "host=127.0.0.1 port=1 user=gate password=Sesame9 Tail9x",
    "postgresql://gate:Sesa@Tail9x@127.0.0.1:1/registry",
    "postgresql://gate@127.0.0.1:1/registry?password=Sesame9&Tail9x",
    "host=127.0.0.1 port=Sesame9Tail9x password=Sesame9Tail9x",
], ids=["stray-token", "raw-at-in-userinfo", "stray-query-piece", "password-reused-as-port"])
def test_malformed_dsn_errors_show_no_piece_of_the_password(dsn):
    with pytest.raises(db.DatabaseUnreachable) as caught:
        db.connect(dsn)
    assert "Sesame9" not in str(caught.value)
    assert "Tail9x" not in str(caught.value)


def test_secret_never_shows_its_value():
    secret = Secret("hf_Sesame")

    @dataclass
    class Settings:
        token: Secret

    shown = [repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:>20}", "%s" % secret,  # noqa: UP031
             format(secret), repr(Settings(secret)), repr([secret]), repr({"k": secret})]
    assert all("Sesame" not in s for s in shown), shown
    assert repr(secret) == "Secret('***')"
    assert str(secret) == "***"
    assert secret.reveal() == "hf_Sesame"


def test_secret_truth_equality_and_hash_follow_the_value():
    assert Secret("a")
    assert not Secret("")
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert len({Secret("a"), Secret("a")}) == 1


def test_showlocals_prints_no_secret(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PLANTED_TOKEN", "hf_Sesame")  # from the environment, so the test's source cannot show it
    pytester.makepyfile("""
        import os
        from dataclasses import dataclass
        from vllm_gate.base.secret import Secret

        @dataclass
        class Settings:
            token: Secret

        def test_fails():
            settings = Settings(Secret(os.environ["PLANTED_TOKEN"]))
            assert not settings.token, f"token {settings.token} in {settings}"
    """)
    result = pytester.runpytest("--showlocals", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert "settings   = Settings(token=Secret('***'))" in output, "--showlocals must have printed the local"
    assert "Sesame" not in output
