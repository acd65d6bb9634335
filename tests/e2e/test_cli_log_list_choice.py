"""`check` and `inspect` choose their log list as the running addon does
(loglist_update.choose_start_list) and judge its age by the same rules and per-policy limit."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from expect_ct import loglist_update as update
from support import pki
from support.world import World

UTC = datetime.UTC
DAY = datetime.timedelta(days=1)


def run_inspect(world: World, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    leaf, _key = pki.make_leaf(world.public_inter, hosts=["shop.test"])
    (tmp_path / "leaf.der").write_bytes(leaf.public_bytes(serialization.Encoding.DER))
    (tmp_path / "chain.pem").write_bytes(pki.pem(world.public_inter.cert, world.public_root.cert))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "expect_ct",
            "inspect",
            str(tmp_path / "leaf.der"),
            str(tmp_path / "chain.pem"),
            "--public-roots",
            str(world.public_roots_pem),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def dated_list(world: World, path: Path, age_days: float) -> Path:
    stamp = datetime.datetime.now(UTC) - age_days * DAY
    entries = [pki.LogEntry(world.log_a), pki.LogEntry(world.log_b)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(pki.log_list_json(entries, timestamp=stamp)))  # mtime: now
    return path


def evaluated_line(done: subprocess.CompletedProcess[str]) -> str:
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("Evaluated")]
    return line


def test_stale_by_content_file_with_a_fresh_mtime_is_stale(world: World, tmp_path: Path) -> None:
    old = dated_list(world, tmp_path / "old.json", 200)
    done = run_inspect(world, tmp_path, "--log-list", str(old), "--confdir", str(tmp_path))
    line = evaluated_line(done)
    assert "confirmed by log_list_timestamp" in line and "STALE" in line, done.stdout
    fresh = dated_list(world, tmp_path / "fresh.json", 1)
    done = run_inspect(world, tmp_path, "--log-list", str(fresh), "--confdir", str(tmp_path))
    assert "STALE" not in evaluated_line(done)


@pytest.mark.parametrize(("policy", "stale"), [("chrome", False), ("apple", True)])
def test_the_limit_is_the_policy_publishers_rule(
    world: World, tmp_path: Path, policy: str, stale: bool
) -> None:
    listed = dated_list(world, tmp_path / "list.json", 65)  # Apple: 60 days, Chrome: 70
    done = run_inspect(
        world, tmp_path, "--log-list", str(listed), "--confdir", str(tmp_path), "--policy", policy
    )
    assert ("STALE" in evaluated_line(done)) is stale, done.stdout


def test_installed_list_is_used_only_when_fresher_than_the_bundled_one(
    world: World, tmp_path: Path
) -> None:
    confdir = tmp_path / "confdir"
    installed = dated_list(world, confdir / update.INSTALLED_FILENAME, 2)
    done = run_inspect(world, tmp_path, "--confdir", str(confdir))
    assert str(installed) in evaluated_line(done), done.stdout
    # Dated before the bundled snapshot (2026-04-01): the bundled list is fresher.
    snapshot = update.bundled().metadata.confirmed
    assert snapshot is not None
    dated_list(world, installed, (datetime.datetime.now(UTC) - snapshot) / DAY + 30)
    done = run_inspect(world, tmp_path, "--confdir", str(confdir))
    assert "bundled" in evaluated_line(done), done.stdout
