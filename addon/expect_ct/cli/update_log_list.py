"""``python -m expect_ct update-log-list``: fetch, validate and atomically install a CT log
list where the addon loads it. Exit 0: installed; 1: could not fetch or refused the list (the
old file is kept); 2: usage errors."""

from __future__ import annotations

import argparse
import datetime
import http.client
import os
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import certifi

from expect_ct import loglist as loglistmod
from expect_ct import records
from expect_ct.cli import common
from expect_ct.cli.common import DEFAULT_CONFDIR
from expect_ct.cli.common import LOG_LIST_FILENAME

APPLE_LOG_LIST_URL = "https://valid.apple.com/ct/log_list/current_log_list.json"
# Apple's current list is about 100 kB and Google's all_logs_list about 200 kB.
MAX_LOG_LIST_BYTES = 16 * 1024 * 1024
DEFAULT_TIMEOUT = 30.0
# Chrome and Firefox stop enforcing CT with a log list older than 70 days (ct_policy.md).
STALE_AFTER = datetime.timedelta(days=70)
CHROME_LIST_HOST = "gstatic.com"
CHROME_LIST_PATH = "/ct/log_list"
CHROME_POLICY_NOTE = (
    "Chrome's log lists may not be used to facilitate CT enforcement in TLS clients other than "
    "Chrome without explicit written permission from Chrome's CT team (acceptable-use policy "
    "of 2025-06-25, GoogleChrome/CertificateTransparency log_lists.md)"
)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "update-log-list",
        help="fetch and install a fresh CT log list",
        description="Fetch a CT log list, validate it and install it atomically where the addon "
        "loads it when expect_ct_log_list is not set. An invalid or incomplete download never "
        "replaces the installed list. Exit 0: installed; 1: fetch failed or list refused; "
        "2: usage error.",
    )
    parser.add_argument(
        "--source",
        metavar="apple|URL|PATH",
        default="apple",
        help=f"'apple' ({APPLE_LOG_LIST_URL}, the default), an https URL, or a local file",
    )
    parser.add_argument(
        "--out", metavar="PATH", help=f"where to install (default: <confdir>/{LOG_LIST_FILENAME})"
    )
    parser.add_argument(
        "--confdir",
        metavar="DIR",
        default=DEFAULT_CONFDIR,
        help=f"mitmproxy's confdir (default: {DEFAULT_CONFDIR})",
    )
    parser.add_argument(
        "--cafile",
        metavar="PEM",
        help="trust these CA certificates instead of certifi's bundle (for private mirrors)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=DEFAULT_TIMEOUT,
        help=f"seconds (default: {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--i-have-permission",
        action="store_true",
        help="allow Chrome's log list (gstatic.com/ct/log_list): only with written permission "
        "from Chrome's CT team",
    )
    parser.set_defaults(run=run)


