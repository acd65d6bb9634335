"""Counters, errors and repetitive lines: logged so that a fault hit by every flow cannot flood the log
(docs/failure-behaviour.md): each distinct problem is logged once, repeats only counted."""

from __future__ import annotations

import collections
import logging
import time
import traceback
from typing import Any

from expect_ct import cache
from expect_ct import store as storemod

logger = logging.getLogger("expect_ct")

LOGGED_ONCE_MEMORY = 256  # distinct faults remembered so each is logged once
LINE_REPEAT_WINDOW = 60.0  # seconds: identical INFO lines within it are counted, not logged
LINE_MEMORY = 1024


class Faults:
    """The addon's counters, and its once-only and rate-limited logging."""

    def __init__(self) -> None:
        self.stats: collections.Counter[str] = collections.Counter()
        self._logged_once: cache.BoundedMap[tuple[str, ...], bool] = cache.BoundedMap(
            LOGGED_ONCE_MEMORY
        )
        # line -> [first logged (monotonic), repeats since]
        self._recent_lines: cache.BoundedMap[str, list[float]] = cache.BoundedMap(LINE_MEMORY)
        self.store_write_failing = False

    def log_once(self, key: tuple[str, ...], level: int, message: str, **kwargs: Any) -> bool:
        """Log ``message`` unless ``key`` was logged already (bounded memory); True if logged."""
        if self._logged_once.get(key):
            return False
        self._logged_once.put(key, True)
        logger.log(level, message, **kwargs)
        return True

    def internal_error(self, where: str, error: Exception) -> None:
        """A bug in our own code: traceback once per distinct error, then only counted.

        Distinct: the exception's type, message and the line that raised it; not the hook it
        surfaced in, since one failing evaluation surfaces in several hooks of one flow.
        """
        self.stats["internal_errors"] += 1
        frames = traceback.extract_tb(error.__traceback__)
        origin = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        self.log_once(
            ("internal", type(error).__name__, str(error)[:200], origin),
            logging.ERROR,
            f"Expect-CT: internal error {where}: {type(error).__name__}: {error} "
            f"(logged once; repeats are counted in the shutdown summary)",
            exc_info=error,
        )

    def store_failed(self, doing: str, error: storemod.StoreError, path: str) -> None:
        """The store cannot read or write: logged once per distinct SQLite error."""
        self.stats[f"store_{doing}_errors"] += 1
        cause = str(error.__cause__ or error)
        # Without an SQLite cause the store was closed; that message names the host.
        key = cause if error.__cause__ is not None else "closed"
        if doing == "write":
            self.store_write_failing = True
            effect = "Expect-CT headers are not noted (flows are still served)"
        else:
            effect = (
                "non-compliant connections to hosts that might be Known Expect-CT Hosts are "
                "refused (fail closed)"
            )
        self.log_once(
            ("store", doing, key),
            logging.ERROR,
            f"Expect-CT: the Known Expect-CT Hosts store {path} cannot {doing}: {cause}. "
            f"{effect}. Logged once; repeats are counted in the shutdown summary.",
        )

    def store_write_ok(self, path: str) -> None:
        if self.store_write_failing:
            self.store_write_failing = False
            self._logged_once.discard_if(lambda key: key[:2] == ("store", "write"))
            logger.warning(f"Expect-CT: the store {path} can be written again.")

    def info_unless_repeated(self, line: str) -> None:
        """INFO, but a line already logged in the last LINE_REPEAT_WINDOW seconds is only
        counted; the next time it is logged it says how many were left out. A client that
        opens a connection per request would otherwise repeat the same line all day (and
        mitmproxy's logging is the largest part of the addon's per-connection cost)."""
        clock = time.monotonic()
        seen = self._recent_lines.get(line)
        if seen is not None and clock - seen[0] < LINE_REPEAT_WINDOW:
            seen[1] += 1
            self.stats["repeated_lines"] += 1
            return
        self._recent_lines.put(line, [clock, 0])
        if seen is not None and seen[1]:
            line += f" (and {seen[1]:.0f} more like it in the {clock - seen[0]:.0f} s before)"
        logger.info(line)

    def summary(self, hosts_seen: str) -> str:
        """The shutdown summary table (headless runs read it at the end of mitmdump's output)."""
        stats = self.stats
        rows = [
            ("hosts seen", hosts_seen),
            ("connections evaluated", stats["connections"]),
            ("compliant", stats["compliant"]),
            ("not compliant", stats["non_compliant"]),
            ("exempt (private root)", stats["exempt"]),
            ("blocked", stats["blocked"]),
            ("known hosts noted", stats["header_noted"]),
            ("known hosts updated", stats["header_updated"]),
            ("known hosts removed", stats["header_removed"]),
            ("reports", stats["reports"]),
        ]
        # Faults show up only when they happened (each was logged once).
        rows += [
            (name, stats[key])
            for name, key in (
                ("repeats not logged", "repeated_lines"),
                ("store read errors", "store_read_errors"),
                ("store write errors", "store_write_errors"),
                ("notes queued (store unreachable)", "store_pending"),
                ("reports sent by another proxy", "reports_fleet_suppressed"),
                ("internal errors", "internal_errors"),
                ("NOT refused in time", "enforcement_failed"),
            )
            if stats[key]
        ]
        width = max(len(name) for name, _ in rows)
        return "Expect-CT summary:\n" + "\n".join(
            f"  {name:<{width}}  {value}" for name, value in rows
        )
