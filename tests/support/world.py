"""The test world: a Web PKI (public and private roots, CT logs, leaves) written to disk."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path

from support import pki


@dataclass(frozen=True)
class Site:
    """A leaf certificate with its key and chain files, ready for an origin server."""

    name: str
    cert: object
    chain_pem: Path  # leaf first, then the intermediate
    key_pem: Path


@dataclass(frozen=True)
class World:
    """Two CT logs of different operators, a public and a private PKI, and ready-made sites."""

    dir: Path
    log_a: pki.TestLog
    log_b: pki.TestLog
    public_root: pki.CA
    public_inter: pki.CA
    private_root: pki.CA
    private_inter: pki.CA
    public_roots_pem: Path  # what the addon treats as publicly trusted
    upstream_trust_pem: Path  # what mitmproxy trusts upstream (public and private roots)
    log_list: Path
    stale_log_list: Path
    compliant: Site  # 2 embedded SCTs from logs of 2 operators: Chrome-compliant
    non_compliant: Site  # publicly trusted, no SCTs
    private: Site  # private root, no SCTs


def _site(base: Path, name: str, issuer: pki.CA, embedded: list[tuple[pki.TestLog, int]]) -> Site:
    cert, key = pki.make_leaf(issuer, embedded=embedded)
    chain = base / f"{name}.chain.pem"
    keyfile = base / f"{name}.key.pem"
    chain.write_bytes(pki.pem(cert, issuer.cert))
    keyfile.write_bytes(pki.key_pem(key))
    return Site(name, cert, chain, keyfile)


def make_world(base: Path) -> World:
    """Mint the world's PKI, logs and sites into `base`."""
    log_a = pki.make_log("Alpha Log 2026", "Alpha")
    log_b = pki.make_log("Beta Log 2026", "Beta")
    public_root = pki.make_root("Test Public Root")
    public_inter = pki.make_intermediate(public_root, "Test Public CA")
    private_root = pki.make_root("Test Corporate Root")
    private_inter = pki.make_intermediate(private_root, "Test Corporate CA")
    (base / "public-roots.pem").write_bytes(pki.pem(public_root.cert))
    (base / "upstream-trust.pem").write_bytes(pki.pem(public_root.cert, private_root.cert))
    now = datetime.datetime.now(datetime.UTC)
    entries = [pki.LogEntry(log_a), pki.LogEntry(log_b)]
    (base / "log_list.json").write_text(json.dumps(pki.log_list_json(entries, timestamp=now)))
    (base / "stale_log_list.json").write_text(
        json.dumps(pki.log_list_json(entries, timestamp=now - datetime.timedelta(days=200)))
    )
    ts = pki.now_ms() - 60_000
    return World(
        dir=base,
        log_a=log_a,
        log_b=log_b,
        public_root=public_root,
        public_inter=public_inter,
        private_root=private_root,
        private_inter=private_inter,
        public_roots_pem=base / "public-roots.pem",
        upstream_trust_pem=base / "upstream-trust.pem",
        log_list=base / "log_list.json",
        stale_log_list=base / "stale_log_list.json",
        compliant=_site(base, "compliant", public_inter, [(log_a, ts), (log_b, ts + 1)]),
        non_compliant=_site(base, "non-compliant", public_inter, []),
        private=_site(base, "private", private_inter, []),
    )


def proxy_options(world: World, **extra: object) -> dict[str, object]:
    """mitmdump options for the test world: trust both roots upstream, treat one as public."""
    options: dict[str, object] = {
        "ssl_verify_upstream_trusted_ca": str(world.upstream_trust_pem),
        "expect_ct_public_roots": str(world.public_roots_pem),
        "expect_ct_log_list": str(world.log_list),
    }
    options.update(extra)
    return options
