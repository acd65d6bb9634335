"""``python -m expect_ct check FLOWS.mitm``: saved flows judged again by the addon's engine.

Each upstream connection is evaluated with the SCTs the addon kept in the flow metadata
(``handshake``: the TLS-extension list and the stapled OCSP response) as well as the
embedded ones, so a verdict offline is the verdict live; headers get the effect
decisions.py gives them against a store that does not know the host yet.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import BinaryIO

from cryptography import x509

from expect_ct import chain as chainmod
from expect_ct import decisions
from expect_ct import header as headermod
from expect_ct import records
from expect_ct import store as storemod
from expect_ct.cli import common
from expect_ct.cli.common import UsageError

NOT_OBSERVED_NOTE = (
    "Handshake SCTs (TLS extension, OCSP) come from the addon's flow metadata; "
    "for flows saved without it they are not observed."
)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "check",
        help="CT analysis of saved flows (mitmdump -w)",
        description="Evaluate CT for every upstream TLS connection in saved mitmproxy flow files "
        "and parse their Expect-CT headers, as the addon does live: the certificates come "
        "from the flows, the SCTs of the TLS extension and of stapled OCSP from the metadata "
        "the addon saved with them (flows saved without the addon: 'not observed'). Exit 0: "
        "all compliant or exempt; 1: a publicly trusted chain is not compliant; 2: unusable "
        "input.",
    )
    parser.add_argument("flow_files", nargs="+", metavar="FLOWFILE", help="mitmproxy flow file")
    parser.add_argument(
        "--dialect",
        choices=headermod.DIALECTS,
        default="rfc9163",
        help="Expect-CT header parser (default: rfc9163)",
    )
    common.add_analysis_options(parser)
    parser.set_defaults(run=run)


@dataclass
class SavedConnection:
    """What the saved flows of one upstream connection tell us."""

    file: str
    host: str
    port: int
    tls_version: str | None
    served: tuple[x509.Certificate, ...]
    recorded: dict[str, Any] | None  # the addon's ``connection`` record from flow metadata
    blocked: str | None
    # The handshake data the addon saved (TLS-extension SCTs, OCSP), if it did.
    handshake: dict[str, Any] | None
    flows: int = 0
    headers: dict[tuple[str, ...], int] = field(default_factory=dict)  # values -> responses


def _server_identity(server: Any, meta: dict[str, Any]) -> tuple[str, int] | None:
    """The addon's (host, port) for a connection: SNI, else the address, canonicalised."""
    address = server.address
    host = server.sni or (str(address[0]) if address else meta.get("host"))
    port = address[1] if address else meta.get("port")
    if not host or port is None:
        return None
    return storemod.host_key(str(host)), int(port)


def read_flow_file(path: str, connections: dict[str, SavedConnection]) -> tuple[int, int]:
    """Add the HTTPS connections of one flow file; returns (flows read, flows skipped)."""
    from mitmproxy import http  # only check imports mitmproxy, and only when it runs
    from mitmproxy import io as mitmio

    try:
        handle: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e.strerror or e}") from e
    read = skipped = 0
    with handle:
        try:
            for flow in mitmio.FlowReader(handle).stream():
                read += 1
                if not isinstance(flow, http.HTTPFlow) or not _note_flow(path, flow, connections):
                    skipped += 1
        except Exception as e:  # noqa: BLE001 - FlowReader raises anything on foreign data
            raise UsageError(
                f"{path}: not a mitmproxy flow file (flow #{read + 1}: {e or type(e).__name__})"
            ) from e
    return read, skipped


def _note_flow(path: str, flow: Any, connections: dict[str, SavedConnection]) -> bool:
    if flow.request.scheme != "https":
        return False
    meta = flow.metadata.get("expect_ct")
    meta = meta if isinstance(meta, dict) else {}
    recorded = meta.get("connection") if isinstance(meta.get("connection"), dict) else None
    server = flow.server_conn
    if not server.certificate_list and recorded is None:
        return False
    identity = _server_identity(server, meta)
    if identity is None:
        return False
    saved = connections.get(server.id)
    if saved is None:
        try:
            served = tuple(records.to_cryptography(c) for c in server.certificate_list)
        except ValueError:
            served = ()
        handshake = meta.get("handshake")
        saved = SavedConnection(
            file=path,
            host=identity[0],
            port=identity[1],
            tls_version=server.tls_version or (recorded or {}).get("tls_version"),
            served=served,
            recorded=recorded,
            blocked=meta.get("blocked"),
            handshake=handshake if isinstance(handshake, dict) else None,
        )
        connections[server.id] = saved
    saved.flows += 1
    if flow.response is not None and not meta.get("blocked"):
        values = tuple(flow.response.headers.get_all("Expect-CT"))
        if values:
            saved.headers[values] = saved.headers.get(values, 0) + 1
    return True


