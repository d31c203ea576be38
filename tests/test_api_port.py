"""Starting the metrics API on a port another process holds: one line saying how to choose another."""

from __future__ import annotations

import socket

from tests.support.workspace import Workspace


def test_a_port_in_use_is_one_line_saying_how_to_choose_another(workspace: Workspace) -> None:
    """GIVEN another process listening on a port (an API started earlier, another server)
    WHEN the user starts the API on that port
    THEN it exits 2, a setting to change, with one error line that names the port and how to choose another
    (make api PORT=..., --port), and no server ever says it started."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]

        result = workspace.run("python", "-m", "insights.api", "--port", str(port), check=False, timeout=60)

    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1, result.stderr
    assert errors[0].endswith(
        f"port {port} on 127.0.0.1 is in use (another `make api`?): choose another with "
        f"`make api PORT={port + 1}` or `python -m insights.api --port {port + 1}`"
    )
    assert "Errno" not in result.stderr and "Uvicorn" not in result.stderr and "startup" not in result.stderr
