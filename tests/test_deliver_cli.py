"""The delivery command as a person sees it: progress while it waits, and an exit status that says what to do.

The delivery runs as `python -m insights.deliver` in its own process, against a
private copy of the built warehouse (or a real PostgreSQL server) and the Ollama
emulator over HTTP, made slow the way a small model on a laptop CPU is slow.
HEARTBEAT_SECONDS is set to one second so the story takes seconds; the default is ten.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.ollama_emulator import DEFAULT_MODEL, OllamaEmulator, Reply
from tests.support.workspace import Workspace
from warehouse import connect


@pytest.fixture
def slow_model(warehouse: Any) -> Iterator[tuple[Any, OllamaEmulator]]:
    with OllamaEmulator() as ollama:
        warehouse.env["OLLAMA_BASE_URL"] = ollama.url
        yield warehouse, ollama


def test_a_delivery_waiting_on_a_slow_model_says_it_is_still_waiting(
    slow_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a model that takes 2.6 s to answer, and HEARTBEAT_SECONDS=1
    WHEN the briefing is written (a dry run)
    THEN while the model thinks the run prints "still waiting for llama3.2:1b (1s)", "(2s)", ... once a second,
    before the model stage's own line, and the model's briefing is still the one used."""
    ws, ollama = slow_model
    monkeypatch.setenv("DUCKDB_PATH", ws.env["DUCKDB_PATH"])
    with connect("duckdb", read_only=True) as conn:
        [(day,)] = conn.execute("select max(kpi_date) - 1 from analytics.kpi_daily").fetchall()
    ollama.queue(Reply.slow(2.6))
    ws.env["HEARTBEAT_SECONDS"] = "1"

    result = ws.run(
        "python", "-m", "insights.deliver", "--target", "duckdb", "--dry-run", "--date", day.isoformat(), timeout=120
    )

    lines = result.stderr.splitlines()
    waiting = [i for i, line in enumerate(lines) if "still waiting for" in line]
    model_line = next(i for i, line in enumerate(lines) if "[model]" in line)
    said = [re.sub(r"^\d\d:\d\d:\d\d ", "", lines[i]) for i in waiting]
    assert len(said) >= 2, result.stderr  # the prompt's sizing adds a moment to the model's 2.6 s
    assert said == [f"still waiting for {DEFAULT_MODEL} ({n}s)" for n in range(1, len(said) + 1)], result.stderr
    assert waiting[-1] < model_line
    assert f"{DEFAULT_MODEL} answered" in lines[model_line]
    assert "DRY RUN: nothing was sent" in result.stdout


def test_a_malformed_heartbeat_setting_is_named(slow_model: Any) -> None:
    """GIVEN HEARTBEAT_SECONDS set to something that is not a positive number
    WHEN the delivery starts
    THEN it stops with exit 2 (configuration), naming the variable, before asking the model."""
    ws, ollama = slow_model
    ws.env["HEARTBEAT_SECONDS"] = "ten"

    result = ws.run("python", "-m", "insights.deliver", "--target", "duckdb", "--dry-run", check=False, timeout=120)

    assert result.returncode == 2, result.stderr
    assert "HEARTBEAT_SECONDS" in result.stderr.strip().splitlines()[-1]
    assert ollama.chats == []


@pytest.mark.postgres
@pytest.mark.parametrize(
    "where, status, says",
    [
        ("a database that does not exist", 2, "check DATABASE_URL"),
        ("a server that refuses the connection", 1, "run it again"),
    ],
)
def test_a_wrong_setting_exits_2_and_a_failing_server_exits_1(
    workspace: Workspace, postgres_server: str, where: str, status: int, says: str
) -> None:
    """GIVEN DATABASE_URL naming a database the server does not have, or a port where no server answers
    (a server that is down or restarting, as a dropped connection looks to a run)
    WHEN the delivery runs
    THEN the first exits 2, a setting to fix; the second exits 1, a run that failed and may be run again."""
    url = (
        postgres_server.rsplit("/", 1)[0] + "/no_such_database"
        if "does not exist" in where
        else "postgresql://postgres:unused@127.0.0.1:9/postgres"
    )
    workspace.env.update(DATABASE_URL=url, OLLAMA_BASE_URL="http://127.0.0.1:9")

    result = workspace.run(
        "python", "-m", "insights.deliver", "--target", "postgres", "--dry-run", check=False, timeout=60
    )

    assert result.returncode == status, result.stderr
    error, hint = result.stderr.strip().splitlines()[-2:]
    assert error.startswith("error: ") and "Traceback" not in result.stderr
    assert hint.startswith("hint: ") and says in hint
