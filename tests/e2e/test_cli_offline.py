"""`python -m expect_ct check | inspect | update-log-list`, each run for real as a subprocess.

check reads flow files a real mitmdump with the addon wrote while real curl requests went to
real origins; its verdicts must equal what the live addon wrote to its event log. inspect
runs on the real SCT vectors and on synthetic certificates, SCT lists and OCSP staples.
update-log-list fetches from a real HTTPS server on 127.0.0.1 with its own test root.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.server
import json
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

import support
from expect_ct.loglist import LogList
from support import pki
from support.cli import run_cli
from support.httpsorigin import Origin
from support.httpsorigin import https_origin
from support.proxy import Mitmdump
from support.world import World
from support.world import proxy_options

VECTORS = support.VECTORS
GOOGLE_LIST = VECTORS / "google_all_logs_2026-06-20.json"
UTC = datetime.UTC


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ------------------------------------------------------------------------------- check


@dataclass(frozen=True)
class Capture:
    flows: Path  # everything mitmdump saved
    good_only: Path  # the flows of good.test and corp.test only (all compliant or exempt)
    events: list[dict[str, Any]]
    ports: dict[str, int]
    world: World
    confdir: Path  # empty: no installed log list


HEADERS = {
    "good.test": "max-age=86400, enforce",
    "bad.test": 'max-age=600, report-uri="https://r.example/ct"',
    "corp.test": "max-age=3600",
    "strict.test": "max-age=60, enforce",
}


def _site(world: World, tmp: Path, name: str, issuer: pki.CA, embedded: bool) -> tuple[Path, Path]:
    ts = pki.now_ms() - 60_000
    scts = [(world.log_a, ts), (world.log_b, ts + 1)] if embedded else []
    cert, key = pki.make_leaf(issuer, hosts=[name], embedded=scts)
    chain, keyfile = tmp / f"{name}.chain.pem", tmp / f"{name}.key.pem"
    chain.write_bytes(pki.pem(cert, issuer.cert))
    keyfile.write_bytes(pki.key_pem(key))
    return chain, keyfile


@pytest.fixture(scope="module")
def capture(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capture]:
    """One mitmdump run (-w) through a compliant, a non-compliant, a private-root and a
    preloaded enforce host, with Expect-CT headers; the flows and events it wrote."""
    from mitmproxy import io as mitmio

    tmp = tmp_path_factory.mktemp("check")
    sites = {
        "good.test": _site(world, tmp, "good.test", world.public_inter, True),
        "bad.test": _site(world, tmp, "bad.test", world.public_inter, False),
        "corp.test": _site(world, tmp, "corp.test", world.private_inter, False),
        "strict.test": _site(world, tmp, "strict.test", world.public_inter, False),
    }
    preload = tmp / "preload.json"
    expires = datetime.datetime.now(UTC) + datetime.timedelta(days=30)
    preload.write_text(
        json.dumps([{"host": "strict.test", "enforce": True, "expires": pki.rfc3339(expires)}])
    )
    flows = tmp / "flows.mitm"
    origins: dict[str, Origin] = {}
    with contextlib.ExitStack() as stack:
        for name, (chain, key) in sites.items():
            routes = {"/": [("Expect-CT", HEADERS[name])], "/bad": [("Expect-CT", "max-age=x")]}
            origins[name] = stack.enter_context(https_origin(chain, key, routes))
        proxy = Mitmdump(
            tmp / "run",
            proxy_options(world, expect_ct_store=":memory:", expect_ct_preload=str(preload)),
            extra_args=["-w", str(flows)],
            resolve={name: o.port for name, o in origins.items()},
        )
        with proxy:
            for name, origin in origins.items():
                url = f"https://{name}:{origin.port}"
                proxy.curl(url + "/")
            proxy.curl(f"https://good.test:{origins['good.test'].port}/bad")
            proxy.wait_for_event("header", lambda r: r["values"] == ["max-age=x"])
            proxy.wait_for_event("blocked", lambda r: r["host"] == "strict.test")
        events = proxy.events()
    with open(flows, "rb") as f:
        saved = list(mitmio.FlowReader(f).stream())
    good_only = tmp / "good-only.mitm"
    with open(good_only, "wb") as f:
        writer = mitmio.FlowWriter(f)
        for flow in saved:
            if flow.server_conn.sni in ("good.test", "corp.test"):
                writer.add(flow)
    confdir = tmp / "confdir"
    confdir.mkdir()
    yield Capture(flows, good_only, events, {n: o.port for n, o in origins.items()}, world, confdir)


def check_args(cap: Capture, *files: Path) -> list[str]:
    return [
        "check",
        *(str(f) for f in files),
        "--log-list",
        str(cap.world.log_list),
        "--public-roots",
        str(cap.world.public_roots_pem),
        "--private-roots",
        str(cap.world.upstream_trust_pem),
        "--confdir",
        str(cap.confdir),
    ]


def by_host(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        out.setdefault(record["host"], []).append(record)
    return out


SAME_FIELDS = ("port", "chain", "certificate", "scts", "compliant", "policy", "reasons")


def test_check_json_gives_the_live_addons_verdicts(capture: Capture) -> None:
    done = run_cli(*check_args(capture, capture.flows), "--json")
    assert done.returncode == 1, done.stderr  # bad.test: public and not compliant
    offline = by_host(json_lines(done.stdout))
    live = by_host([e for e in capture.events if e["event"] == "connection"])
    assert set(offline) == set(live) == set(HEADERS)
    for host, live_records in live.items():
        # One output object per upstream connection, as the event log has one event each.
        assert len(offline[host]) == len(live_records), host
        for mine, theirs in zip(offline[host], live_records, strict=True):
            for name in SAME_FIELDS:
                assert mine[name] == theirs[name], (host, name)
            assert mine["tls_version"] == theirs["tls_version"]
            assert mine["recorded"]["compliant"] == theirs["compliant"]
            if not mine["evaluated"]:
                continue  # refused in the handshake: see the test below
            # The addon saved what the handshake held (issue 14: check used to ignore it and
            # say "not observed"): offline sees what the live addon saw.
            assert theirs["sources"]["tls-extension"] == "absent"
            assert mine["sources"] == theirs["sources"]
    good = offline["good.test"]
    assert [r["chain"] for r in good] == ["public", "public"] and all(r["compliant"] for r in good)
    assert all(s["status"] == "valid" and s["counted"] for r in good for s in r["scts"])
    assert offline["bad.test"][0]["compliant"] is False
    assert offline["corp.test"][0]["chain"] == "private"


def test_check_json_headers_match_the_live_header_events(capture: Capture) -> None:
    done = run_cli(*check_args(capture, capture.flows), "--json")
    offline = [(r["host"], h) for r in json_lines(done.stdout) for h in r["headers"]]
    live = [e for e in capture.events if e["event"] == "header"]
    assert len(offline) == len(live) == 4  # strict.test was blocked: no response, no header
    for event in live:
        (mine,) = [
            h for host, h in offline if host == event["host"] and h["values"] == event["values"]
        ]
        for name in ("valid", "error", "max_age", "enforce", "report_uri"):
            assert mine[name] == event[name], (event["host"], name)
        assert mine["effect"] == ("noted" if event["action"] in ("noted", "updated") else "ignored")
    headers = {host: h for host, h in offline if h["valid"]}
    assert headers["good.test"]["effect"] == "noted"
    assert headers["bad.test"]["report_uri"] == "https://r.example/ct"
    assert "not CT-compliant" in headers["bad.test"]["why"]
    assert "private root" in headers["corp.test"]["why"]


def test_check_reports_a_connection_refused_during_the_handshake(capture: Capture) -> None:
    done = run_cli(*check_args(capture, capture.flows), "--json")
    (strict,) = [r for r in json_lines(done.stdout) if r["host"] == "strict.test"]
    (blocked,) = [e for e in capture.events if e["event"] == "blocked"]
    # mitmproxy saved no certificate for it; the addon's own record is reported as such.
    assert strict["evaluated"] is False
    assert strict["blocked"] == blocked["reason"]
    assert strict["compliant"] is False and strict["chain"] == "public"
    assert strict["port"] == capture.ports["strict.test"]


def test_check_text_table(capture: Capture) -> None:
    done = run_cli(*check_args(capture, capture.flows))
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("CT check of 1 flow file(s): policy chrome")
    assert "not observed" in lines[1]
    header = next(line for line in lines if line.startswith("HOST:PORT"))
    for column in ("CHAIN", "CT", "SCTS V/I/U", "EXPECT-CT", "REASONS"):
        assert column in header

    def row(host: str) -> str:
        return next(line for line in lines if line.startswith(f"{host}:{capture.ports[host]} "))

    good = row("good.test").split()
    assert good[1:4] == ["public", "compliant", "2/0/0"]
    assert "max-age=86400 enforce -> noted" in row("good.test")
    bad = row("bad.test")
    assert "NOT compliant" in bad and "0/0/0" in bad and "no SCTs" in bad
    assert "report-uri=https://r.example/ct -> ignored" in bad
    assert row("corp.test").split()[1:3] == ["private", "exempt"]
    assert "blocked by the addon during the handshake" in row("strict.test")
    assert "CT does not apply" in row("corp.test")
    assert "invalid (" in done.stdout  # max-age=x on good.test
    assert lines[-1].startswith("5 connections: 2 compliant, 2 publicly trusted and NOT compliant")


def test_check_exit_code_zero_when_all_compliant_or_exempt(capture: Capture) -> None:
    done = run_cli(*check_args(capture, capture.good_only), "--json")
    assert done.returncode == 0, done.stderr
    hosts = {r["host"] for r in json_lines(done.stdout)}
    assert hosts == {"good.test", "corp.test"}


def test_check_evaluates_each_connection_once_across_files(capture: Capture) -> None:
    once = json_lines(run_cli(*check_args(capture, capture.flows), "--json").stdout)
    done = run_cli(*check_args(capture, capture.flows, capture.good_only), "--json")
    assert done.returncode == 1
    assert len(json_lines(done.stdout)) == len(once)
    progress = done.stderr.splitlines()
    assert progress[0] == f"[1/2] {capture.flows}: 5 flows, 5 new HTTPS connections"
    assert progress[1] == f"[2/2] {capture.good_only}: 3 flows, 0 new HTTPS connections"


def test_check_policy_option_changes_the_verdict(capture: Capture) -> None:
    done = run_cli(*check_args(capture, capture.good_only), "--json", "--policy", "apple")
    good = [r for r in json_lines(done.stdout) if r["host"] == "good.test"]
    assert good and all(r["policy"] == "apple" for r in good)


def test_check_without_private_roots_calls_the_corporate_chain_untrusted(capture: Capture) -> None:
    args = check_args(capture, capture.good_only)
    index = args.index("--private-roots")
    del args[index : index + 2]
    done = run_cli(*args, "--json")
    corp = [r for r in json_lines(done.stdout) if r["host"] == "corp.test"]
    assert corp[0]["chain"] == "untrusted"
    assert done.returncode == 0  # only publicly trusted chains make the exit code 1


def test_check_file_that_is_not_a_flow_file(capture: Capture, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("these are not flows\n")
    done = run_cli(*check_args(capture, capture.good_only, bogus))
    assert done.returncode == 2
    assert f"{bogus}: not a mitmproxy flow file" in done.stderr
    missing = tmp_path / "missing.mitm"
    done = run_cli(*check_args(capture, missing))
    assert done.returncode == 2 and f"{missing}: cannot read" in done.stderr


def test_check_bad_log_list_and_roots_are_usage_errors(capture: Capture, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    done = run_cli("check", str(capture.good_only), "--log-list", str(garbage))
    assert done.returncode == 2 and str(garbage) in done.stderr and "not valid JSON" in done.stderr
    done = run_cli("check", str(capture.good_only), "--public-roots", str(garbage))
    assert done.returncode == 2 and f"--public-roots {garbage}" in done.stderr


def test_check_uses_the_installed_log_list_of_the_confdir(capture: Capture, tmp_path: Path) -> None:
    confdir = tmp_path / "confdir"
    confdir.mkdir()
    shutil.copy(capture.world.log_list, confdir / "expect-ct-log-list.json")
    args = check_args(capture, capture.good_only)
    index = args.index("--log-list")
    del args[index : index + 2]
    args[args.index("--confdir") + 1] = str(confdir)
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert str(confdir / "expect-ct-log-list.json") in done.stdout.splitlines()[0]
    # Without it, the bundled Apple list does not know the test logs: not compliant.
    args[args.index("--confdir") + 1] = str(capture.confdir)
    done = run_cli(*args, "--json")
    assert "bundled" in run_cli(*args).stdout.splitlines()[0]
    good = [r for r in json_lines(done.stdout) if r["host"] == "good.test"]
    assert all(s["status"] == "unknown" for r in good for s in r["scts"])
    assert done.returncode == 1


# ----------------------------------------------------------------------------- inspect


def vector_args(*args: str) -> list[str]:
    return ["inspect", *args, "--log-list", str(GOOGLE_LIST), "--confdir", "/nonexistent"]


def test_inspect_real_letsencrypt_vector() -> None:
    leaf = VECTORS / "rpv-letsencrypt.org-2026.leaf.pem"
    issuer = VECTORS / "rpv-letsencrypt.org-2026.issuer.pem"
    done = run_cli(*vector_args(str(leaf), str(issuer), "--now", "2026-04-01", "--json"))
    assert done.returncode == 0, done.stderr
    (record,) = json_lines(done.stdout)
    assert record["time"] == "2026-04-01T00:00:00Z"
    assert [(s["log"], s["status"], s["counted"]) for s in record["scts"]] == [
        ("Cloudflare 'Nimbus2026'", "valid", True),
        ("Geomys 'Tuscolo2026h1'", "valid", True),
    ]
    assert [s["timestamp"] for s in record["scts"]] == [1772992980455, 1772992980608]
    assert record["chain"] == "public"  # Let's Encrypt E8 chains to certifi's ISRG Root X2
    assert record["compliant"] is True and record["reasons"] == []
    # Each why names the deciding rule: the embedded path, N = 2 for a 90-day certificate (C1).
    assert [s["why"] for s in record["scts"]] == [
        "counted: embedded, usable log, operator Cloudflare, log 1 of 2 needed (C1)",
        "counted: embedded, usable log, operator Geomys, log 2 of 2 needed (C1)",
    ]
    text = run_cli(*vector_args(str(leaf), str(issuer), "--now", "2026-04-01"))
    assert text.returncode == 0
    for expected in (
        "SCT 1 of 2",
        "  source     embedded",
        "  operator   Cloudflare",
        "  timestamp  2026-03-08T18:03:00.455Z",
        "  status     valid",
        "  counted    yes (embedded, usable log, operator Cloudflare, log 1 of 2 needed (C1))",
        "  counted    yes (embedded, usable log, operator Geomys, log 2 of 2 needed (C1))",
        "Verdict      compliant under the chrome policy",
    ):
        assert expected in text.stdout, text.stdout


def test_inspect_real_google_vector_with_tls_extension_scts() -> None:
    leaf = VECTORS / "sctrs-star.google.com-2017.leaf.pem"
    scts = VECTORS / "sctrs-star.google.com-2017.sct_list.bin"
    done = run_cli(
        *vector_args(str(leaf), "--tls-scts", str(scts), "--now", "2017-07-01", "--json")
    )
    (record,) = json_lines(done.stdout)
    assert [(s["source"], s["log"], s["status"]) for s in record["scts"]] == [
        ("tls-extension", "Google 'Pilot' log", "valid"),
        ("tls-extension", "Symantec log", "valid"),
    ]
    # Signatures verify, but both logs are rejected in the 2026 list: nothing counts.
    assert not any(s["counted"] for s in record["scts"])
    assert "rejected" in record["scts"][0]["why"]
    assert record["compliant"] is False
    assert record["sources"] == {
        "embedded": "observed",
        "tls-extension": "present",
        "ocsp": "not observed",
    }
    # No issuer given and long expired: not publicly trusted, so not a failing exit code.
    assert record["chain"] == "untrusted"
    assert done.returncode == 0
    # The same SCTs with a wrong leaf do not verify.
    other = VECTORS / "rpv-letsencrypt.org-2026.leaf.pem"
    done = run_cli(*vector_args(str(other), "--tls-scts", str(scts), "--json"))
    assert {s["status"] for s in json_lines(done.stdout)[0]["scts"]} == {"invalid"}


@pytest.fixture(scope="module")
def synthetic(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("inspect")
    leaf, _key = pki.make_leaf(world.public_inter, hosts=["shop.test"])
    ts = pki.now_ms() - 60_000
    both = pki.tls_sct_list(leaf, [(world.log_a, ts), (world.log_b, ts + 1)])
    files = {
        "leaf.der": leaf.public_bytes(serialization.Encoding.DER),
        "chain.pem": pki.pem(world.public_inter.cert, world.public_root.cert),
        "tls.bin": both,
        "ocsp.der": pki.ocsp_response(leaf, world.public_inter, sct_list=both),
        "ocsp-one.der": pki.ocsp_response(
            leaf, world.public_inter, sct_list=pki.tls_sct_list(leaf, [(world.log_a, ts)])
        ),
        "private.pem": pki.pem(pki.make_leaf(world.private_inter)[0], world.private_inter.cert),
        "garbage.bin": b"\x00\x05hello, not what you think",
    }
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    return {name: tmp / name for name in files}


def synthetic_args(world: World, *args: str) -> list[str]:
    return [
        "inspect",
        *args,
        "--log-list",
        str(world.log_list),
        "--public-roots",
        str(world.public_roots_pem),
        "--confdir",
        "/nonexistent",
        "--json",
    ]


def test_inspect_synthetic_leaf_without_scts_is_not_compliant(
    world: World, synthetic: dict[str, Path]
) -> None:
    done = run_cli(*synthetic_args(world, str(synthetic["leaf.der"]), str(synthetic["chain.pem"])))
    assert done.returncode == 1, done.stderr
    (record,) = json_lines(done.stdout)
    assert record["chain"] == "public" and record["compliant"] is False
    assert record["scts"] == [] and "no SCTs" in record["reasons"][0]


def test_inspect_synthetic_tls_extension_scts(world: World, synthetic: dict[str, Path]) -> None:
    done = run_cli(
        *synthetic_args(
            world,
            str(synthetic["leaf.der"]),
            str(synthetic["chain.pem"]),
            "--tls-scts",
            str(synthetic["tls.bin"]),
            "--host",
            "shop.test",
        )
    )
    assert done.returncode == 0, done.stderr
    (record,) = json_lines(done.stdout)
    assert record["host"] == "shop.test" and record["compliant"] is True
    assert [(s["source"], s["operator"], s["status"], s["counted"]) for s in record["scts"]] == [
        ("tls-extension", "Alpha", "valid", True),
        ("tls-extension", "Beta", "valid", True),
    ]
    assert record["scts"][0]["log_id"] == base64.b64encode(world.log_a.log_id).decode()


def ocsp_sct_summary(record: dict[str, Any]) -> list[tuple[str, str, str, bool, str]]:
    return [
        (s["source"], s["operator"], s["status"], s["counted"], s["why"]) for s in record["scts"]
    ]


@pytest.mark.parametrize(
    "policy, why_end, one_sct_reason",
    [
        # Chrome before 148 counts OCSP SCTs like TLS-extension SCTs (C4a) on the mixed path.
        (
            "chrome-pre148",
            ", non-embedded SCT from a log not retired (C3)",
            "SCTs from 2 distinct operators required (any delivery once 1 SCT arrives via "
            "TLS extension or OCSP), only Alpha found (C3)",
        ),
        # Apple's rule (a): 2 currently approved logs, 1 via TLS or OCSP stapling (A2, A6).
        (
            "apple",
            " (A2)",
            "2 SCTs from once or currently approved logs required, 1 found (A1)",
        ),
    ],
    ids=["chrome-pre148", "apple"],
)
def test_inspect_synthetic_ocsp_scts(
    world: World, synthetic: dict[str, Path], policy: str, why_end: str, one_sct_reason: str
) -> None:
    base = [str(synthetic["leaf.der"]), str(synthetic["chain.pem"]), "--policy", policy]
    done = run_cli(*synthetic_args(world, *base, "--ocsp", str(synthetic["ocsp.der"])))
    assert done.returncode == 0, done.stderr
    (record,) = json_lines(done.stdout)
    assert record["policy"] == policy
    assert record["compliant"] is True and record["reasons"] == []
    assert record["sources"]["ocsp"] == "present"
    assert ocsp_sct_summary(record) == [
        (
            "ocsp",
            operator,
            "valid",
            True,
            f"counted: OCSP, usable log, operator {operator}{why_end}",
        )
        for operator in ("Alpha", "Beta")
    ]
    one = run_cli(*synthetic_args(world, *base, "--ocsp", str(synthetic["ocsp-one.der"])))
    assert one.returncode == 1, one.stderr
    (record,) = json_lines(one.stdout)
    assert record["compliant"] is False
    assert record["reasons"] == [one_sct_reason]


def test_inspect_synthetic_ocsp_scts_do_not_count_for_chrome_148(
    world: World, synthetic: dict[str, Path]
) -> None:
    # The same staple under the default policy, Chrome 148 and later: verified, not counted (C4).
    base = [str(synthetic["leaf.der"]), str(synthetic["chain.pem"])]
    done = run_cli(*synthetic_args(world, *base, "--ocsp", str(synthetic["ocsp.der"])))
    assert done.returncode == 1, done.stderr
    (record,) = json_lines(done.stdout)
    assert record["policy"] == "chrome" and record["chain"] == "public"
    assert record["compliant"] is False
    assert record["sources"]["ocsp"] == "present"
    assert ocsp_sct_summary(record) == [
        (
            "ocsp",
            operator,
            "valid",
            False,
            "not counted: Chrome 148+ ignores OCSP-delivered SCTs (C4)",
        )
        for operator in ("Alpha", "Beta")
    ]
    assert record["reasons"] == [
        "no SCT delivered via TLS extension from a log not retired (C3); SCTs from the stapled "
        "OCSP response are ignored since Chrome 148 (C4)",
        "SCTs from 2 distinct operators required (any delivery once 1 SCT arrives via "
        "TLS extension), none found (C3)",
    ]


def test_inspect_wrong_host_makes_the_chain_untrusted(
    world: World, synthetic: dict[str, Path]
) -> None:
    done = run_cli(
        *synthetic_args(
            world, str(synthetic["leaf.der"]), str(synthetic["chain.pem"]), "--host", "other.test"
        )
    )
    (record,) = json_lines(done.stdout)
    assert record["chain"] == "untrusted" and done.returncode == 0


def test_inspect_private_chain_is_exempt(world: World, synthetic: dict[str, Path]) -> None:
    args = synthetic_args(world, str(synthetic["private.pem"]))
    args.remove("--json")
    done = run_cli(*args, "--private-roots", str(world.upstream_trust_pem))
    assert done.returncode == 0, done.stderr
    assert "Verdict      exempt" in done.stdout
    assert "chain ends at a private root" in done.stdout


@pytest.mark.parametrize(
    "option, message",
    [
        ("leaf", "not a certificate: no PEM block"),
        ("chain", "not a certificate: no PEM block"),
        ("--tls-scts", "not a TLS-encoded SignedCertificateTimestampList"),
        ("--ocsp", "not a DER OCSP response"),
        ("--log-list", "not valid JSON"),
    ],
)
def test_inspect_bad_files_are_usage_errors(
    world: World, synthetic: dict[str, Path], option: str, message: str
) -> None:
    garbage = str(synthetic["garbage.bin"])
    leaf = str(synthetic["leaf.der"])
    args = synthetic_args(world, garbage if option == "leaf" else leaf)
    if option == "chain":
        args.insert(2, garbage)
    elif option == "--log-list":
        args[args.index("--log-list") + 1] = garbage
    elif option != "leaf":
        args += [option, garbage]
    done = run_cli(*args)
    assert done.returncode == 2, done.stdout
    assert garbage in done.stderr and message in done.stderr, done.stderr
    assert done.stdout == ""


def test_inspect_missing_file_and_bad_now(world: World, tmp_path: Path) -> None:
    missing = tmp_path / "absent.pem"
    done = run_cli("inspect", str(missing))
    assert done.returncode == 2 and f"{missing}: cannot read" in done.stderr
    done = run_cli("inspect", str(missing), "--now", "yesterday")
    assert done.returncode == 2 and "not an ISO 8601 date" in done.stderr


# --------------------------------------------------------------------- update-log-list


@dataclass
class ListServer:
    port: int
    root_pem: Path
    routes: dict[str, tuple[int, bytes, int | None]]  # path -> (status, body, declared length)
    requests: list[str]

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"


@pytest.fixture
def list_server(world: World, tmp_path: Path) -> Iterator[ListServer]:
    root = pki.make_root("Mirror Test Root")
    cert, key = pki.make_leaf(root)
    (tmp_path / "mirror.pem").write_bytes(pki.pem(cert, root.cert))
    (tmp_path / "mirror.key").write_bytes(pki.key_pem(key))
    (tmp_path / "mirror-root.pem").write_bytes(pki.pem(root.cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "mirror.pem", tmp_path / "mirror.key")
    fresh = json.dumps(
        pki.log_list_json(
            [pki.LogEntry(world.log_a), pki.LogEntry(world.log_b)],
            timestamp=datetime.datetime.now(UTC) - datetime.timedelta(days=2),
        )
    ).encode()
    apple = json.dumps(pki.log_list_json([pki.LogEntry(world.log_a)], schema="apple")).encode()
    state = ListServer(
        0,
        tmp_path / "mirror-root.pem",
        {
            "/list.json": (200, fresh, None),
            "/apple.json": (200, apple, None),
            "/garbage.json": (200, b"<html>maintenance</html>", None),
            "/truncated.json": (200, fresh[:100], len(fresh)),
            "/huge.json": (200, b"{}", 20_000_000),
            "/empty.json": (200, json.dumps({"operators": []}).encode(), None),
        },
        [],
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            state.requests.append(self.path)
            status, body, declared = state.routes.get(self.path, (404, b"not found\n", None))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(declared if declared else len(body)))
            if declared:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            if declared:
                self.close_connection = True

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def proxied_env() -> dict[str, str]:
    """A proxy in the environment that would break every request: the command must ignore it."""
    env = dict(os.environ)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        env[name] = "http://127.0.0.1:9"
    return env


def update(
    server: ListServer, path: str, out: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "update-log-list",
        "--source",
        server.url(path),
        "--out",
        str(out),
        "--cafile",
        str(server.root_pem),
        "--timeout",
        "10",
        *extra,
        env=proxied_env(),
    )


def test_update_log_list_installs_a_valid_list(list_server: ListServer, tmp_path: Path) -> None:
    out = tmp_path / "confdir" / "expect-ct-log-list.json"
    done = update(list_server, "/list.json", out)
    assert done.returncode == 0, done.stderr
    assert list_server.requests == ["/list.json"]
    installed = LogList.load(out)  # exactly what the addon loads
    assert len(installed) == 2
    assert f"installed {out}: 2 CT logs (google-v3 schema)" in done.stdout
    assert "(2.0 days old)" in done.stdout
    assert "fetched" in done.stderr and "bytes from" in done.stderr
    # The list and its metadata sidecar; no temp file left.
    assert sorted(p.name for p in out.parent.iterdir()) == [
        out.name,
        "expect-ct-log-list.meta.json",
    ]
    # check then uses it by default from that confdir.
    leaf = pki.make_leaf(pki.make_root())[0]
    (tmp_path / "leaf.pem").write_bytes(pki.pem(leaf))
    inspected = run_cli("inspect", str(tmp_path / "leaf.pem"), "--confdir", str(out.parent))
    assert str(out) in inspected.stdout


def test_update_log_list_apple_schema_has_no_timestamp(
    list_server: ListServer, tmp_path: Path
) -> None:
    out = tmp_path / "list.json"
    done = update(list_server, "/apple.json", out)
    assert done.returncode == 0, done.stderr
    assert "1 CT logs (apple-v5 schema)" in done.stdout
    assert "no timestamp" in done.stdout and "last successful fetch" in done.stdout


@pytest.mark.parametrize(
    "path, message",
    [
        ("/garbage.json", "not valid JSON"),
        ("/truncated.json", "truncated"),
        ("/missing.json", "HTTP 404"),
        ("/huge.json", "limit"),
        ("/empty.json", "no CT logs"),
    ],
)
def test_update_log_list_keeps_the_old_file_on_failure(
    list_server: ListServer, tmp_path: Path, path: str, message: str
) -> None:
    out = tmp_path / "confdir" / "expect-ct-log-list.json"
    out.parent.mkdir()
    out.write_text("the old list\n")
    done = update(list_server, path, out)
    assert done.returncode == 1, done.stdout
    assert message in done.stderr, done.stderr
    assert out.read_text() == "the old list\n"
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]


def test_update_log_list_verifies_the_server_certificate(
    list_server: ListServer, tmp_path: Path
) -> None:
    out = tmp_path / "list.json"
    done = run_cli(
        "update-log-list",
        "--source",
        list_server.url("/list.json"),
        "--out",
        str(out),
        env=proxied_env(),
    )
    assert done.returncode == 1
    assert "certificate verify failed" in done.stderr
    assert not out.exists()


def test_update_log_list_from_a_local_file(world: World, tmp_path: Path) -> None:
    out = tmp_path / "installed.json"
    done = run_cli("update-log-list", "--source", str(world.log_list), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == world.log_list.read_bytes()
    missing = tmp_path / "nope.json"
    done = run_cli("update-log-list", "--source", str(missing), "--out", str(out))
    assert done.returncode == 2 and f"{missing}: cannot read" in done.stderr
    garbage = tmp_path / "garbage.json"
    garbage.write_text("[1, 2")
    done = run_cli("update-log-list", "--source", str(garbage), "--out", str(out))
    assert done.returncode == 1 and "not valid JSON" in done.stderr
    assert out.read_bytes() == world.log_list.read_bytes()


@pytest.mark.parametrize(
    "url",
    [
        "https://www.gstatic.com/ct/log_list/v3/log_list.json",
        "https://www.gstatic.com/ct/log_list/v3/all_logs_list.json",
    ],
)
def test_update_log_list_refuses_chromes_list(url: str, tmp_path: Path) -> None:
    out = tmp_path / "list.json"
    # An unusable proxy and no network: the refusal must come before any connection.
    done = run_cli("update-log-list", "--source", url, "--out", str(out), env=proxied_env())
    assert done.returncode == 2
    assert "acceptable-use policy" in done.stderr and "--i-have-permission" in done.stderr
    assert not out.exists()


def test_update_log_list_refuses_plain_http(tmp_path: Path) -> None:
    done = run_cli(
        "update-log-list", "--source", "http://127.0.0.1:9/list.json", "--out", str(tmp_path / "x")
    )
    assert done.returncode == 2 and "only https" in done.stderr
