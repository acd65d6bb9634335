"""Faults through a real mitmdump: the behaviour README.md ("Failure behaviour") defines.

Real files, a real (size-limited) file system where this sandbox lets us mount one, real
traffic through the proxy with curl. Faults in our own code are injected with the test-only
script tests/support/scripts/faults.py, which also changes options at runtime as a user would.
"""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from expect_ct.store import KnownHostStore
from support import pki
from support.httpsorigin import Origin
from support.httpsorigin import https_origin
from support.proxy import REPO
from support.proxy import Mitmdump
from support.world import World
from support.world import proxy_options

FAULTS_SCRIPT = REPO / "tests" / "support" / "scripts" / "faults.py"
HEADER = "max-age=86400, enforce"
ROUTES = {"/": [("Expect-CT", HEADER)]}


@dataclass(frozen=True)
class Sites:
    compliant: tuple[Path, Path]  # chain, key: two embedded SCTs, every *.fault.test name
    non_compliant: tuple[Path, Path]


@pytest.fixture(scope="module")
def sites(world: World, tmp_path_factory: pytest.TempPathFactory) -> Sites:
    base = tmp_path_factory.mktemp("fault-sites")
    ts = pki.now_ms() - 60_000
    files = []
    for name, embedded in (("good", [(world.log_a, ts), (world.log_b, ts)]), ("bad", [])):
        cert, key = pki.make_leaf(world.public_inter, hosts=("*.fault.test",), embedded=embedded)
        chain, keyfile = base / f"{name}.pem", base / f"{name}.key"
        chain.write_bytes(pki.pem(cert, world.public_inter.cert))
        keyfile.write_bytes(pki.key_pem(key))
        files.append((chain, keyfile))
    return Sites(*files)


@pytest.fixture(scope="module")
def origin(sites: Sites) -> Iterator[Origin]:
    with https_origin(*sites.compliant, ROUTES) as served:
        yield served


def preload(path: Path, *hosts: str) -> Path:
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)
    path.write_text(
        json.dumps(
            [
                {"host": h, "enforce": True, "report_uri": None, "expires": expires.isoformat()}
                for h in hosts
            ]
        )
    )
    return path


def url(host: str, origin: Origin) -> str:
    return f"https://{host}:{origin.port}/"


def count(text: str, needle: str) -> int:
    return text.count(needle)


# ------------------------------------------------------------------------ log list


