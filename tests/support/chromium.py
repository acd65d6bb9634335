"""A real headless Chromium, driven over the DevTools protocol (browser tests, screenshots).

``Chromium`` starts Debian's ``chromium`` headless with a fresh profile (and a private
``$HOME``: Chromium writes crash and dconf files there whatever ``--user-data-dir`` says),
no proxy, no QUIC, no background traffic, and a DevTools port chosen by Chromium itself
(read back from the profile's ``DevToolsActivePort``). ``page()`` connects to its tab with a
small synchronous WebSocket client (wsproto, a mitmproxy dependency): ``call`` sends one
DevTools command and waits for its answer, ``evaluate`` runs JavaScript in the page,
``wait_for`` polls an expression until it is truthy, ``screenshot`` returns PNG bytes.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from wsproto import ConnectionType
from wsproto import WSConnection
from wsproto.events import AcceptConnection
from wsproto.events import CloseConnection
from wsproto.events import Ping
from wsproto.events import RejectConnection
from wsproto.events import Request
from wsproto.events import TextMessage

from support import stop_process

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
)
START_DEADLINE = 30.0


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


class DevToolsError(Exception):
    """A DevTools command answered with an error, or the page never got where expected."""


class Page:
    """One tab, over its DevTools WebSocket."""

    def __init__(self, ws_url: str, timeout: float = 30.0) -> None:
        url = urllib.parse.urlsplit(ws_url)
        assert url.hostname is not None and url.port is not None
        self.sock = socket.create_connection((url.hostname, url.port), timeout=timeout)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host=url.netloc, target=url.path)))
        self.next_id = 0
        self.pending: list[str] = []
        self.partial = ""
        self.accepted = False
        while not self.accepted:
            self._receive()

    def _receive(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise DevToolsError("DevTools connection closed")
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.accepted = True
            elif isinstance(event, RejectConnection):
                raise DevToolsError(f"DevTools refused the WebSocket: {event.status_code}")
            elif isinstance(event, TextMessage):
                # A long message (a screenshot) arrives in several parts.
                self.partial += event.data
                if event.message_finished:
                    self.pending.append(self.partial)
                    self.partial = ""
            elif isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                raise DevToolsError("DevTools closed the WebSocket")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        ident = self.next_id
        message = json.dumps({"id": ident, "method": method, "params": params})
        self.sock.sendall(self.ws.send(TextMessage(data=message)))
        while True:
            while self.pending:
                answer = json.loads(self.pending.pop(0))
                if answer.get("id") == ident:
                    if "error" in answer:
                        raise DevToolsError(f"{method}: {answer['error']}")
                    return dict(answer.get("result", {}))
            self._receive()

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression[:80]!r} threw: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, *, what: str, deadline: float = 20.0) -> Any:
        end = time.monotonic() + deadline
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > end:
                text = self.evaluate("document.body ? document.body.innerText : ''")
                raise DevToolsError(f"the page never showed {what}; it shows:\n{text[:3000]}")
            time.sleep(0.1)

    def navigate(self, url: str) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        self.sock.close()


class Chromium:
    """A headless Chromium process; use as a context manager."""

    def __init__(self, executable: str, workdir: Path, window: tuple[int, int] = (1400, 900)):
        self.executable = executable
        self.profile = workdir / "chromium-profile"
        self.home = workdir / "chromium-home"
        self.window = window
        self.output = workdir / "chromium.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def __enter__(self) -> Chromium:
        self.profile.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env.update(
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            XDG_CACHE_HOME=str(self.home / ".cache"),
        )
        command = [
            self.executable,
            *FLAGS,
            f"--user-data-dir={self.profile}",
            f"--window-size={self.window[0]},{self.window[1]}",
            "about:blank",
        ]
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        active = self.profile / "DevToolsActivePort"
        end = time.monotonic() + START_DEADLINE
        while time.monotonic() < end:
            if active.exists() and (lines := active.read_text().split()):
                self.port = int(lines[0])
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited: {self.output.read_text(errors='replace')}")
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError(f"chromium did not start: {self.output.read_text(errors='replace')}")

    def page(self) -> Page:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as r:
            targets = json.load(r)
        (tab,) = [t for t in targets if t.get("type") == "page"][:1]
        return Page(tab["webSocketDebuggerUrl"])

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None
