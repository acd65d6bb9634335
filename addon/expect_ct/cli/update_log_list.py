"""``python -m expect_ct update-log-list``: fetch, validate and atomically install a CT log
list where the addon loads it, through the addon's own updater code (loglist_update). Exit 0:
installed or unchanged; 1: could not fetch or refused the list (the old file is kept); 2: usage
errors."""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from typing import Any

from expect_ct import loglist as loglistmod
from expect_ct import loglist_fetch as fetchmod
from expect_ct import loglist_update as updatemod
from expect_ct import records
from expect_ct.cli import common
from expect_ct.cli.common import DEFAULT_CONFDIR
from expect_ct.cli.common import LOG_LIST_FILENAME

APPLE_LOG_LIST_URL = updatemod.APPLE_LOG_LIST_URL
DEFAULT_TIMEOUT = fetchmod.DEFAULT_TIMEOUT
# Chrome and Firefox stop enforcing CT with a log list older than 70 days (ct_policy.md).
STALE_AFTER = datetime.timedelta(days=70)


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


def _progress(received: int, total: int | None) -> None:
    if sys.stderr.isatty():
        of = f" of {total}" if total else ""
        print(f"\rdownloading: {received}{of} bytes", end="", file=sys.stderr, flush=True)


def describe_age(meta: updatemod.ListMetadata, now: datetime.datetime) -> str:
    """How old the list is and why, by the same rules as the addon (loglist_update)."""
    days = meta.age_days(now)
    if meta.confirmed is None or days is None:
        return "undated"
    when = records.rfc3339(meta.confirmed)
    if meta.confirmed_by == updatemod.BY_LIST_TIMESTAMP:
        text = f"dated {when} ({days:.1f} days old)"
    else:
        text = (
            f"the list carries no timestamp of its own (Apple's lists do not): dated by its "
            f"{meta.confirmed_by}, {when} ({days:.1f} days old)"
        )
    if meta.stale(now, STALE_AFTER.days):
        text += (
            f"; WARNING: older than {STALE_AFTER.days} days, the addon's default "
            "expect_ct_log_list_max_age: blocking would be suspended"
        )
    return text


def run(args: argparse.Namespace) -> int:
    """One refresh attempt through the addon's own code (loglist_update.attempt)."""
    out = os.path.expanduser(
        args.out or os.path.join(os.path.expanduser(args.confdir), LOG_LIST_FILENAME)
    )
    try:
        source = updatemod.parse_source(args.source, allow_chrome=args.i_have_permission)
    except updatemod.SourceError as e:
        hint = ""
        if updatemod.CHROME_LIST_HOST in args.source:
            hint = ". Use the default (Apple's list), or pass --i-have-permission if you have that permission."
        raise common.UsageError(f"--source {args.source}: {e}{hint}") from e
    if source is None:
        raise common.UsageError("--source off: nothing to update")
    if source.path is not None:
        try:
            fetchmod.read_file(source.path)
        except fetchmod.FetchError as e:
            raise common.UsageError(f"--source {e}") from e
    if args.cafile:
        try:
            fetchmod.tls_context(fetchmod.FetchOptions(cafile=os.path.expanduser(args.cafile)))
        except fetchmod.SourceError as e:
            raise common.UsageError(f"--cafile {e}") from e
    try:
        baseline = updatemod.load_installed(out)
    except (loglistmod.InvalidLogList, fetchmod.FetchError):
        baseline = None  # an unusable installed file is replaced, never compared with
    received: list[int] = [0]

    def progress(count: int, total: int | None) -> None:
        received[0] = count
        _progress(count, total)

    options = fetchmod.FetchOptions(
        cafile=os.path.expanduser(args.cafile) if args.cafile else None,
        timeout=args.timeout,
        # This usually runs next to the very proxy that needs the list: no proxy variables.
        use_env_proxy=False,
        progress=progress,
    )
    started = time.monotonic()
    result = updatemod.attempt(source, out, baseline, options)
    if sys.stderr.isatty() and received[0]:
        print(file=sys.stderr)
    if source.url is not None and result.outcome != updatemod.FAILED:
        print(
            f"fetched {received[0]} bytes from {source.url} in {time.monotonic() - started:.1f} s",
            file=sys.stderr,
        )
    if result.outcome in (updatemod.FAILED, updatemod.REFUSED):
        raise common.FetchError(f"{result.outcome}, {out} is unchanged: {result.error}")
    assert result.current is not None
    for line in result.current.log_list.warnings:  # skipped entries, mimic logs: once each
        print(f"WARNING: log list {source.name}: {line}", file=sys.stderr)
    meta = result.current.metadata
    age = describe_age(meta, datetime.datetime.now(datetime.UTC))
    if result.outcome == updatemod.UNCHANGED:
        print(f"unchanged: {out} already holds this list from {source.name}, confirmed now; {age}")
    else:
        print(
            f"installed {out}: {meta.logs} CT logs ({meta.schema} schema) from {source.name}; {age}"
        )
    return common.EXIT_OK
