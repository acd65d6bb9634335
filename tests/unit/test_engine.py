"""engine.py: loading log lists and roots (for the addon's options and the CLI's flags
alike) and evaluating a chain with its handshake SCTs."""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path

import pytest

from expect_ct import engine as enginemod
from expect_ct.chain import ChainClassifier
from expect_ct.chain import ChainKind
from expect_ct.loglist import INSTALLED_FILENAME
from support import pki
from support.world import World

UTC = datetime.UTC


def test_log_list_given_installed_or_bundled(world: World, tmp_path: Path) -> None:
    given = enginemod.load_log_list(str(world.log_list), str(tmp_path))
    assert given.path == str(world.log_list) and len(given.log_list) == 2
    bundled = enginemod.load_log_list(None, str(tmp_path))
    assert bundled.path is None and "apple" in bundled.log_list.source.lower()
    shutil.copy(world.log_list, tmp_path / INSTALLED_FILENAME)
    installed = enginemod.load_log_list(None, str(tmp_path))
    assert installed.path == str(tmp_path / INSTALLED_FILENAME)


def test_a_list_without_a_timestamp_is_as_old_as_its_file(tmp_path: Path) -> None:
    listing = tmp_path / "list.json"
    listing.write_text('{"version": "1", "operators": []}')
    old = datetime.datetime(2026, 1, 1, tzinfo=UTC)
    os.utime(listing, (old.timestamp(), old.timestamp()))
    loaded = enginemod.load_log_list(str(listing), str(tmp_path))
    assert loaded.log_list.timestamp is None and loaded.timestamp == old
    assert loaded.stale(70, now=old + datetime.timedelta(days=71))
    assert not loaded.stale(70, now=old + datetime.timedelta(days=69))
    assert not loaded.stale(0, now=old + datetime.timedelta(days=1000))  # 0: never stale


@pytest.mark.parametrize("content", [None, b"{not json", b'{"operators": 5}'])
def test_a_bad_log_list_is_one_load_error_naming_the_file(
    tmp_path: Path, content: bytes | None
) -> None:
    path = tmp_path / "list.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(enginemod.LoadError) as raised:
        enginemod.load_log_list(str(path), str(tmp_path))
    message = str(raised.value)
    assert message.count(str(path)) == 1 and "\n" not in message  # named once, one line


def test_bad_root_files_are_load_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "roots.pem"
    garbage.write_text("no certificates here")
    for load in (enginemod.load_public_roots, enginemod.load_private_roots):
        with pytest.raises(enginemod.LoadError, match=str(garbage)):
            load(str(garbage))
        with pytest.raises(enginemod.LoadError, match="cannot read"):
            load(str(tmp_path / "absent.pem"))
    assert enginemod.load_private_roots(None) == []
    assert len(enginemod.load_public_roots(None)) > 50  # certifi's bundle


def engine(world: World) -> enginemod.Engine:
    classifier = ChainClassifier(
        enginemod.load_public_roots(str(world.public_roots_pem)),
        enginemod.load_private_roots(str(world.upstream_trust_pem)),
    )
    return enginemod.Engine(
        enginemod.load_log_list(str(world.log_list), "/nonexistent"), classifier, "chrome"
    )


def test_tls_extension_scts_make_a_plain_certificate_compliant(world: World) -> None:
    ts = pki.now_ms() - 60_000
    leaf, _ = pki.make_leaf(world.public_inter)
    served = (leaf, world.public_inter.cert)
    sct_list = pki.tls_sct_list(leaf, [(world.log_a, ts), (world.log_b, ts + 1)])
    judge = engine(world)
    without = judge.evaluate(
        "localhost",
        served,
        tls_extension=None,
        ocsp_response=None,
        captured=False,
        tls_version=None,
    )
    assert without.fails and without.event["sources"]["tls-extension"] == "not observed"
    with_scts = judge.evaluate(
        "localhost",
        served,
        tls_extension=sct_list,
        ocsp_response=None,
        captured=True,
        tls_version="TLSv1.3",
    )
    assert with_scts.verdict.compliant and with_scts.chain.kind is ChainKind.PUBLIC
    assert with_scts.event["sources"] == {
        "embedded": "observed",
        "tls-extension": "present",
        "ocsp": "absent",
    }
    assert with_scts.summary.startswith("CT: compliant (chrome; 2/2 valid SCTs (tls-extension))")


def test_an_evaluation_at_a_chosen_moment_is_not_the_live_one(world: World) -> None:
    judge = engine(world)
    served = (world.compliant.cert, world.public_inter.cert)
    args = dict(tls_extension=None, ocsp_response=None, captured=False, tls_version=None)
    live = judge.evaluate("localhost", served, **args)  # type: ignore[arg-type]
    assert judge.evaluate("localhost", served, **args) is live  # type: ignore[arg-type]
    long_ago = datetime.datetime(2000, 1, 1, tzinfo=UTC)
    then = judge.evaluate("localhost", served, now=long_ago, **args)  # type: ignore[arg-type]
    assert then is not live and then.chain.kind is ChainKind.UNTRUSTED  # not yet valid
