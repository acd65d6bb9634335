"""Log-list entries made directly (no keys that sign): for policy tests that need a log's
state, operator history, interval or kind, not real SCT signatures (those: support.pki)."""

from __future__ import annotations

import datetime
import hashlib

from expect_ct.loglist import Log
from expect_ct.loglist import LogState

UTC = datetime.UTC


def synthetic_log(
    name: str,
    operator: str,
    state: str | None = "usable",
    since: datetime.datetime = datetime.datetime(2025, 1, 1, tzinfo=UTC),
    *,
    tiled: bool = False,
    interval: tuple[datetime.datetime, datetime.datetime] | None = None,
    previous: tuple[tuple[str, datetime.datetime], ...] = (),
    unknown_state: str | None = None,
    key: bytes | None = None,
) -> Log:
    key = key if key is not None else name.encode()
    return Log(
        log_id=hashlib.sha256(key).digest(),
        key=key,
        description=name,
        operator=operator,
        url=None,
        state=LogState(state) if state else None,
        state_since=since if state else None,
        mmd=86400,
        temporal_interval=interval,
        previous_operators=previous,
        tiled=tiled,
        unknown_state=unknown_state,
    )
