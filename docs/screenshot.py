"""Reproduce docs/screenshot-mitmweb.png: mitmweb showing the demo's blocked flow and its verdict.

A manual step, not part of `make test` or CI. It needs mitmproxy 12 (whose mitmweb can show a
comment column; the py312 virtualenv has it) and a Chromium for the headless screenshot
(Debian: `apt-get install chromium`):

    .venv/py312/bin/python docs/screenshot.py [--out docs/screenshot-mitmweb.png] [--chromium PATH]

It runs the demo's sites and traffic (demo/demo.py) through a real mitmweb with the addon,
asks mitmweb's /flows API for the flow marked :no_entry:, and has headless Chromium capture
the web UI (with a comment column) with that flow selected on its Comment tab: the verdict
the addon wrote. Everything else it writes goes to a temporary directory that is removed at
the end; every process it starts is stopped, Ctrl-C included. The ⛔ marker needs an emoji
font (Debian: `apt-get install fonts-noto-color-emoji`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.dont_write_bytecode = True
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "demo"))

import demo  # noqa: E402 - demo/demo.py, which also puts tests/ on sys.path

from support import proxy as proxymod  # noqa: E402

COLUMNS = ("tls", "icon", "path", "method", "status", "comment")  # the default ones + comment
WINDOW = (1400, 440)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mitmweb_command(base: list[str], proxy_port: int, web_port: int) -> list[str]:
    """The mitmdump command of tests/support/proxy.py, as mitmweb on fixed ports."""
    args = list(base[1:])
    args[args.index("-p") + 1] = str(proxy_port)
    command = [str(Path(sys.executable).parent / "mitmweb"), *args]
    command += ["--web-host", "127.0.0.1", "--web-port", str(web_port), "--no-web-open-browser"]
    for column in COLUMNS:
        command += ["--set", f"web_columns={column}"]
    return command


def wait_for_web_url(output: Path, process: subprocess.Popen[bytes], web_port: int) -> str:
    """mitmweb's UI address, with the token mitmproxy 12 prints (none before 12)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = output.read_text(errors="replace")
        if match := re.search(r"Web server listening at (http://\S+)", text):
            return match.group(1)
        if process.poll() is not None:
            raise RuntimeError(f"mitmweb exited with {process.returncode}:\n{text}")
        time.sleep(0.1)
    if "listening at" in output.read_text(errors="replace"):
        return f"http://127.0.0.1:{web_port}/"
    raise RuntimeError(f"mitmweb did not start:\n{output.read_text(errors='replace')}")


def blocked_flow(web_url: str) -> dict[str, Any]:
    base, _, query = web_url.partition("?")
    with urllib.request.urlopen(f"{base.rstrip('/')}/flows?{query}", timeout=10) as answer:
        flows = json.load(answer)
    for flow in flows:
        # The API sends the marker as the emoji itself: ⛔ for :no_entry:.
        if flow.get("marked") in (":no_entry:", "\N{NO ENTRY}"):
            return dict(flow)
    raise RuntimeError(f"no blocked flow in mitmweb: {[f.get('comment') for f in flows]}")


def screenshot(chromium: str, url: str, out: Path, profile: Path) -> None:
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--virtual-time-budget=5000",  # let the UI fetch and render the flows first
        f"--screenshot={out}",
        url,
    ]
    # Chromium writes crash-report and dconf files under $HOME whatever --user-data-dir says.
    home = profile / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = demo.child_environment()
    env.update(
        HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache")
    )
    subprocess.run(command, check=True, capture_output=True, timeout=120, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot-mitmweb.png")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--tab", default="comment", help="flow detail tab to show")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="expect-ct-screenshot-"))
    try:
        files = demo.make_pki(workdir / "pki")
        with demo.run_servers(files) as servers, contextlib.ExitStack() as stack:
            base = proxymod.Mitmdump(
                workdir / "mitmweb",
                demo.proxy_options(files, workdir),
                resolve=servers.resolve(),
            )
            proxy_port, web_port = free_port(), free_port()
            output = workdir / "mitmweb.log"
            with output.open("wb") as out:
                process = subprocess.Popen(
                    mitmweb_command(base.command(), proxy_port, web_port),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=demo.child_environment(),
                )
            stack.callback(stop, process)
            web_url = wait_for_web_url(output, process, web_port)
            deadline = time.monotonic() + 30
            while not base.ca_cert.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            demo.send_demo_traffic(servers, proxy_port, base.ca_cert)
            flow = blocked_flow(web_url)
            url = f"{web_url}#/flows/{flow['id']}/{args.tab}"
            screenshot(args.chromium, url, args.out, workdir / "chromium-profile")
        print(f"{args.out}: {args.out.stat().st_size} bytes; flow {flow['id']}: {flow['comment']}")
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


if __name__ == "__main__":
    sys.exit(main())
