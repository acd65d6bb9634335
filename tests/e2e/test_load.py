"""Load and concurrency at a small size: benchmarks/load.py with 20 clients for a few seconds.

The full run is `python benchmarks/load.py` (200 clients, 60 s); see its docstring for what
is checked. Here the same checks run small enough for `make test`: every violated
expectation is in ``result.problems``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import support

sys.path.insert(0, str(support.REPO / "benchmarks"))

import load  # noqa: E402


def test_clients_through_one_proxy(tmp_path: Path) -> None:
    result = load.run(clients=20, seconds=5, workdir=tmp_path)
    assert result.problems == []
    assert result.outcomes["blocked by the addon (502)"] > 0
    assert result.outcomes["non-compliant 200"] > 0
    assert result.outcomes["steady 200"] > 0 and result.outcomes["fresh 200"] > 0
    assert result.entries_checked == len(result.acknowledged) > len(load.STEADY_HOSTS) // 2
    assert result.integrity == ["after every proxy stopped: ok"]
    assert len(result.rss["proxy-a"]) >= 4  # sampled all along
    assert "proxy-a" in result.rss_growth


def test_two_proxies_on_one_store_and_one_killed(tmp_path: Path) -> None:
    result = load.run(clients=20, seconds=6, two_proxies=True, kill_one=True, workdir=tmp_path)
    assert result.problems == []
    by_proxy = set(result.acknowledged.values())
    assert by_proxy == {"proxy-a", "proxy-b"}  # both wrote entries that must survive
    assert result.integrity == [
        "after SIGKILL, survivor running: ok",
        "after every proxy stopped: ok",
    ]
    # The survivor served until the end: samples of it after the kill.
    assert result.rss["proxy-b"][-1][0] < result.rss["proxy-a"][-1][0]
