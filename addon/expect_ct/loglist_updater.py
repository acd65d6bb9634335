"""The background log-list refresher: one daemon thread, no asyncio.

Usage by the addon (the only glue it needs)::

    choice = loglist_update.choose_start_list(confdir, ctx.options.expect_ct_log_list)
    updater = LogListUpdater(
        source,                       # loglist_update.parse_source(option, ...); None = off
        out=loglist_update.installed_path(confdir),
        current=choice.current,
        on_update=swap,               # (LogList, ListMetadata), on updated and unchanged
        on_attempt=write_event,       # the log_list event dict, for every attempt
        interval=86400,
        fetch=loglist_update.FetchOptions(extra_cafile=..., own_addresses=...),
    )
    updater.start()                   # first attempt at once, in the background
    updater.refresh_now()             # expectct.loglist.update
    updater.stop()                    # done()

Callbacks run on the updater's thread: the addon must hand them to its event loop
(``loop.call_soon_threadsafe``). A callback that raises is logged and does not stop the
thread.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable
from typing import Any

from expect_ct import loglist_update as update
from expect_ct.loglist import LogList
from expect_ct.loglist_update import Attempt
from expect_ct.loglist_update import CurrentList
from expect_ct.loglist_update import FetchOptions
from expect_ct.loglist_update import ListMetadata
from expect_ct.loglist_update import Source

logger = logging.getLogger(__name__)

FIRST_RETRY = 60.0


def retry_delay(failures: int, first: float, interval: float) -> float:
    """Seconds before the next attempt after ``failures`` consecutive failures: ``first``,
    doubling each time, never more than ``interval``."""
    if failures <= 0:
        return interval
    return min(interval, first * 2 ** min(failures - 1, 60))


class LogListUpdater:
    """Refreshes ``current`` from ``source`` every ``interval`` seconds, retrying failures
    with backoff; ``current`` is always a valid list (the previous one when a refresh fails).
    """

    def __init__(
        self,
        source: Source,
        *,
        out: str,
        current: CurrentList,
        on_update: Callable[[LogList, ListMetadata], None] | None = None,
        on_attempt: Callable[[dict[str, Any]], None] | None = None,
        interval: float = update.DEFAULT_INTERVAL,
        first_retry: float = FIRST_RETRY,
        fetch: FetchOptions | None = None,
        max_age_days: float | None = None,
        clock: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        if interval < update.MIN_INTERVAL:
            raise ValueError(
                f"log-list update interval must be at least {update.MIN_INTERVAL} seconds, "
                f"not {interval}"
            )
        if first_retry <= 0:
            raise ValueError(f"first_retry must be more than 0 seconds, not {first_retry}")
        self.source = source
        self.out = out
        self.current = current
        self.interval = float(interval)
        self.first_retry = float(first_retry)
        self.fetch = fetch or FetchOptions()
        self.max_age_days = max_age_days
        self._on_update = on_update
        self._on_attempt = on_attempt
        self._clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self.failures = 0  # consecutive failed attempts (the current failure streak)
        self.attempts = 0
        self.last: Attempt | None = None
        self.next_refresh: datetime.datetime | None = None
        self._refused_message: str | None = None
        self._lock = threading.Lock()  # one attempt at a time
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- thread control

    def start(self, first_delay: float = 0.0) -> None:
        """Start the background thread; the first attempt comes after ``first_delay``."""
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, args=(first_delay,), name="expect-ct-log-list", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (an attempt under way finishes, bounded by the fetch timeout)."""
        self._stopping = True
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def refresh_now(self) -> None:
        """Ask the background thread for an attempt at once (returns immediately)."""
        self._wake.set()

    def _run(self, delay: float) -> None:
        while True:
            self._set_next(delay)
            self._wake.wait(delay)
            self._wake.clear()
            if self._stopping:
                return
            self.next_refresh = None
            result = self._attempt()
            if self._stopping:
                return  # stopped during the fetch: the addon no longer wants callbacks
            self._report(result, self._clock())
            delay = retry_delay(self.failures, self.first_retry, self.interval)
            if result.outcome != update.FAILED:
                delay = self.interval

    def _set_next(self, delay: float) -> None:
        self.next_refresh = self._clock() + datetime.timedelta(seconds=delay)

    # ---------------------------------------------------------------------- attempts

    def attempt(self) -> Attempt:
        """One refresh, now, on the calling thread; reports and calls back like the thread."""
        result = self._attempt()
        self._report(result, self._clock())
        return result

    def _attempt(self) -> Attempt:
        with self._lock:
            now = self._clock()
            result = update.attempt(self.source, self.out, self.current, self.fetch, now=now)
            self.attempts += 1
            if result.current is not None:
                self.current = result.current
            self._log(result, now)
            self.last = result
        return result

    def status(self, now: datetime.datetime | None = None) -> dict[str, Any]:
        """What ``expectct.loglist`` shows: the list in force and the refresh schedule."""
        now = now or self._clock()
        meta = self.current.metadata
        return {
            "source": self.source.name,
            "list_source": meta.source,
            "version": meta.version,
            "logs": meta.logs,
            "confirmed": update.iso(meta.confirmed),
            "confirmed_by": meta.confirmed_by,
            "age_days": meta.age_days(now),
            "stale": meta.stale(now, self.max_age_days),
            "last_outcome": self.last.outcome if self.last else None,
            "last_error": self.last.error if self.last else None,
            "failures": self.failures,
            "next_refresh": update.iso(self.next_refresh) if self.running else None,
        }

    def _log(self, result: Attempt, now: datetime.datetime) -> None:
        meta = result.current.metadata if result.current else None
        where = f"CT log list from {self.source.name}"
        if result.outcome == update.FAILED:
            self.failures += 1
            # Warn once per failure streak; the retries that follow say it at debug level.
            say = logger.warning if self.failures == 1 else logger.debug
            kept = ""
            if meta is not None:
                kept = f" (in force: {meta.logs} logs, {meta.age_days(now)} days old"
                kept += ", blocking suspended)" if meta.stale(now, self.max_age_days) else ")"
            say(
                f"Expect-CT: refreshing the {where} failed: {result.error}{kept}; retrying "
                f"in {retry_delay(self.failures, self.first_retry, self.interval):.0f} s "
                "with backoff"
            )
            return
        if self.failures:
            logger.info(
                f"Expect-CT: the {where} is reachable again after {self.failures} failure(s)"
            )
        self.failures = 0
        assert meta is not None
        if result.outcome == update.REFUSED:
            offered = result.error or ""
            if offered != self._refused_message:
                logger.warning(f"Expect-CT: {offered}")
            self._refused_message = offered
            return
        self._refused_message = None
        text = (
            f"{meta.logs} CT logs, version {meta.version or 'none'}, confirmed "
            f"{update.iso(meta.confirmed)} by {meta.confirmed_by} ({meta.age_days(now)} days old)"
        )
        if result.outcome == update.UPDATED:
            logger.info(f"Expect-CT: installed a new {where}: {text}")
        else:
            logger.info(f"Expect-CT: the {where} is unchanged: {text}")

    def _report(self, result: Attempt, now: datetime.datetime) -> None:
        if self._on_attempt is not None:
            try:
                self._on_attempt(result.event(now))
            except Exception:
                logger.exception("Expect-CT: the log-list event callback failed")
        if result.outcome in (update.UPDATED, update.UNCHANGED) and self._on_update:
            assert result.current is not None
            try:
                self._on_update(result.current.log_list, result.current.metadata)
            except Exception:
                logger.exception("Expect-CT: installing the refreshed log list failed")
