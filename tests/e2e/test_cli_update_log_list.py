"""`python -m expect_ct update-log-list` as a real subprocess, against a real HTTPS mirror on
127.0.0.1 with its own test root: the age rules, unchanged lists, refused downgrades and the
metadata sidecar the addon reads at its next start.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from pathlib import Path

import pytest

from expect_ct import loglist_update as update
from support import cli
from support import pki
from support.listserver import ListServer
from support.listserver import apple_list

UTC = datetime.UTC
DAY = datetime.timedelta(days=1)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    for name in ("HTTPS_PROXY", "https_proxy"):
        env[name] = "http://127.0.0.1:9"  # the command ignores proxy variables
    return cli.run_cli("update-log-list", *args, env=env)


@pytest.fixture(scope="module")
def logs() -> tuple[pki.TestLog, pki.TestLog]:
    return pki.make_log("Alpha Log", "Alpha"), pki.make_log("Beta Log", "Beta")


def from_mirror(mirror: ListServer, confdir: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "--source",
        mirror.url("/list.json"),
        "--confdir",
        str(confdir),
        "--cafile",
        str(mirror.root_pem),
        "--timeout",
        "10",
    )


def sidecar(confdir: Path) -> dict[str, object]:
    data = json.loads((confdir / "expect-ct-log-list.meta.json").read_text())
    assert isinstance(data, dict)
    return data


def test_unchanged_list_is_confirmed_and_a_downgrade_refused(
    mirror: ListServer, tmp_path: Path, logs: tuple[pki.TestLog, pki.TestLog]
) -> None:
    confdir = tmp_path / "confdir"
    body = apple_list(logs, 600)
    mirror.serve("/list.json", body)
    done = from_mirror(mirror, confdir)
    assert done.returncode == 0, done.stderr
    assert "installed" in done.stdout and "(0.0 days old)" in done.stdout
    first = sidecar(confdir)
    assert first["version"] == "600/1" and first["confirmed_by"] == "last successful fetch"
    # Again: the same list, fetched conditionally (304), confirmed again.
    done = from_mirror(mirror, confdir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("unchanged:")
    assert mirror.requests[-1][1] is not None  # If-None-Match was sent
    assert str(sidecar(confdir)["confirmed"]) >= str(first["confirmed"])
    # An older version is refused; the installed list stays.
    mirror.serve("/list.json", apple_list(logs, 599))
    done = from_mirror(mirror, confdir)
    assert done.returncode == 1
    assert "refused" in done.stderr and "never downgraded" in done.stderr
    assert (confdir / update.INSTALLED_FILENAME).read_bytes() == body
    assert sidecar(confdir)["version"] == "600/1"


def test_stale_by_content_file_with_a_fresh_mtime_is_reported_stale(
    tmp_path: Path, logs: tuple[pki.TestLog, pki.TestLog]
) -> None:
    old = tmp_path / "old-checkout.json"
    stamped = datetime.datetime.now(UTC) - 300 * DAY  # before the bundled snapshot
    old.write_text(json.dumps(pki.log_list_json([pki.LogEntry(logs[0])], timestamp=stamped)))
    confdir = tmp_path / "confdir"
    done = run_cli("--source", str(old), "--confdir", str(confdir))
    assert done.returncode == 0, done.stderr
    assert "(300.0 days old)" in done.stdout and "WARNING: older than 70 days" in done.stdout
    # The addon's next start sees the same age: the bundled snapshot is fresher.
    choice = update.choose_start_list(str(confdir))
    assert choice.current.metadata.source == "bundled"
    installed = update.load_installed(str(confdir / update.INSTALLED_FILENAME))
    assert installed is not None and installed.metadata.stale(datetime.datetime.now(UTC), 70)


def test_local_file_is_dated_by_its_mtime_not_the_install(
    tmp_path: Path, logs: tuple[pki.TestLog, pki.TestLog]
) -> None:
    copy = tmp_path / "apple-copy.json"
    copy.write_bytes(apple_list(logs, 600))
    moment = (datetime.datetime.now(UTC) - 90 * DAY).timestamp()
    os.utime(copy, (moment, moment))
    confdir = tmp_path / "confdir"
    done = run_cli("--source", str(copy), "--confdir", str(confdir))
    assert done.returncode == 0, done.stderr
    assert "file modification time" in done.stdout and "(90.0 days old)" in done.stdout
    assert "WARNING" in done.stdout
    installed = update.load_installed(str(confdir / update.INSTALLED_FILENAME))
    assert installed is not None
    assert installed.metadata.confirmed_by == update.BY_FILE_MTIME
    assert installed.metadata.stale(datetime.datetime.now(UTC), 70)


@pytest.mark.parametrize(
    "source, message",
    [("google", "mimic"), ("off", "nothing to update")],
)
def test_words_that_are_not_sources(source: str, message: str, tmp_path: Path) -> None:
    done = run_cli("--source", source, "--confdir", str(tmp_path))
    assert done.returncode == 2 and message in done.stderr
    assert list(tmp_path.iterdir()) == []
