"""The addon's options: declarations (with help text) and the checks mitmproxy leaves to us."""

from __future__ import annotations

import os
from typing import Any

from mitmproxy import exceptions

from expect_ct import decisions
from expect_ct import header as headermod
from expect_ct import loglist as loglistmod
from expect_ct import loglist_update
from expect_ct import policy as policymod
from expect_ct import store as storemod

ENFORCE_MODES = decisions.ENFORCE_MODES
REPORT_MODES = ("off", "send")
STORE_FILENAME = storemod.STORE_FILENAME
LOG_LIST_FILENAME = loglistmod.INSTALLED_FILENAME
DEFAULT_UPDATE_INTERVAL = loglist_update.DEFAULT_INTERVAL
MIN_UPDATE_INTERVAL = loglist_update.MIN_INTERVAL

# Which options each part of the addon is rebuilt from.
LOG_LIST_OPTIONS = {"expect_ct_log_list", "confdir"}
# Where and how often the running addon refreshes its list (mitm/loglists.py).
LOG_LIST_UPDATE_OPTIONS = {
    "expect_ct_log_list",  # `auto` depends on it
    "expect_ct_log_list_update",
    "expect_ct_log_list_update_interval",
    "ssl_verify_upstream_trusted_ca",
}
ROOTS_OPTIONS = {
    "expect_ct_public_roots",
    "ssl_verify_upstream_trusted_ca",
    "ssl_verify_upstream_trusted_confdir",
}
STORE_OPTIONS = {"expect_ct_store", "confdir", "expect_ct_max_age_cap", "expect_ct_preload"}
REPORT_OPTIONS = {
    "expect_ct_reports",
    "expect_ct_report_allow_private",
    "ssl_verify_upstream_trusted_ca",
}
ENGINE_OPTIONS = LOG_LIST_OPTIONS | ROOTS_OPTIONS | {"expect_ct_policy"}


def add_options(loader: Any) -> None:
    loader.add_option(
        "expect_ct_enforce",
        str,
        "header",
        "Expect-CT enforcement. off: record only. header: refuse non-compliant connections "
        "to Known Expect-CT Hosts that asked for enforce. all: also refuse every "
        "non-compliant connection whose chain ends at a publicly trusted root.",
        choices=ENFORCE_MODES,
    )
    loader.add_option(
        "expect_ct_policy",
        str,
        "chrome",
        "CT policy connections are judged by: chrome (Chrome 148+), chrome-pre148 or apple.",
        choices=policymod.POLICIES,
    )
    loader.add_option(
        "expect_ct_dialect",
        str,
        "rfc9163",
        "Expect-CT header parser: rfc9163 (strict RFC 9163 grammar) or chromium "
        "(what Chromium 61-106 accepted, with its 30-day max-age clamp).",
        choices=headermod.DIALECTS,
    )
    loader.add_option(
        "expect_ct_log_list",
        str | None,  # type: ignore[arg-type]
        None,
        "Path of a CT log-list JSON file (Google v3 or Apple schema). "
        f"Default: <confdir>/{LOG_LIST_FILENAME} (installed by the automatic update or "
        "`python -m expect_ct update-log-list`) when it is fresher than the Apple log list "
        "bundled with the addon, else the bundled list.",
    )
    loader.add_option(
        "expect_ct_log_list_max_age",
        int,
        -1,
        "Days since the log list's source last confirmed it; an older list suspends "
        "blocking (fail open, as Chrome does). -1: the policy publisher's rule (chrome: 70 "
        "days from log_list_timestamp; apple: 60 days since the last confirmation). "
        "0 disables the check.",
    )
    loader.add_option(
        "expect_ct_log_list_update",
        str,
        "auto",
        "Where the running addon refreshes its log list from, in the background: apple "
        "(Apple's published list), an https:// URL, a local file path, or off. auto: apple "
        "unless expect_ct_log_list is set, then off. Refreshed lists are installed as "
        f"<confdir>/{LOG_LIST_FILENAME}. Google's lists are refused (Chrome's acceptable-use "
        "policy).",
    )
    loader.add_option(
        "expect_ct_log_list_update_interval",
        int,
        DEFAULT_UPDATE_INTERVAL,
        f"Seconds between log-list refreshes (at least {MIN_UPDATE_INTERVAL}); failures are "
        "retried sooner, with backoff.",
    )
    loader.add_option(
        "expect_ct_public_roots",
        str | None,  # type: ignore[arg-type]
        None,
        "PEM bundle of root certificates treated as publicly trusted. Default: certifi's bundle. "
        "Chains ending at roots mitmproxy trusts upstream but not listed here are private and "
        "exempt from CT.",
    )
    loader.add_option(
        "expect_ct_store",
        str | None,  # type: ignore[arg-type]
        None,
        f"Known Expect-CT Hosts database: an SQLite file (default: <confdir>/{STORE_FILENAME}; "
        "':memory:' keeps nothing across restarts) or a fleet's PostgreSQL database "
        "(postgresql://USER@HOST:PORT/DB or a libpq key/value string; needs the postgres extra).",
    )
    loader.add_option(
        "expect_ct_max_age_cap",
        int,
        decisions.DEFAULT_MAX_AGE_CAP,
        "Seconds. Expect-CT max-age values above this are stored as this (RFC 9163 2.3.2.2).",
    )
    loader.add_option(
        "expect_ct_log",
        str | None,  # type: ignore[arg-type]
        None,
        "Path of a JSON-lines event log (appended): connection, header, blocked and report events.",
    )
    loader.add_option(
        "expect_ct_reports",
        str,
        "off",
        "RFC 9163 violation reports. off: record them in the JSON-lines log only. send: also "
        "POST them to the host's report-uri (https only, after a CORS preflight, never through "
        "the proxy, never to private addresses unless expect_ct_report_allow_private is set). "
        "Collector certificates are always verified, against ssl_verify_upstream_trusted_ca "
        "when it is set (as mitmproxy verifies upstream servers), else against certifi.",
        choices=REPORT_MODES,
    )
    loader.add_option(
        "expect_ct_report_allow_private",
        bool,
        False,
        "Let reports go to private, loopback and link-local addresses (tests, labs).",
    )
    loader.add_option(
        "expect_ct_preload",
        str | None,  # type: ignore[arg-type]
        None,
        "Path of a JSON file of hosts to seed the Known Expect-CT Hosts store with: "
        '[{"host": "example.com", "enforce": true, "report_uri": null, "expires": "2027-01-01T00:00:00Z"}].',
    )


