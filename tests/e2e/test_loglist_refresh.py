"""The running proxy keeps its CT log list current (issue 15), in real mitmdump/mitmweb
processes: lists come from a real HTTPS mirror on 127.0.0.1 with its own test root, the
impostor is a real TLS origin serving a publicly trusted certificate without SCTs for a
preloaded Known Expect-CT Host with enforce.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from expect_ct import loglist_update as update
from support import listserver
from support import pki
from support.httpsorigin import Origin
from support.httpsorigin import https_origin
from support.listserver import ListServer
from support.mitmweb import Mitmweb
from support.proxy import Mitmdump
from support.world import World

UTC = datetime.UTC
DAY = datetime.timedelta(days=1)
HOST = "shop.test"


def google_list(world: World, *, age_days: float, version: str) -> bytes:
    """The test world's two logs as a Google v3 list dated ``age_days`` ago."""
    stamp = datetime.datetime.now(UTC) - age_days * DAY
    return listserver.google_list((world.log_a, world.log_b), version, stamp)


@pytest.fixture(scope="module")
def impostor(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origin]:
    """Publicly trusted for HOST, without SCTs."""
    base = tmp_path_factory.mktemp("impostor")
    cert, key = pki.make_leaf(world.public_inter, hosts=[HOST])
    chain, keyfile = base / "chain.pem", base / "key.pem"
    chain.write_bytes(pki.pem(cert, world.public_inter.cert))
    keyfile.write_bytes(pki.key_pem(key))
    with https_origin(chain, keyfile, {"/": []}) as origin:
        yield origin