def is_chrome_log_list(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    return (
        host == CHROME_LIST_HOST or host.endswith("." + CHROME_LIST_HOST)
    ) and parts.path.startswith(CHROME_LIST_PATH)


def _progress(received: int, total: int | None) -> None:
    if sys.stderr.isatty():
        of = f" of {total}" if total else ""
        print(f"\rdownloading: {received}{of} bytes", end="", file=sys.stderr, flush=True)


def fetch_url(
    url: str,
    *,
    cafile: str | None,
    timeout: float,
    limit: int = MAX_LOG_LIST_BYTES,
    progress: Callable[[int, int | None], None] = _progress,
) -> bytes:
    """GET ``url`` over verified HTTPS, directly (proxy environment variables are ignored:
    this usually runs next to the very proxy that needs the list)."""
    try:
        context = ssl.create_default_context(cafile=cafile or certifi.where())
    except (OSError, ssl.SSLError) as e:
        raise common.UsageError(f"--cafile {cafile}: cannot load CA certificates: {e}") from e
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    request = urllib.request.Request(url, headers={"User-Agent": "mitmproxy-expect-ct"})
    chunks: list[bytes] = []
    received = 0
    try:
        with opener.open(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > limit:
                raise common.FetchError(f"{url}: {total} bytes is more than the {limit}-byte limit")
            while chunk := response.read(64 * 1024):
                received += len(chunk)
                if received > limit:
                    raise common.FetchError(f"{url}: more than the {limit}-byte limit")
                chunks.append(chunk)
                progress(received, total)
            if total is not None and received != total:
                raise common.FetchError(f"{url}: truncated: got {received} of {total} bytes")
    except urllib.error.HTTPError as e:
        raise common.FetchError(f"{url}: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise common.FetchError(f"{url}: cannot fetch: {e.reason}") from e
    except http.client.IncompleteRead as e:
        raise common.FetchError(
            f"{url}: truncated: the connection closed after {received + len(e.partial)} bytes"
        ) from e
    except (OSError, http.client.HTTPException) as e:
        raise common.FetchError(f"{url}: cannot fetch: {e or type(e).__name__}") from e
    finally:
        if sys.stderr.isatty() and received:
            print(file=sys.stderr)
    return b"".join(chunks)


def install_atomically(data: bytes, out: str) -> None:
    """Write ``out`` so a reader sees the old file or the new one, never a mix."""
    directory = os.path.dirname(os.path.abspath(out))
    os.makedirs(directory, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".expect-ct-log-list.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, out)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def describe_age(log_list: loglistmod.LogList, now: datetime.datetime) -> str:
    age = log_list.age(now)
    if age is None or log_list.timestamp is None:
        return (
            "the list carries no timestamp (Apple's lists do not): dated as fetched now; "
            "the addon dates it by the file's modification time"
        )
    days = age / datetime.timedelta(days=1)
    text = f"dated {records.rfc3339(log_list.timestamp)} ({days:.1f} days old)"
    if age > STALE_AFTER:
        text += (
            f"; WARNING: older than {STALE_AFTER.days} days, the addon's default "
            "expect_ct_log_list_max_age: blocking would be suspended"
        )
    return text


def run(args: argparse.Namespace) -> int:
    source = args.source
    out = os.path.expanduser(
        args.out or os.path.join(os.path.expanduser(args.confdir), LOG_LIST_FILENAME)
    )
    if source == "apple":
        source = APPLE_LOG_LIST_URL
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    started = time.monotonic()
    if scheme == "https":
        if is_chrome_log_list(source) and not args.i_have_permission:
            raise common.UsageError(
                f"refusing {source} as a CT enforcement list: {CHROME_POLICY_NOTE}. Use the "
                "default (Apple's list), or pass --i-have-permission if you have that permission."
            )
        data = fetch_url(source, cafile=args.cafile, timeout=args.timeout)
        print(
            f"fetched {len(data)} bytes from {source} in {time.monotonic() - started:.1f} s",
            file=sys.stderr,
        )
    elif scheme in ("http", "ftp", "file", "data"):
        raise common.UsageError(
            f"--source {source}: only https URLs, 'apple' or a local file path are accepted "
            "(a log list decides what is blocked; fetch it over verified HTTPS)"
        )
    else:
        data = common.read_file("--source ", source)
        print(f"read {len(data)} bytes from {source}", file=sys.stderr)
    try:
        log_list = loglistmod.LogList.from_json(data, source=source)
    except ValueError as e:
        raise common.FetchError(f"not installed, {out} is unchanged: {e}") from e
    if not len(log_list):
        raise common.FetchError(
            f"not installed, {out} is unchanged: {source} lists no CT logs (every SCT would be "
            "unknown)"
        )
    try:
        install_atomically(data, out)
    except OSError as e:
        raise common.FetchError(f"cannot install {out}: {e.strerror or e}") from e
    now = datetime.datetime.now(datetime.UTC)
    print(
        f"installed {out}: {len(log_list)} CT logs ({log_list.schema} schema) from {source}; "
        f"{describe_age(log_list, now)}"
    )
    return common.EXIT_OK
