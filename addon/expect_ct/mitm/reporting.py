"""RFC 9163 violation reports and the JSON-lines event log."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from mitmproxy import exceptions
from mitmproxy.log import ALERT

from expect_ct import decisions
from expect_ct import engine as enginemod
from expect_ct import report as reportmod
from expect_ct.mitm.connections import ConnectionRecord
from expect_ct.mitm.faults import Faults

logger = logging.getLogger("expect_ct")


@dataclasses.dataclass(frozen=True)
class ReportContext:
    """What a delivered report's outcome needs to be logged."""

    host: str
    port: int
    body: dict[str, Any]
    test_report: bool = False


def claim_key(host: str, port: int, report_uri: str) -> str:
    """The fleet-wide de-duplication key: the local rate limit's key (host, port, report-uri),
    so a fleet sharing one store sends what one proxy would send. Not the certificate: a host
    serving several non-compliant certificates (one per proxy, behind a load balancer) is one
    problem for its collector, reported once an hour."""
    return f"report {host.lower()}:{port} {report_uri}"


class Reporting:
    """Sends reports (rate-limited, on the sender's thread) and writes the event log.

    ``claim(key, window_s)`` de-duplicates across the proxies sharing the Known Expect-CT
    Hosts store (``KnownHosts.claim_report``): only the proxy that wins the claim sends.
    """

    def __init__(self, faults: Faults, *, claim: Callable[[str, int], bool] | None = None) -> None:
        self.faults = faults
        self.event_log: reportmod.EventLog | None = None
        self.sender: reportmod.ReportSender | None = None
        self.dedupe = reportmod.ReportDeduplicator()
        self.claim = claim

    # ------------------------------------------------------------ configuration

    def open_event_log(self, path: str | None) -> None:
        if self.event_log is not None:
            self.event_log.close()
            self.event_log = None
        if path:
            try:
                self.event_log = reportmod.EventLog(os.path.expanduser(path))
            except OSError as e:
                raise exceptions.OptionsError(
                    f"Cannot open expect_ct_log {path}: {e.strerror or e}"
                ) from e

    def start_sender(
        self,
        *,
        send: bool,
        allow_private: bool,
        cafile: str | None,
        forbidden: Sequence[tuple[str, int]],
    ) -> None:
        self.stop_sender(timeout=1)
        if send:
            self.sender = reportmod.ReportSender(
                allow_private=allow_private,
                cafile=cafile,
                forbidden=list(forbidden),
                on_result=self._delivered,
            )

    def stop_sender(self, timeout: float) -> None:
        if self.sender is not None:
            self.sender.close(timeout=timeout)
            self.sender = None

    def close(self) -> None:
        self.stop_sender(timeout=2)
        if self.event_log is not None:
            self.event_log.close()
            self.event_log = None

    # ------------------------------------------------------------------ events

    def write_event(self, event: str, host: str, port: int, **fields: Any) -> None:
        if self.event_log is not None:
            self.event_log.write(event, host, port, **fields)

    def write_connection(self, record: ConnectionRecord) -> None:
        if self.event_log is not None:
            self.event_log.write_encoded(
                "connection", record.host, record.port, record.evaluation.event_json
            )

    # ----------------------------------------------------------------- reports

    def report(self, record: ConnectionRecord, due: decisions.ReportDue, *, stale: bool) -> None:
        record.reported = True  # RFC 9163 2.3.3: at most one report per connection
        if stale:
            # RFC 9163 2.4: no reports when the check is bypassed. With an outdated log list
            # CT is not really evaluated (Chromium's BUILD_NOT_TIMELY: no report either).
            logger.info(
                f"Expect-CT: no report for {record.host}:{record.port} to {due.report_uri}: the "
                f"log list is older than expect_ct_log_list_max_age days."
            )
            return
        now = enginemod.utcnow()
        body = reportmod.build_report(
            hostname=record.host,
            port=record.port,
            date_time=now,
            effective_expiration=due.expiration,
            served_chain=record.served_chain,
            validated_chain=record.chain.validated or record.served_chain,
            scts=[(c.sct, c.status) for c in record.verdict.scts],
            failure_mode=due.failure_mode,
        )
        self.dispatch(record.host, record.port, due.report_uri, body, now=now)

    def dispatch(
        self,
        host: str,
        port: int,
        report_uri: str,
        body: dict[str, Any],
        *,
        now: datetime.datetime,
        test_report: bool = False,
    ) -> str:
        """Queue a report; returns what happened to it so far (queued, suppressed, disabled)."""
        self.faults.stats["reports"] += 1
        suppressed_because: str | None = None
        if not test_report and not self.dedupe.should_send(host, port, report_uri, now):
            suppressed_because = (
                "a report for this host, port and report-uri was sent in the last hour"
            )
        elif (
            not test_report
            and self.sender is not None
            and self.claim is not None
            and not self.claim(claim_key(host, port, report_uri), int(self.dedupe.ttl))
        ):
            self.faults.stats["reports_fleet_suppressed"] += 1
            suppressed_because = (
                "another proxy sharing the Known Expect-CT Hosts store sent a report for this "
                "host, port and report-uri in the last hour"
            )
        if suppressed_because is not None:
            self._report_event(host, port, report_uri, "suppressed", body, suppressed_because)
            return "suppressed"
        if self.sender is None:
            self._report_event(host, port, report_uri, "disabled", body, "expect_ct_reports=off")
            return "disabled"
        context = ReportContext(host, port, body, test_report)
        # A refused submit (queue full) is reported through on_result like any other outcome.
        self.sender.submit(report_uri, reportmod.serialize_report(body), context=context)
        return "queued"

    def _delivered(self, outcome: reportmod.ReportOutcome) -> None:
        # Runs on the sender's worker thread; EventLog and logging are thread-safe.
        context = outcome.context
        if not isinstance(context, ReportContext):
            return
        if context.test_report:
            logging.log(
                ALERT,
                f"Expect-CT test report about {context.host}:{context.port} to "
                f"{outcome.report_uri}: {outcome.delivery} ({outcome.detail})",
            )
        self._report_event(
            context.host,
            context.port,
            outcome.report_uri,
            outcome.delivery,
            context.body,
            outcome.detail,
        )

    def _report_event(
        self,
        host: str,
        port: int,
        report_uri: str,
        delivery: str,
        body: dict[str, Any],
        detail: str,
    ) -> None:
        logger.info(f"Expect-CT: report for {host}:{port} to {report_uri}: {delivery} ({detail})")
        self.write_event(
            "report", host, port, report_uri=report_uri, delivery=delivery, detail=detail, body=body
        )
