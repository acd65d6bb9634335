"""``python -m expect_ct`` without a command: the path of the mitmproxy script, for
``mitmdump -s "$(python -m expect_ct)"``."""

from __future__ import annotations

import importlib.util
import sys


def script_path() -> str:
    """Absolute path of the installed mitmproxy script ``expect_ct_addon.py``."""
    spec = importlib.util.find_spec("expect_ct_addon")
    if spec is None or spec.origin is None:
        raise RuntimeError("expect_ct_addon.py is not installed next to the expect_ct package")
    return spec.origin


def run() -> int:
    try:
        print(script_path())
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
