"""The addon's commands: ``expectct.*`` (names match mitmweb's REST route, ``[a-z.]+``), and
the ``expect_ct.*`` names of earlier releases as aliases for one release.

Each command logs its result and returns it as a JSON-serialisable dict (a dict, not a
list, since mitmproxy's console shows an empty list as an error): mitmweb's
``POST /commands/expectct.hosts`` answers ``{"value": {...}}`` with it.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

from mitmproxy import command
from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy import types as mtypes
from mitmproxy.hooks import UpdateHook
from mitmproxy.log import ALERT

from expect_ct import engine as enginemod
from expect_ct import records
from expect_ct import report as reportmod
from expect_ct import store as storemod
from expect_ct.mitm import export as exportmod
from expect_ct.mitm.annotate import META_KEY

if TYPE_CHECKING:
    from expect_ct.addon import ExpectCT


class JSON:
    """A command's result: a JSON-serialisable dict."""


class _JSONType(mtypes._BaseType):
    typ = JSON
    display = "json"

    def completion(self, manager: Any, t: Any, s: str) -> Sequence[str]:
        return []

    def parse(self, manager: Any, t: Any, s: str) -> Any:
        raise ValueError("json is a result type only")

    def is_valid(self, manager: Any, typ: Any, val: Any) -> bool:
        return isinstance(val, dict)


# mitmproxy checks a command's return value against its declared type.
mtypes.CommandTypes.typemap.setdefault(JSON, _JSONType())


