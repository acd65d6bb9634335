"""How much does the addon cost? Ratios measured side by side in one run.

    python benchmarks/bench.py [--blocks 4] [--rounds 60] [--quick] [--raw DIR]

Proxy benchmarks: five mitmdump processes on 127.0.0.1 - A without the addon, A2 the same
again (a control), E with an empty ``-s`` script (what loading any script costs mitmproxy),
B with the addon as a ``-s`` script and C with it built in (``python -m expect_ct mitmdump``),
both with default options: blocking on, JSON-lines log on, a store file. The load
generator (servers.py interleave) sends the same short chunk of HTTPS requests to each in a
new random order every round, one proxy busy at a time, and charges each proxy the CPU time
the kernel's scheduler counted for all its threads (/proc/PID/task/*/schedstat) between the
starts of its chunks. The ratio of CPU per request is taken per round (the chunks of a round
ran within a second of each other; "without" is the geometric mean of A and A2) and the
median over rounds is that block's figure. Every block starts fresh processes, because two
identical processes differ by a few per cent for their whole life; the table shows the median over blocks with the blocks' min-max, the
control A2/A, throughput, and the CPU the origin and the load generator used while a proxy
was busy (to show they were not the bottleneck).

Three load shapes: keep-alive connections; a new connection per request (the same
certificate each time, so the addon's verdict cache answers); and the cold path, a new
connection per request that presents a certificate the proxy has never seen (servers.py
cold-origin: one port per proxy, each turning through a pool of distinct leaves larger than
the connections a proxy makes in its life), so every connection is parsed, classified and has
its SCTs verified.

Micro benchmarks (in-process): header parse, cold and cached evaluation of a chain with 3
embedded SCTs, store look-ups at 1,000 and 1,000,000 known hosts, and the addon's resident
memory while evaluating 100,000 distinct certificates.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from typing import NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "addon")]

from expect_ct import header as headermod  # noqa: E402
from expect_ct import loglist as loglistmod  # noqa: E402
from expect_ct import policy as policymod  # noqa: E402
from expect_ct import store as storemod  # noqa: E402
from support import pki  # noqa: E402
from support import stop_process  # noqa: E402

BIN = Path(sys.executable).parent
UTC = datetime.UTC


def rss_mib(pid: int | None = None) -> float:
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"


# ----------------------------------------------------------------------------- world


class World:
    def __init__(self, base: Path) -> None:
        self.base = base
        logs = [pki.make_log(f"Bench Log {i}", f"Operator {i}") for i in range(3)]
        self.logs = logs
        self.root = pki.make_root("Bench Public Root")
        self.inter = pki.make_intermediate(self.root, "Bench CA")
        now = datetime.datetime.now(UTC)
        self.log_list_json = pki.log_list_json([pki.LogEntry(log) for log in logs], timestamp=now)
        (base / "log_list.json").write_text(json.dumps(self.log_list_json))
        (base / "roots.pem").write_bytes(pki.pem(self.root.cert))
        ts = pki.now_ms() - 60_000
        leaf, key = pki.make_leaf(
            self.inter, hosts=("localhost",), embedded=[(log, ts + i) for i, log in enumerate(logs)]
        )
        self.leaf = leaf
        (base / "chain.pem").write_bytes(pki.pem(leaf, self.inter.cert))
        (base / "key.pem").write_bytes(pki.key_pem(key))

    def cold_pool(self, count: int) -> Path:
        """``count`` distinct leaves for localhost (3 embedded SCTs each, one shared key): the
        cold origin presents a different one on every connection."""
        pool = self.base / "cold-pool"
        pool.mkdir(exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        (pool / "key.pem").write_bytes(pki.key_pem(key))
        ts = pki.now_ms() - 60_000
        for i in range(count):
            leaf, _key = pki.make_leaf(
                self.inter,
                hosts=("localhost",),
                embedded=[(log, ts + j) for j, log in enumerate(self.logs)],
                key=key,
            )
            (pool / f"leaf-{i}.chain.pem").write_bytes(pki.pem(leaf, self.inter.cert))
        return pool


# ----------------------------------------------------------------------------- processes


# On a 2-core machine, mitmdump (single-threaded) gets core 1 to itself and the origin and the
# load generator share core 0: the proxy's CPU time per request is then not disturbed by them.
CORES = sorted(os.sched_getaffinity(0))
PROXY_CORES = {CORES[-1]} if len(CORES) > 1 else set(CORES)
HELPER_CORES = set(CORES[:-1]) or set(CORES)


def pin(cores: set[int]) -> Callable[[], None]:
    return lambda: os.sched_setaffinity(0, cores)


class Proc:
    def __init__(self, args: list[str], log: Path, cores: set[int] | None = None) -> None:
        self.log = log
        self.out = open(log, "wb")
        self.p = subprocess.Popen(
            args,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=pin(cores or HELPER_CORES),
        )

    def wait_for(self, needle: str, deadline: float = 30) -> str:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            text = self.log.read_text(errors="replace")
            if needle in text:
                return text
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.p.args!r} exited:\n{text}")
            time.sleep(0.05)
        raise RuntimeError(f"timeout waiting for {needle!r} in {self.log}")

    def stop(self) -> None:
        stop_process(self.p)
        self.out.close()


def start_origin(world: World, work: Path) -> tuple[Proc, int]:
    proc = Proc(
        [
            sys.executable,
            str(HERE / "servers.py"),
            "origin",
            str(world.base / "chain.pem"),
            str(world.base / "key.pem"),
        ],
        work / "origin.log",
    )
    end = time.monotonic() + 20
    while time.monotonic() < end:
        text = proc.log.read_text().strip()
        if text.isdigit():
            return proc, int(text)
        time.sleep(0.05)
    raise RuntimeError("origin did not start")


def start_cold_origin(
    world: World, work: Path, count: int, listeners: int
) -> tuple[Proc, list[int]]:
    pool = world.cold_pool(count)
    proc = Proc(
        [sys.executable, str(HERE / "servers.py"), "cold-origin", str(pool), str(count)]
        + [str(listeners)],
        work / "cold-origin.log",
    )
    end = time.monotonic() + 60
    while time.monotonic() < end:
        text = proc.log.read_text().strip()
        if text.startswith("[") and text.endswith("]"):
            return proc, [int(port) for port in json.loads(text)]
        time.sleep(0.05)
    raise RuntimeError("cold origin did not start")


def start_mitmdump(
    world: World,
    work: Path,
    name: str,
    with_addon: bool,
    script: Path | None = None,
    built_in: bool = False,
) -> tuple[Proc, int, Path]:
    """mitmdump without the addon, with it as a -s script, or with it built in
    (``python -m expect_ct mitmdump``)."""
    confdir = work / f"conf-{name}"
    launcher = (
        [sys.executable, "-m", "expect_ct", "mitmdump"] if built_in else [str(BIN / "mitmdump")]
    )
    args = [
        *launcher,
        "--listen-host",
        "127.0.0.1",
        "-p",
        "0",
        "--set",
        f"confdir={confdir}",
        "--set",
        f"ssl_verify_upstream_trusted_ca={world.base / 'roots.pem'}",
    ]
    if script is not None:
        args += ["-s", str(script)]
    if with_addon and not built_in:
        args += ["-s", str(REPO / "addon" / "expect_ct_addon.py")]
    if with_addon or built_in:
        args += [
            "--set",
            f"expect_ct_public_roots={world.base / 'roots.pem'}",
            "--set",
            f"expect_ct_log_list={world.base / 'log_list.json'}",
            "--set",
            f"expect_ct_log={work / f'events-{name}.jsonl'}",
            "--set",
            f"expect_ct_store={work / f'store-{name}.sqlite3'}",
        ]
    proc = Proc(args, work / f"mitmdump-{name}.log", cores=PROXY_CORES)
    text = proc.wait_for("listening at")
    port = int(text.split("listening at", 1)[1].split(".\n", 1)[0].rsplit(":", 1)[1].rstrip("."))
    return proc, port, confdir / "mitmproxy-ca-cert.pem"


WARMUP_CHUNKS = 2


def interleaved_load(
    work: Path,
    origin: Proc,
    origin_ports: dict[str, int],
    procs: dict[str, tuple[Proc, int, Path]],
    scenario: Scenario,
    rounds: int,
) -> dict[str, Any]:
    spec = {
        "host": "localhost",
        "origin_port": next(iter(origin_ports.values())),
        "origin_pid": origin.p.pid,
        "proxies": [
            {
                "name": name,
                "port": port,
                "ca": str(ca),
                "pid": proc.p.pid,
                "origin_port": origin_ports[name] if name in origin_ports else origin_ports["*"],
            }
            for name, (proc, port, ca) in procs.items()
        ],
        "mode": scenario.mode,
        "connections": scenario.connections,
        "per_connection": scenario.per_connection,
        "rounds": rounds,
        "warmup_chunks": WARMUP_CHUNKS,
    }
    key = scenario.key
    spec_path = work / f"spec-{key}.json"
    spec_path.write_text(json.dumps(spec))
    done = subprocess.run(
        [sys.executable, str(HERE / "servers.py"), "interleave", str(spec_path)],
        capture_output=True,
        text=True,
        timeout=3600,
        preexec_fn=pin(HELPER_CORES),
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    result: dict[str, Any] = json.loads(done.stdout)
    if RAW_DIR is not None:
        with open(RAW_DIR / f"{key}.jsonl", "a") as raw:  # one line per block
            raw.write(json.dumps(result) + "\n")
    for name, measured in result["proxies"].items():
        if measured["errors"]:
            raise RuntimeError(f"{name}: {measured['errors']} failed requests in {key}")
    return result


def per_request(measured: dict[str, Any]) -> list[float]:
    return [cpu / n for cpu, n in zip(measured["cpu"], measured["requests"], strict=True)]


# "without": both addon-less processes, so one slow or fast process weighs half as much.
WITHOUT = "A+A2"


def costs(result: dict[str, Any], name: str) -> list[float]:
    if name == WITHOUT:
        a, a2 = per_request(result["proxies"]["A"]), per_request(result["proxies"]["A2"])
        return [(x * y) ** 0.5 for x, y in zip(a, a2, strict=True)]
    return per_request(result["proxies"][name])


def ratios(result: dict[str, Any], numerator: str, denominator: str) -> list[float]:
    """Per-round ratios of CPU per request: the chunks of a round ran within a second."""
    top, bottom = costs(result, numerator), costs(result, denominator)
    return [a / b for a, b in zip(top, bottom, strict=True)]


def per_block(runs: list[dict[str, Any]], numerator: str, denominator: str) -> list[float]:
    return [statistics.median(ratios(run, numerator, denominator)) for run in runs]


def pooled(runs: list[dict[str, Any]], numerator: str, denominator: str) -> float:
    return statistics.median([r for run in runs for r in ratios(run, numerator, denominator)])


def summary(runs: list[dict[str, Any]], numerator: str, denominator: str) -> str:
    blockwise = per_block(runs, numerator, denominator)
    return (
        f"{statistics.median(blockwise):.3f} (blocks {min(blockwise):.3f}-"
        f"{max(blockwise):.3f}; all rounds pooled {pooled(runs, numerator, denominator):.3f})"
    )


def verdict(runs: list[dict[str, Any]], name: str, target: float) -> str:
    return "met" if statistics.median(per_block(runs, name, WITHOUT)) <= target else "NOT met"


def total(runs: list[dict[str, Any]], name: str, field: str) -> float:
    return float(sum(sum(run["proxies"][name][field]) for run in runs))


RAW_DIR: Path | None = None  # --raw: keep each scenario's per-chunk measurements

PROXIES = {
    "A": "without the addon",
    "A2": "without the addon, a second identical process (control)",
    "E": "with an empty -s script",
    "B": "with the addon (-s expect_ct_addon.py)",
    "C": "with the addon built in (python -m expect_ct mitmdump)",
}


class Scenario(NamedTuple):
    title: str
    key: str  # names its raw measurements file
    mode: str  # the load generator's: keepalive or new
    connections: int
    per_connection: int  # requests per connection per chunk
    target: float | None
    cold: bool = False  # a certificate the proxy has not seen on every connection


SCENARIOS = [
    Scenario("keep-alive", "keepalive", "keepalive", 8, 8, 1.03),
    Scenario("new connection per request", "new", "new", 8, 2, 1.10),
    # The cold path: no verdict-cache hit, every chain parsed, classified and its SCTs verified.
    Scenario(
        "new connection and new certificate per request (cold)", "cold", "new", 8, 2, None, True
    ),
]


def cold_path_check(world: World, work: Path, blocks: int) -> str:
    """From the event logs of B and C: every cold connection met a certificate new to that
    process (the warm scenarios all present world.leaf), so no verdict came from a cache."""
    warm = hashlib.sha256(world.leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
    cells = []
    for name in ("B", "C"):
        cold = total_repeats = 0
        for block in range(blocks):
            path = work / f"events-{name}-{block}.jsonl"
            lines = path.read_text().splitlines() if path.exists() else []
            seen: list[str] = [
                event["certificate"]["sha256"]
                for event in map(json.loads, lines)
                if event["event"] == "connection" and event["certificate"]["sha256"] != warm
            ]
            cold += len(seen)
            total_repeats += len(seen) - len(set(seen))
        cells.append(f"{total_repeats} of {cold}")
    return (
        "| cold: connections whose certificate the process had met before, B; C | "
        + "; ".join(cells)
        + " |"
    )


def start_proxies(world: World, work: Path, block: int) -> dict[str, tuple[Proc, int, Path]]:
    return {
        "A": start_mitmdump(world, work, f"A-{block}", with_addon=False),
        "A2": start_mitmdump(world, work, f"A2-{block}", with_addon=False),
        "E": start_mitmdump(world, work, f"E-{block}", False, HERE / "empty_script.py"),
        "B": start_mitmdump(world, work, f"B-{block}", with_addon=True),
        "C": start_mitmdump(world, work, f"C-{block}", with_addon=True, built_in=True),
    }


def proxy_benchmark(world: World, work: Path, blocks: int, rounds: int) -> list[str]:
    """Fresh mitmdump processes per block; within a block, interleaved short chunks.

    Two identical processes differ by a few per cent for their whole life (memory layout,
    hash seeds), so one process per configuration would measure that, not the addon: every
    block starts new ones, and the control A2/A shows what remains.
    """
    origin, origin_port = start_origin(world, work)
    # Each proxy connects to its own port of the cold origin, which turns through a pool
    # larger than the connections one proxy makes in its life (one block): never a repeat.
    cold = max(s.connections * s.per_connection for s in SCENARIOS if s.cold)
    cold_origin, cold_ports = start_cold_origin(
        world, work, (rounds + WARMUP_CHUNKS + 1) * cold, len(PROXIES)
    )
    results: dict[str, list[dict[str, Any]]] = {s.key: [] for s in SCENARIOS}
    try:
        for block in range(blocks):
            procs = start_proxies(world, work, block)
            try:
                for scenario in SCENARIOS:
                    results[scenario.key].append(
                        interleaved_load(
                            work,
                            cold_origin if scenario.cold else origin,
                            dict(zip(PROXIES, cold_ports, strict=True))
                            if scenario.cold
                            else {"*": origin_port},
                            procs,
                            scenario,
                            rounds,
                        )
                    )
            finally:
                for proc, _port, _ca in procs.values():
                    proc.stop()
    finally:
        origin.stop()
        cold_origin.stop()
    lines = [cold_path_check(world, work, blocks)]
    for title, key, _mode, conns, per_connection, target, _cold in SCENARIOS:
        runs = results[key]

        names = list(PROXIES)

        active = sum(total(runs, name, "wall") for name in names)
        origin_cpu = sum(run["origin_cpu"] for run in runs)
        loadgen_cpu = sum(run["loadgen_cpu"] for run in runs)
        goal_b = f" (target <= {target}: {verdict(runs, 'B', target)})" if target else ""
        goal_c = f" (target <= {target}: {verdict(runs, 'C', target)})" if target else ""
        lines += [
            f"| {title}: mitmdump CPU per request, with the addon (-s) / without (A, A2)"
            f"{goal_b} | {summary(runs, 'B', WITHOUT)} |",
            f"| {title}: the same with the addon built in / without (A, A2)"
            f"{goal_c} | {summary(runs, 'C', WITHOUT)} |",
            f"| {title}: with the addon / with an empty -s script | {summary(runs, 'B', 'E')} |",
            f"| {title}: an empty -s script / without (A, A2) | {summary(runs, 'E', WITHOUT)} |",
            f"| {title}: control, without / without (another process) | {summary(runs, 'A2', 'A')} |",
            f"| {title}: mitmdump CPU per request (µs) A / A2 / E / B / C | "
            + " / ".join(
                f"{1e6 * total(runs, n, 'cpu') / total(runs, n, 'requests'):.0f}" for n in names
            )
            + " |",
            f"| {title}: throughput while busy (req/s) A / A2 / E / B / C | "
            + " / ".join(
                f"{total(runs, n, 'requests') / total(runs, n, 'wall'):.0f}" for n in names
            )
            + " |",
            f"| {title}: CPU use while busy (cores) mitmdump A / A2 / E / B / C; origin; load "
            "generator | "
            + " / ".join(f"{total(runs, n, 'cpu') / total(runs, n, 'wall'):.2f}" for n in names)
            + f"; {origin_cpu / active:.2f}; {loadgen_cpu / active:.2f} |",
            f"| {title}: blocks x rounds x requests per chunk | "
            f"{len(runs)} x {rounds} x {conns * per_connection} |",
        ]
    return lines


# ----------------------------------------------------------------------------- micro


def best_us(func: Callable[[], object], number: int, repeat: int = 5) -> list[float]:
    return [t / number * 1e6 for t in timeit.repeat(func, number=number, repeat=repeat)]


def micro_benchmarks(world: World, work: Path, quick: bool) -> list[str]:
    lines = []
    value = 'max-age=86400, enforce, report-uri="https://r.example/ct"'
    parse = best_us(lambda: headermod.parse_expect_ct(value), 2000)
    lines.append(f"| header parse (µs) | {spread(parse)} |")

    log_list = loglistmod.LogList.from_json(json.dumps(world.log_list_json), source="bench")
    chain = [world.leaf, world.inter.cert]
    from expect_ct.cache import VerdictCache

    cold = best_us(
        lambda: policymod.evaluate(chain, log_list=log_list, issuers=[world.inter.cert]), 50
    )
    cache = VerdictCache(maxsize=4096)
    cache.get_or_evaluate(
        chain,
        tls_scts=None,
        ocsp_response=None,
        log_list=log_list,
        policy="chrome",
        issuers=[world.inter.cert],
    )
    cached = best_us(
        lambda: cache.get_or_evaluate(
            chain,
            tls_scts=None,
            ocsp_response=None,
            log_list=log_list,
            policy="chrome",
            issuers=[world.inter.cert],
        ),
        2000,
    )
    lines.append(f"| evaluate, cold, 3 embedded SCTs (µs) | {spread(cold)} |")
    lines.append(f"| evaluate, cached (µs) | {spread(cached)} |")
    lines.append(f"| cached / cold | {statistics.median(cached) / statistics.median(cold):.4f} |")

    lookups = {}
    for n in (1_000, 10_000 if quick else 1_000_000):
        path = work / f"store-{n}.sqlite3"
        store = storemod.KnownHostStore(path)
        fill_store(path, (f"host{i}.example" for i in range(n)))
        hosts = [f"host{i}.example" for i in range(0, n, max(1, n // 1000))]
        lookups[n] = best_us(looker(store, hosts), 2000)
        store.close()
        lines.append(f"| store look-up at {n:,} known hosts (µs) | {spread(lookups[n])} |")
    small, large = sorted(lookups)
    lines.append(
        f"| store look-up {large:,} / {small:,} | {statistics.median(lookups[large]) / statistics.median(lookups[small]):.2f} |"
    )
    lines += memory_benchmark(world, log_list, 2_000 if quick else 100_000)
    return lines


def fill_store(path: Path, hosts: Iterable[str], max_age: int = 86400) -> None:
    """Insert already-canonical hosts into a fresh store with plain sqlite3, in one transaction
    (the store's API applies the RFC rules one header at a time: far too slow for a million)."""
    now_ms = time.time_ns() // 1_000_000
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.executemany(
                "INSERT OR REPLACE INTO known_hosts VALUES (?, 0, NULL, ?, ?, ?)",
                ((host, now_ms + max_age * 1000, now_ms, now_ms) for host in hosts),
            )
    finally:
        conn.close()


def looker(store: storemod.KnownHostStore, hosts: list[str]) -> Callable[[], object]:
    """Look up known hosts in turn (a different key each call, as traffic would)."""
    counter = iter(range(10**12))
    return lambda: store.get(hosts[next(counter) % len(hosts)])


def memory_benchmark(world: World, log_list: loglistmod.LogList, count: int) -> list[str]:
    """The addon's caches while evaluating `count` distinct upstream certificates."""
    from expect_ct.cache import VerdictCache
    from expect_ct.chain import ChainClassifier

    cache = VerdictCache()
    classifier = ChainClassifier([world.root.cert])
    key = pki.make_leaf(world.inter)[1]
    ts = pki.now_ms() - 60_000
    checkpoints = {count // 10, count // 2, count}
    samples = []
    gc.collect()
    start = rss_mib()
    for i in range(1, count + 1):
        leaf, _ = pki.make_leaf(
            world.inter,
            hosts=(f"h{i}.example",),
            key=key,
            embedded=[(world.logs[0], ts), (world.logs[1], ts)],
        )
        chain = [leaf, world.inter.cert]
        result = classifier.classify(chain, host=f"h{i}.example")
        cache.get_or_evaluate(
            chain,
            tls_scts=None,
            ocsp_response=None,
            log_list=log_list,
            policy="chrome",
            issuers=result.validated[1:],
        )
        if i in checkpoints:
            gc.collect()
            samples.append(f"{i:,}: {rss_mib() - start:+.1f} MiB")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return [
        f"| resident memory growth after N distinct certificates (verdict cache {cache.maxsize}, chain cache {classifier.cache_info().max_size}) | {'; '.join(samples)} (peak RSS {peak:.0f} MiB) |"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--blocks", type=int, default=4, help="fresh sets of mitmdump processes (default 4)"
    )
    parser.add_argument(
        "--rounds", type=int, default=60, help="interleaved rounds per block and scenario"
    )
    parser.add_argument("--quick", action="store_true", help="tiny counts (smoke run)")
    parser.add_argument("--skip-proxy", action="store_true")
    parser.add_argument("--skip-micro", action="store_true")
    parser.add_argument("--raw", type=Path, help="write per-chunk measurements (JSON) here")
    args = parser.parse_args()
    global RAW_DIR
    if args.raw is not None:
        args.raw.mkdir(parents=True, exist_ok=True)
        RAW_DIR = args.raw
    import mitmproxy.version

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        world = World(work)
        lines = ["| measurement | median (spread) |", "|---|---|"]
        if not args.skip_proxy:
            lines += proxy_benchmark(
                world, work, 1 if args.quick else args.blocks, 3 if args.quick else args.rounds
            )
        if not args.skip_micro:
            lines += micro_benchmarks(world, work, args.quick)
    print(
        f"Python {sys.version.split()[0]}, mitmproxy {mitmproxy.version.VERSION}, {os.cpu_count()} CPUs, {datetime.date.today()}"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
