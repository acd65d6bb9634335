"""Reproduce docs/screenshot-mitmweb.png: mitmweb showing a flow's Certificate Transparency view.

A manual step, not part of `make test` or CI. It runs the browser test
(tests/e2e/test_mitmweb_browser.py: a real mitmweb with the addon, a real curl, an origin
serving SCTs embedded, in the TLS extension and in a stapled OCSP response, and headless
Chromium picking "certificate transparency" from the response tab's "View:" menu) and has it
write its screenshot to the output file. It needs Chromium (Debian: `apt-get install
chromium`); the README's screenshot is made on the mitmproxy 12 stack:

    .venv/py312/bin/python docs/screenshot.py [--out docs/screenshot-mitmweb.png]

Everything else the test writes goes to pytest's temporary directory; every process it
starts is stopped.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEST = REPO / "tests" / "e2e" / "test_mitmweb_browser.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot-mitmweb.png")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    env = dict(os.environ, EXPECT_CT_SCREENSHOT=str(out))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TEST)]
    done = subprocess.run(command, cwd=REPO, env=env)
    if done.returncode != 0:
        print(f"the browser test failed (exit {done.returncode}); {out} not written")
        return done.returncode
    print(f"{out}: {out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