class Commands:
    """ExpectCT's commands (ExpectCT.load registers them; not a sub-addon, see ExpectCT)."""

    name = "expectct.commands"

    def __init__(self, core: ExpectCT) -> None:
        self.core = core

    def _store(self) -> storemod.HostStore:
        store = self.core.known_hosts.store
        if store is None:
            raise exceptions.CommandError("The Known Expect-CT Hosts store is not open.")
        return store

    @command.command("expectct.hosts")
    def hosts(self) -> JSON:  # type: ignore[valid-type]
        """List the Known Expect-CT Hosts (also in the event log)."""
        result = [records.known_host_record(h) for h in self._store().hosts()]
        lines = [
            f"{h['host']}: {'enforce' if h['enforce'] else 'report-only'}, expires {h['expires']}"
            + (f", report-uri {h['report_uri']}" if h["report_uri"] else "")
            for h in result
        ]
        logging.log(
            ALERT, f"{len(lines)} Known Expect-CT Hosts" + "".join(f"\n  {x}" for x in lines)
        )
        return {"hosts": result}  # type: ignore[return-value]

    @command.command("expectct.forget")
    def forget(self, host: str) -> JSON:  # type: ignore[valid-type]
        """Remove a host from the Known Expect-CT Hosts."""
        store = self._store()
        known = False
        try:
            known = store.get(host) is not None
            removed = store.forget(host)
        except ValueError as e:
            raise exceptions.CommandError(str(e)) from e
        except storemod.StoreUnavailable as e:
            # A fleet's database is away: forgotten by this proxy now, queued for the others.
            self.core.headers.forget()
            logging.log(ALERT, f"{host}: forgotten on this proxy; {e}")
            return {"host": host, "forgotten": known, "pending": True}  # type: ignore[return-value]
        except storemod.StoreError as e:
            raise exceptions.CommandError(str(e)) from e
        self.core.headers.forget()
        logging.log(
            ALERT, f"{host}: {'forgotten' if removed else 'was not a Known Expect-CT Host'}"
        )
        return {"host": host, "forgotten": removed}  # type: ignore[return-value]

    @command.command("expectct.clear")
    def clear(self) -> JSON:  # type: ignore[valid-type]
        """Remove every Known Expect-CT Host."""
        store = self._store()
        self.core.headers.forget()
        try:
            removed = store.clear()
        except storemod.StoreUnavailable as e:
            logging.log(ALERT, f"Removed every Known Expect-CT Host on this proxy; {e}")
            return {"removed": None, "pending": True}  # type: ignore[return-value]
        except storemod.StoreError as e:
            raise exceptions.CommandError(str(e)) from e
        logging.log(ALERT, f"Removed {removed} Known Expect-CT Hosts.")
        return {"removed": removed}  # type: ignore[return-value]

    @command.command("expectct.testreport")
    def testreport(self, host: str, report_uri: str = "") -> JSON:  # type: ignore[valid-type]
        """Send a test report about a host to its stored report-uri, or to report_uri.

        The body has "test-report": true and describes the host's last connection; if none was
        seen, port 443 with empty chains and SCTs, as Chromium's test report. Test reports are
        not rate-limited. The outcome is logged.
        """
        try:
            name = storemod.canonical_host(host)
        except ValueError as e:
            raise exceptions.CommandError(f"Invalid host {records.one_line(host)}: {e}") from e
        store = self.core.known_hosts.store
        try:
            known = store.get(name) if store is not None else None
        except storemod.StoreError as e:
            raise exceptions.CommandError(str(e)) from e
        uri = report_uri or (known.report_uri if known is not None else None)
        if not uri:
            raise exceptions.CommandError(
                f"{name} is not a Known Expect-CT Host with a report-uri: give a report-uri."
            )
        record = self.core.connections.last_seen.get(name)
        port = record.port if record is not None else 443
        now = enginemod.utcnow()
        body = reportmod.build_report(
            hostname=name,
            port=port,
            date_time=now,
            effective_expiration=known.expires if known is not None else None,
            served_chain=record.served_chain if record is not None else (),
            validated_chain=(record.chain.validated or record.served_chain)
            if record is not None
            else (),
            scts=[(c.sct, c.status) for c in record.verdict.scts] if record is not None else [],
            failure_mode="enforce" if known is not None and known.enforce else "report-only",
            test_report=True,
        )
        sending = self.core.reporting.sender is not None
        logging.log(
            ALERT,
            f"Expect-CT: test report about {name} to {uri}: "
            + ("queued" if sending else "not sent (expect_ct_reports=off)"),
        )
        delivery = self.core.reporting.dispatch(name, port, uri, body, now=now, test_report=True)
        return {"host": name, "port": port, "report_uri": uri, "delivery": delivery}  # type: ignore[return-value]

    @command.command("expectct.check")
    def check(self, flows: Sequence[mflow.Flow]) -> JSON:  # type: ignore[valid-type]
        """Re-evaluate the selected flows against the current log list and policy (e.g. flows
        loaded from a file), with the handshake SCTs their metadata kept."""
        updated: list[mflow.Flow] = []
        counts: collections.Counter[str] = collections.Counter()
        for f in flows:
            if not isinstance(f, http.HTTPFlow) or not f.server_conn.certificate_list:
                counts["without certificates"] += 1
                continue
            record = self.core.judge.reevaluate(f)
            counts[
                "compliant"
                if record.verdict.compliant
                else "exempt"
                if record.exempt
                else "not compliant"
            ] += 1
            updated.append(f)
        ctx.master.addons.trigger(UpdateHook(updated))
        summary = (
            ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "nothing to check"
        )
        logging.log(ALERT, f"Expect-CT: re-checked {len(updated)} flows: {summary}.")
        return {"checked": len(updated), "counts": dict(counts)}  # type: ignore[return-value]

    @command.command("expectct.export")
    def export(self, flows: Sequence[mflow.Flow], path: mtypes.Path) -> JSON:  # type: ignore[valid-type]
        """Export the selected flows' CT state to a .json or .csv file."""
        try:
            target = exportmod.write_export(flows, path)
        except exportmod.ExportError as e:
            raise exceptions.CommandError(str(e)) from e
        logging.log(ALERT, f"Expect-CT: exported {len(flows)} flows to {target}.")
        return {"path": target, "flows": len(flows)}  # type: ignore[return-value]

    @command.command("expectct.show")
    def show(self, flows: Sequence[mflow.Flow]) -> JSON:  # type: ignore[valid-type]
        """Summarise the CT state of the selected flows in the event log."""
        result: list[dict[str, Any]] = []
        for f in flows:
            meta = f.metadata.get(META_KEY) or {}
            if isinstance(f, http.HTTPFlow):
                where = f"{f.request.method} {f.request.pretty_url}"
            else:
                where = type(f).__name__
            result.append({"flow": f.id, "where": where, "verdict": meta.get("verdict")})
        lines = [
            f"{records.one_line(str(r['where']), 120)}: {r['verdict'] or 'no CT data'}"
            for r in result
        ]
        logging.log(ALERT, "\n".join(lines) if lines else "No flows selected.")
        ctx.master.addons.trigger(UpdateHook([]))
        return {"flows": result}  # type: ignore[return-value]

    # The names of earlier releases, kept for one release.

    @command.command("expect_ct.hosts")
    def old_hosts(self) -> JSON:  # type: ignore[valid-type]
        """Deprecated name of expectct.hosts."""
        return self.hosts()

    @command.command("expect_ct.forget")
    def old_forget(self, host: str) -> JSON:  # type: ignore[valid-type]
        """Deprecated name of expectct.forget."""
        return self.forget(host)

    @command.command("expect_ct.clear")
    def old_clear(self) -> JSON:  # type: ignore[valid-type]
        """Deprecated name of expectct.clear."""
        return self.clear()

    @command.command("expect_ct.test_report")
    def old_test_report(self, host: str, report_uri: str = "") -> JSON:  # type: ignore[valid-type]
        """Deprecated name of expectct.testreport."""
        return self.testreport(host, report_uri)

    @command.command("expect_ct.check")
    def old_check(self, flows: Sequence[mflow.Flow]) -> JSON:  # type: ignore[valid-type]
        """Deprecated name of expectct.check."""
        return self.check(flows)

    @command.command("expect_ct.export")
    def old_export(self, flows: Sequence[mflow.Flow], path: mtypes.Path) -> JSON:  # type: ignore[valid-type]
        """Deprecated name of expectct.export."""
        return self.export(flows, path)

    @command.command("expect_ct.show")
    def old_show(self, flows: Sequence[mflow.Flow]) -> JSON:  # type: ignore[valid-type]
        """Deprecated name of expectct.show."""
        return self.show(flows)

    # Log lists (issue 15).

    @command.command("expectct.loglist")
    def loglist(self) -> JSON:  # type: ignore[valid-type]
        """The CT log list in force: source, version, age, next refresh, and whether blocking
        is suspended (and why)."""
        status = self.core.log_lists.status(ctx.options)
        suspended = (
            f"blocking SUSPENDED: {status['why']}" if status["blocking_suspended"] else "enforcing"
        )
        logging.log(
            ALERT,
            f"Expect-CT: {status['logs']} CT logs from {status['list_source']} (version "
            f"{status['version'] or 'none'}), {status['age_days']} days old, confirmed by "
            f"{status['confirmed_by']}; {suspended}; updates from {status['source']}, next "
            f"refresh {status['next_refresh'] or 'none'}.",
        )
        return status  # type: ignore[return-value]

    @command.command("expectct.loglist.update")
    def loglist_update(self) -> JSON:  # type: ignore[valid-type]
        """Refresh the CT log list now, in the background (the log_list event tells the
        outcome)."""
        started = self.core.log_lists.refresh_now()
        if not started:
            raise exceptions.CommandError(
                "Log-list updates are off (expect_ct_log_list_update=off, or auto with "
                "expect_ct_log_list set) or the proxy is not running yet."
            )
        source = self.core.log_lists.source
        logging.log(
            ALERT, f"Expect-CT: refreshing the CT log list from {source.name if source else '?'}."
        )
        return {"source": source.name if source else None, "requested": True}  # type: ignore[return-value]
