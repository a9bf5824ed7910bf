"""deploy/influx_auth.py: the users and privileges of secure mode, against a model of influxd 1.x's authentication.

The model answers the way influxd 1.6.7 does (checked by hand, and end to end by
tests/integration/test_secure_stack.py): with authentication on and no user at all, only ``CREATE USER ... WITH ALL
PRIVILEGES`` is accepted without credentials (403 "create admin user first" otherwise); with users, an
anonymous or a wrong login is 401 and a non-admin's user management is 403.
"""

from __future__ import annotations

import json
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from deploy import influx_auth
from deploy.influx_auth import InfluxAuthError, InfluxCredentials

DB = "bess"
PASSWORDS = {"admin": "adm1n-pw_x", "recorder": "rec0rder-pw_y", "monitor": "mon1tor-pw_z"}


@dataclass
class FakeInflux:
    """The parts of influxd's user management that :func:`influx_auth.secure_database` uses."""

    auth_enabled: bool = True
    users: dict[str, tuple[str, bool]] = field(default_factory=dict)  # name -> (password, admin)
    grants: dict[str, dict[str, str]] = field(default_factory=dict)  # user -> {db: privilege}
    databases: set[str] = field(default_factory=set)
    rps: dict[str, set[str]] = field(default_factory=dict)  # db -> retention policies besides autogen
    log: list[tuple[str, str | None]] = field(default_factory=list)  # (statement, login user)
    echo_errors: bool = False  # a server whose error text repeats the statement

    def __call__(self, statement: str, login: tuple[str, str] | None) -> tuple[int, dict[str, Any]]:
        self.log.append((statement, None if login is None else login[0]))
        if not self.auth_enabled:
            return self._execute(statement)
        if not self.users:
            if re.fullmatch(r"CREATE USER .* WITH ALL PRIVILEGES", statement):
                return self._execute(statement)
            return 403, {"error": "error authorizing query: create admin user first or disable authentication"}
        if login is None or self.users.get(login[0], ("", False))[0] != login[1]:
            return 401, {"error": "authorization failed"}
        if not self.users[login[0]][1]:
            return 403, {"error": f"error authorizing query: {login[0]} not authorized to execute statement"}
        return self._execute(statement)

    def _execute(self, statement: str) -> tuple[int, dict[str, Any]]:
        def ok(**result: Any) -> tuple[int, dict[str, Any]]:
            return 200, {"results": [{"statement_id": 0, **result}]}

        def rows(columns: list[str], values: list[list[Any]]) -> tuple[int, dict[str, Any]]:
            return ok(series=[{"columns": columns, "values": values}] if values else [])

        if match := re.fullmatch(r"CREATE USER \"(\w+)\" WITH PASSWORD '([^']*)'( WITH ALL PRIVILEGES)?", statement):
            if match[1] in self.users:
                error = "user already exists" + (f": {statement}" if self.echo_errors else "")
                return ok(error=error)
            self.users[match[1]] = (match[2], bool(match[3]))
            return ok()
        if match := re.fullmatch(r"SET PASSWORD FOR \"(\w+)\" = '([^']*)'", statement):
            self.users[match[1]] = (match[2], self.users[match[1]][1])
            return ok()
        if statement == "SHOW USERS":
            return rows(["user", "admin"], [[name, admin] for name, (_, admin) in self.users.items()])
        if statement == "SHOW DATABASES":
            return rows(["name"], [[name] for name in sorted(self.databases)])
        if match := re.fullmatch(r'CREATE DATABASE "(\w+)"', statement):
            self.databases.add(match[1])
            return ok()
        if match := re.fullmatch(r'SHOW RETENTION POLICIES ON "(\w+)"', statement):
            return rows(["name"], [[name] for name in ["autogen", *sorted(self.rps.get(match[1], ()))]])
        if match := re.fullmatch(r'CREATE RETENTION POLICY "(\w+)" ON "(\w+)" DURATION INF REPLICATION 1', statement):
            self.rps.setdefault(match[2], set()).add(match[1])
            return ok()
        if match := re.fullmatch(r'REVOKE ALL PRIVILEGES FROM "(\w+)"', statement):
            self.users[match[1]] = (self.users[match[1]][0], False)
            return ok()
        if match := re.fullmatch(r'SHOW GRANTS FOR "(\w+)"', statement):
            return rows(["database", "privilege"], [[db, p] for db, p in self.grants.get(match[1], {}).items()])
        if match := re.fullmatch(r'REVOKE ALL ON "(\w+)" FROM "(\w+)"', statement):
            self.grants.setdefault(match[2], {})[match[1]] = "NO PRIVILEGES"
            return ok()
        if match := re.fullmatch(r'GRANT (ALL|READ|WRITE) ON "(\w+)" TO "(\w+)"', statement):
            self.grants.setdefault(match[3], {})[match[2]] = {"ALL": "ALL PRIVILEGES"}.get(match[1], match[1])
            return ok()
        raise AssertionError(f"unexpected statement {statement!r}")


def credentials(tmp_path: Path) -> InfluxCredentials:
    return InfluxCredentials(tmp_path / "influx-auth", PASSWORDS)


