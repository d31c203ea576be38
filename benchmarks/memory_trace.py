"""Where a full load's memory goes: resident memory sampled through a replayed load, step by step.

    python -m benchmarks.memory_trace [--sizes 50000:20000,250000:100000,500000:200000] [--targets duckdb,postgres]

For each size (leads:deals) a sandbox org's answers are recorded to local JSON lines (benchmarks.replay)
and loaded in full, in a fresh process per load as a user runs it, with the fetch replaced by the
recording, so only what the extractor itself holds is measured. The loading process samples its own
resident memory every 0.2 s and notes it at each phase (extract, normalize, load of every step). Printed
per load: the peak, where it came (step and phase), and the resting level between steps (at the start of
each normalize), which shows whether memory settles or keeps growing with the records.

benchmarks.load gives the peak of the same loads over HTTP; this one explains it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.measure import status_kb
from benchmarks.replay import record
from sandbox import SandboxOrg
from tests.support.postgres import create_database, local_postgres
from tests.support.workspace import make_workspace

SAMPLE_SECONDS = 0.2


def _resident_mb() -> int:
    return status_kb("self", "VmRSS") // 1024


def child(target: str, replay: Path, out: Path) -> None:
    """Run one replayed load in this process and write its memory trace to `out` as JSON."""
    from benchmarks.replay import ReplayClient
    from pipelines.zoho import ExtractSession
    from pipelines.zoho.run import Progress, load

    started = time.monotonic()
    samples: list[tuple[float, int]] = []
    phases: list[tuple[float, int, str]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.monotonic() - started, _resident_mb()))
            done.wait(SAMPLE_SECONDS)

    class Phases(Progress):
        def stage(self, message: str) -> None:
            phases.append((time.monotonic() - started, _resident_mb(), message))

    threading.Thread(target=sample, daemon=True).start()
    summary = load(target, session=ExtractSession(client=ReplayClient(replay)), progress=Phases(quiet=True))
    done.set()
    out.write_text(json.dumps({"samples": samples, "phases": phases, "seconds": summary.seconds}))


def describe(trace: dict) -> str:
    samples, phases = trace["samples"], trace["phases"]
    peak_at, peak = max(samples, key=lambda s: s[1])
    during = [p[2] for p in phases if p[0] <= peak_at][-1]
    resting = [mb for _, mb, message in phases if message.startswith("normalize")]
    shown = resting if len(resting) <= 8 else resting[:4] + ["..."] + resting[-3:]
    return (
        f"{trace['seconds']:.0f} s | peak {peak} MB during '{during}' | "
        f"between steps: {' '.join(str(mb) for mb in shown)} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50000:20000,250000:100000,500000:200000", help="default: %(default)s")
    parser.add_argument("--targets", default="duckdb,postgres", help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--child", nargs=3, metavar=("TARGET", "REPLAY", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return

    rows = []
    with tempfile.TemporaryDirectory(prefix="crm-memory-") as tmp_name, local_postgres() as admin_url:
        tmp = Path(tmp_name)
        for leads, deals in (tuple(int(n) for n in size.split(":")) for size in args.sizes.split(",")):
            org = SandboxOrg(
                seed=args.seed, leads=leads, deals=deals, timezone="Asia/Kolkata", today=datetime.date(2026, 11, 20)
            )
            replay = record(org, tmp / f"replay-{leads}")
            del org
            for target in args.targets.split(","):
                name = f"{target}-{leads}"
                ws = make_workspace(tmp / name)
                # the same load as benchmarks.load: no Stage History backfill, credentials the replay ignores
                ws.env.update(
                    SOURCES__ZOHO__STAGE_HISTORY_BACKFILL="false",
                    ZOHO_CLIENT_ID="replay",
                    ZOHO_CLIENT_SECRET="replay",
                    ZOHO_REFRESH_TOKEN="replay",
                )
                if target == "postgres":
                    ws.use_postgres(create_database(admin_url, name.replace("-", "_")))
                out = tmp / f"{name}.json"
                ws.run(
                    "python", "-m", "benchmarks.memory_trace", "--child", target, str(replay), str(out), timeout=7200
                )
                rows.append(f"{leads + deals:,} records -> {target} | {describe(json.loads(out.read_text()))}")
                print(rows[-1], file=sys.stderr, flush=True)

    print(f"\nMemory of a replayed full load (resident memory sampled every {SAMPLE_SECONDS} s, seed {args.seed})")
    for row in rows:
        print("  " + row)


if __name__ == "__main__":
    main()
