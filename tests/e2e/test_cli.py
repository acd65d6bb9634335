"""`python -m expect_ct`: the script path, and the store commands, run for real."""

from __future__ import annotations

import contextlib
import datetime
import os
import subprocess
import sys
from pathlib import Path

import pytest

from expect_ct.store import KnownHostStore
from support.cli import run_cli
from support.proxy import REPO
from support.proxy import Mitmdump

UTC = datetime.UTC


def test_no_arguments_prints_the_checkout_script_path() -> None:
    done = run_cli()
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == REPO / "addon" / "expect_ct_addon.py"


def test_installed_package_script_path_loads_in_mitmdump(tmp_path: Path) -> None:
    target = tmp_path / "site"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr
    env = dict(os.environ, PYTHONPATH=str(target))
    done = run_cli(env=env)
    assert done.returncode == 0, done.stderr
    script = Path(done.stdout.strip())
    assert script.parent == target and script.name == "expect_ct_addon.py"
    assert (target / "expect_ct" / "data" / "apple_log_list.json").is_file()
    # mitmdump loads the installed script (not the checkout) and runs the addon.
    proxy = Mitmdump(tmp_path / "run", {"expect_ct_store": ":memory:"}, script=script, env=env)
    with proxy:
        pass
    log = proxy.log_text()
    assert "error" not in log.lower(), log
    assert "CT logs from" in log or "Expect-CT" in log, log


def test_hosts_and_forget_work_on_the_addons_store(tmp_path: Path) -> None:
    db = tmp_path / "store.sqlite3"
    store = KnownHostStore(db)
    expires = datetime.datetime.now(UTC) + datetime.timedelta(days=3)
    store.add("a.example", enforce=True, report_uri=None, expires=expires)
    store.add("b.example", enforce=False, report_uri="https://r.example/ct", expires=expires)
    store.close()

    listed = run_cli("hosts", "--store", str(db))
    assert listed.returncode == 0, listed.stderr
    assert "a.example  enforce" in listed.stdout
    assert "b.example  report-only" in listed.stdout and "https://r.example/ct" in listed.stdout

    as_json = run_cli("hosts", "--store", str(db), "--json")
    assert [line for line in as_json.stdout.splitlines() if '"a.example"' in line]

    forgot = run_cli("forget", "a.example", "--store", str(db))
    assert forgot.returncode == 0 and "forgotten" in forgot.stdout
    again = run_cli("forget", "a.example", "--store", str(db))
    assert again.returncode == 1 and "was not" in again.stdout
    assert "a.example" not in run_cli("hosts", "--store", str(db)).stdout


def test_hosts_on_a_file_that_is_not_a_store_fails_clearly(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    done = run_cli("hosts", "--store", str(bogus))
    assert done.returncode == 2
    assert str(bogus) in done.stderr
    assert bogus.read_bytes() == b"this is not sqlite" * 100


def test_missing_store_is_an_error_not_a_new_file(tmp_path: Path) -> None:
    done = run_cli("hosts", "--store", str(tmp_path / "absent.sqlite3"))
    assert done.returncode == 2 and "no Known Expect-CT Hosts store" in done.stderr
    assert not (tmp_path / "absent.sqlite3").exists()


@pytest.mark.parametrize(
    "option, value, message",
    [
        (
            "expect_ct_enforce",
            "loud",
            "expect_ct_enforce must be one of off, header, all, not 'loud'",
        ),
        (
            "expect_ct_policy",
            "firefox",
            "expect_ct_policy must be one of chrome, chrome-pre148, apple",
        ),
        ("expect_ct_max_age_cap", "-1", "expect_ct_max_age_cap must be at least 1 second"),
        ("expect_ct_log_list", "/nonexistent/list.json", "Cannot load expect_ct_log_list"),
        ("expect_ct_public_roots", "/nonexistent/roots.pem", "Cannot load expect_ct_public_roots"),
    ],
)
@pytest.mark.parametrize("loading", ["script", "built-in"])
def test_bad_option_value_stops_mitmdump(
    tmp_path: Path, option: str, value: str, message: str, loading: str
) -> None:
    proxy = Mitmdump(
        tmp_path,
        {option: value, "expect_ct_store": ":memory:"},
        built_in=loading == "built-in",
    )
    with contextlib.suppress(RuntimeError):  # it may exit before or after it starts listening
        proxy.start()
    try:
        assert proxy.process is not None
        code = proxy.process.wait(30)
    finally:
        proxy.stop()
    assert code != 0
    assert message in proxy.log_text()


def test_store_that_is_not_a_database_stops_mitmdump_and_is_kept(tmp_path: Path) -> None:
    bogus = tmp_path / "store.sqlite3"
    bogus.write_text("not a database\n" * 50)
    proxy = Mitmdump(tmp_path, {"expect_ct_store": str(bogus)})
    with contextlib.suppress(RuntimeError):
        proxy.start()
    try:
        assert proxy.process is not None
        assert proxy.process.wait(30) != 0
    finally:
        proxy.stop()
    assert str(bogus) in proxy.log_text()
    assert bogus.read_text() == "not a database\n" * 50