def test_a_fresh_database_gets_its_admin_first_then_users_with_least_privilege(tmp_path: Path) -> None:
    server = FakeInflux()
    done = influx_auth.secure_database(server, DB, credentials(tmp_path))
    assert done == ["created the admin user", "created the retention policy rollup_1m of the recorder's rollups",
                    "created the retention policy rollup_1h of the recorder's rollups", "created the recorder user",
                    "created the monitor user"]
    assert server.rps == {DB: {"rollup_1m", "rollup_1h"}}, "the recorder cannot create them: not an admin"
    assert server.users == {"admin": (PASSWORDS["admin"], True), "recorder": (PASSWORDS["recorder"], False),
                            "monitor": (PASSWORDS["monitor"], False)}
    assert server.grants == {"recorder": {DB: "ALL PRIVILEGES"}, "monitor": {DB: "READ"}}
    assert server.databases == {DB}
    anonymous = [statement for statement, user in server.log if user is None]
    assert anonymous[1].startswith('CREATE USER "admin"'), "the only anonymous change is the first admin"
    assert all(user in (None, "admin") for _, user in server.log), "deploy manages users as admin only"


def test_a_second_run_changes_nothing_and_reports_nothing(tmp_path: Path) -> None:
    server = FakeInflux()
    influx_auth.secure_database(server, DB, credentials(tmp_path))
    before = (dict(server.users), {user: dict(grants) for user, grants in server.grants.items()})
    assert influx_auth.secure_database(server, DB, credentials(tmp_path)) == []
    assert (server.users, server.grants) == before


def test_existing_users_are_brought_in_line_with_the_credentials_file(tmp_path: Path) -> None:
    server = FakeInflux(
        users={"admin": (PASSWORDS["admin"], True), "recorder": ("old", True), "monitor": ("old", False)},
        grants={"recorder": {"olddb": "ALL PRIVILEGES", DB: "WRITE"}, "monitor": {DB: "ALL PRIVILEGES"}},
    )
    done = influx_auth.secure_database(server, DB, credentials(tmp_path))
    assert "took the admin privilege from recorder" in done
    assert "revoked recorder's ALL PRIVILEGES on olddb" in done
    assert server.users["recorder"] == (PASSWORDS["recorder"], False)
    assert server.users["monitor"] == (PASSWORDS["monitor"], False)
    assert server.grants["recorder"] == {"olddb": "NO PRIVILEGES", DB: "ALL PRIVILEGES"}
    assert server.grants["monitor"] == {DB: "READ"}, "the monitor only reads"


def test_a_database_without_authentication_is_refused(tmp_path: Path) -> None:
    server = FakeInflux(auth_enabled=False)
    with pytest.raises(InfluxAuthError, match="accepts unauthenticated queries"):
        influx_auth.secure_database(server, DB, credentials(tmp_path), where="the InfluxDB on port 8086")
    assert server.users == {}, "nothing was changed on it"


def test_other_users_than_the_files_say_what_to_do_without_showing_a_password(tmp_path: Path) -> None:
    server = FakeInflux(users={"admin": ("someone else's", True)})
    with pytest.raises(InfluxAuthError) as raised:
        influx_auth.secure_database(server, DB, credentials(tmp_path))
    message = str(raised.value)
    assert "refuses the admin user of" in message
    assert str(tmp_path / "influx-auth" / "credentials.json") in message
    assert "lost database credentials" in message, "points at the README's recovery steps"
    assert not any(password in message for password in PASSWORDS.values())


def test_a_failing_statement_never_shows_its_password(tmp_path: Path) -> None:
    # the admin exists already (as created by someone with our password) but its CREATE USER answer would echo
    server = FakeInflux(echo_errors=True, users={"admin": (PASSWORDS["admin"], True), "recorder": ("x", False)})

    def recorder_create_fails(statement: str, login: tuple[str, str] | None) -> tuple[int, dict[str, Any]]:
        if statement.startswith("SET PASSWORD"):
            return 200, {"results": [{"statement_id": 0, "error": f"cannot: {statement}"}]}
        return server(statement, login)

    with pytest.raises(InfluxAuthError) as raised:
        influx_auth.secure_database(recorder_create_fails, DB, credentials(tmp_path))
    message = str(raised.value)
    assert "SET PASSWORD FOR recorder failed" in message
    assert PASSWORDS["recorder"] not in message
    assert "***" in message


def test_influxql_quoting() -> None:
    assert influx_auth.quote_ident('we"ird') == '"we\\"ird"'
    assert influx_auth.quote_string("it's \\ x") == "'it\\'s \\\\ x'"
    assert influx_auth.create_user("admin", "p'w", admin=True) == (
        "CREATE USER \"admin\" WITH PASSWORD 'p\\'w' WITH ALL PRIVILEGES"
    )
    assert influx_auth.set_password("monitor", "pw") == "SET PASSWORD FOR \"monitor\" = 'pw'"
    assert influx_auth.redact("a secret b", ["secret", ""]) == "a *** b"


def test_credentials_are_made_private_reused_and_never_in_a_repr(tmp_path: Path) -> None:
    var = tmp_path / "var"
    assert influx_auth.load_credentials(var) is None
    made = influx_auth.ensure_credentials(var)
    path = var / "influx-auth" / "credentials.json"
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(json.loads(path.read_text())["users"]) == set(influx_auth.USERS)
    assert len(set(made.passwords.values())) == len(influx_auth.USERS)
    assert influx_auth.ensure_credentials(var).passwords == made.passwords, "reused"
    assert influx_auth.load_credentials(var) == made
    assert not any(password in repr(made) for password in made.passwords.values())
    expected = {"BESS_INFLUX_USERNAME": "recorder", "BESS_INFLUX_PASSWORD": made.passwords["recorder"]}
    assert made.recorder_env() == expected


def test_secure_mode_makes_the_retention_policies_the_recorder_rollups_need() -> None:
    from nodes.recorder.rollups import ROLLUPS

    assert set(influx_auth.ROLLUP_RPS) == {rollup.rp for rollup in ROLLUPS}
