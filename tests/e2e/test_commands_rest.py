"""The commands over mitmweb's REST API (``POST /commands/<name>``, names ``[a-z.]+``): a real
mitmweb with the addon built in answers with the value each command returns."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import mitmproxy.version
import pytest

from support.proxy import Mitmdump
from support.world import World
from support.world import proxy_options

MITMPROXY_12 = int(mitmproxy.version.VERSION.split(".")[0]) >= 12
PASSWORD = "expect-ct-test"
XSRF = "0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(port: int, name: str, *arguments: str) -> tuple[int, Any]:
    """POST /commands/<name> as mitmweb's own front end does (XSRF cookie and header)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/commands/{name}",
        data=json.dumps({"arguments": list(arguments)}).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-XSRFToken": XSRF,
            # The cookie's name: _xsrf on mitmproxy 11, _mitmproxy_xsrf on recent 12.x.
            "Cookie": f"_xsrf={XSRF}; _mitmproxy_xsrf={XSRF}",
            **({"Authorization": f"Bearer {PASSWORD}"} if MITMPROXY_12 else {}),
        },
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, None


@pytest.fixture
def mitmweb(world: World, tmp_path: Path) -> tuple[Mitmdump, int]:
    web_port = free_port()
    extra = ["--web-host", "127.0.0.1", "--web-port", str(web_port), "--no-web-open-browser"]
    if MITMPROXY_12:
        extra += ["--set", f"web_password={PASSWORD}"]
    proxy = Mitmdump(
        tmp_path,
        proxy_options(world, expect_ct_store=str(tmp_path / "known.sqlite3")),
        extra_args=extra,
        built_in=True,
        tool="mitmweb",
    )
    return proxy, web_port


def test_commands_answer_over_mitmwebs_rest_api(mitmweb: tuple[Mitmdump, int]) -> None:
    proxy, port = mitmweb
    with proxy:
        assert post(port, "expectct.hosts") == (200, {"value": {"hosts": []}})
        assert post(port, "expectct.forget", "a.example") == (
            200,
            {"value": {"host": "a.example", "forgotten": False}},
        )
        assert post(port, "expectct.clear") == (200, {"value": {"removed": 0}})
        status, answer = post(port, "expectct.testreport", "never.test", "https://r.example/ct")
        assert status == 200 and answer["value"]["delivery"] == "disabled"
        # Why the commands were renamed: the route takes no underscore.
        status, _ = post(port, "expect_ct.hosts")
        assert status in (404, 405)
