"""The ``python -m expect_ct`` command line as a user runs it, in a separate process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m expect_ct ARGS``: output captured as text; a failing exit is returned, not
    raised, so a test can assert on the status and the one-line error."""
    return subprocess.run(
        [sys.executable, "-m", "expect_ct", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
        check=False,
    )
