"""How much does the addon cost? Ratios measured side by side in one run.

    python benchmarks/bench.py [--rounds 5] [--quick]

Proxy benchmarks: two mitmdump processes run at once on 127.0.0.1, A without the addon and
B with it (default options: blocking on, JSON-lines log on, a store file). The same load is
sent to A, then B, then A ... and each run's mitmdump CPU seconds (utime + stime from
/proc) are divided by the requests served. Reported: medians of the per-round B/A ratios
with their min-max spread, plus each side's throughput, and the CPU the origin and the load
generator used, to show they were not the bottleneck.

Micro benchmarks (in-process): header parse, cold and cached evaluation of a chain with 3
embedded SCTs, store look-ups at 1,000 and 1,000,000 known hosts, and the addon's resident
memory while evaluating 100,000 distinct certificates.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "addon")]

import pki  # noqa: E402
from expect_ct import header as headermod  # noqa: E402
from expect_ct import loglist as loglistmod  # noqa: E402
from expect_ct import policy as policymod  # noqa: E402
from expect_ct import store as storemod  # noqa: E402

BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")
UTC = datetime.UTC


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


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
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
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


def start_mitmdump(
    world: World, work: Path, name: str, with_addon: bool, script: Path | None = None
) -> tuple[Proc, int, Path]:
    confdir = work / f"conf-{name}"
    args = [
        str(BIN / "mitmdump"),
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
    if with_addon:
        args += [
            "-s",
            str(REPO / "addon" / "expect_ct_addon.py"),
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


def run_load(
    proxy_port: int, ca: Path, origin_port: int, mode: str, connections: int, requests: int
) -> tuple[dict[str, Any], float]:
    before = time.perf_counter()
    start_children = os.times()
    done = subprocess.run(
        [
            sys.executable,
            str(HERE / "servers.py"),
            "load",
            str(proxy_port),
            str(ca),
            f"https://localhost:{origin_port}/",
            mode,
            str(connections),
            str(requests),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=pin(HELPER_CORES),
    )
    end_children = os.times()
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    result = json.loads(done.stdout)
    result["wall"] = time.perf_counter() - before
    loadgen_cpu = (end_children.children_user - start_children.children_user) + (
        end_children.children_system - start_children.children_system
    )
    return result, loadgen_cpu


def proxy_benchmark(world: World, work: Path, rounds: int, quick: bool) -> list[str]:
    """A: mitmdump alone; E: with an empty -s script; B: with the addon. Same load, rotating order."""
    origin, origin_port = start_origin(world, work)
    procs = {
        "A": start_mitmdump(world, work, "A-without", with_addon=False),
        "E": start_mitmdump(world, work, "E-empty", False, HERE / "empty_script.py"),
        "B": start_mitmdump(world, work, "B-with", with_addon=True),
    }
    lines = []
    try:
        scenarios = [
            ("keep-alive", "keepalive", 8, 400 if quick else 2400),
            ("new connection per request", "new", 8, 80 if quick else 480),
        ]
        for title, mode, conns, reqs in scenarios:
            for _proc, port, ca in procs.values():  # warm-up: imports, caches, first handshake
                run_load(port, ca, origin_port, mode, conns, conns * 4)
            ratio_a: list[float] = []
            ratio_e: list[float] = []
            tput: dict[str, list[float]] = {name: [] for name in procs}
            cores: dict[str, list[float]] = {name: [] for name in procs}
            origin_share: list[float] = []
            loadgen_share: list[float] = []
            names = list(procs)
            for round_number in range(rounds):
                per_request = {}
                # Rotate the order each round: no side always runs first (drift cancels out).
                shift = round_number % len(names)
                for name in names[shift:] + names[:shift]:
                    proc, port, ca = procs[name]
                    o0, p0 = cpu_seconds(origin.p.pid), cpu_seconds(proc.p.pid)
                    result, loadgen_cpu = run_load(port, ca, origin_port, mode, conns, reqs)
                    o1, p1 = cpu_seconds(origin.p.pid), cpu_seconds(proc.p.pid)
                    if result["errors"]:
                        raise RuntimeError(f"{name}: {result['errors']} errors in {title}")
                    per_request[name] = (p1 - p0) / result["requests"]
                    tput[name].append(result["requests"] / result["seconds"])
                    cores[name].append((p1 - p0) / result["wall"])
                    origin_share.append((o1 - o0) / result["wall"])
                    loadgen_share.append(loadgen_cpu / result["wall"])
                ratio_a.append(per_request["B"] / per_request["A"])
                ratio_e.append(per_request["B"] / per_request["E"])
            median = {name: statistics.median(values) for name, values in tput.items()}
            lines += [
                f"| {title}: mitmdump CPU per request, with/without addon | {spread(ratio_a)} |",
                f"| {title}: same, with addon / with an empty script | {spread(ratio_e)} |",
                f"| {title}: throughput req/s without / empty script / with | "
                f"{median['A']:.0f} / {median['E']:.0f} / {median['B']:.0f} |",
                f"| {title}: CPU use (cores) mitmdump A / E / B, origin, load generator | "
                + " / ".join(f"{statistics.median(cores[n]):.2f}" for n in names)
                + f", {statistics.median(origin_share):.2f}, {statistics.median(loadgen_share):.2f} |",
            ]
    finally:
        for proc, _port, _ca in procs.values():
            proc.stop()
        origin.stop()
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
        storemod._bulk_insert_for_benchmarks(store, (f"host{i}.example" for i in range(n)))
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
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny counts (smoke run)")
    parser.add_argument("--skip-proxy", action="store_true")
    parser.add_argument("--skip-micro", action="store_true")
    args = parser.parse_args()
    import mitmproxy.version

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        world = World(work)
        lines = ["| measurement | median (spread) |", "|---|---|"]
        if not args.skip_proxy:
            lines += proxy_benchmark(world, work, args.rounds if not args.quick else 2, args.quick)
        if not args.skip_micro:
            lines += micro_benchmarks(world, work, args.quick)
    print(
        f"Python {sys.version.split()[0]}, mitmproxy {mitmproxy.version.VERSION}, {os.cpu_count()} CPUs, {datetime.date.today()}"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
