"""What a flow shows users: ``flow.metadata["expect_ct"]``, the comment and the marker.

The metadata's keys are documented in README ("On the flow"); the addon never reads them
back to pass state between its hooks (that lives in ``Annotator``'s own bounded map).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mitmproxy import http

from expect_ct import cache
from expect_ct import decisions
from expect_ct import records
from expect_ct.mitm.connections import ConnectionRecord

META_KEY = "expect_ct"
FLOW_MEMORY = 16384  # flows between their request and response hooks


@dataclasses.dataclass
class FlowNote:
    """The addon's own memory of one flow."""

    record: ConnectionRecord | None = None
    blocked: str | None = None
    blocked_response: bool = False  # the addon answered it (502): no header processing
    header: dict[str, Any] | None = None
    request_header: dict[str, Any] | None = None
    comment: str | None = None  # the comment the addon last wrote


def handshake_meta(record: ConnectionRecord) -> dict[str, str | None] | None:
    """The raw handshake SCT data, so a saved flow can be re-evaluated completely."""
    if not record.handshake.captured:
        return None
    if record.handshake_meta is None:
        record.handshake_meta = {
            "tls_extension": records.b64(record.handshake.tls_extension),
            "ocsp_response": records.b64(record.handshake.ocsp_response),
        }
    return record.handshake_meta


class Annotator:
    def __init__(self) -> None:
        self.notes: cache.BoundedMap[str, FlowNote] = cache.BoundedMap(FLOW_MEMORY)

    def note(self, flow: http.HTTPFlow) -> FlowNote:
        note = self.notes.get(flow.id)
        if note is None:
            note = FlowNote()
            self.notes.put(flow.id, note)
        return note

    def annotate(
        self, flow: http.HTTPFlow, record: ConnectionRecord, *, again: bool = False
    ) -> None:
        """The connection's verdict on the flow, once (``again``: re-evaluated, replace it)."""
        note = self.note(flow)
        if note.record is not None and not again:
            return
        note.record = record
        meta = flow.metadata.get(META_KEY)
        if meta is None:
            meta = flow.metadata[META_KEY] = {}
        else:
            for key in ("connection", "verdict", "handshake", "would_block"):
                meta.pop(key, None)
        meta["secure"] = True
        meta["host"] = record.host
        meta["port"] = record.port
        # Shared by every flow of the connection: records.py builds it from JSON primitives
        # only, so it survives a saved .mitm file as it is.
        meta["connection"] = record.evaluation.event
        meta["verdict"] = record.summary()
        handshake = handshake_meta(record)
        if handshake is not None:
            meta["handshake"] = handshake
        if record.would_block:
            meta["would_block"] = record.would_block
        if again and flow.marked == ":warning:":
            flow.marked = ""
        if not flow.marked and decisions.warrants_warning(
            chain=record.chain.kind, compliant=record.verdict.compliant
        ):
            flow.marked = ":warning:"
        self.refresh_comment(flow, note)

    def header(self, flow: http.HTTPFlow, header_meta: dict[str, Any]) -> None:
        note = self.note(flow)
        note.header = header_meta
        flow.metadata.setdefault(META_KEY, {})["header"] = header_meta
        if not header_meta["valid"] and not flow.marked:
            flow.marked = ":warning:"
        self.refresh_comment(flow, note)

    def request_header(self, flow: http.HTTPFlow, header_meta: dict[str, Any]) -> None:
        """The client's Expect-CT request header. Never marks the flow: what a client sends
        says nothing about the site's certificates."""
        note = self.note(flow)
        note.request_header = header_meta
        flow.metadata.setdefault(META_KEY, {})["request_header"] = header_meta
        self.refresh_comment(flow, note)

    def blocked(
        self, flow: http.HTTPFlow, reason: str, *, response: bool, summary: str | None
    ) -> None:
        """The flow was refused (``response``: the addon answered it with a 502)."""
        note = self.note(flow)
        note.blocked = reason
        note.blocked_response = note.blocked_response or response
        meta = flow.metadata.setdefault(META_KEY, {})
        meta["blocked"] = reason
        flow.marked = ":no_entry:"
        if summary is not None:
            self.set_comment(flow, f"BLOCKED by Expect-CT: {summary}", note)

    def answered(self, flow: http.HTTPFlow) -> bool:
        note = self.notes.get(flow.id)
        return note is not None and note.blocked_response

    # Every request and response passes here: callers hand over the flow's note they hold,
    # saving a look-up in the bounded map per call (keep-alive per-request cost, issue 14).

    def refresh_comment(self, flow: http.HTTPFlow, note: FlowNote | None = None) -> None:
        if note is None:
            note = self.note(flow)
        if note.blocked:
            return
        parts = []
        if note.record is not None:
            parts.append(note.record.summary())
        if note.request_header:
            parts.append(
                "client sent Expect-CT" + ("" if note.request_header["valid"] else " (invalid)")
            )
        if note.header:
            parts.append(
                f"Expect-CT header {note.header['action']}"
                + ("" if note.header["valid"] else " (invalid)")
            )
        self.set_comment(flow, " | ".join(parts), note)

    def set_comment(self, flow: http.HTTPFlow, text: str, note: FlowNote | None = None) -> None:
        if note is None:
            note = self.note(flow)
        # A saved flow loaded again: the comment the addon wrote then is in the metadata.
        previous = note.comment or (flow.metadata.get(META_KEY) or {}).get("comment")
        if flow.comment and flow.comment != previous:
            return  # the user's (or another addon's) comment wins
        flow.comment = records.one_line(text)
        note.comment = flow.comment
        flow.metadata.setdefault(META_KEY, {})["comment"] = flow.comment
