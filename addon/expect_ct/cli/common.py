"""What the subcommands share: exit codes, errors, the analysis options and the engine they
choose (the same way the addon chooses it from its options), and output helpers."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from expect_ct import chain as chainmod
from expect_ct import engine as enginemod
from expect_ct import loglist as loglistmod
from expect_ct import loglist_fetch as fetchmod
from expect_ct import loglist_update as updatemod
from expect_ct import policy as policymod
from expect_ct import store as storemod

STORE_FILENAME = storemod.STORE_FILENAME
LOG_LIST_FILENAME = loglistmod.INSTALLED_FILENAME
DEFAULT_CONFDIR = "~/.mitmproxy"

# check and inspect: 0 compliant or exempt, 1 not compliant, 2 unusable input.
EXIT_OK = 0
EXIT_NOT_COMPLIANT = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A problem with the command line or an input file: exit code 2, message names the file."""


class FetchError(Exception):
    """A log list could not be fetched, or was refused after fetching: exit code 1."""


def iso_moment(text: str) -> datetime.datetime:
    """``--now``: an ISO 8601 date or date-time; without a zone it is UTC."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 date or date-time: {text} (e.g. 2026-04-01 or 2026-04-01T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment


def add_analysis_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-list",
        metavar="PATH",
        help="CT log-list JSON, Google v3 or Apple schema (default, as the addon chooses: "
        f"<confdir>/{LOG_LIST_FILENAME} when it is fresher than the Apple list bundled with "
        "the addon, else the bundled list)",
    )
    parser.add_argument(
        "--public-roots",
        metavar="PEM",
        help="PEM bundle of roots treated as publicly trusted (default: certifi's bundle)",
    )
    parser.add_argument(
        "--private-roots",
        metavar="PEM",
        help="PEM bundle of roots trusted upstream but not public (what mitmproxy's "
        "ssl_verify_upstream_trusted_ca names): chains ending there are private and exempt",
    )
    parser.add_argument(
        "--policy",
        choices=policymod.POLICIES,
        default="chrome",
        help="CT policy (default: chrome)",
    )
    parser.add_argument(
        "--now",
        type=iso_moment,
        metavar="ISO",
        help="evaluate as of this moment, e.g. 2026-04-01 (default: now); for old captures",
    )
    parser.add_argument(
        "--confdir",
        metavar="DIR",
        default=DEFAULT_CONFDIR,
        help=f"mitmproxy's confdir, where the installed log list is looked for "
        f"(default: {DEFAULT_CONFDIR})",
    )
    parser.add_argument("--json", action="store_true", help="JSON output, one object per line")


@dataclass(frozen=True)
class Analysis:
    """The engine the flags choose, and the moment it judges at."""

    engine: enginemod.Engine
    now: datetime.datetime
    log_list: updatemod.CurrentList | None = None

    @property
    def stale(self) -> bool:
        """Whether the running addon (expect_ct_log_list_max_age -1, the policy's rule)
        would suspend blocking with this list at ``now``."""
        if self.log_list is None:
            return False
        limit = policymod.freshness_limit(self.engine.policy) / datetime.timedelta(days=1)
        return self.log_list.metadata.stale(self.now, limit)

    def describe(self) -> str:
        text = self.engine.describe(self.now)
        if self.log_list is not None:
            meta = self.log_list.metadata
            text += f"; list confirmed by {meta.confirmed_by}, {meta.age_days(self.now)} days old"
        if self.stale:
            limit = policymod.freshness_limit(self.engine.policy).days
            text += (
                f"; STALE: older than {limit} days ({self.engine.policy} policy's limit), the "
                "addon would suspend blocking"
            )
        return text


def choose_log_list(log_list: str | None, confdir: str) -> updatemod.CurrentList:
    """The list the addon would start with (loglist_update.choose_start_list); its own
    warnings (skipped entries, mimic logs) go to stderr once."""
    try:
        choice = updatemod.choose_start_list(confdir, log_list or None)
    except (loglistmod.InvalidLogList, fetchmod.FetchError, OSError, ValueError) as e:
        raise UsageError(f"--log-list {e}") from e
    if choice.problem:
        print(f"WARNING: {choice.problem}", file=sys.stderr)
    for line in choice.current.log_list.warnings:
        print(f"WARNING: log list {choice.current.log_list.source}: {line}", file=sys.stderr)
    return choice.current


def load_analysis(args: argparse.Namespace) -> Analysis:
    """The log list and roots chosen as the addon chooses them from its options."""
    current = choose_log_list(args.log_list, args.confdir)
    loaded = enginemod.loaded_from(current)
    try:
        public = enginemod.load_public_roots(args.public_roots)
    except enginemod.LoadError as e:
        raise UsageError(f"--public-roots {e}") from e
    try:
        private = enginemod.load_private_roots(args.private_roots)
    except enginemod.LoadError as e:
        raise UsageError(f"--private-roots {e}") from e
    engine = enginemod.Engine(loaded, chainmod.ChainClassifier(public, private), args.policy)
    return Analysis(engine, args.now or enginemod.utcnow(), current)


def read_file(option: str, path: str) -> bytes:
    try:
        with open(os.path.expanduser(path), "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"{option}{path}: cannot read: {e.strerror or e}") from e


def ct_word(kind: str, compliant: bool) -> str:
    if kind == chainmod.ChainKind.PRIVATE.value:
        return "exempt"
    return "compliant" if compliant else "NOT compliant"


def sct_counts(scts: Sequence[dict[str, Any]]) -> str:
    counts = {status: 0 for status in (policymod.VALID, policymod.INVALID, policymod.UNKNOWN)}
    for entry in scts:
        counts[entry["status"]] = counts.get(entry["status"], 0) + 1
    return "/".join(str(counts[s]) for s in (policymod.VALID, policymod.INVALID, policymod.UNKNOWN))


def print_json(record: dict[str, Any]) -> None:
    print(json.dumps(record, ensure_ascii=True))


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)
