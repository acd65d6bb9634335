"""The Known Expect-CT Hosts store as the addon uses it: opened from the options (with the
preload applied), reopened when its file is replaced, and its faults logged once.

The store is an SQLite file or, for a fleet of proxies, a PostgreSQL database (``open_store``
picks one from ``expect_ct_store``). ``open_store`` returns only once a PostgreSQL store's
schema is ready and its replica is loaded; it runs in ``configure``, which mitmproxy finishes
before its proxy server starts listening, so no connection is ever judged by an empty
replica (fail open)."""

from __future__ import annotations

import logging
import os
from typing import Any

from mitmproxy import ctx
from mitmproxy import exceptions

from expect_ct import engine as enginemod
from expect_ct import preload as preloadmod
from expect_ct import store as storemod
from expect_ct.mitm import options as optionsmod
from expect_ct.mitm.faults import Faults

logger = logging.getLogger("expect_ct")


def file_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of a file, None if it does not exist (or is ":memory:" or a database
    server)."""
    if path == ":memory:" or storemod.is_postgres_spec(path):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class KnownHosts:
    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.store: storemod.HostStore | None = None
        self._identity: tuple[int, int] | None = None

    @property
    def path(self) -> str:
        return self.store.location if self.store is not None else "(closed)"

    def open(self, opts: Any) -> None:
        """Open the store the options name, then apply the preload file."""
        path = optionsmod.store_path(opts)
        # Open the new store before closing the old one: when opening fails, mitmproxy rolls
        # the option back and the old store stays in use (no silent fail-open without a store).
        try:
            fresh = storemod.open_store(path, max_age_cap=opts.expect_ct_max_age_cap)
        except storemod.StoreError as e:
            raise exceptions.OptionsError(f"expect_ct_store: {e}") from e  # e names the file
        except ValueError as e:
            raise exceptions.OptionsError(f"expect_ct_max_age_cap: {e}") from e
        if self.store is not None:
            self.store.close()
        self.store = fresh
        self._identity = file_identity(fresh.location)
        if opts.expect_ct_preload:
            self._preload(opts.expect_ct_preload)

    def _preload(self, preload: str) -> None:
        assert self.store is not None
        try:
            entries = preloadmod.load_preload(os.path.expanduser(preload))
        except (OSError, ValueError) as e:
            raise exceptions.OptionsError(f"Cannot load expect_ct_preload {preload}: {e}") from e
        now = enginemod.utcnow()
        live = [e for e in entries if e.expires > now]
        try:
            for entry in live:
                self.store.add(
                    entry.host,
                    enforce=entry.enforce,
                    report_uri=entry.report_uri,
                    expires=entry.expires,
                    now=now,
                )
        except (storemod.StoreError, ValueError) as e:
            raise exceptions.OptionsError(f"Cannot apply expect_ct_preload {preload}: {e}") from e
        skipped = len(entries) - len(live)
        logger.info(
            f"Expect-CT: {len(live)} preloaded hosts from {preload}"
            + (f" ({skipped} already expired, skipped)" if skipped else "")
        )

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def lookup(self, host: str) -> storemod.KnownHost | None:
        """The host's stored policy; a store that cannot be read raises (callers fail closed)."""
        assert self.store is not None
        try:
            return self.store.get(host)
        except ValueError:
            return None  # a name that cannot be canonicalised can never have been noted
        except storemod.StoreError as e:
            self.faults.store_failed("read", e, self.path)
            raise

    def lookup_or_none(self, host: str) -> storemod.KnownHost | None:
        """The host's stored policy, or None when it is not known or cannot be read."""
        if self.store is None:
            return None
        try:
            return self.lookup(host)
        except storemod.StoreError:
            return None

    def may_require_enforcement(self, host: str) -> bool:
        """True unless the store says the host is not a Known host with enforce."""
        if self.store is None:
            return False
        try:
            known = self.store.get(host)
        except ValueError:
            return False  # not a valid host name: it can never have been noted
        except Exception:  # noqa: BLE001 - the store cannot tell: assume the worst
            return True
        return known is not None and known.enforce

    def observe(self, host: str, *, max_age: int, enforce: bool, report_uri: str | None) -> str:
        """Apply a header that passed decisions.header_gate; returns the store's action.

        ValueError: the host name cannot be noted. StoreUnavailable: the shared database cannot
        be reached; the note is in this proxy's replica (enforced here) and queued, not yet
        durable (the store itself logs one warning per outage). Other StoreError: logged once,
        then re-raised.
        """
        assert self.store is not None
        self._reopen_if_replaced(host)
        try:
            action, _entry = self.store.observe(
                host, max_age=max_age, enforce=enforce, report_uri=report_uri
            )
        except storemod.StoreUnavailable:
            self.faults.stats["store_pending"] += 1
            raise
        except storemod.StoreError as e:
            # The flow is still served; the header is simply not noted (logged once).
            self.faults.store_failed("write", e, self.path)
            raise
        self.faults.store_write_ok(self.path)
        return action

    def claim_report(self, key: str, window_s: int) -> bool:
        """True when this proxy should send the report ``key`` names: no proxy sharing the
        store (a fleet on one PostgreSQL database, or proxies sharing one SQLite file) claimed
        it in the last ``window_s`` seconds. Without a store, or when the store cannot answer,
        True: a possible duplicate report is better than a lost one."""
        if self.store is None:
            return True
        try:
            return self.store.claim_report(key, window_s)
        except (storemod.StoreError, ValueError) as e:
            self.faults.log_once(
                ("report-claim", self.path),
                logging.WARNING,
                f"Expect-CT: cannot de-duplicate reports with the other proxies through "
                f"{self.path} ({e}); reports are sent, possibly more than once.",
            )
            return True

    def _reopen_if_replaced(self, host: str) -> None:
        """SQLite keeps writing to a deleted (unlinked) file: notes would vanish at exit.

        Before each write, compare the path's inode with the one opened; when the file was
        deleted or replaced, open the path again (a new, empty store, preload re-applied).
        """
        if self.store is None or self._identity is None:
            return
        current = file_identity(self.store.location)
        if current == self._identity:
            return
        path = self.store.location
        self.faults.log_once(
            ("store-replaced", path, str(current)),
            logging.WARNING,
            f"Expect-CT: the store {path} was "
            + ("deleted" if current is None else "replaced by another file")
            + " while mitmproxy ran; opening it again (Known hosts kept only in the old file "
            "are gone).",
        )
        try:
            self.open(ctx.options)
        except exceptions.OptionsError as e:
            # Keep the old (unlinked) store: its look-ups still work, its notes are lost.
            self.faults.log_once(("store-reopen", path, str(e)), logging.ERROR, f"Expect-CT: {e}")
