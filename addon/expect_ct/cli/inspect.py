"""``python -m expect_ct inspect LEAF [CHAIN...]``: a certificate's SCTs judged without a
connection, by the addon's engine."""

from __future__ import annotations

import argparse
import re
import warnings
from typing import Any

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import ocsp

from expect_ct import engine as enginemod
from expect_ct import loglist as loglistmod
from expect_ct import records
from expect_ct import sct as sctmod
from expect_ct.cli import common

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", re.DOTALL
)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "inspect",
        help="CT analysis of certificate files",
        description="Check a certificate's SCTs without a connection. Certificate files may be "
        "PEM (several certificates allowed) or DER; the first certificate is the leaf. Exit 0: "
        "compliant or exempt; 1: publicly trusted and not compliant; 2: unusable input.",
    )
    parser.add_argument("leaf", metavar="LEAF", help="leaf certificate (PEM or DER)")
    parser.add_argument(
        "chain", nargs="*", metavar="CHAIN", help="intermediate certificates (PEM or DER)"
    )
    parser.add_argument(
        "--tls-scts",
        metavar="FILE",
        help="SCTs as served in the TLS extension: a TLS-encoded SignedCertificateTimestampList",
    )
    parser.add_argument("--ocsp", metavar="FILE", help="a stapled OCSP response (DER)")
    parser.add_argument(
        "--host",
        metavar="NAME",
        help="server name to verify the chain for (default: the leaf's first subjectAltName)",
    )
    common.add_analysis_options(parser)
    parser.set_defaults(run=run)


def load_certificates(option: str, path: str) -> list[x509.Certificate]:
    """Every certificate of a PEM file, or the one certificate of a DER file."""
    data = common.read_file(option, path)
    certs: list[x509.Certificate] = []
    with warnings.catch_warnings():
        # Old real certificates (negative serials ...) make cryptography warn, not fail.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        blocks = _PEM_CERTIFICATE.findall(data)
        for number, block in enumerate(blocks, start=1):
            try:
                certs.append(x509.load_pem_x509_certificate(block))
            except ValueError as e:
                raise common.UsageError(
                    f"{option}{path}: PEM certificate #{number} does not parse: {e}"
                ) from e
        if not blocks:
            try:
                certs.append(x509.load_der_x509_certificate(data))
            except ValueError as e:
                raise common.UsageError(
                    f"{option}{path}: not a certificate: no PEM block "
                    f"(-----BEGIN CERTIFICATE-----) and not DER ({e})"
                ) from e
    return certs


def format_timestamp(timestamp_ms: int) -> str:
    try:
        moment = loglistmod.ms_to_datetime(timestamp_ms)
    except OverflowError:
        return f"{timestamp_ms} ms since 1970 (beyond year 9999)"
    return records.rfc3339(moment, milliseconds=True)


def run(args: argparse.Namespace) -> int:
    served = load_certificates("", args.leaf)
    for path in args.chain:
        served += load_certificates("", path)
    tls_scts = common.read_file("--tls-scts ", args.tls_scts) if args.tls_scts else None
    if tls_scts is not None:
        try:
            sctmod.parse_sct_list(tls_scts, sctmod.Source.TLS_EXTENSION)
        except sctmod.InvalidSCTList as e:
            raise common.UsageError(
                f"--tls-scts {args.tls_scts}: not a TLS-encoded SignedCertificateTimestampList: {e}"
            ) from e
    ocsp_der = common.read_file("--ocsp ", args.ocsp) if args.ocsp else None
    if ocsp_der is not None:
        try:
            ocsp.load_der_ocsp_response(ocsp_der)
        except ValueError as e:
            raise common.UsageError(f"--ocsp {args.ocsp}: not a DER OCSP response: {e}") from e
    analysis = common.load_analysis(args)
    result = analysis.engine.evaluate(
        args.host,
        served,
        tls_extension=tls_scts,
        ocsp_response=ocsp_der,
        captured=True,
        tls_version=None,
        now=analysis.now,
        # A file not given is a delivery path we did not look at.
        sources={
            "embedded": records.OBSERVED,
            "tls-extension": records.observed(tls_scts is not None, tls_scts),
            "ocsp": records.observed(ocsp_der is not None, ocsp_der),
        },
    )
    record: dict[str, Any] = {
        "time": records.rfc3339(analysis.now),
        "event": "connection",
        "host": args.host,
        "port": None,
    }
    record.update(result.event)
    record["chain_error"] = result.chain.error
    if args.json:
        common.print_json(record)
    else:
        print(_inspect_text(record, result, analysis))
    return common.EXIT_NOT_COMPLIANT if result.fails else common.EXIT_OK


def _why(text: str) -> str:
    for prefix in ("counted: ", "not counted: "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def _inspect_text(
    record: dict[str, Any], result: enginemod.Evaluation, analysis: common.Analysis
) -> str:
    cert = record["certificate"]
    verdict = result.verdict
    lines = [
        f"Certificate  {records.one_line(cert['subject'])}",
        f"  issuer     {records.one_line(cert['issuer'])}",
        f"  valid      {cert['not_before']} to {cert['not_after']}",
        f"  sha256     {cert['sha256']}",
        f"  chain      {record['chain']}"
        + (f" ({records.one_line(result.chain.error)})" if result.chain.error else ""),
        f"Evaluated    {analysis.describe()}",
        "Sources      " + ", ".join(f"{k} {v}" for k, v in record["sources"].items()),
        "",
    ]
    for number, sct in enumerate(record["scts"], start=1):
        lines += [
            f"SCT {number} of {len(record['scts'])}",
            f"  source     {sct['source']}",
            f"  log        {records.one_line(sct['log'] or 'not in the log list')}"
            f"  (log id {sct['log_id']})",
            f"  operator   {records.one_line(sct['operator'] or 'unknown')}",
            f"  timestamp  {format_timestamp(sct['timestamp'])}",
            f"  status     {sct['status']}"
            + (f": {records.one_line(sct['reason'])}" if sct["reason"] else ""),
            f"  counted    {'yes' if sct['counted'] else 'no'} ({records.one_line(_why(sct['why']))})",
            "",
        ]
    if not record["scts"]:
        lines += ["No SCTs.", ""]
    word = common.ct_word(record["chain"], verdict.compliant)
    lines.append(f"Verdict      {word} under the {verdict.policy} policy")
    if result.exempt and not verdict.compliant:
        lines.append("  (not compliant, but the chain ends at a private root: CT does not apply)")
    lines += [f"  - {records.one_line(reason)}" for reason in verdict.reasons]
    return "\n".join(lines)
