"""``expectct.export``: the selected flows' CT state as .json or .csv."""

from __future__ import annotations

import csv
import datetime
import json
import os
from collections.abc import Sequence
from typing import Any

from mitmproxy import flow as mflow
from mitmproxy import http

from expect_ct import records
from expect_ct.mitm.annotate import META_KEY

EXPORT_COLUMNS = (
    "time",
    "method",
    "url",
    "host",
    "port",
    "chain",
    "compliant",
    "policy",
    "valid_scts",
    "invalid_scts",
    "unknown_scts",
    "sources",
    "header",
    "header_action",
    "request_header",
    "blocked",
    "reasons",
    "verdict",
)


class ExportError(ValueError):
    """The export cannot be written; the message names the file."""


def export_row(flow: mflow.Flow) -> dict[str, Any]:
    """One flow's CT state as a flat row (CSV) that JSON export extends with the metadata."""
    meta = flow.metadata.get(META_KEY) or {}
    conn = meta.get("connection") or {}
    header = meta.get("header") or {}
    request_header = meta.get("request_header") or {}
    scts = conn.get("scts") or []
    row: dict[str, Any] = dict.fromkeys(EXPORT_COLUMNS)
    row["time"] = records.rfc3339(
        datetime.datetime.fromtimestamp(flow.timestamp_created, datetime.UTC)
    )
    if isinstance(flow, http.HTTPFlow):
        row.update(method=flow.request.method, url=flow.request.pretty_url)
    row.update(
        host=meta.get("host"),
        port=meta.get("port"),
        chain=conn.get("chain"),
        compliant=conn.get("compliant"),
        policy=conn.get("policy"),
        valid_scts=sum(1 for x in scts if x.get("status") == "valid") if conn else None,
        invalid_scts=sum(1 for x in scts if x.get("status") == "invalid") if conn else None,
        unknown_scts=sum(1 for x in scts if x.get("status") == "unknown") if conn else None,
        sources=" ".join(sorted({x.get("source", "") for x in scts})) or None,
        header=", ".join(header.get("values", [])) or None,
        header_action=header.get("action"),
        request_header=", ".join(request_header.get("values", [])) or None,
        blocked=meta.get("blocked"),
        reasons="; ".join(conn.get("reasons") or []) or None,
        verdict=meta.get("verdict"),
    )
    return row


def write_export(flows: Sequence[mflow.Flow], path: str) -> str:
    """Write the flows' rows to ``path`` (.csv, or .json with the whole metadata); returns
    the file written."""
    target = os.path.expanduser(path)
    rows = [export_row(f) for f in flows]
    try:
        if target.lower().endswith(".csv"):
            with open(target, "w", newline="", encoding="utf-8") as out:
                writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
        elif target.lower().endswith(".json"):
            for row, f in zip(rows, flows, strict=True):
                row["expect_ct"] = f.metadata.get(META_KEY)
            with open(target, "w", encoding="utf-8") as out:
                json.dump(rows, out, indent=2, default=str)
        else:
            raise ExportError(f"{path}: the file name must end in .json or .csv")
    except OSError as e:
        raise ExportError(f"Cannot write {path}: {e.strerror or e}") from e
    return target