def no_proxy_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def options(world: World, mirror: ListServer, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """No expect_ct_log_list: the start list is the installed or the bundled one, and the
    refresher fetches from the mirror, trusted through ssl_verify_upstream_trusted_ca."""
    trust = tmp_path / "trust.pem"
    trust.write_bytes(world.upstream_trust_pem.read_bytes() + mirror.root_pem.read_bytes())
    preload = tmp_path / "preload.json"
    expires = datetime.datetime.now(UTC) + 30 * DAY
    preload.write_text(
        json.dumps([{"host": HOST, "enforce": True, "expires": pki.rfc3339(expires)}])
    )
    result: dict[str, Any] = {
        "ssl_verify_upstream_trusted_ca": str(trust),
        "expect_ct_public_roots": str(world.public_roots_pem),
        "expect_ct_store": str(tmp_path / "known.sqlite3"),
        "expect_ct_preload": str(preload),
        "expect_ct_log_list_update": mirror.url("/list.json"),
    }
    result.update(extra)
    return result


def install_plain(confdir: Path, data: bytes) -> Path:
    """A list in confdir as an older release left it: no sidecar, so its content dates it."""
    confdir.mkdir(parents=True, exist_ok=True)
    path = confdir / update.INSTALLED_FILENAME
    path.write_bytes(data)
    return path


def proxy(tool: type[Mitmdump], tmp_path: Path, opts: dict[str, Any], name: str) -> Mitmdump:
    return tool(
        tmp_path / name,
        dict(opts),  # Mitmdump adds its own expect_ct_log
        resolve={HOST: 0},
        confdir=tmp_path / "confdir",
        env=no_proxy_env(),
    )


def attempts(p: Mitmdump, outcome: str) -> list[dict[str, Any]]:
    return [e for e in p.events("log_list") if e["outcome"] == outcome]


def test_stale_list_refreshed_at_run_time_resumes_blocking_without_restart(
    world: World, mirror: ListServer, impostor: Origin, tmp_path: Path
) -> None:
    install_plain(tmp_path / "confdir", google_list(world, age_days=100, version="1.0"))
    mirror.down()  # the start-up attempt fails: the stale list stays in force
    web = proxy(Mitmweb, tmp_path, options(world, mirror, tmp_path), "web")
    web.resolve[HOST] = impostor.port
    with web:
        assert "blocking is SUSPENDED" in web.log_text()
        failed = web.wait_for_event("log_list", lambda e: e["outcome"] == "failed")
        assert failed["error"] and failed["logs"] == 2 and failed["age_days"] >= 99
        assert failed["host"] == "127.0.0.1" and failed["port"] == mirror.port
        assert isinstance(web, Mitmweb)
        status = web.run_command("expectct.loglist")
        assert status["blocking_suspended"] is True and "older than 70 days" in status["why"]
        assert status["last_outcome"] == "failed" and status["next_refresh"]
        # The impostor gets through while blocking is suspended (fail open, as Chrome).
        assert web.curl(f"https://{HOST}/before").status == 200
        assert ("GET", "/before") in impostor.requests
        assert not web.events("blocked")

        mirror.up()
        mirror.serve("/list.json", google_list(world, age_days=0, version="2.0"))
        assert web.run_command("expectct.loglist.update")["requested"] is True
        updated = web.wait_for_event("log_list", lambda e: e["outcome"] == "updated")
        assert updated["version"] == "2.0" and updated["error"] is None
        assert updated["age_days"] < 1
        status = web.run_command("expectct.loglist")
        assert status["blocking_suspended"] is False and status["version"] == "2.0"
        # The same process now refuses the impostor.
        assert web.curl(f"https://{HOST}/after").status == 502
        assert ("GET", "/after") not in impostor.requests
        blocked = web.wait_for_event("blocked", lambda e: e["host"] == HOST)
        assert blocked["known_host"]["enforce"] is True
        assert "blocking RESUMES" in web.log_text()


def test_start_up_refresh_blocks_within_seconds_and_persists_across_restarts(
    world: World, mirror: ListServer, impostor: Origin, tmp_path: Path
) -> None:
    confdir = tmp_path / "confdir"
    install_plain(confdir, google_list(world, age_days=100, version="1.0"))
    fresh = google_list(world, age_days=0, version="2.0")
    mirror.serve("/list.json", fresh)
    opts = options(world, mirror, tmp_path)
    first = proxy(Mitmdump, tmp_path, opts, "first")
    first.resolve[HOST] = impostor.port
    with first:
        assert "blocking is SUSPENDED" in first.log_text()
        updated = first.wait_for_event("log_list", lambda e: e["outcome"] == "updated")
        assert updated["source"] == mirror.url("/list.json") and updated["logs"] == 2
        assert first.curl(f"https://{HOST}/").status == 502
    assert (confdir / update.INSTALLED_FILENAME).read_bytes() == fresh
    meta = json.loads((confdir / "expect-ct-log-list.meta.json").read_text())
    assert meta["version"] == "2.0" and meta["source"] == mirror.url("/list.json")

    # Restarted: the installed list is in force from the start; the same list is unchanged.
    second = proxy(Mitmdump, tmp_path, opts, "second")
    second.resolve[HOST] = impostor.port
    with second:
        assert "fresher than the bundled snapshot" in second.log_text()
        assert "SUSPENDED" not in second.log_text()
        unchanged = second.wait_for_event("log_list", lambda e: e["outcome"] == "unchanged")
        assert unchanged["version"] == "2.0" and unchanged["error"] is None
        assert mirror.requests[-1][1] is not None  # conditional: If-None-Match was sent
        assert second.curl(f"https://{HOST}/").status == 502
        assert not attempts(second, "updated")

    # Updates off: the installed list is still used (it is fresher than the bundled one).
    third = proxy(Mitmdump, tmp_path, {**opts, "expect_ct_log_list_update": "off"}, "third")
    third.resolve[HOST] = impostor.port
    requests_before = len(mirror.requests)
    with third:
        assert "fresher than the bundled snapshot" in third.log_text()
        assert third.curl(f"https://{HOST}/").status == 502
        assert not third.events("log_list")
    assert len(mirror.requests) == requests_before


def test_downgrade_is_refused_and_the_installed_list_kept(
    world: World, mirror: ListServer, impostor: Origin, tmp_path: Path
) -> None:
    confdir = tmp_path / "confdir"
    current = google_list(world, age_days=1, version="2.0")
    installed = install_plain(confdir, current)
    mirror.serve("/list.json", google_list(world, age_days=0.5, version="1.5"))
    p = proxy(Mitmdump, tmp_path, options(world, mirror, tmp_path), "proxy")
    p.resolve[HOST] = impostor.port
    with p:
        refused = p.wait_for_event("log_list", lambda e: e["outcome"] == "refused")
        assert "never downgraded" in refused["error"] and refused["version"] == "2.0"
        assert p.curl(f"https://{HOST}/").status == 502  # the current list still enforces
        assert "never downgraded" in p.log_text()
    assert installed.read_bytes() == current


@pytest.mark.parametrize("problem", ["down", "bad-tls", "bad-json"])
def test_failing_source_keeps_the_current_list_and_the_proxy_serving(
    world: World, mirror: ListServer, impostor: Origin, tmp_path: Path, problem: str
) -> None:
    confdir = tmp_path / "confdir"
    current = google_list(world, age_days=1, version="2.0")
    installed = install_plain(confdir, current)
    opts = options(world, mirror, tmp_path)
    mirror.serve("/list.json", google_list(world, age_days=0, version="3.0"))
    if problem == "down":
        mirror.down()
    elif problem == "bad-tls":
        opts["ssl_verify_upstream_trusted_ca"] = str(world.upstream_trust_pem)  # not the mirror's
    else:
        mirror.serve("/list.json", b'{"operators": [')
    p = proxy(Mitmdump, tmp_path, opts, "proxy")
    p.resolve[HOST] = impostor.port
    with p:
        failed = p.wait_for_event("log_list", lambda e: e["outcome"] == "failed")
        assert "keeping the current list" in failed["error"]
        assert failed["version"] == "2.0" and failed["logs"] == 2
        expected = {"down": "refused", "bad-tls": "CERTIFICATE_VERIFY_FAILED", "bad-json": "JSON"}
        assert expected[problem].lower() in failed["error"].lower(), failed["error"]
        # Still serving, still enforcing with the list it had.
        assert p.curl(f"https://{HOST}/").status == 502
        assert p.log_text().count("refreshing the CT log list from") == 1  # warned once
    assert installed.read_bytes() == current


def test_stale_by_content_file_with_a_fresh_mtime_is_judged_stale(
    world: World, mirror: ListServer, impostor: Origin, tmp_path: Path
) -> None:
    old = tmp_path / "old-checkout.json"
    old.write_bytes(google_list(world, age_days=200, version="1.0"))  # mtime: now
    opts = options(world, mirror, tmp_path, expect_ct_log_list=str(old))
    del opts["expect_ct_log_list_update"]  # auto: off, since expect_ct_log_list is set
    p = proxy(Mitmdump, tmp_path, opts, "proxy")
    p.resolve[HOST] = impostor.port
    with p:
        text = p.log_text()
        assert "blocking is SUSPENDED" in text and "by log_list_timestamp" in text
        assert p.curl(f"https://{HOST}/").status == 200
        p.wait_for_event("connection", lambda e: e["host"] == HOST)
        assert "NOT blocking shop.test" in p.log_text()
        assert not p.events("blocked") and not p.events("log_list")
    assert not mirror.requests


def test_built_in_launch_refreshes_too(
    world: World, mirror: ListServer, impostor: Origin, tmp_path: Path
) -> None:
    """`python -m expect_ct mitmdump` (the addon built in, not -s) gets the same refresher."""
    install_plain(tmp_path / "confdir", google_list(world, age_days=100, version="1.0"))
    mirror.serve("/list.json", google_list(world, age_days=0, version="2.0"))
    p = proxy(Mitmdump, tmp_path, options(world, mirror, tmp_path), "built-in")
    p.built_in = True
    p.resolve[HOST] = impostor.port
    with p:
        p.wait_for_event("log_list", lambda e: e["outcome"] == "updated")
        assert p.curl(f"https://{HOST}/").status == 502
        assert len(p.events("log_list")) == 1  # one refresher, one start-up attempt
