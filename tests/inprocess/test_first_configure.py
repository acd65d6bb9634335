"""The first configure sets everything up, whatever keys it names.

A -s script gets every option from mitmproxy's script loader; an addon registered otherwise
(built in, taddons) gets only the keys that changed, and the defaults must take effect too.
An option error in that first configure is one logged line (mitmproxy's errorcheck then stops
start-up), not a raised exception that the script loader would print as a traceback.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from expect_ct.addon import ExpectCT


def test_one_key_sets_up_the_log_list_roots_and_default_store(tmp_path: Path) -> None:
    addon = ExpectCT()
    with taddons.context(addon) as tctx:
        # Only confdir changes; log list, roots and store keep their defaults.
        tctx.configure(addon, confdir=str(tmp_path))
        try:
            assert addon.configured
            assert addon.log_list is not None and len(addon.log_list) > 0  # the bundled list
            assert addon.classifier is not None
            assert addon.store is not None
            assert addon.store.location == str(tmp_path / "expect-ct.sqlite3")
        finally:
            addon.done()


def test_a_choice_alone_still_opens_the_store(tmp_path: Path) -> None:
    addon = ExpectCT()
    with taddons.context(addon) as tctx:
        tctx.options.update(confdir=str(tmp_path))  # before the addon is configured at all
        tctx.configure(addon, expect_ct_enforce="all")
        try:
            assert addon.store is not None and Path(addon.store.location).parent == tmp_path
        finally:
            addon.done()


def test_a_bad_first_configure_is_one_error_line_later_ones_raise(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    addon = ExpectCT()
    missing = tmp_path / "no-such-dir" / "known.sqlite3"
    with taddons.context(addon) as tctx:
        tctx.configure(addon, confdir=str(tmp_path), expect_ct_store=str(missing))
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert [r.getMessage().count("\n") for r in errors] == [0]
        assert "expect_ct_store" in errors[0].getMessage() and errors[0].exc_info is None
        assert not addon.configured and addon.store is None
        assert not missing.parent.exists()
        # Fixed, it configures; a bad value after that raises, so mitmproxy rolls it back.
        tctx.configure(addon, expect_ct_store=str(tmp_path / "known.sqlite3"))
        try:
            assert addon.configured and addon.store is not None
            with pytest.raises(exceptions.OptionsError, match="does not exist"):
                tctx.configure(addon, expect_ct_store=str(missing))
            assert addon.store.location == str(tmp_path / "known.sqlite3")
        finally:
            addon.done()
