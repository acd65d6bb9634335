"""The log list in force in the running addon, and its background refresher (issue 15).

The list to start with comes from loglist_update.choose_start_list (a configured file, else
the installed list when it is fresher than the bundled snapshot). From ``running()`` on, a
LogListUpdater thread refreshes it from ``expect_ct_log_list_update``; its callbacks arrive
on that thread and are handed to mitmproxy's event loop before any addon state changes.
A swapped-in list takes effect for new connections at once (the addon drops its verdict
cache and rebuilds the engine), and its age is the time since its source last confirmed it.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import urllib.parse
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

from mitmproxy import exceptions

from expect_ct import engine as enginemod
from expect_ct import loglist as loglistmod
from expect_ct import loglist_update as update
from expect_ct import policy as policymod
from expect_ct.loglist import LogList
from expect_ct.loglist_fetch import FetchError
from expect_ct.loglist_fetch import FetchOptions
from expect_ct.loglist_fetch import SourceError
from expect_ct.loglist_update import CurrentList
from expect_ct.loglist_update import ListMetadata
from expect_ct.loglist_updater import LogListUpdater

logger = logging.getLogger("expect_ct")

# expect_ct_log_list_max_age: this value means "the publisher's own rule" (policy C10 / A10).
MAX_AGE_POLICY_RULE = -1
# Options that restart the refresher (the list in force stays).
UPDATE_OPTIONS = {
    "expect_ct_log_list_update",
    "expect_ct_log_list_update_interval",
    "ssl_verify_upstream_trusted_ca",
}


def max_age_days(opts: Any) -> float | None:
    """The age (days) from which the list is stale: the option, or the policy's rule for
    -1; None when the check is disabled (0)."""
    value = opts.expect_ct_log_list_max_age
    if value == MAX_AGE_POLICY_RULE:
        limit = policymod.freshness_limit(opts.expect_ct_policy)
        return limit / datetime.timedelta(days=1)
    return float(value) or None


def warn_list_warnings(log_list: LogList, seen: set[str] | None = None) -> None:
    """Each of the list's own warnings (skipped entries, mimic logs) once, as WARNING."""
    for line in log_list.warnings:
        if seen is not None:
            if line in seen:
                continue
            seen.add(line)
        logger.warning(f"Expect-CT: log list {log_list.source}: {line}")