def test_corrupt_log_list_at_startup_exits_naming_the_file(world: World, tmp_path: Path) -> None:
    garbage = tmp_path / "log-list.json"
    garbage.write_text('{"version": "1", "operators": [')
    proxy = Mitmdump(tmp_path, proxy_options(world, expect_ct_log_list=str(garbage)))
    done = subprocess.run(
        proxy.command(), capture_output=True, stdin=subprocess.DEVNULL, timeout=60
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode != 0
    assert f"Cannot load expect_ct_log_list {garbage}" in output
    assert "not valid JSON" in output


# -------------------------------------------- an exception in our code, options at runtime


def test_injected_fault_fails_closed_only_for_known_enforce_hosts(
    world: World, sites: Sites, origin: Origin, tmp_path: Path
) -> None:
    with https_origin(*sites.compliant, ROUTES) as protected:
        options = proxy_options(
            world,
            expect_ct_store=str(tmp_path / "store.sqlite3"),
            expect_ct_preload=str(preload(tmp_path / "preload.json", "known.fault.test")),
            test_fault_evaluate=True,
        )
        resolve = {"other.fault.test": origin.port, "known.fault.test": protected.port}
        with Mitmdump(
            tmp_path, options, resolve=resolve, extra_args=["-s", str(FAULTS_SCRIPT)]
        ) as proxy:

            def control(**changes: str) -> tuple[int, str]:
                query = urllib.parse.urlencode(changes)
                response = proxy.curl(f"http://control.test/set?{query}")
                return response.status, response.body.decode()

            for _ in range(3):
                assert proxy.curl(url("other.fault.test", origin)).status == 200
                refused = proxy.curl(f"https://known.fault.test:{protected.port}/")
                assert refused.status != 200
            assert protected.requests == []  # not one request reached the protected origin
            log = proxy.log_text()
            # Nine connections failed to evaluate: one error with its traceback.
            assert count(log, "Expect-CT: internal error") == 1, log
            assert count(log, "RuntimeError: injected evaluation fault") >= 1
            assert "Traceback" in log
            assert count(log, "blocked known.fault.test:") >= 3

            # The fault is gone: the known host's compliant connection is served again.
            assert control(test_fault_evaluate="false")[0] == 200
            assert proxy.curl(f"https://known.fault.test:{protected.port}/").status == 200
            assert protected.requests == [("GET", "/")]

            # A log list replaced by garbage at runtime: refused, the old one stays in force.
            garbage = tmp_path / "garbage.json"
            garbage.write_bytes(b"\x00\x01 not a log list")
            status, text = control(expect_ct_log_list=str(garbage))
            assert status == 400
            assert f"Cannot load expect_ct_log_list {garbage}" in text
            # (other.fault.test has no connection event yet: its evaluations all failed.)
            assert proxy.curl(url("other.fault.test", origin)).status == 200
            event = proxy.wait_for_event("connection", lambda r: r["host"] == "other.fault.test")
            assert event["compliant"] is True


# ----------------------------------------------------------- a full or read-only disk


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs: the most real full disk. Skipped where mount is not permitted."""
    mountpoint = tmp_path / "small-fs"
    mountpoint.mkdir()
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("no mount command")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mountpoint)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], capture_output=True)
        if subprocess.run(["mountpoint", "-q", str(mountpoint)]).returncode == 0:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        except OSError:
            pass
        try:
            f.close()
        except OSError:
            pass
    return filler


def test_full_then_read_only_disk(
    world: World, origin: Origin, small_fs: Path, tmp_path: Path
) -> None:
    store = small_fs / "store.sqlite3"
    options = proxy_options(world, expect_ct_store=str(store))
    hosts = ["a", "b", "c", "d"]
    resolve = {f"{h}.fault.test": origin.port for h in hosts}
    with Mitmdump(tmp_path / "full", options, resolve=resolve) as proxy:

        def header(host: str) -> dict:
            assert proxy.curl(url(host, origin)).status == 200
            return proxy.wait_for_event("header", lambda r: r["host"] == host)

        assert header("a.fault.test")["action"] == "noted"
        filler = fill(small_fs)
        for host in ("b.fault.test", "c.fault.test"):
            event = header(host)
            assert event["action"] == "ignored"
            assert event["why"] == "store write failed: database or disk is full"
        assert count(proxy.log_text(), "cannot write: database or disk is full") == 1
        filler.unlink()
        assert header("d.fault.test")["action"] == "noted"
    with KnownHostStore(store) as after:
        assert after.integrity_check() == "ok"
        assert [h.host for h in after.hosts()] == ["a.fault.test", "d.fault.test"]
    # A store on a read-only file system at start-up: mitmdump refuses to start, naming it.
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    proxy = Mitmdump(tmp_path / "ro", options)
    done = subprocess.run(
        proxy.command(), capture_output=True, stdin=subprocess.DEVNULL, timeout=60
    )
    assert done.returncode != 0
    assert f"cannot open the Expect-CT store {store}" in done.stdout.decode(errors="replace")


# ----------------------------------------------------------- the store file deleted


def test_store_deleted_while_running_is_recreated(
    world: World, origin: Origin, tmp_path: Path
) -> None:
    store = tmp_path / "store" / "known.sqlite3"
    store.parent.mkdir()  # a store path you give must be in a directory that exists (issue 14)
    resolve = {f"{h}.fault.test": origin.port for h in ("before", "after")}
    options = proxy_options(world, expect_ct_store=str(store))
    with Mitmdump(tmp_path, options, resolve=resolve) as proxy:
        assert proxy.curl(url("before.fault.test", origin)).status == 200
        proxy.wait_for_event("header", lambda r: r["host"] == "before.fault.test")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{store}{suffix}").unlink(missing_ok=True)
        assert proxy.curl(url("after.fault.test", origin)).status == 200
        event = proxy.wait_for_event("header", lambda r: r["host"] == "after.fault.test")
        assert event["action"] == "noted"
        assert count(proxy.log_text(), f"the store {store} was deleted while mitmproxy ran") == 1
    with KnownHostStore(store) as after:
        assert [h.host for h in after.hosts()] == ["after.fault.test"]
