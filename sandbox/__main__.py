"""Command line of the sandbox: `python -m sandbox serve ...` and `python -m sandbox advance ...`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .auth import MINT_WINDOW_SECONDS
from .faults import FAULT_KINDS, FaultPlan
from .org import SandboxOrg
from .server import SandboxServer

EXAMPLES = """\
examples:
  python -m sandbox serve --seed 7 --leads 5000 --deals 2000 --port 8765 --timezone Asia/Kolkata
      prints `export NAME=value` lines (ZOHO_ACCOUNTS_URL, ZOHO_CLIENT_ID, ZOHO_CLIENT_SECRET,
      ZOHO_REFRESH_TOKEN, CRM_TIMEZONE) on stdout, then logs requests on stderr until Ctrl-C.
  python -m sandbox serve --faults rate=0.02,kinds=500+html+truncated+drop,seed=3 --credits 5000
      the same org on a bad day: 2% of API calls fail (seeded), 5,000 API credits for the day.
  python -m sandbox advance --url http://127.0.0.1:8765 --days 1
      plays one simulated day (new leads and deals, conversions, stage moves, edits, deletions)
      and prints what changed per module.

The credentials are fixed sandbox constants (sandbox.DEFAULT_CLIENT_ID, ...); they open nothing else.
"""


def _timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown IANA timezone: {name!r}") from None
    return name


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None


def _faults(spec: str) -> FaultPlan:
    try:
        return FaultPlan.parse(spec)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="A local Zoho CRM v8 org speaking Zoho's wire format (OAuth token endpoint, "
        "/crm/v8 records, deleted records, users, layouts, pipeline), for trying the "
        "project without a Zoho account.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="generate a seeded org and serve it over HTTP",
        description="Generate a deterministic org and serve it until Ctrl-C/SIGTERM.",
    )
    serve.add_argument("--seed", type=int, default=7, help="random seed of the org (default: 7)")
    serve.add_argument("--leads", type=int, default=5000, help="live leads to generate (default: 5000)")
    serve.add_argument("--deals", type=int, default=2000, help="live deals to generate (default: 2000)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port to listen on; 0 picks a free one (default: 8765)")
    serve.add_argument(
        "--timezone",
        type=_timezone,
        default="UTC",
        help="org timezone, IANA name; datetimes carry its offset (default: UTC)",
    )
    serve.add_argument(
        "--today", type=_date, default=None, help="the org's current day, YYYY-MM-DD (default: today in --timezone)"
    )
    serve.add_argument("--token-ttl", type=int, default=3600, help="access token lifetime in seconds (default: 3600)")
    serve.add_argument(
        "--faults",
        type=_faults,
        default=None,
        metavar="SPEC",
        help="seeded random faults: rate=FRACTION,kinds=K1+K2,...,seed=N[,slow=SECONDS]; kinds: "
        f"{', '.join(FAULT_KINDS)} (default: none; POST /_sandbox/faults changes it)",
    )
    serve.add_argument(
        "--credits",
        type=int,
        default=None,
        metavar="N",
        help="API credits for the day, one per call; 429 when spent (default: unlimited; "
        "POST /_sandbox/credits changes it)",
    )
    serve.add_argument(
        "--mint-limit",
        type=int,
        default=10,
        metavar="N",
        help=f"access tokens one refresh token may mint per {MINT_WINDOW_SECONDS // 60} minutes, "
        "as on Zoho (default: 10; 0: no limit)",
    )
    serve.add_argument("--quiet", action="store_true", help="do not log requests")
    serve.set_defaults(run=serve_command)

    advance = commands.add_parser("advance", help="advance a running sandbox by simulated days")
    advance.add_argument("--url", default="http://127.0.0.1:8765", help="sandbox base URL (default: %(default)s)")
    advance.add_argument("--days", type=int, default=1, help="days to play (default: 1)")
    advance.set_defaults(run=advance_command)
    return parser


def serve_command(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    started = time.perf_counter()
    org = SandboxOrg(seed=args.seed, leads=args.leads, deals=args.deals, timezone=args.timezone, today=args.today)
    server = SandboxServer(
        org,
        host=args.host,
        port=args.port,
        token_ttl=args.token_ttl,
        log=None if args.quiet else sys.stderr,
        faults=args.faults,
        credits=args.credits,
        mint_limit=args.mint_limit or None,
    )
    try:
        server.start()
    except OSError as error:
        print(f"sandbox: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    for name, value in server.env().items():
        print(f"export {name}={shlex.quote(value)}")
    sys.stdout.flush()
    print(
        f"Zoho CRM sandbox on {server.url}: {args.leads} leads, {args.deals} deals, today {org.today} "
        f"({org.timezone}), ready in {time.perf_counter() - started:.1f} s. Ctrl-C stops it.",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    print("sandbox stopped", file=sys.stderr, flush=True)
    return 0


def advance_command(args: argparse.Namespace) -> int:
    request = urllib.request.Request(
        f"{args.url.rstrip('/')}/_sandbox/advance",
        method="POST",
        data=json.dumps({"days": args.days}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            print(json.dumps(json.load(response), indent=2))
    except (urllib.error.URLError, OSError) as error:
        print(f"sandbox: cannot advance {args.url}: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