class LogLists:
    """Chooses the start list, runs the refresher and swaps refreshed lists in."""

    def __init__(
        self,
        *,
        on_swap: Callable[[bool], None],
        write_event: Callable[[dict[str, Any]], None],
    ) -> None:
        self.current: CurrentList | None = None
        self.loaded: enginemod.LoadedLogList | None = None
        self.updater: LogListUpdater | None = None
        self.source: update.Source | None = None
        self.why: str | None = None
        self._on_swap = on_swap  # (the list itself changed): rebuild the engine
        self._write_event = write_event
        self._loop: asyncio.AbstractEventLoop | None = None
        self._warned: set[str] = set()
        self._own_addresses: tuple[tuple[str, int], ...] = ()
        self._opts: Any = None

    # ---------------------------------------------------------------- configure

    def check_update_options(self, opts: Any) -> update.Source | None:
        interval = opts.expect_ct_log_list_update_interval
        if interval < update.MIN_INTERVAL:
            raise exceptions.OptionsError(
                f"expect_ct_log_list_update_interval must be at least {update.MIN_INTERVAL} "
                f"seconds, not {interval}."
            )
        try:
            return update.parse_source(
                opts.expect_ct_log_list_update,
                log_list_configured=bool(opts.expect_ct_log_list),
            )
        except SourceError as e:
            raise exceptions.OptionsError(f"expect_ct_log_list_update: {e}") from e

    def load(self, opts: Any) -> enginemod.LoadedLogList:
        """The start list for these options (OptionsError when a configured file is bad)."""
        self._opts = opts
        try:
            choice = update.choose_start_list(opts.confdir, opts.expect_ct_log_list or None)
        except (loglistmod.InvalidLogList, FetchError, OSError, ValueError) as e:
            raise exceptions.OptionsError(f"Cannot load expect_ct_log_list {e}") from e
        if choice.problem:
            logger.warning(f"Expect-CT: {choice.problem}")
        self.why = choice.why
        self.current = choice.current
        self.loaded = enginemod.loaded_from(choice.current)
        warn_list_warnings(choice.current.log_list, self._warned)
        self._log_in_force(opts, f"using {choice.why}")
        if self.updater is not None:
            self.updater.current = choice.current
        return self.loaded

    def _log_in_force(self, opts: Any, what: str) -> None:
        assert self.current is not None
        meta = self.current.metadata
        now = enginemod.utcnow()
        text = (
            f"Expect-CT: {meta.logs} CT logs from {meta.source}, {what}; confirmed "
            f"{update.iso(meta.confirmed) or 'never'} by {meta.confirmed_by} "
            f"({meta.age_days(now)} days old)"
        )
        if meta.stale(now, max_age_days(opts)):
            logger.warning(
                f"{text}: older than {self._limit_text(opts)}, blocking is SUSPENDED (fail open, "
                "as Chrome does) until a fresh list arrives (expect_ct_log_list_update, "
                "`python -m expect_ct update-log-list`) or expect_ct_log_list_max_age=0."
            )
        else:
            logger.info(text)

    @staticmethod
    def _limit_text(opts: Any) -> str:
        days = max_age_days(opts)
        if opts.expect_ct_log_list_max_age == MAX_AGE_POLICY_RULE:
            return f"{days:g} days ({opts.expect_ct_policy} policy's limit)"
        return f"expect_ct_log_list_max_age={days:g} days"

    def limits_changed(self, opts: Any) -> None:
        """expect_ct_log_list_max_age or expect_ct_policy changed: the refresher's log lines
        judge staleness by the new limit."""
        if self.updater is not None:
            self.updater.max_age_days = max_age_days(opts)

    def stale(self, opts: Any, now: datetime.datetime | None = None) -> bool:
        if self.current is None:
            return False
        return self.current.metadata.stale(now or enginemod.utcnow(), max_age_days(opts))

    # ------------------------------------------------------------------ refresher

    def start(self, opts: Any, own_addresses: Iterable[tuple[str, int]]) -> None:
        """Start (or restart) the refresher: never blocks; the first attempt is at once."""
        self.stop()
        self.updater = None
        self._opts = opts
        self._own_addresses = tuple(own_addresses)
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self.source = self.check_update_options(opts)
        if self.source is None or self.current is None:
            return
        self.updater = LogListUpdater(
            self.source,
            out=update.installed_path(opts.confdir),
            current=self.current,
            on_update=self._from_thread(self._swap),
            on_attempt=self._from_thread(self._attempted),
            interval=opts.expect_ct_log_list_update_interval,
            fetch=FetchOptions(
                extra_cafile=opts.ssl_verify_upstream_trusted_ca or None,
                own_addresses=self._own_addresses,
            ),
            max_age_days=max_age_days(opts),
        )
        self.updater.start()

    def restart(self, opts: Any) -> None:
        """After an option change: only a refresher that was running is restarted."""
        if self._loop is not None or self.updater is not None:
            self.start(opts, self._own_addresses)

    def stop(self) -> None:
        """Stop the refresher; its last outcome stays for expectct.loglist."""
        if self.updater is not None:
            self.updater.stop()

    def refresh_now(self) -> bool:
        if self.updater is None or not self.updater.running:
            return False
        self.updater.refresh_now()
        return True

    def _from_thread(self, fn: Callable[..., None]) -> Callable[..., None]:
        def call(*args: Any) -> None:
            if self._loop is None:
                fn(*args)
            elif not self._loop.is_closed():
                self._loop.call_soon_threadsafe(fn, *args)

        return call

    def _attempted(self, event: dict[str, Any]) -> None:
        self._write_event(event)

    def _swap(self, log_list: LogList, metadata: ListMetadata) -> None:
        """On the event loop: make the refreshed (or re-confirmed) list the one in force."""
        if self.updater is None or not self.updater.running or self._opts is None:
            return  # stopped meanwhile
        opts = self._opts
        was_stale = self.stale(opts)
        changed = self.current is None or self.current.log_list is not log_list
        self.current = CurrentList(log_list, metadata)
        self.loaded = enginemod.loaded_from(self.current)
        if changed:
            warn_list_warnings(log_list, self._warned)
        self._on_swap(changed)
        if was_stale and not self.stale(opts):
            logger.warning(
                f"Expect-CT: the CT log list from {metadata.source} is current again "
                f"(confirmed {update.iso(metadata.confirmed)}): blocking RESUMES."
            )

    # --------------------------------------------------------------------- status

    def status(self, opts: Any) -> dict[str, Any]:
        """What expectct.loglist answers."""
        now = enginemod.utcnow()
        meta = self.current.metadata if self.current else None
        stale = self.stale(opts, now)
        limit = max_age_days(opts)
        result: dict[str, Any] = {
            "source": self.source.name if self.source else "off",
            "list_source": meta.source if meta else None,
            "chosen_at_start": self.why,
            "version": meta.version if meta else None,
            "logs": meta.logs if meta else None,
            "list_timestamp": update.iso(meta.list_timestamp) if meta else None,
            "confirmed": update.iso(meta.confirmed) if meta else None,
            "confirmed_by": meta.confirmed_by if meta else None,
            "age_days": meta.age_days(now) if meta else None,
            "max_age_days": limit,
            "blocking_suspended": stale,
            "why": (
                f"the list is {meta.age_days(now) if meta else '?'} days old, older than "
                f"{self._limit_text(opts)}"
                if stale
                else None
            ),
            "last_outcome": None,
            "last_error": None,
            "failures": 0,
            "next_refresh": None,
        }
        if self.updater is not None:
            state = self.updater.status(now)
            for key in ("last_outcome", "last_error", "failures", "next_refresh"):
                result[key] = state[key]
        return result


def event_address(source: str) -> tuple[str, int]:
    """host and port for a log_list event's envelope: the source's server, or none."""
    parts = urllib.parse.urlsplit(source)
    if parts.scheme == "https" and parts.hostname:
        return parts.hostname, parts.port or 443
    if source == "apple":
        return urllib.parse.urlsplit(update.APPLE_LOG_LIST_URL).hostname or "", 443
    return "", 0
