"""End to end: the product started exactly as README starts it, by a new user.

Each way README gives (``make run``, ``python -m expect_ct mitmdump|mitmweb|mitmproxy``,
``mitmdump -s addon/expect_ct_addon.py``, ``scripts:`` in ``~/.mitmproxy/config.yaml``) runs
with HOME set to an empty directory and no confdir option, so the addon uses its defaults: the
store is ``~/.mitmproxy/expect-ct.sqlite3``. The test PKI is trusted the way a user would set
it up, in ``~/.mitmproxy/config.yaml`` (the README-documented options), never with --set, so the
command itself stays exactly as README shows it. Names reach the origins on 127.0.0.1 through
``curl --connect-to`` (curl sends CONNECT to the given address, SNI and Host stay the name).

For each: a connection is evaluated, an ``Expect-CT: max-age=..., enforce`` host is noted in
the default store, and an impostor for it (same name, a publicly trusted chain without SCTs)
is refused before any request reaches it.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from expect_ct.store import KnownHostStore
from support import REPO
from support import pki
from support.httpsorigin import Origin
from support.httpsorigin import https_origin
from support.world import World

HOST = "launch.test"
ROUTES = {"/enforce": [("Expect-CT", "max-age=86400, enforce")], "/": []}
BIN = Path(sys.executable).parent
STARTUP_DEADLINE = 60.0


@dataclass(frozen=True)
class Origins:
    compliant: Origin  # public root, 2 embedded SCTs, sends Expect-CT enforce
    impostor: Origin  # public root, no SCTs: what a mis-issued certificate looks like


@pytest.fixture(scope="module")
def origins(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origins]:
    base = tmp_path_factory.mktemp("launch-sites")
    ts = pki.now_ms() - 60_000
    files = []
    for name, embedded in (
        ("good", [(world.log_a, ts), (world.log_b, ts + 1)]),
        ("impostor", []),
    ):
        cert, key = pki.make_leaf(world.public_inter, hosts=(HOST,), embedded=embedded)
        chain, keyfile = base / f"{name}.chain.pem", base / f"{name}.key.pem"
        chain.write_bytes(pki.pem(cert, world.public_inter.cert))
        keyfile.write_bytes(pki.key_pem(key))
        files.append((chain, keyfile))
    with https_origin(*files[0], ROUTES) as good, https_origin(*files[1], ROUTES) as bad:
        yield Origins(good, bad)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(home: Path, world: World, **settings: Any) -> Path:
    """``~/.mitmproxy/config.yaml`` as a user writes it (JSON is valid YAML)."""
    confdir = home / ".mitmproxy"
    confdir.mkdir(parents=True, exist_ok=True)
    config = {
        "listen_host": "127.0.0.1",
        # Trust the test world's PKI, as README says to for a lab.
        "ssl_verify_upstream_trusted_ca": str(world.upstream_trust_pem),
        "expect_ct_public_roots": str(world.public_roots_pem),
        "expect_ct_log_list": str(world.log_list),
        **settings,
    }
    (confdir / "config.yaml").write_text(
        "".join(f"{key}: {json.dumps(value)}\n" for key, value in config.items())
    )
    return confdir


def user_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(HOME=str(home), TERM="xterm-256color", LANG="C.UTF-8", LC_ALL="C.UTF-8")
    # `python` and `mitmdump` as the user's activated virtualenv provides them.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MAKEFLAGS", None)
    return env


@dataclass(frozen=True)
class Launch:
    """One way README starts the product: its exact command, and what config.yaml adds."""

    command: tuple[str, ...]
    config: dict[str, Any]
    console: bool = False  # the mitmproxy console UI: needs a terminal


def launch(way: str, port: int) -> Launch:
    script = str(REPO / "addon" / "expect_ct_addon.py")
    if way == "make run":
        # The Makefile's own -p $(PORT) wins over config.yaml: README documents PORT=.
        return Launch(("make", "--no-print-directory", "run", f"PORT={port}"), {})
    if way == "mitmdump -s":
        return Launch(("mitmdump", "-s", "addon/expect_ct_addon.py"), {"listen_port": port})
    if way == "config.yaml scripts":
        return Launch(("mitmdump",), {"listen_port": port, "scripts": [script]})
    tool = way.split()[-1]
    config: dict[str, Any] = {"listen_port": port}
    if tool == "mitmweb":
        config.update(web_host="127.0.0.1", web_port=free_port(), web_open_browser=False)
    return Launch(("python", "-m", "expect_ct", tool), config, console=tool == "mitmproxy")


@contextmanager
def started(launched: Launch, home: Path, output: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run the command from the repository's root until the proxy accepts connections."""
    command: Sequence[str] = launched.command
    if launched.console:
        # A pseudo-terminal for the console UI, headless: script(1) runs it, output to a file.
        # Its terminal has no size until stty gives it one (urwid cannot draw 0 columns).
        command = ["script", "-qfec", f"stty cols 120 rows 40; {shlex.join(command)}", str(output)]
    with output.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=user_env(home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if launched.console else out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # make and script(1) have children: stop the whole group
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


def wait_listening(process: subprocess.Popen[bytes], port: int, output: Path) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}:\n{read(output)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"never listened on {port}:\n{read(output)}")


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def fetch(proxy_port: int, ca: Path, origin: Origin, path: str) -> tuple[int, str]:
    """A real curl through the proxy to https://launch.test{path}, the name sent to ``origin``."""
    done = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "20",
            "--noproxy",
            "",
            "--proxy",
            f"http://127.0.0.1:{proxy_port}",
            "--cacert",
            str(ca),
            "--connect-to",
            f"{HOST}:443:127.0.0.1:{origin.port}",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            f"https://{HOST}{path}",
        ],
        capture_output=True,
        timeout=30,
    )
    return int(done.stdout or b"0"), done.stderr.decode(errors="replace")


