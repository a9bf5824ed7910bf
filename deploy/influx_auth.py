"""InfluxDB authentication for the local stack's secure mode (``BESS_MQTT_AUTH=1 deploy/up``).

In secure mode influxd runs with ``[http] auth-enabled = true`` and three users, made by ``deploy/up``:

==========  ===========================================  ================================================
user        rights                                       who has the password
==========  ===========================================  ================================================
admin       every privilege (an InfluxDB admin)          ``deploy/up`` only: databases and users
recorder    ALL on the stack's database, nothing else    the recorder only (BESS_INFLUX_USERNAME/_PASSWORD)
monitor     READ on the stack's database                 you: queries, dashboards of your own
==========  ===========================================  ================================================

No other node gets database credentials: the gateway, the planner and the dashboard read history through the
recorder over MQTT. The passwords are random, kept in ``<var>/influx-auth/credentials.json`` (directory 0700,
file 0600, the same format as ``deploy/auth.py``'s, so ``python3 deploy/auth.py password monitor
var/influx-auth`` prints one), made on the first secure run and reused afterwards.

How the users come to be (:func:`secure_database`, verified against influxd 1.6.7): with authentication on and
no user at all, influxd accepts exactly one statement without credentials, ``CREATE USER ... WITH ALL
PRIVILEGES``; everything else is 403 "create admin user first". So ``up`` creates the admin right after influxd
answers (on loopback, before any node starts), then logs in as admin for the rest; had a local process created an
admin first in that moment, the admin login fails and ``up`` stops. An existing open database
switches over the same way: its data stays, its users appear. Every ``up`` sets the recorder's and monitor's
passwords and privileges again, so the database always agrees with the credentials file (and a grant on another
database, left from an earlier ``BESS_INFLUX_DB``, is revoked).

This module is standard library only and does no I/O of its own towards the server: :func:`secure_database`
gets a function that runs one statement (``deploy/stack.py`` passes one over HTTP), so its logic is tested
without a server (tests/unit/test_influx_auth.py) and with one (tests/integration/test_secure_stack.py).
Statements that carry a password are never shown in an error, and a password is cut out of any server answer
before it is.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from deploy import auth
from deploy.accounts import private_dir, write_atomic
from deploy.influx_http import quote_ident, quote_string

ADMIN_USER = "admin"
RECORDER_USER = "recorder"
MONITOR_USER = "monitor"
USERS: tuple[str, ...] = (ADMIN_USER, RECORDER_USER, MONITOR_USER)
#: What each non-admin user may do on the stack's database (InfluxDB 1.x privileges: READ, WRITE, ALL).
PRIVILEGES: Mapping[str, Literal["ALL", "READ"]] = {RECORDER_USER: "ALL", MONITOR_USER: "READ"}
AUTH_DIR_NAME = "influx-auth"
CREDENTIALS_FILE = auth.CREDENTIALS_FILE
#: The recorder's rollup retention policies (nodes/recorder/rollups.py; a test keeps the two in step): creating a
#: retention policy needs an admin, so in secure mode ``up`` creates them (infinite); the recorder's own login
#: creates and checks its continuous queries, which ALL on the database allows.
ROLLUP_RPS: tuple[str, ...] = ("rollup_1m", "rollup_1h")
#: influxd's answer to anything but CREATE USER ... WITH ALL PRIVILEGES while authentication is on and no user exists
NO_ADMIN_YET = "create admin user first"

#: ``run(statement, login)`` -> ``(HTTP status, decoded JSON answer)``; the answer of a failed request is
#: ``{"error": text}`` as InfluxDB sends it.
Run = Callable[[str, tuple[str, str] | None], tuple[int, dict[str, Any]]]


class InfluxAuthError(auth.AuthError):
    """The database cannot be secured: it accepts anonymous clients, or it refuses the admin credentials."""


@dataclass(frozen=True)
class InfluxCredentials:
    """The InfluxDB users of one deployment (passwords never in the repr)."""

    directory: Path
    passwords: Mapping[str, str] = field(repr=False)

    @property
    def credentials_file(self) -> Path:
        """``credentials.json``: every password in clear text (0600)."""
        return self.directory / CREDENTIALS_FILE

    def login(self, user: str) -> tuple[str, str]:
        """``(user, password)``."""
        return user, self.passwords[user]

    def recorder_env(self) -> dict[str, str]:
        """``BESS_INFLUX_USERNAME`` / ``BESS_INFLUX_PASSWORD`` for the recorder process (and no other)."""
        return {"BESS_INFLUX_USERNAME": RECORDER_USER, "BESS_INFLUX_PASSWORD": self.passwords[RECORDER_USER]}

    def secrets(self) -> tuple[str, ...]:
        """Every password, to cut out of anything shown."""
        return tuple(self.passwords.values())


def auth_dir(var_dir: Path) -> Path:
    """``<var>/influx-auth``."""
    return var_dir / AUTH_DIR_NAME


def ensure_credentials(var_dir: Path) -> InfluxCredentials:
    """Make (first run) or reuse ``<var>/influx-auth/credentials.json``; a missing user gets a new password."""
    directory = auth_dir(var_dir)
    private_dir(directory, 0o700)
    stored = auth.read_passwords(directory)
    passwords = dict(stored)
    for user in USERS:
        passwords.setdefault(user, secrets.token_urlsafe(24))
    if passwords != stored:
        write_atomic(directory / CREDENTIALS_FILE, json.dumps({"users": passwords}, indent=2) + "\n", mode=0o600)
    return InfluxCredentials(directory, {user: passwords[user] for user in USERS})


def load_credentials(var_dir: Path) -> InfluxCredentials | None:
    """The credentials an earlier secure ``up`` made, or None (nothing is written)."""
    directory = auth_dir(var_dir)
    passwords = auth.read_passwords(directory)
    if not all(user in passwords for user in USERS):
        return None
    return InfluxCredentials(directory, {user: passwords[user] for user in USERS})


# --------------------------------------------------------------------------------------------------------------
# InfluxQL


def create_user(user: str, password: str, *, admin: bool = False) -> str:
    """``CREATE USER "user" WITH PASSWORD '...' [WITH ALL PRIVILEGES]`` (carries a secret)."""
    suffix = " WITH ALL PRIVILEGES" if admin else ""
    return f"CREATE USER {quote_ident(user)} WITH PASSWORD {quote_string(password)}{suffix}"


def set_password(user: str, password: str) -> str:
    """``SET PASSWORD FOR "user" = '...'`` (carries a secret)."""
    return f"SET PASSWORD FOR {quote_ident(user)} = {quote_string(password)}"


def redact(text: str, hidden: Sequence[str]) -> str:
    """``text`` with every non-empty string of ``hidden`` replaced by ``***``."""
    for secret in hidden:
        if secret:
            text = text.replace(secret, "***")
    return text


# --------------------------------------------------------------------------------------------------------------
# making the database secure


@dataclass
class _Session:
    """Runs statements and turns failures into :class:`InfluxAuthError` without showing a secret."""

    run: Run
    where: str
    hidden: tuple[str, ...]

    def ask(self, statement: str, login: tuple[str, str] | None, *, shown: str | None = None) -> dict[str, Any]:
        """The first statement result of ``statement``; raise unless the request and the statement succeeded.

        ``shown`` is what an error calls the statement (pass it for every statement that carries a password).
        """
        status, answer = self.run(statement, login)
        name = shown or statement
        if status != 200:
            raise InfluxAuthError(f"{self.where}: {name} answered HTTP {status}: {self.error_text(answer)}")
        result = _first_result(answer)
        if "error" in result:
            raise InfluxAuthError(f"{self.where}: {name} failed: {redact(str(result['error']), self.hidden)[:300]}")
        return result

    def error_text(self, answer: Mapping[str, Any]) -> str:
        return redact(str(answer.get("error", answer)), self.hidden)[:300]


def _first_result(answer: Mapping[str, Any]) -> dict[str, Any]:
    results = answer.get("results")
    if isinstance(results, list) and results and isinstance(results[0], dict):
        return results[0]
    return {}


def _rows(result: Mapping[str, Any]) -> list[list[Any]]:
    return [list(values) for series in result.get("series") or [] for values in series.get("values") or []]


def secure_database(run: Run, db: str, credentials: InfluxCredentials, *, where: str = "InfluxDB") -> list[str]:
    """Make the database behind ``run`` secure: the admin, ``db``, the recorder and monitor users with their
    privileges; check that anonymous clients are refused. Returns what it changed, for the summary.

    Raises :class:`InfluxAuthError` (saying what to do) if the server accepts anonymous clients (authentication
    is off: not an influxd of secure mode) or refuses the admin of the credentials file.
    """
    session = _Session(run, where, credentials.secrets())
    admin = credentials.login(ADMIN_USER)
    done: list[str] = []

    status, answer = run("SHOW USERS", None)
    if status == 200:
        raise InfluxAuthError(
            f"{where} accepts unauthenticated queries: its authentication is off, so it is not the database of a "
            "secure stack. Stop it (deploy/down if deploy/up started it) or set BESS_INFLUX_PORT to another port"
        )
    if status == 403 and NO_ADMIN_YET in session.error_text(answer):
        session.ask(create_user(*admin, admin=True), None, shown=f"CREATE USER {ADMIN_USER} (first user)")
        done.append(f"created the {ADMIN_USER} user")
    status, answer = run("SHOW USERS", admin)
    if status in (401, 403):
        raise InfluxAuthError(
            f"{where} refuses the {ADMIN_USER} user of {credentials.credentials_file} (HTTP {status}): the database "
            "has users from an earlier secure run whose credentials file was lost or replaced. Restore that file, "
            "or remove the old users (README, Security: lost database credentials), then run deploy/up again"
        )
    if status != 200:
        raise InfluxAuthError(f"{where}: SHOW USERS answered HTTP {status}: {session.error_text(answer)}")
    users = {str(row[0]): bool(row[1]) for row in _rows(_first_result(answer)) if len(row) >= 2}

    session.ask(f"CREATE DATABASE {quote_ident(db)}", admin)
    existing = {str(row[0]) for row in _rows(session.ask(f"SHOW RETENTION POLICIES ON {quote_ident(db)}", admin))}
    for rp in ROLLUP_RPS:
        if rp not in existing:
            session.ask(f"CREATE RETENTION POLICY {quote_ident(rp)} ON {quote_ident(db)} DURATION INF REPLICATION 1",
                        admin)
            done.append(f"created the retention policy {rp} of the recorder's rollups")
    for user, privilege in PRIVILEGES.items():
        password = credentials.passwords[user]
        if user in users:
            session.ask(set_password(user, password), admin, shown=f"SET PASSWORD FOR {user}")
            if users[user]:  # an admin can do anything: the recorder and the monitor must not be one
                session.ask(f"REVOKE ALL PRIVILEGES FROM {quote_ident(user)}", admin)
                done.append(f"took the admin privilege from {user}")
        else:
            session.ask(create_user(user, password), admin, shown=f"CREATE USER {user}")
            done.append(f"created the {user} user")
        grants = _rows(session.ask(f"SHOW GRANTS FOR {quote_ident(user)}", admin))
        for database, granted in ((str(row[0]), str(row[1])) for row in grants if len(row) >= 2):
            if database != db and granted != "NO PRIVILEGES":
                session.ask(f"REVOKE ALL ON {quote_ident(database)} FROM {quote_ident(user)}", admin)
                done.append(f"revoked {user}'s {granted} on {database}")
        session.ask(f"GRANT {privilege} ON {quote_ident(db)} TO {quote_ident(user)}", admin)

    status, answer = run("SHOW DATABASES", None)
    if status != 401:
        raise InfluxAuthError(
            f"{where} answered an unauthenticated query with HTTP {status}, not 401: authentication is not on"
        )
    return done
