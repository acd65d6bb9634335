"""`make demo` for real: demo/demo.py run with this interpreter, its printout checked.

The demo starts its own servers and a real mitmdump; these tests check what it tells the user
(the block, the noted host, the report, the summary), that ``--keep`` keeps the event log it
names, and that an interrupted demo stops every process it started and removes its directory.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import support

REPO = support.REPO
DEMO = REPO / "demo" / "demo.py"
DEADLINE = 90  # seconds; the demo takes a few


def environment(tmp_path: Path) -> dict[str, str]:
    """The demo's temporary directory goes under tmp_path, so the test sees what it leaves."""
    env = dict(os.environ)
    env.update(TMPDIR=str(tmp_path), PYTHONUNBUFFERED="1")
    return env


def run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, str(DEMO), *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env=environment(tmp_path),
        cwd=tmp_path,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done


def section(output: str, title: str) -> str:
    """The text between a section's title and the next section's rule."""
    _, rest = output.split(f"\n{title}", 1)
    rest = rest.split("\n", 2)[2]  # the title line's end and the rule under it
    return rest.split("\n" + "─" * 20, 1)[0]


def workdir_of(output: str) -> Path:
    match = re.search(r"^Working directory: (\S+) ", output, re.MULTILINE)
    assert match, output
    return Path(match.group(1))


def test_the_demo_tells_the_whole_story_and_leaves_nothing(tmp_path: Path) -> None:
    output = run_demo(tmp_path).stdout
    assert workdir_of(output).parent == tmp_path
    assert list(tmp_path.iterdir()) == []  # its directory is gone, nothing else was written

    requests = section(output, "What each client got, and the verdict the addon wrote on each flow")
    flattened = " ".join(requests.split())  # comments are wrapped for the terminal
    assert (
        "[1] https://news.demo/ HTTP/1.1 200 OK comment: CT: compliant (chrome; 2/2 valid SCTs (embedded))"
        in flattened
    )
    assert (
        "[2] https://legacy.demo/ HTTP/1.1 200 OK :warning: comment: CT: NOT compliant (chrome; 0/0 valid SCTs): no SCTs"
        in flattened
    )
    assert (
        "[3] https://intranet.demo/ HTTP/1.1 200 OK comment: CT: exempt (chain ends at a private root)"
        in flattened
    )
    assert (
        "[4] https://shop.demo/ HTTP/1.1 200 OK comment: CT: compliant (chrome; 2/2 valid SCTs (embedded)) | Expect-CT header noted"
        in flattened
    )
    assert (
        "[5] https://shop.demo/ HTTP/1.1 502 Bad Gateway :no_entry: comment: BLOCKED by Expect-CT: CT: NOT compliant"
        in flattened
    )

    block = " ".join(section(output, "The blocked request: the 502 body").split())
    assert "Blocked by mitmproxy-expect-ct." in block
    assert "Policy: chrome" in block
    assert "Reason: shop.demo is a Known Expect-CT Host with enforce (until " in block
    assert "the connection is not CT-compliant under the chrome policy: no SCTs" in block
    assert "(the impostor's server received 0 HTTP requests)" in block

    hosts = section(output, "The Known Expect-CT Host the proxy noted").strip().splitlines()
    assert hosts[0].startswith("$ python -m expect_ct hosts --store ")
    assert re.fullmatch(
        r"shop\.demo  enforce  expires \S+Z  report-uri https://localhost:(\d+)/report", hosts[1]
    ), hosts
    assert hosts[2].startswith("1 Known Expect-CT Hosts in ")

    received = section(output, "The RFC 9163 report the collector received")
    assert "OPTIONS /report (CORS preflight, Origin: null), then" in received
    assert "POST /report  Content-Type: application/expect-ct-report+json" in received
    report = json.loads(received[received.index("{") :])["expect-ct-report"]
    assert (report["hostname"], report["scheme"]) == ("shop.demo", "https")
    assert (report["failure-mode"], report["test-report"]) == ("enforce", False)
    assert report["scts"] == []  # the impostor's certificate was never logged
    assert len(report["served-certificate-chain"]) == 2  # leaf and CA: what the impostor sent
    assert len(report["validated-certificate-chain"]) == 3  # ... up to the public root
    for pem in report["served-certificate-chain"] + report["validated-certificate-chain"]:
        assert re.fullmatch(r"-----BEGIN CERTIFICATE----- MII\S+\.\.\. \(\d+ base64 chars\)", pem)

    summary = dict(
        re.findall(
            r"^  ([a-z ()]+?)  +(\d+)$", section(output, "mitmdump's summary at shutdown"), re.M
        )
    )
    assert summary == {
        "hosts seen": "4",
        "connections evaluated": "5",
        "compliant": "2",
        "not compliant": "2",
        "exempt (private root)": "1",
        "blocked": "1",
        "known hosts noted": "1",
        "known hosts updated": "0",
        "known hosts removed": "0",
        "reports": "1",
    }


def events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_keep_keeps_the_event_log_it_names(tmp_path: Path) -> None:
    output = run_demo(tmp_path, "--keep").stdout
    workdir = workdir_of(output)
    log = re.search(r"^  JSON-lines event log  (\S+)$", output, re.MULTILINE)
    assert log, output
    recorded = events(Path(log.group(1)))
    assert Path(log.group(1)).parent == workdir
    assert [(e["event"], e["host"]) for e in recorded if e["event"] != "connection"] == [
        ("header", "shop.demo"),
        ("blocked", "shop.demo"),
        ("report", "shop.demo"),
    ]
    blocked = next(e for e in recorded if e["event"] == "blocked")
    assert blocked["known_host"]["enforce"] is True
    report = next(e for e in recorded if e["event"] == "report")
    assert report["delivery"] == "sent"
    assert report["body"]["expect-ct-report"]["failure-mode"] == "enforce"
    saved = re.search(r"^  saved flows           (\S+) ", output, re.MULTILINE)
    assert saved and Path(saved.group(1)).stat().st_size > 0


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent (gone too by now) could reap it.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[1].startswith("Z"))


@pytest.mark.parametrize(
    "how",
    ["Ctrl-C (SIGINT to the whole process group)", "SIGTERM to the demo only"],
)
def test_an_interrupted_demo_stops_its_processes_and_removes_its_directory(
    tmp_path: Path, how: str
) -> None:
    demo = subprocess.Popen(
        [sys.executable, str(DEMO)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(tmp_path),
        cwd=tmp_path,
        start_new_session=True,  # its own process group, like a shell job
    )
    try:
        assert demo.stdout is not None
        seen = []
        deadline = time.monotonic() + DEADLINE
        mitmdump_pid = None
        while mitmdump_pid is None and time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            seen.append(line)
            if match := re.match(r"mitmdump \(pid (\d+)\)", line):
                mitmdump_pid = int(match.group(1))
        assert mitmdump_pid is not None, "".join(seen)
        if how.startswith("Ctrl-C"):
            os.killpg(demo.pid, signal.SIGINT)
        else:
            demo.send_signal(signal.SIGTERM)
        rest, errors = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 130, "".join(seen) + rest + errors
    assert "Interrupted: every process the demo started has been stopped." in errors
    assert not process_alive(mitmdump_pid)
    assert list(tmp_path.iterdir()) == []