def events(path: Path, kind: str) -> list[dict[str, Any]]:
    text = read(path)
    complete = text[: text.rfind("\n") + 1]
    return [r for r in map(json.loads, complete.splitlines()) if r["event"] == kind]


def wait_for(path: Path, kind: str, deadline: float = 15.0) -> dict[str, Any]:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        found = [e for e in events(path, kind) if e.get("host") == HOST]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no {kind} event for {HOST} in {read(path)!r}")


LAUNCHES = [
    "make run",
    "python -m expect_ct mitmdump",
    "python -m expect_ct mitmweb",
    "python -m expect_ct mitmproxy",
    "mitmdump -s",
    "config.yaml scripts",
]


@pytest.mark.parametrize("way", LAUNCHES)
def test_launched_as_readme_says_notes_and_enforces(
    world: World, origins: Origins, tmp_path: Path, way: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    launched = launch(way, port)
    event_log = tmp_path / "events.jsonl"
    confdir = write_config(home, world, expect_ct_log=str(event_log), **launched.config)
    output = tmp_path / "output.log"
    with started(launched, home, output) as process:
        wait_listening(process, port, output)
        ca = confdir / "mitmproxy-ca-cert.pem"

        status, stderr = fetch(port, ca, origins.compliant, "/enforce")
        assert status == 200, (stderr, read(output))
        connection = wait_for(event_log, "connection")
        assert connection["compliant"] is True, connection
        assert wait_for(event_log, "header")["action"] == "noted"
        # The default store, under the default confdir of the empty HOME.
        with KnownHostStore(confdir / "expect-ct.sqlite3") as store:
            known = store.get(HOST)
        assert known is not None and known.enforce

        requests_before = list(origins.impostor.requests)
        status, stderr = fetch(port, ca, origins.impostor, "/secret")
        assert status == 502, (stderr, read(output))
        blocked = wait_for(event_log, "blocked")
        assert "Known Expect-CT Host with enforce" in blocked["reason"]
        assert origins.impostor.requests == requests_before  # refused before any request
        assert process.poll() is None


# ------------------------------------------------------- bad options: one line, exit non-zero

SCRIPT_LAUNCH = ("mitmdump", "-s", "addon/expect_ct_addon.py")
BUILT_IN_LAUNCH = ("python", "-m", "expect_ct", "mitmdump")


def run_failing(home: Path, world: World, command: Sequence[str]) -> str:
    write_config(home, world, listen_port=0)
    done = subprocess.run(
        command,
        cwd=REPO,
        env=user_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
    )
    text = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode != 0, text
    assert "Traceback" not in text and "error in script" not in text, text
    return text


def naming(text: str, option: str) -> list[str]:
    return [line for line in text.splitlines() if option in line]


@pytest.mark.parametrize("launcher", [SCRIPT_LAUNCH, BUILT_IN_LAUNCH], ids=["-s", "built-in"])
def test_a_file_that_is_not_a_store_is_one_line_and_a_failed_start(
    world: World, tmp_path: Path, launcher: tuple[str, ...]
) -> None:
    not_a_store = tmp_path / "notes.txt"
    not_a_store.write_text("shopping list\n" * 1000)
    text = run_failing(
        tmp_path / "home", world, [*launcher, "--set", f"expect_ct_store={not_a_store}"]
    )
    lines = naming(text, "expect_ct_store")
    assert len(lines) == 1 and str(not_a_store) in lines[0], text
    assert not_a_store.read_text() == "shopping list\n" * 1000  # untouched


@pytest.mark.parametrize("launcher", [SCRIPT_LAUNCH, BUILT_IN_LAUNCH], ids=["-s", "built-in"])
def test_a_store_in_a_missing_directory_is_an_option_error(
    world: World, tmp_path: Path, launcher: tuple[str, ...]
) -> None:
    missing = tmp_path / "no-such-dir" / "known.sqlite3"
    text = run_failing(tmp_path / "home", world, [*launcher, "--set", f"expect_ct_store={missing}"])
    lines = naming(text, "expect_ct_store")
    assert len(lines) == 1 and "does not exist" in lines[0], text
    assert not missing.parent.exists()  # not created behind the user's back


@pytest.mark.parametrize("launcher", [SCRIPT_LAUNCH, BUILT_IN_LAUNCH], ids=["-s", "built-in"])
def test_a_bad_choice_is_one_line_and_a_failed_start(
    world: World, tmp_path: Path, launcher: tuple[str, ...]
) -> None:
    text = run_failing(tmp_path / "home", world, [*launcher, "--set", "expect_ct_enforce=bogus"])
    lines = naming(text, "expect_ct_enforce")
    assert len(lines) == 1 and "'bogus'" in lines[0], text


def test_make_run_passes_args_on_to_mitmdump(world: World, tmp_path: Path) -> None:
    text = run_failing(
        tmp_path / "home",
        world,
        ["make", "--no-print-directory", "run", "PORT=0", "ARGS=--set expect_ct_enforce=bogus"],
    )
    # make echoes its command (which names the option too); the addon's one line says why.
    lines = [line for line in text.splitlines() if "expect_ct_enforce must be one of" in line]
    assert len(lines) == 1 and "'bogus'" in lines[0], text
