"""The addon in-process (mitmproxy.test.taddons), configured for the test world.

Shared by the in-process tests, so all run the addon loaded the same way: the
roots and log list of the test world, and a fresh store file under the test's tmp_path; and
both hand its blocking decision handshakes of the same shape (``handshake``).
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mitmproxy.test import taddons

from expect_ct import tls as tlsmod
from expect_ct.addon import ExpectCT
from expect_ct.store import HostStore
from expect_ct.store import KnownHostStore
from support.world import World


@dataclass
class Loaded:
    tctx: taddons.context
    addon: ExpectCT
    store_path: Path

    @property
    def store(self) -> HostStore:
        assert self.addon.store is not None
        return self.addon.store

    @property
    def sqlite_store(self) -> KnownHostStore:
        """The store, for tests that reach into SQLite itself."""
        store = self.store
        assert isinstance(store, KnownHostStore)
        return store


@contextmanager
def load_addon(
    world: World, tmp_path: Path, *, also: Sequence[object] = (), **options: object
) -> Iterator[Loaded]:
    """ExpectCT in a taddons context; ``options`` are set on top of the test world's.

    ``also``: mitmproxy addons loaded before it (a View, TlsConfig) for tests that need them.
    """
    addon = ExpectCT()
    store_path = tmp_path / "known.sqlite3"
    with taddons.context(*also, addon) as tctx:
        tctx.configure(
            addon,
            confdir=str(tmp_path / "confdir"),
            ssl_verify_upstream_trusted_ca=str(world.upstream_trust_pem),
            expect_ct_public_roots=str(world.public_roots_pem),
            expect_ct_log_list=str(world.log_list),
            expect_ct_store=str(store_path),
            **options,
        )
        try:
            yield Loaded(tctx, addon, store_path)
        finally:
            # taddons.context never calls done(): undo the TLS patch for the next test.
            addon.done()


def handshake(chain: tuple) -> tlsmod.HandshakeSCTs:
    """What the handshake capture hands the decision: ``chain`` served, no TLS or OCSP SCTs."""
    return tlsmod.HandshakeSCTs(
        captured=True,
        tls_extension=None,
        tls_extension_where=None,
        ocsp_response=None,
        tls_version="TLSv1.3",
        chain=chain,
    )
