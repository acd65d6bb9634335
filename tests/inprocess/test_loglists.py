"""The addon's log-list wiring in-process (mitm/loglists.py): option checks, the hot swap
on mitmproxy's event loop, the log_list event, warnings once, and the commands. The same
through real processes and a real HTTPS mirror is in tests/e2e/test_loglist_refresh.py."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from pathlib import Path

import pytest
from mitmproxy import exceptions

from expect_ct.addon import ExpectCT
from support import pki
from support.inprocess import load_addon
from support.world import World

UTC = datetime.UTC
DAY = datetime.timedelta(days=1)


def dated_list(world: World, path: Path, age_days: float, version: str = "1.0") -> Path:
    stamp = datetime.datetime.now(UTC) - age_days * DAY
    document = pki.log_list_json(
        [pki.LogEntry(world.log_a), pki.LogEntry(world.log_b)], timestamp=stamp
    )
    document["version"] = version
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("expect_ct_log_list_update_interval", 59, "at least 60 seconds"),
        ("expect_ct_log_list_update", "google", "not a log-list source"),
        ("expect_ct_log_list_update", "http://example.test/list.json", "only https URLs"),
        ("expect_ct_log_list_max_age", -2, "must be -1"),
    ],
)
def test_bad_update_options_are_option_errors(
    world: World, tmp_path: Path, option: str, value: object, message: str
) -> None:
    with load_addon(world, tmp_path) as loaded:
        with pytest.raises(exceptions.OptionsError, match=message):
            loaded.tctx.configure(loaded.addon, **{option: value})


def test_max_age_default_is_the_policys_rule(world: World, tmp_path: Path) -> None:
    listed = dated_list(world, tmp_path / "list.json", 65)
    with load_addon(world, tmp_path) as loaded:
        addon, tctx = loaded.addon, loaded.tctx
        tctx.configure(addon, expect_ct_log_list=str(listed))
        assert not addon._log_list_stale()  # chrome: 70 days
        tctx.configure(addon, expect_ct_policy="apple")
        assert addon._log_list_stale()  # apple: 60 days
        tctx.configure(addon, expect_ct_log_list_max_age=0)
        assert not addon._log_list_stale()
        tctx.configure(addon, expect_ct_log_list_max_age=64)
        assert addon._log_list_stale()


def settle(addon: ExpectCT, condition: object) -> None:
    """Run running() inside an event loop and let the refresher's callbacks arrive."""

    async def run() -> None:
        addon.running()
        for _ in range(500):
            await asyncio.sleep(0.02)
            if callable(condition) and condition():
                return

    asyncio.run(run())
    addon.log_lists.stop()


def test_refresh_swaps_the_list_in_and_drops_old_verdicts(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stale = dated_list(world, tmp_path / "stale.json", 100)
    fresh = dated_list(world, tmp_path / "fresh.json", 0, version="2.0")
    events = tmp_path / "events.jsonl"
    with load_addon(world, tmp_path) as loaded:
        addon, tctx = loaded.addon, loaded.tctx
        tctx.configure(
            addon,
            expect_ct_log_list=str(stale),
            expect_ct_log_list_update=str(fresh),
            expect_ct_log=str(events),
        )
        assert addon._log_list_stale()
        old_list, old_engine = addon.log_list, addon.engine
        assert old_engine is not None
        served = [world.non_compliant.cert, world.public_inter.cert]
        old_engine.evaluate(
            "shop.test",
            served,  # type: ignore[arg-type]
            tls_extension=None,
            ocsp_response=None,
            captured=False,
            tls_version=None,
        )
        assert len(addon.verdicts) > 0
        with caplog.at_level(logging.INFO):
            settle(addon, lambda: not addon._log_list_stale())
        assert not addon._log_list_stale()
        assert addon.log_list is not old_list and addon.engine is not old_engine
        assert len(addon.verdicts) == 0
        assert "blocking RESUMES" in caplog.text
        (event,) = [json.loads(x) for x in events.read_text().splitlines()]
        assert event["event"] == "log_list" and event["outcome"] == "updated"
        assert event["source"] == str(fresh) and event["version"] == "2.0"
        assert (tmp_path / "confdir" / "expect-ct-log-list.json").read_bytes() == fresh.read_bytes()
        status = tctx.command(addon.commands.loglist)
        assert status["blocking_suspended"] is False and status["version"] == "2.0"
        assert status["last_outcome"] == "updated"


def test_update_command_without_a_refresher_is_a_command_error(
    world: World, tmp_path: Path
) -> None:
    with load_addon(world, tmp_path) as loaded:  # expect_ct_log_list is set: auto means off
        with pytest.raises(exceptions.CommandError, match="updates are off"):
            loaded.addon.commands.loglist_update()
        status = loaded.tctx.command(loaded.addon.commands.loglist)
        assert status["source"] == "off" and status["next_refresh"] is None


def test_list_warnings_are_logged_once(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "odd.json"
    document = pki.log_list_json([pki.LogEntry(world.log_a), pki.LogEntry(world.log_b)])
    document["operators"][0]["logs"][0]["state"] = {"frobnicated": {}}  # an unknown state
    path.write_text(json.dumps(document))
    with load_addon(world, tmp_path) as loaded:
        with caplog.at_level(logging.WARNING):
            loaded.tctx.configure(loaded.addon, expect_ct_log_list=str(path))
            first = [r for r in caplog.records if "log list" in r.getMessage()]
            assert first, caplog.text
            loaded.tctx.configure(loaded.addon, confdir=str(tmp_path / "other"))
            again = [r for r in caplog.records if "log list" in r.getMessage()]
        assert len(again) == len(first)
