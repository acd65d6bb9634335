"""Command line of ``python -m expect_ct``."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence


def script_path() -> str:
    """Absolute path of the installed mitmproxy script ``expect_ct_addon.py``."""
    spec = importlib.util.find_spec("expect_ct_addon")
    if spec is None or spec.origin is None:
        raise RuntimeError("expect_ct_addon.py is not installed next to the expect_ct package")
    return spec.origin


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m expect_ct",
        description="Certificate Transparency and Expect-CT for mitmproxy. "
        "With no command, print the path of the mitmproxy script, for "
        'mitmdump -s "$(python -m expect_ct)".',
    )
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        try:
            print(script_path())
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    parser.error(f"unknown command {args.command}")
    return 2