def header_effect(
    facts: dict[str, Any], chain: str, chain_error: str | None, compliant: bool
) -> decisions.HeaderEffect:
    """What the addon would do with this header on this connection (RFC 9163 2.3.2), against
    a store that does not know the host yet."""
    gate = decisions.header_gate(
        secure=True,
        valid=facts["valid"],
        chain=chainmod.ChainKind(chain),
        chain_error=chain_error,
        compliant=compliant,
    )
    if gate is not None:
        return gate
    cap = decisions.DEFAULT_MAX_AGE_CAP
    action = decisions.predicted_store_action(
        max_age=facts["max_age"], max_age_cap=cap, known=False
    )
    return decisions.header_outcome(action, max_age=facts["max_age"], max_age_cap=cap)


def _header_summary(entry: dict[str, Any]) -> str:
    if not entry["valid"]:
        text = f"invalid ({entry['error']})"
    else:
        text = f"max-age={entry['max_age']}" + (" enforce" if entry["enforce"] else "")
        if entry["report_uri"]:
            text += f" report-uri={entry['report_uri']}"
    return f"{text} -> {entry['effect']}"


def check_record(saved: SavedConnection, analysis: common.Analysis, dialect: str) -> dict[str, Any]:
    """One output object: the ``connection`` event fields plus what only offline analysis has."""
    record: dict[str, Any] = {
        "time": records.rfc3339(analysis.now),
        "event": "connection",
        "host": saved.host,
        "port": saved.port,
    }
    chain_error = None
    if saved.served:
        handshake = saved.handshake or {}
        evaluation = analysis.engine.evaluate(
            saved.host,
            saved.served,
            tls_extension=records.unb64(handshake.get("tls_extension")),
            ocsp_response=records.unb64(handshake.get("ocsp_response")),
            captured=saved.handshake is not None,
            tls_version=saved.tls_version,
            now=analysis.now,
        )
        record.update(evaluation.event)
        chain_error = evaluation.chain.error
        record["evaluated"] = True
    else:
        # Refused during the handshake: mitmproxy saved no certificates, only the addon's record.
        record.update(saved.recorded or {})
        record["evaluated"] = False
    headers = []
    for values, count in saved.headers.items():
        facts = records.header_facts(values, dialect=dialect)
        effect = header_effect(facts, record["chain"], chain_error, record["compliant"])
        headers.append({**facts, "effect": effect.action, "why": effect.why, "responses": count})
    record.update(
        file=saved.file,
        flows=saved.flows,
        headers=headers,
        recorded=saved.recorded,
        blocked=saved.blocked,
    )
    return record


def _record_fails(record: dict[str, Any]) -> bool:
    return record["chain"] == chainmod.ChainKind.PUBLIC.value and not record["compliant"]


def run(args: argparse.Namespace) -> int:
    analysis = common.load_analysis(args)
    connections: dict[str, SavedConnection] = {}
    total = len(args.flow_files)
    for number, path in enumerate(args.flow_files, start=1):
        before = len(connections)
        read, _skipped = read_flow_file(path, connections)
        if total > 1:
            print(
                f"[{number}/{total}] {path}: {read} flows, {len(connections) - before} "
                f"new HTTPS connections",
                file=sys.stderr,
            )
    output = [check_record(saved, analysis, args.dialect) for saved in connections.values()]
    if args.json:
        for record in output:
            common.print_json(record)
    else:
        print(f"CT check of {total} flow file(s): {analysis.describe()}")
        print(NOT_OBSERVED_NOTE)
        print()
        print(_check_table(output) if output else "No HTTPS connections with certificates.")
    failing = sum(1 for r in output if _record_fails(r))
    summary = (
        f"{len(output)} connections: "
        f"{sum(1 for r in output if r['compliant'] and r['chain'] != 'private')} compliant, "
        f"{failing} publicly trusted and NOT compliant, "
        f"{sum(1 for r in output if r['chain'] == 'private')} exempt (private root), "
        f"{sum(1 for r in output if r['chain'] == 'untrusted')} not publicly trusted"
    )
    print(summary, file=sys.stderr if args.json else sys.stdout)
    return common.EXIT_NOT_COMPLIANT if failing else common.EXIT_OK


def _check_table(output: Sequence[dict[str, Any]]) -> str:
    rows = [["HOST:PORT", "CHAIN", "CT", "SCTS V/I/U", "EXPECT-CT", "REASONS"]]
    for r in output:
        ct = common.ct_word(r["chain"], r["compliant"])
        if not r["evaluated"]:
            ct += " (recorded)"
        recorded = r["recorded"]
        notes = list(r["reasons"])
        if r["chain"] == chainmod.ChainKind.PRIVATE.value:
            notes = ["CT does not apply: the chain ends at a private root"]
        if r["blocked"]:
            notes.append("blocked by the addon during the handshake (certificates not saved)")
        elif recorded is not None and recorded.get("compliant") != r["compliant"]:
            live = "compliant" if recorded.get("compliant") else "NOT compliant"
            sources = recorded.get("sources")
            seen = (
                f" (sources: {records.sources_text(sources)})" if isinstance(sources, dict) else ""
            )
            notes.append(f"the live addon recorded {live}{seen}")
        rows.append(
            [
                records.one_line(f"{r['host']}:{r['port']}", 80),
                r["chain"],
                ct,
                common.sct_counts(r["scts"]),
                records.one_line("; ".join(_header_summary(h) for h in r["headers"]) or "-", 120),
                records.one_line("; ".join(notes) or "-"),
            ]
        )
    return common.table(rows)
