"""A week of briefings on WhatsApp: every owner's digest and the team's, day after day, with WhatsApp's window kept.

    python -m benchmarks.delivery_week [--days 5] [--reply-day 3] [--model-url URL]

The demo org's size (sandbox, 5,000 leads + 2,000 deals), here with 18 reps
(20 CRM users who own deals) instead of the demo's six, is extracted and built
on DuckDB; the recipients are two managers and one owner per CRM user. Twilio is
the emulator, which keeps WhatsApp's 24-hour window as Twilio does, with the
briefing's template created by `create-template` and approved; the API runs as
`make api` does, with PUBLIC_BASE_URL set, so Twilio's status callbacks and
replies reach it. `python -m insights.deliver --date D` runs for each of the
last `--days` complete days. Nobody writes to the sender, except the first
manager, who replies to the template on day `--reply-day` (and so is inside
the window for the days after, which follow in minutes here).

The model is the Ollama emulator unless `--model-url` names an Ollama server
(`python -m evals.server`, make eval's SmolLM2 on llama.cpp): then the figures
say how many digests the model worded and how long each took.

Prints, per day: seconds for the whole delivery, digests built, the seconds the
model took per digest, model-worded vs standard (and why), messages per
person, template vs full text, and failures at WhatsApp; then the totals.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

import duckdb

from benchmarks.measure import measure
from insights.settings import TwilioSettings
from insights.whatsapp import create_template, twilio_client
from sandbox import SandboxOrg, SandboxServer
from tests.ollama_emulator import OllamaEmulator
from tests.support.api import free_port, serve
from tests.support.workspace import make_workspace
from tests.twilio_emulator import TwilioEmulator

MANAGERS = ("+15550300001", "+15550300002")
MODEL_LINE = re.compile(r"\[model\]\s+([\d.]+)s\s+(\S+): (.*)$")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--reply-day", type=int, default=3, help="the day the first manager replies (0: nobody)")
    parser.add_argument("--model-url", help="an Ollama server to word the digests (default: the emulator)")
    parser.add_argument("--model", default="llama3.2:1b", help="the model to ask the server for")
    parser.add_argument("--leads", type=int, default=5_000)
    parser.add_argument("--deals", type=int, default=2_000)
    parser.add_argument(
        "--reps",
        type=int,
        default=18,
        help="sales reps in the org (default 18: 20 owners with the admin and the sales manager, who own deals too)",
    )
    args = parser.parse_args()

    org = SandboxOrg(seed=7, leads=args.leads, deals=args.deals, timezone="Asia/Kolkata", reps=args.reps)
    with (
        tempfile.TemporaryDirectory(prefix="crm-week-") as tmp,
        SandboxServer(org, port=0) as server,
        OllamaEmulator() as ollama,
        TwilioEmulator() as twilio,
    ):
        ws = make_workspace(Path(tmp))
        ws.env.update(
            {
                **server.env(),
                **twilio.env(),
                "OLLAMA_BASE_URL": args.model_url or ollama.url,
                "OLLAMA_MODEL": args.model,
            }
        )
        ws.env.pop("RECIPIENT_PHONE_NUMBER", None)
        print("extracting and building the demo org ...", flush=True)
        measure(ws, "python", "-m", "pipelines.zoho", "--destination", "duckdb")
        measure(ws, "dbt", "build", "--target", "duckdb", "--exclude", "resource_type:unit_test")
        with duckdb.connect(str(ws.duckdb_path), read_only=True) as conn:
            users = [row[0] for row in conn.execute("select id from zoho_raw.users order by id").fetchall()]
            days = [
                row[0]
                for row in conn.execute(
                    "select kpi_date from analytics.kpi_daily where is_complete group by kpi_date order by kpi_date desc "
                    f"limit {args.days}"
                ).fetchall()
            ][::-1]
        owners = {f"+1555031{i:04d}": user for i, user in enumerate(users)}
        (ws.root / "recipients.yml").write_text(
            "people:\n"
            + "".join(f"  - {{name: Manager {i}, whatsapp: '{n}', role: manager}}\n" for i, n in enumerate(MANAGERS, 1))
            + "".join(
                f"  - {{name: Owner {i}, whatsapp: '{n}', role: owner, zoho_user: '{user}'}}\n"
                for i, (n, user) in enumerate(owners.items(), 1)
            )
        )
        settings = TwilioSettings(
            twilio.account_sid, twilio.auth_token, twilio.sender.removeprefix("whatsapp:"), (), twilio.url
        )
        template, _ = create_template(twilio_client(settings))
        twilio.approve(template)
        port = free_port()
        ws.env.update(TWILIO_TEMPLATE_SID=template, PUBLIC_BASE_URL=f"http://127.0.0.1:{port}")
        print(
            f"{len(MANAGERS)} managers, {len(owners)} owners (every user of the org), {len(days)} days; "
            f"model: {args.model_url or 'the Ollama emulator'}\n",
            flush=True,
        )

        totals: Counter[str] = Counter()
        per_digest: list[float] = []
        with serve(ws.env, "duckdb", port=port):
            twilio.set_inbound_webhook(f"http://127.0.0.1:{port}/twilio/inbound")
            for number, day in enumerate(days, 1):
                before = len(twilio.messages)
                started = time.perf_counter()
                run = ws.run(
                    "python",
                    "-m",
                    "insights.deliver",
                    "--target",
                    "duckdb",
                    "--date",
                    day.isoformat(),
                    check=False,
                    timeout=3600,
                )
                seconds = time.perf_counter() - started
                if number == args.reply_day:
                    twilio.inbound(MANAGERS[0], "send me the full briefing please")
                    time.sleep(2.0)  # the API answers in the background
                sent = twilio.settled()[before:]
                models = [
                    (float(s), who, what)
                    for s, who, what in (m.groups() for m in map(MODEL_LINE.search, run.stderr.splitlines()) if m)
                ]
                worded = sum("answered" in what for _, _, what in models)
                why = Counter(what.split(": ", 2)[1].split(":")[0] for _, _, what in models if "answered" not in what)
                per_digest += [s for s, _, _ in models]
                failed = [m for m in sent if m["status"] in ("failed", "undelivered")]
                people = Counter(m["to"] for m in sent)
                kinds = Counter(
                    "template" if m["body"].startswith("Good morning. Here is") else "full text" for m in sent
                )
                totals.update(
                    runs=1,
                    ok=int(run.returncode == 0),
                    digests=len(models),
                    worded=worded,
                    failed=len(failed),
                    messages=len(sent),
                    seconds=seconds,
                )
                print(
                    f"day {number} ({day}): exit {run.returncode}, {seconds:.1f} s; {len(models)} digests "
                    f"({worded} worded by the model{', standard: ' + dict(why).__repr__() if why else ''}); "
                    f"{len(sent)} messages to {len(people)} people ({dict(kinds)}), at most {max(people.values(), default=0)} "
                    f"per person; {len(failed)} failed at WhatsApp",
                    flush=True,
                )
                if run.returncode != 0:
                    print(run.stderr[-3000:])

    print(
        f"\n{totals['runs']} days: {totals['ok']} exited 0; {totals['digests']} digests, {totals['worded']} worded by the "
        f"model; {totals['messages']} messages, {totals['failed']} failed at WhatsApp; "
        f"{totals['seconds'] / max(totals['runs'], 1):.1f} s per day; seconds per digest: median "
        f"{sorted(per_digest)[len(per_digest) // 2] if per_digest else 0:.2f}, worst {max(per_digest, default=0):.2f}"
    )


if __name__ == "__main__":
    main()
