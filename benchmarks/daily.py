"""End-to-end benchmark of the whole day on the embedded default.

    python -m benchmarks.daily [--leads 5000] [--deals 2000]

Sandbox org (over HTTP) -> `python -m pipelines.zoho` -> `dbt build` ->
`python -m insights.deliver`, on a fresh DuckDB file, with the local Ollama and
Twilio emulators standing in for the model server and WhatsApp. Prints seconds
per stage (extract, dbt build, briefing, send), the prompt's token count and
the message length. The emulator answers instantly, so "briefing" measures this
project's own work; a real Llama 3.2 adds its generation time on top.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import duckdb

from benchmarks.measure import measure
from sandbox import SandboxOrg, SandboxServer
from tests.ollama_emulator import OllamaEmulator
from tests.support.workspace import make_workspace
from tests.twilio_emulator import TwilioEmulator

RECIPIENTS = ("+15550100001", "+15550100002")
STAGE_LINE = re.compile(r"\[(\w+)\]\s+([\d.]+)s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=5_000)
    parser.add_argument("--deals", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    org = SandboxOrg(seed=args.seed, leads=args.leads, deals=args.deals, timezone="Asia/Kolkata")
    with (
        tempfile.TemporaryDirectory(prefix="crm-bench-") as tmp,
        SandboxServer(org, port=0) as server,
        OllamaEmulator() as ollama,
        TwilioEmulator() as twilio,
    ):
        ws = make_workspace(Path(tmp))
        ws.env.update({**server.env(), **twilio.env(*RECIPIENTS), "OLLAMA_BASE_URL": ollama.url})
        for number in RECIPIENTS:  # they wrote this morning: the briefing goes as full text (benchmarks.delivery_week
            twilio.inbound(number)  # measures the days nobody writes)

        extract = measure(ws, "python", "-m", "pipelines.zoho", "--destination", "duckdb")
        build = measure(ws, "dbt", "build", "--target", "duckdb")
        deliver = measure(ws, "python", "-m", "insights.deliver", "--target", "duckdb")

        stages = {name: float(sec) for name, sec in STAGE_LINE.findall(deliver.stderr)}
        with duckdb.connect(str(ws.duckdb_path), read_only=True) as conn:
            prompt_tokens, message, used_fallback = conn.execute(
                "select prompt_tokens, message, used_fallback from analytics.ai_summaries order by created_at desc limit 1"
            ).fetchone()
        sent = len(twilio.settled())

    send = stages.get("send", 0.0)
    briefing = deliver.seconds - send
    total = extract.seconds + build.seconds + deliver.seconds
    print(f"\nThe whole day: {args.leads:,} leads + {args.deals:,} deals, DuckDB, sandbox + emulators")
    print(f"  extract    {extract.seconds:6.1f} s   peak {extract.peak_mb:,.0f} MB   {extract.stdout.strip()}")
    print(f"  dbt build  {build.seconds:6.1f} s   peak {build.peak_mb:,.0f} MB")
    print(
        f"  briefing   {briefing:6.1f} s   ("
        + ", ".join(f"{k} {v:.2f}s" for k, v in stages.items() if k != "send")
        + ")"
    )
    print(f"  send       {send:6.1f} s   {sent} WhatsApp message(s) accepted")
    print(f"  total      {total:6.1f} s")
    print(f"  prompt {prompt_tokens} tokens | message {len(message)} characters | fallback used: {used_fallback}")


if __name__ == "__main__":
    main()
