"""The benchmark must keep working: a smoke run with tiny counts (no timing assertions)."""

from __future__ import annotations

import re
import subprocess
import sys

from proxy import REPO


def test_micro_benchmarks_run_and_print_every_figure() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--quick", "--skip-proxy"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = dict(re.findall(r"^\| (.+?) \| (.+?) \|$", done.stdout, re.M))
    for label in (
        "header parse (µs)",
        "evaluate, cold, 3 embedded SCTs (µs)",
        "evaluate, cached (µs)",
        "cached / cold",
        "store look-up at 1,000 known hosts (µs)",
        "store look-up at 10,000 known hosts (µs)",
        "store look-up 10,000 / 1,000",
    ):
        assert label in rows, done.stdout
    assert float(rows["cached / cold"]) > 0
    memory = next(v for k, v in rows.items() if k.startswith("resident memory growth"))
    assert "2,000:" in memory
