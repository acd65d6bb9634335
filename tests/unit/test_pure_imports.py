"""The pure core, the engine and the command line do not import mitmproxy: ``python -m
expect_ct hosts`` (and every subcommand but check and the launched tools, which import it when
they run) works without loading mitmproxy, and the engine is usable as a library."""

from __future__ import annotations

import subprocess
import sys

PURE = (
    "expect_ct.cache",
    "expect_ct.chain",
    "expect_ct.decisions",
    "expect_ct.engine",
    "expect_ct.header",
    "expect_ct.header_uri",
    "expect_ct.loglist",
    "expect_ct.policy",
    "expect_ct.preload",
    "expect_ct.records",
    "expect_ct.report",
    "expect_ct.report_sender",
    "expect_ct.sct",
    "expect_ct.store",
    "expect_ct.tls_messages",
    "expect_ct.cli",
)


def test_importing_the_pure_modules_and_the_cli_does_not_import_mitmproxy() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {PURE!r}:\n"
        "    importlib.import_module(name)\n"
        "from expect_ct.cli import build_parser\n"
        "build_parser().parse_args(['hosts', '--json'])\n"
        "loaded = sorted(m for m in sys.modules if m == 'mitmproxy' or m.startswith('mitmproxy.'))\n"
        "print(loaded)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