def check_values(opts: Any, updated: set[str]) -> None:
    """mitmproxy checks choices only for values typed interactively, not for --set values
    applied when a script loads, so check them here: one OptionsError line naming the option."""
    for name, choices in (
        ("expect_ct_enforce", ENFORCE_MODES),
        ("expect_ct_policy", policymod.POLICIES),
        ("expect_ct_dialect", headermod.DIALECTS),
        ("expect_ct_reports", REPORT_MODES),
    ):
        if name in updated and getattr(opts, name) not in choices:
            raise exceptions.OptionsError(
                f"{name} must be one of {', '.join(choices)}, not {getattr(opts, name)!r}."
            )
    if "expect_ct_max_age_cap" in updated and opts.expect_ct_max_age_cap < 1:
        raise exceptions.OptionsError(
            f"expect_ct_max_age_cap must be at least 1 second, not {opts.expect_ct_max_age_cap}."
        )
    if "expect_ct_log_list_max_age" in updated and opts.expect_ct_log_list_max_age < -1:
        raise exceptions.OptionsError(
            "expect_ct_log_list_max_age must be -1 (the policy's rule), 0 (no check) or a "
            f"number of days, not {opts.expect_ct_log_list_max_age}."
        )


def store_path(opts: Any) -> str:
    """The store the options name. Only the default location's directory (mitmproxy's confdir)
    is created; a given path whose directory does not exist is an option error."""
    if opts.expect_ct_store:
        if storemod.is_postgres_spec(opts.expect_ct_store):
            return str(opts.expect_ct_store)  # a server, never a file path
        path = os.path.expanduser(opts.expect_ct_store)
        if path == ":memory:":
            return path
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise exceptions.OptionsError(
                f"Cannot open expect_ct_store {opts.expect_ct_store}: the directory {parent} "
                "does not exist."
            )
        return path
    confdir = os.path.expanduser(opts.confdir)
    try:
        os.makedirs(confdir, exist_ok=True)
    except OSError as e:
        raise exceptions.OptionsError(
            f"Cannot create confdir {confdir} for the Known Expect-CT Hosts store: "
            f"{e.strerror or e}."
        ) from e
    return os.path.join(confdir, STORE_FILENAME)
