"""The benchmark must keep working: a smoke run with tiny counts (no timing assertions)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from support.proxy import REPO


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


def test_proxy_benchmark_runs_interleaved_and_prints_every_figure(tmp_path) -> None:
    raw = tmp_path / "raw"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--quick", "--skip-micro"]
        + ["--raw", str(raw)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = dict(re.findall(r"^\| (.+?) \| (.+?) \|$", done.stdout, re.M))
    for title in (
        "keep-alive",
        "new connection per request",
        "new connection and new certificate per request (cold)",
    ):
        ratio = next(
            v
            for k, v in rows.items()
            if k.startswith(f"{title}: mitmdump CPU per request, with the addon (-s) / without")
        )
        assert float(ratio.split()[0]) > 0
        assert f"{title}: control, without / without (another process)" in rows
        busy = rows[
            f"{title}: CPU use while busy (cores) mitmdump A / A2 / E / B / C; origin; load generator"
        ]
        assert len(busy.split(";")) == 3
    # The cold path really was cold: B and C never met a certificate twice.
    repeats = rows["cold: connections whose certificate the process had met before, B; C"]
    for cell in repeats.split("; "):
        repeated, _of, connections = cell.split()
        assert repeated == "0" and int(connections) >= 3 * 16, repeats
    for mode, chunk in (("keepalive", 64), ("new", 16), ("cold", 16)):
        (block,) = [json.loads(line) for line in (raw / f"{mode}.jsonl").read_text().splitlines()]
        assert set(block["proxies"]) == {"A", "A2", "E", "B", "C"}
        for measured in block["proxies"].values():
            # Every request of every chunk succeeded, and each chunk was charged CPU time.
            assert measured["requests"] == [chunk] * 3 and measured["errors"] == 0
            assert all(cpu > 0 for cpu in measured["cpu"])
