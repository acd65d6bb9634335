"""Run a real mitmdump with the addon, and a real client through it (end-to-end tests).

Everything listens on 127.0.0.1 with OS-chosen ports. mitmdump writes its output to a file
(a chatty run must never block on a full pipe), and the tests read the JSON-lines event log.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from typing import ClassVar

import support

REPO = support.REPO
ADDON_SCRIPT = REPO / "addon" / "expect_ct_addon.py"
RESOLVE_SCRIPT = REPO / "tests" / "support" / "scripts" / "resolve.py"
BIN = Path(sys.executable).parent
MITMDUMP = str(BIN / "mitmdump")
STARTUP_DEADLINE = 30.0


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    curl_exit: int
    stderr: str


@dataclass
class Mitmdump:
    """A mitmdump process with the addon; use as a context manager."""

    workdir: Path
    options: dict[str, Any] = field(default_factory=dict)
    script: Path = ADDON_SCRIPT
    extra_args: Sequence[str] = ()
    resolve: dict[str, int] = field(default_factory=dict)  # host name -> port on 127.0.0.1
    confdir: Path | None = None
    port: int = 0
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None
    # `python -m expect_ct mitmdump ...` (the addon built in) instead of `mitmdump -s SCRIPT`.
    built_in: bool = False
    tool: str = "mitmdump"  # with built_in: "mitmweb" also works
    program: ClassVar[str] = "mitmdump"  # for messages

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.confdir is None:
            self.confdir = self.workdir / "confdir"
        self.output = self.workdir / f"mitmdump-{id(self)}.log"
        self.options.setdefault("expect_ct_log", str(self.workdir / "events.jsonl"))
        # Tests reach only 127.0.0.1: no background log-list refresh from Apple unless a
        # test names a source (mitm/loglists.py).
        self.options.setdefault("expect_ct_log_list_update", "off")

    @property
    def event_log(self) -> Path:
        return Path(self.options["expect_ct_log"])

    @property
    def ca_cert(self) -> Path:
        assert self.confdir is not None
        return self.confdir / "mitmproxy-ca-cert.pem"

    def command(self) -> list[str]:
        launcher = [sys.executable, "-m", "expect_ct", self.tool] if self.built_in else [MITMDUMP]
        args = [
            *launcher,
            "--listen-host",
            "127.0.0.1",
            "-p",
            "0",
            "--set",
            f"confdir={self.confdir}",
        ]
        if not self.built_in:
            args += ["-s", str(self.script)]
        if self.resolve:
            args += ["-s", str(RESOLVE_SCRIPT)]
            for name, port in self.resolve.items():
                args += ["--set", f"test_resolve={name}=127.0.0.1:{port}"]
        for key, value in self.options.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            args += ["--set", f"{key}={value}"]
        return args + list(self.extra_args)

    def start(self) -> Mitmdump:
        out = open(self.output, "wb")
        self.process = subprocess.Popen(
            self.command(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
        )
        out.close()
        deadline = time.monotonic() + STARTUP_DEADLINE
        while time.monotonic() < deadline:
            text = self.output.read_text(errors="replace")
            if self.started(text):
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.program} exited with {self.process.returncode}:\n{text}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.program} did not start listening:\n{self.log_text()}")

    def started(self, output: str) -> bool:
        """Whether ``output`` (so far) says the proxy listens; reads its port from it."""
        if m := re.search(r"listening at [^\s]*:(\d+)", output):
            self.port = int(m.group(1))
            return True
        return False

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.process is None:
            return None
        code = support.stop_process(self.process, sig=sig)
        self.process = None
        return code

    def __enter__(self) -> Mitmdump:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.event_log.exists():
            return []
        text = self.event_log.read_text()
        # The proxy may be writing a long line right now: only complete lines count.
        complete = text[: text.rfind("\n") + 1]
        records = [json.loads(line) for line in complete.splitlines() if line]
        return [r for r in records if kind is None or r["event"] == kind]

    def wait_for_event(
        self, kind: str, predicate: Any = None, deadline: float = 10.0
    ) -> dict[str, Any]:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            for record in self.events(kind):
                if predicate is None or predicate(record):
                    return record
            time.sleep(0.05)
        raise AssertionError(f"no {kind} event matched; events: {self.events()}")

    def curl(
        self,
        url: str,
        *,
        headers: Sequence[str] = (),
        http2: bool = False,
        timeout: float = 15.0,
    ) -> Response:
        """One request through the proxy with a real curl."""
        head = self.workdir / f"headers-{time.monotonic_ns()}.txt"
        args = [
            "curl",
            "-sS",
            "--max-time",
            str(timeout),
            "--proxy",
            f"http://127.0.0.1:{self.port}",
            "--cacert",
            str(self.ca_cert),
            "-D",
            str(head),
            "-o",
            "-",
            "--http2" if http2 else "--http1.1",
        ]
        for h in headers:
            args += ["-H", h]
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        done = subprocess.run(args + [url], capture_output=True, env=env, timeout=timeout + 5)
        status = 0
        parsed: dict[str, str] = {}
        if head.exists():
            blocks = head.read_bytes().decode(errors="replace").strip().split("\r\n\r\n")
            lines = blocks[-1].splitlines() if blocks else []
            if lines and (m := re.match(r"HTTP/[\d.]+ (\d+)", lines[0])):
                status = int(m.group(1))
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    parsed[k.strip().lower()] = v.strip()
        return Response(
            status, parsed, done.stdout, done.returncode, done.stderr.decode(errors="replace")
        )


def running(workdir: Path, **options: Any) -> Iterator[Mitmdump]:
    with Mitmdump(workdir, dict(options)) as proxy:
        yield proxy
