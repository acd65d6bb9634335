"""Handshake look-up cost: the PostgreSQL store (its replica) against the SQLite store.

    python benchmarks/fleet_lookup.py [--hosts 1000] [--postgres URL]

A look-up runs in every TLS handshake of a non-compliant connection (``HostStore.get``).
Issue 19 asks that a fleet's store costs what the SQLite one costs: no network wait, only the
local replica. Both stores get the same ``--hosts`` Known hosts; the median of several
``timeit`` repeats of ``get`` (cycling through hits and misses) is compared as a ratio
(PostgreSQL / SQLite), since absolute times depend on the machine. ``--postgres`` names an
empty database; by default a throw-away server is started as the tests start one.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "addon")]

from expect_ct import store as storemod  # noqa: E402


def fill(store: storemod.HostStore, count: int) -> None:
    for i in range(count):
        store.observe(f"host{i}.example", max_age=86400, enforce=i % 2 == 0, report_uri=None)


def looker(store: storemod.HostStore, count: int) -> Callable[[], object]:
    # Half hits, half misses (a host never noted): both happen in real handshakes.
    names = [f"host{i}.example" for i in range(count)] + [f"other{i}.example" for i in range(count)]
    counter = itertools.count()
    return lambda: store.get(names[next(counter) % len(names)])


def per_call_us(func: Callable[[], object], number: int, repeat: int) -> list[float]:
    return [t / number * 1e6 for t in timeit.repeat(func, number=number, repeat=repeat)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--number", type=int, default=20000, help="look-ups per repeat")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--postgres", help="an empty database's URL")
    args = parser.parse_args()
    server = None
    url = args.postgres
    if url is None:
        from support.postgres import start_server

        server = start_server()
        url = server.new_database()
    try:
        with tempfile.TemporaryDirectory(prefix="expect-ct-lookup-") as scratch:
            sqlite = storemod.open_store(str(Path(scratch) / "store.sqlite3"))
            postgres = storemod.open_store(url)
            try:
                fill(sqlite, args.hosts)
                fill(postgres, args.hosts)
                results = {
                    name: per_call_us(looker(store, args.hosts), args.number, args.repeat)
                    for name, store in (("sqlite", sqlite), ("postgresql", postgres))
                }
            finally:
                sqlite.close()
                postgres.close()
    finally:
        if server is not None:
            server.stop("immediate")
            shutil.rmtree(server.directory, ignore_errors=True)
    for name, values in results.items():
        print(
            f"{name:<10} get(): median {statistics.median(values):.2f} µs per look-up "
            f"(min {min(values):.2f}, max {max(values):.2f}; {args.hosts} Known hosts)"
        )
    ratio = statistics.median(results["postgresql"]) / statistics.median(results["sqlite"])
    print(f"ratio PostgreSQL / SQLite: {ratio:.2f} (1.0 or less: no network wait in a look-up)")


if __name__ == "__main__":
    main()
