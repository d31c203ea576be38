"""How long `make demo` goes without printing anything: the longest silent stretches and what preceded them.

    python -m benchmarks.silence [--target demo]

Runs the make target from the project folder (the virtualenv already
installed, so pip's part is not measured) and timestamps every line of its
output, stdout and stderr together, as a person watching the terminal sees it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

from warehouse import PROJECT_ROOT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="demo")
    args = parser.parse_args()

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # as on a terminal: Python flushes each line
    started = last = time.perf_counter()
    gaps: list[tuple[float, str]] = []
    previous = "(start)"
    with subprocess.Popen(
        ["make", "-s", args.target],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            now = time.perf_counter()
            gaps.append((now - last, previous))
            last, previous = now, line.rstrip()[:100]
    gaps.append((time.perf_counter() - last, previous))
    if process.returncode != 0:
        raise SystemExit(f"make {args.target} failed ({process.returncode})")
    print(f"make {args.target}: {time.perf_counter() - started:.1f} s, {len(gaps)} lines")
    print("longest silent stretches (seconds, after the line):")
    for seconds, after in sorted(gaps, reverse=True)[:5]:
        print(f"  {seconds:6.1f}  {after}")


if __name__ == "__main__":
    main()
