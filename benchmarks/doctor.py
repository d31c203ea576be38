"""Doctor benchmark: wall seconds of `python -m insights.doctor`, a correct setup and a broken one.

    python -m benchmarks.doctor [--runs 3]

Against the sandbox Zoho org and the Twilio emulator over HTTP, a DuckDB file
and no Ollama (its check then waits for a refused connection, the usual case on
a laptop). The command runs in its own process, interpreter start included, as
`make check` runs it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.measure import measure
from sandbox import SandboxOrg, SandboxServer
from tests.support.workspace import make_workspace
from tests.twilio_emulator import TwilioEmulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    org = SandboxOrg(seed=7, leads=200, deals=80, timezone="Asia/Kolkata")
    with (
        tempfile.TemporaryDirectory(prefix="crm-bench-doctor-") as tmp,
        SandboxServer(org, port=0) as zoho,
        TwilioEmulator() as twilio,
    ):
        ws = make_workspace(Path(tmp) / "workspace")
        ws.env.update(
            {**zoho.env(), **twilio.env("+15550000001", "+15550000002"), "OLLAMA_BASE_URL": "http://127.0.0.1:9"}
        )
        correct = [measure(ws, "python", "-m", "insights.doctor").seconds for _ in range(args.runs)]
        ws.env["TWILIO_AUTH_TOKEN"] = "0" * 32
        ws.env["RECIPIENT_PHONE_NUMBER"] = "+1555000000a"
        broken = []
        for _ in range(args.runs):  # exit 2 is the expected outcome here, so time it directly
            started = time.perf_counter()
            result = ws.run("python", "-m", "insights.doctor", check=False)
            broken.append(time.perf_counter() - started)
            assert result.returncode == 2 and "Twilio credentials" in result.stdout, result.stdout
    print(f"{'setup':34} {'runs':>4} {'median s':>9} {'max s':>6}")
    for name, seconds in (("correct (8 checks)", correct), ("wrong Twilio token + bad recipient", broken)):
        print(f"{name:34} {len(seconds):>4} {statistics.median(seconds):>9.2f} {max(seconds):>6.2f}")


if __name__ == "__main__":
    main()
