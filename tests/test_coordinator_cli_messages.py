"""The coordinator's CLI names the right things (issue 17 point 5): a negative credit is refused in words, a
mistyped database is not created, and the 401 names the real command."""

from __future__ import annotations

import httpx
from typer.testing import CliRunner

from agent.cli.main import app
from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.billing.keys import create_key
from tests.provider_support import coordinator

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["coordinator", *args])


def test_a_negative_credit_is_refused_with_what_to_do_instead_not_as_an_unknown_option(tmp_path):
    db = tmp_path / "accounts.db"
    create_key(db, "alice")
    result = run("credit", "alice", "-5", "--db", str(db))
    assert result.exit_code == 2
    assert "No such option" not in result.output
    assert "only adds" in result.output and "keys revoke" in result.output and "credit-limit" in result.output
    assert run("credit", "alice", "5", "--db", str(db)).exit_code == 0


def test_a_negative_credit_limit_is_refused_in_words(tmp_path):
    db = tmp_path / "accounts.db"
    create_key(db, "alice")
    result = run("credit-limit", "alice", "-5", "--db", str(db))
    assert result.exit_code == 2 and "positive amount" in result.output


def test_read_only_commands_on_a_missing_database_say_so_and_create_nothing(tmp_path):
    db = tmp_path / "nonexist.db"
    for args in (["keys", "list"], ["keys", "revoke", "k1"], ["providers", "list"], ["providers", "revoke", "p"],
                 ["credit", "alice", "5"], ["credit-limit", "alice", "5"]):
        result = run(*args, "--db", str(db))
        assert result.exit_code == 2, args
        assert "does not exist" in result.output and "keys create" in result.output, args
        assert not db.exists(), args


async def test_the_401_names_the_command_that_really_creates_keys(tmp_path):
    db = tmp_path / "accounts.db"
    create_key(db, "alice")
    accounts = Accounts.from_db(db)
    async with coordinator(accounts=accounts) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            refused = await http.get("/v1/models")
    accounts.close()
    assert refused.status_code == 401
    assert "darkbloom-agent coordinator keys create" in refused.json()["error"]["message"]
