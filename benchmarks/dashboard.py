"""What the pictures cost: seconds to draw the charts, and the dashboard's weight and load time in Chromium.

    python -m benchmarks.dashboard [--duckdb demo.duckdb] [--reloads 3]

Draws the day's charts in this process (the first drawing starts vl-convert's engine, the second does not),
then serves `insights.api` over the same DuckDB file in its own process and opens /dashboard in headless
Chromium (Debian's chromium-headless-shell, or CHROMIUM) with every host but 127.0.0.1 unreachable: bytes
transferred for the page and everything it loads, and navigation-to-load time, on the first visit (the
charts drawn) and on reloads (answered from the API's memory).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx

from insights import charts
from insights.facts import default_report_date
from tests.support.api import free_port

PAGE_COST = """() => {
  const page = performance.getEntriesByType('navigation')[0];
  const loaded = performance.getEntriesByType('resource');
  return {bytes: page.transferSize + loaded.reduce((sum, entry) => sum + entry.transferSize, 0),
          requests: 1 + loaded.length, load_ms: Math.round(page.loadEventEnd - page.startTime)};
}"""


def draw_charts(path: Path) -> None:
    with duckdb.connect(str(path), read_only=True) as conn:
        day = default_report_date(conn, "duckdb", dt.date.today())
        started = time.perf_counter()
        specs = charts.day_specs(conn, "duckdb", day)
        read = time.perf_counter() - started
    for attempt in ("cold", "warm"):
        started = time.perf_counter()
        sizes = [len(charts.render_png(spec)) for spec in specs.values()]
        print(f"charts ({attempt}): {len(specs)} PNGs for {day} in {time.perf_counter() - started:.2f}s "
              f"({sum(sizes):,} bytes; reading their rows took {read:.3f}s)")  # fmt: skip


def load_dashboard(path: Path, reloads: int) -> None:
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = {**os.environ, "DUCKDB_PATH": str(path)}
    env.pop("API_TOKEN", None)
    api = subprocess.Popen(
        [sys.executable, "-m", "insights.api", "--target", "duckdb", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(150):
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium-headless-shell"),
                args=["--no-sandbox", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"],
            )
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/dashboard", wait_until="load")
            first = page.evaluate(PAGE_COST)
            print(f"dashboard (first visit): {first['bytes']:,} bytes in {first['requests']} request(s), "
                  f"loaded in {first['load_ms']} ms")  # fmt: skip
            for _ in range(reloads):
                page.reload(wait_until="load")
                again = page.evaluate(PAGE_COST)
                print(f"dashboard (reload): {again['bytes']:,} bytes, loaded in {again['load_ms']} ms")
            browser.close()
    finally:
        api.terminate()
        api.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duckdb", type=Path, default=Path("demo.duckdb"), help="a built DuckDB warehouse")
    parser.add_argument("--reloads", type=int, default=3, help="reloads after the first visit")
    args = parser.parse_args(argv)
    if not args.duckdb.exists():
        parser.error(f"{args.duckdb} does not exist: run `make demo` first")
    draw_charts(args.duckdb)
    load_dashboard(args.duckdb.resolve(), args.reloads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
