"""End to end in a real browser: headless Chromium shows the contentview in mitmweb's UI.

A real curl goes through a real mitmweb with the addon to an origin serving SCTs by all
three paths (as in test_mitmweb.py). Headless Chromium (Debian's ``chromium``) opens the
mitmweb UI on that flow's response tab, picks "certificate transparency" from the "View:"
menu the way a user clicks it (over the DevTools protocol), and the page must then hold the
SCT table. The same steps work on mitmproxy 11 and 12 (their menus are the same component).

With ``EXPECT_CT_SCREENSHOT=docs/screenshot-mitmweb.png`` the screenshot of that page is
also written there: that is how the README's screenshot is made (docs/screenshot.py).

A second test runs the addon's commands from mitmweb's command bar (*Options > Display
Command Bar*), typed and entered as a user does, and reads the result the bar shows.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from expect_ct.ctview import VIEW_NAME
from support.chromium import Chromium
from support.chromium import find_chromium
from support.mitmweb import Mitmweb
from support.mitmweb import all_three_origin
from support.world import World
from support.world import proxy_options

OPEN_VIEW_MENU = """(() => {
  const button = [...document.querySelectorAll("a")].find(a => a.textContent.includes("View:"));
  if (!button) return false;
  button.click();
  return true;
})()"""

PICK_VIEW = """(() => {
  const item = [...document.querySelectorAll(".dropdown-menu a")]
    .find(a => a.textContent.trim() === %s);
  if (!item) return false;
  item.click();
  return true;
})()"""

COLUMNS = ("tls", "icon", "path", "method", "status", "comment")
COMMENT_CELLS = (
    "[...document.querySelectorAll('.flow-table td.col-comment')].map(td => td.textContent)"
)
PAGE_TEXT = "(document.body ? document.body.innerText : '')"

SHOW_COMMAND_BAR = """(() => {
  const tab = [...document.querySelectorAll("a")].find(a => a.textContent.trim() === "Options");
  if (!tab) return false;
  tab.click();
  const label = [...document.querySelectorAll("label")]
    .find(l => l.textContent.includes("Display Command Bar"));
  if (!label) return false;
  label.querySelector("input").click();
  return true;
})()"""
COMMAND_INPUT = "document.querySelector('.command input')"
COMMAND_RESULT = "(document.querySelector('.command-result') || {}).innerText || ''"


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.fail("Chromium is required for the browser test (apt-get install chromium)")
    return path


def test_mitmweb_ui_shows_the_sct_table(world: World, tmp_path: Path, chromium: str) -> None:
    options = proxy_options(world, expect_ct_store=":memory:")
    # mitmweb's default flow list columns plus the comment, where the addon writes its verdict.
    columns = [a for c in COLUMNS for a in ("--set", f"web_columns={c}")]
    with (
        all_three_origin(world, tmp_path) as port,
        Mitmweb(tmp_path / "proxy", options, extra_args=columns) as web,
    ):
        # The client sends Expect-CT too: the view shows the request's and the response's.
        url = f"https://localhost:{port}/index.html"
        assert web.curl(url, headers=["Expect-CT: max-age=0"]).status == 200
        (flow,) = web.wait_for_flows(1)
        with Chromium(chromium, tmp_path / "browser", window=(1800, 1300)) as browser:
            page = browser.page()
            try:
                page.navigate(web.ui_url(f"/flows/{flow['id']}/response"))
                page.wait_for(OPEN_VIEW_MENU, what='the response tab\'s "View:" menu')
                label = repr(VIEW_NAME.lower()).replace("'", '"')
                page.wait_for(PICK_VIEW % label, what=f"{VIEW_NAME.lower()!r} in the menu")
                page.wait_for(
                    f"{PAGE_TEXT}.includes('ocsp') && {PAGE_TEXT}.includes('SCTs (4)')",
                    what="the SCT table",
                )
                text = page.evaluate(PAGE_TEXT)
                comments = page.evaluate(COMMENT_CELLS)
                png = page.screenshot()
            finally:
                page.close()
    assert f"Certificate Transparency: localhost:{port} (TLSv1.3)" in text
    # An SCT row: its number, then its source (the flow list's "1 of 1 flows" is not one).
    rows = [
        line.split()
        for line in text.splitlines()
        if re.match(r"\s*\d+\s+(embedded|tls-extension|ocsp)\s", line)
    ]
    assert [row[1] for row in rows] == ["embedded", "embedded", "tls-extension", "ocsp"]
    assert all("valid" in row for row in rows)
    assert "request: max-age=0" in text and "response: max-age=3600, enforce" in text
    assert "Known host: yes: enforce" in text
    # The flow list's comment column (web_columns) carries the addon's one-line verdict.
    assert len(comments) == 1 and comments[0].startswith("CT: compliant (chrome; 4/4 valid")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    (tmp_path / "mitmweb.png").write_bytes(png)
    if target := os.environ.get("EXPECT_CT_SCREENSHOT"):
        Path(target).write_bytes(png)


def test_commands_run_from_mitmwebs_command_bar(
    world: World, tmp_path: Path, chromium: str
) -> None:
    options = proxy_options(world, expect_ct_store=":memory:")
    with (
        all_three_origin(world, tmp_path) as port,
        Mitmweb(tmp_path / "proxy", options) as web,
    ):
        assert web.curl(f"https://localhost:{port}/index.html").status == 200
        (flow,) = web.wait_for_flows(1)
        with Chromium(chromium, tmp_path / "browser") as browser:
            page = browser.page()
            try:
                page.navigate(web.ui_url())
                page.wait_for(SHOW_COMMAND_BAR, what="the command bar's toggle")
                page.wait_for(f"!!{COMMAND_INPUT}", what="the command bar")
                results = {}
                for line in ("expectct.hosts", "expectct.show @all"):
                    page.evaluate(f"{COMMAND_INPUT}.focus()")
                    page.call("Input.insertText", text=line)
                    for kind in ("keyDown", "keyUp"):
                        page.call(
                            "Input.dispatchKeyEvent",
                            type=kind,
                            key="Enter",
                            code="Enter",
                            windowsVirtualKeyCode=13,
                        )
                    # The bar shows the line entered, then the command's value as JSON.
                    shown = page.wait_for(
                        f"(({COMMAND_RESULT}).split('$ {line}\\n')[1] || '').split('\\n')[0]",
                        what=f"the result of {line}",
                    )
                    results[line] = json.loads(shown)
            finally:
                page.close()
    (host,) = results["expectct.hosts"]["hosts"]
    assert (host["host"], host["enforce"]) == ("localhost", True)
    (shown_flow,) = results["expectct.show @all"]["flows"]
    assert shown_flow["flow"] == flow["id"]
    assert shown_flow["verdict"].startswith("CT: compliant (chrome; 4/4 valid SCTs")
