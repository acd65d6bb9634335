"""A real mitmweb with the addon, and its REST API (end-to-end tests, docs/screenshot.py).

``Mitmweb`` is ``Mitmdump`` (same options, script, resolver and curl) started as mitmweb on
127.0.0.1 with a free web port and no browser. It reads the web UI's address from mitmweb's
start-up line, which on mitmproxy 12 carries the auth token (``?token=...``; every request
needs it, as ``Authorization: Bearer``); mitmproxy 11 has no authentication. The API:

* ``flows()``: ``GET /flows``; ``dump(filter)``: ``GET /flows/dump?filter=...``;
* ``content_view(flow_id, view)``: ``GET /flows/<id>/response/content/<view>.json``, as text
  (11 answers ``{"lines": [[[style, text], ...], ...]}``, 12 ``{"text": ...}``);
* ``run_command(name, *arguments)``: ``POST /commands/<name>`` (names match ``[a-z.]+``), with
  the XSRF cookie and header mitmweb wants; the command's return value, or CommandFailed.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import ClassVar

from support import pki
from support.origins import http_response
from support.origins import openssl_origin
from support.proxy import BIN
from support.proxy import Mitmdump
from support.world import World

MITMWEB = str(BIN / "mitmweb")
# Any client-made value works, as long as cookie and header agree. The cookie's name is
# "_xsrf" on mitmproxy 11 and "_mitmproxy_xsrf" on 12: send both.
XSRF = "expect-ct-tests"
XSRF_COOKIES = ("_xsrf", "_mitmproxy_xsrf")


class CommandFailed(Exception):
    """mitmweb answered a command with ``{"error": ...}``."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Mitmweb(Mitmdump):
    program: ClassVar[str] = "mitmweb"
    web_port: int = 0
    web_url: str = ""  # the UI's address as mitmweb printed it (with ?token= on 12)
    token: str | None = None

    def command(self) -> list[str]:
        args = super().command()
        if not self.built_in:
            args[0] = MITMWEB
        if not self.web_port:
            self.web_port = free_port()
        return [
            *args,
            "--web-host",
            "127.0.0.1",
            "--web-port",
            str(self.web_port),
            "--no-web-open-browser",
        ]

    def start(self) -> Mitmweb:
        if self.built_in:
            self.tool = "mitmweb"
        super().start()
        return self

    def started(self, output: str) -> bool:
        proxy = re.search(r"proxy listening at \S*:(\d+)", output)
        web = re.search(r"Web server listening at (http://\S+)", output)
        if not (proxy and web):
            return False
        self.port = int(proxy.group(1))
        self.web_url = web.group(1)
        query = urllib.parse.urlsplit(self.web_url).query
        self.token = urllib.parse.parse_qs(query).get("token", [None])[0]
        return True

    def __enter__(self) -> Mitmweb:
        return self.start()

    # ------------------------------------------------------------------------ REST API

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def ui_url(self, fragment: str = "") -> str:
        """The web UI (with the token on 12), e.g. ``ui_url("/flows/<id>/response")``."""
        query = f"?token={self.token}" if self.token else ""
        return f"{self.base}/{query}" + (f"#{fragment}" if fragment else "")

    def request(self, method: str, path: str, body: Any = None, *, raw: bool = False) -> Any:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if method != "GET":
            headers["X-XSRFToken"] = XSRF
            headers["Cookie"] = "; ".join(f"{name}={XSRF}" for name in XSRF_COOKIES)
        call = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(call, timeout=15) as answer:
                payload = answer.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            raise AssertionError(f"{method} {path}: HTTP {e.code}: {detail}") from None
        if raw:
            return payload
        return json.loads(payload) if payload else None

    def flows(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/flows"))

    def dump(self, flow_filter: str) -> bytes:
        """``GET /flows/dump?filter=...``: the matching flows as a .mitm file (filtered by
        mitmproxy itself, on 11 and 12 alike)."""
        query = urllib.parse.urlencode({"filter": flow_filter})
        return bytes(self.request("GET", f"/flows/dump?{query}", raw=True))

    def wait_for_flows(self, count: int, deadline: float = 10.0) -> list[dict[str, Any]]:
        end = time.monotonic() + deadline
        while True:
            flows = [f for f in self.flows() if f.get("response") or f.get("error")]
            if len(flows) >= count or time.monotonic() > end:
                return flows
            time.sleep(0.05)

    def content_view(self, flow_id: str, view: str, message: str = "response") -> str:
        """The contentview's text; 11's styled lines joined, 12's text as it is."""
        name = urllib.parse.quote(view, safe="")
        answer = self.request("GET", f"/flows/{flow_id}/{message}/content/{name}.json")
        if "text" in answer:
            return str(answer["text"])
        return "\n".join("".join(text for _style, text in line) for line in answer["lines"])

    def run_command(self, name: str, *arguments: str) -> Any:
        """Run a mitmproxy command through mitmweb's REST route; its JSON return value."""
        if not re.fullmatch(r"[a-z.]+", name):
            raise ValueError(f"mitmweb's /commands route only takes [a-z.]+ names, not {name!r}")
        answer = self.request("POST", f"/commands/{name}", {"arguments": list(arguments)})
        if "error" in answer:
            raise CommandFailed(f"{name}: {answer['error']}")
        return answer.get("value")


@contextlib.contextmanager
def all_three_origin(world: World, tmp_path: Path, tls: str = "1.3") -> Iterator[int]:
    """An origin serving a leaf with 2 embedded SCTs, a TLS-extension SCT and an OCSP SCT,
    and ``Expect-CT: max-age=3600, enforce``; yields its port."""
    ts = pki.now_ms() - 60_000
    a, b, inter = world.log_a, world.log_b, world.public_inter
    leaf, key = pki.make_leaf(inter, embedded=[(a, ts), (b, ts + 1)])
    with openssl_origin(
        tmp_path,
        cert_pem=pki.pem(leaf),
        key_pem=pki.key_pem(key),
        chain_pem=pki.pem(inter.cert),
        tls=tls,
        serverinfo=pki.serverinfo_pem(pki.tls_sct_list(leaf, [(b, ts + 2)])),
        ocsp_der=pki.ocsp_response(leaf, inter, sct_list=pki.tls_sct_list(leaf, [(a, ts + 3)])),
        responses={"index.html": http_response(headers=[("Expect-CT", "max-age=3600, enforce")])},
    ) as port:
        yield port
